"""BENCHMARK TOOL (bench/run.py --scale-tokens): bulk-load access tokens to measure the server at scale.

Not for production databases: the tokens it stores belong to a client made for the purpose, and
nobody holds their values (only random checksums are stored, as for real tokens).
"""

import secrets
import sys
import time
from datetime import timedelta

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from authserver import services
from authserver.management.base import OperatorCommand
from authserver.models import Application

BENCH_CLIENT_NAME = "benchmark: bulk-loaded tokens"


class Command(OperatorCommand):
    help = "BENCHMARK TOOL: store COUNT access tokens in bulk (bulk_create in batches), for bench/run.py."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=1_000_000)
        parser.add_argument("--batch-size", type=int, default=10_000)
        parser.add_argument(
            "--expired",
            action="store_true",
            help="tokens that expired an hour ago (for the cleanup benchmark)",
        )
        parser.add_argument("--client-id", help="an existing client to own the tokens (default: a new one)")

    def handle(self, *args, count: int, batch_size: int, expired: bool, client_id: str | None, **options):
        if count < 0 or batch_size < 1:
            raise CommandError("--count must be 0 or more and --batch-size 1 or more.")
        application = self._owner(client_id)
        now = timezone.now()
        expires = (
            now - timedelta(hours=1) if expired else now + timedelta(seconds=settings.ACCESS_TOKEN_LIFETIME)
        )
        access_token_model = get_access_token_model()
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                # Random checksums land all over the unique index: keep it in memory (256 MiB at most).
                cursor.execute("PRAGMA cache_size = -262144")
        started = time.monotonic()
        loaded = 0
        while loaded < count:
            size = min(batch_size, count - loaded)
            tokens = [
                access_token_model(
                    application=application,
                    # A checksum of no token anyone holds: the same shape as a stored real one.
                    token_checksum=checksum,
                    expires=expires,
                    scope="products:read",
                )
                for checksum in sorted(secrets.token_hex(32) for _ in range(size))  # sorted: index locality
            ]
            with transaction.atomic():
                access_token_model.objects.bulk_create(tokens, batch_size=size)
            loaded += size
            self._progress(loaded, count, started)
        sys.stderr.write("\n")
        if connection.vendor == "postgresql":
            self._settle(access_token_model._meta.db_table)
        state = "expired" if expired else "valid"
        self.stdout.write(
            f"Loaded {loaded} {state} access tokens for client {application.client_id} "
            f"in {time.monotonic() - started:.1f} s"
        )

    def _settle(self, table: str) -> None:
        """What an operator runs after a bulk load, so that what follows measures a database holding
        the rows, not one still absorbing them: the table's statistics and visibility map (else
        autovacuum starts on the new rows), then a checkpoint (else the checkpointer writes the
        load's hundreds of megabytes out during the next minutes)."""
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(table)}")
            try:
                cursor.execute("CHECKPOINT")
            except DatabaseError as error:  # neither superuser nor pg_checkpoint: it is left to run
                self.stderr.write(f"No checkpoint after the load ({error}); measurements may see it.")

    @staticmethod
    def _owner(client_id: str | None) -> Application:
        if client_id:
            application = services.find_client(client_id)
            if application is None:
                raise CommandError(f"No client {client_id!r}.")
            return application
        new_client = services.register_client(
            name=BENCH_CLIENT_NAME, scopes=["products:read"], actor="manage.py bench_load_tokens"
        )
        return new_client.application

    @staticmethod
    def _progress(done: int, total: int, started: float) -> None:
        width = 40
        filled = width * done // max(total, 1)
        rate = done / max(time.monotonic() - started, 1e-9)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} ({rate:,.0f}/s)")
        sys.stderr.flush()
