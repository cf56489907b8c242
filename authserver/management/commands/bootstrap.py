import secrets
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection

from authserver.management.base import OperatorCommand
from authserver.models import AuditEvent
from authserver.services import ensure_default_scopes, ensure_operators_group
from config.env import bind_host
from config.tls import ensure_self_signed_certificate, hosts_not_named
from fooapi.services import seed_demo_catalogue
from sdkportal.services import ensure_portal_client, renew_stale_portal_secret


class Command(OperatorCommand):
    help = (
        "Prepare this machine to serve, once and idempotently: TLS certificate, database tables, "
        "static files, the admin account and the default data."
    )

    def handle(self, *args, **options):
        try:
            if settings.TLS:
                self._certificate()
            call_command("migrate", interactive=False, verbosity=0)
            self._restrict_database_file()
            call_command("collectstatic", interactive=False, verbosity=0)
        except OSError as error:  # VAR_DIR read-only, or on a full disk: one line, not a traceback
            raise CommandError(f"{error.filename or settings.VAR_DIR}: {error.strerror or error}") from error
        if seeded := ensure_default_scopes():
            self.stdout.write(f"Seeded the scopes {' '.join(seeded)}.")
        ensure_operators_group()
        if seed_demo_catalogue():
            self.stdout.write("Seeded the demo catalogue of the Foo API.")
        try:
            registered = ensure_portal_client()
        except OSError as error:
            raise CommandError(
                f"Cannot write the portal's credentials to {settings.PORTAL_CREDENTIALS_FILE} "
                f"({error.strerror or error}); its client was not registered."
            ) from error
        if registered:
            self.stdout.write(
                f"Registered the portal's own client; secret in {settings.PORTAL_CREDENTIALS_FILE}"
            )
        try:
            renewed = renew_stale_portal_secret()
        except OSError as error:
            raise CommandError(
                f"Cannot write the portal's credentials to {settings.PORTAL_CREDENTIALS_FILE} "
                f"({error.strerror or error}); its secret, rotated since, was left as it is."
            ) from error
        if renewed:
            self.stdout.write(
                "The portal's own client had a new secret the portal did not know (rotated): gave it "
                f"another; secret in {settings.PORTAL_CREDENTIALS_FILE}"
            )
        self._admin_account()
        self.stdout.write(self.style.SUCCESS(f"Ready: {settings.ISSUER}"))

    @staticmethod
    def _restrict_database_file() -> None:
        """The SQLite file holds every live session's key (a staff one opens the console) and the
        password hashes: its owner's alone, as the secret key is, not the umask's world-readable
        default. SQLite gives the -wal and -shm files it creates the database file's mode."""
        if connection.vendor != "sqlite":
            return
        database = Path(connection.settings_dict["NAME"])
        for path in (
            database,
            database.with_name(f"{database.name}-wal"),
            database.with_name(f"{database.name}-shm"),
        ):
            if path.is_file():
                path.chmod(0o600)

    def _certificate(self) -> None:
        issuer_host = urlsplit(settings.ISSUER).hostname
        # The names clients reach this server by: ISSUER's host, and BIND's address unless a wildcard.
        needed = [host for host in (issuer_host, bind_host(settings.BIND)) if host]
        certificate = settings.TLS_CERT_FILE
        hosts = ["localhost", "127.0.0.1", "::1", *needed]
        missing = hosts_not_named(certificate, hosts) if certificate.exists() else hosts
        outcome = ensure_self_signed_certificate(certificate, settings.TLS_KEY_FILE, hosts)
        if outcome == "created":
            self.stdout.write(f"Created a self-signed TLS certificate: {certificate}")
        elif outcome == "remade":
            self.stdout.write(
                f"Made a new self-signed TLS certificate, as the old one did not name {', '.join(missing)}: "
                f"{certificate}"
            )
        elif missing := hosts_not_named(certificate, [issuer_host]):
            # Not bootstrap's own: the operator's to replace, never overwritten here.
            self.stderr.write(
                f"Warning: {certificate} does not name {missing[0]} (ISSUER's host) and was not made "
                "by bootstrap, so it is left as it is: clients checking the name will refuse it"
            )

    def _admin_account(self) -> None:
        """Created once. An operator's later changes stand: its password (ADMIN_PASSWORD is applied
        only when the account is created), its deactivation, its new name, its deletion (the audit
        trail has it: a superuser brought back at the next start, its password in the service's log,
        would undo the decision)."""
        users = get_user_model()
        admin = users.objects.filter(username="admin").first()
        if admin is not None:
            if settings.ADMIN_PASSWORD and not admin.check_password(settings.ADMIN_PASSWORD):
                self.stderr.write(
                    "Note: ADMIN_PASSWORD is not the admin account's password, and bootstrap sets it "
                    "only when it creates the account: it is left as it is "
                    "(manage.py changepassword admin changes it)."
                )
            return
        if AuditEvent.objects.filter(kind=AuditEvent.Kind.USER_DELETED, detail__username="admin").exists():
            self.stdout.write(
                "The admin account was deleted in the console: not created again "
                "(manage.py createsuperuser makes an operator account)."
            )
            return
        # The admin account renamed in the console (or an operator's own superuser): a second one,
        # its password in the service's log, is no one's wish.
        if superuser := users.objects.filter(is_superuser=True).order_by("pk").first():
            self.stdout.write(
                f"No account is named admin, but a superuser exists ({superuser.get_username()}): "
                "not created again."
            )
            return
        given = settings.ADMIN_PASSWORD
        if given:
            # The console's password forms' own checks: a superuser's password "admin" was taken.
            try:
                validate_password(given, users(username="admin"))
            except ValidationError as error:  # not echoed: it is the password
                raise CommandError(
                    f"ADMIN_PASSWORD: {' '.join(error.messages)} (unset it for a generated one)"
                ) from None
        password = given or secrets.token_urlsafe(12)
        users.objects.create_superuser(username="admin", email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"Admin console: {settings.ISSUER}/admin/  user: admin"))
        if not given:
            self.stdout.write(
                self.style.WARNING(f"  password: {password}   (shown this once; change it in the admin)")
            )
