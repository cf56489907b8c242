import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError
from oauth2_provider.settings import oauth2_settings

from authserver import services
from authserver.management.base import OperatorCommand

MAXIMUM_BATCH_SIZE = 1_000_000


class Command(OperatorCommand):
    help = (
        "Delete expired access tokens in short batches, with a progress bar on a terminal, without "
        "holding up token issuance for more than a moment (faster than DOT's cleartokens; safe to run "
        "from cron). Ctrl-C stops it after the batch under way (exit status 130)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            metavar="N",
            default=oauth2_settings.CLEAR_EXPIRED_TOKENS_BATCH_SIZE,
            help="rows per transaction, 1 to 1000000 (default: CLEAR_EXPIRED_TOKENS_BATCH_SIZE, %(default)s)",
        )
        parser.add_argument(
            "--pause",
            type=float,
            metavar="SECONDS",
            default=oauth2_settings.CLEAR_EXPIRED_TOKENS_BATCH_INTERVAL,
            help="seconds between batches (default: CLEAR_EXPIRED_TOKENS_BATCH_INTERVAL, %(default)s)",
        )
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bar on stderr (there is none when stderr is no terminal)",
        )

    def handle(self, *args, batch_size: int, pause: float, no_progress: bool, **options):
        # Beyond a million a batch holds token issuance up for many seconds; far beyond, the LIMIT
        # is no integer the database takes (a traceback).
        if not 1 <= batch_size <= MAXIMUM_BATCH_SIZE:
            raise CommandError(f"--batch-size must be 1 to {MAXIMUM_BATCH_SIZE}.")
        if not (math.isfinite(pause) and pause >= 0):
            raise CommandError("--pause must be a number of seconds, 0 or more.")
        started = time.monotonic()
        # Redrawn with "\r": in a log file (cron, systemd) that is one endless line of bars.
        show_progress = not no_progress and options["verbosity"] > 0 and self.stderr.isatty()
        committed = 0

        def progress(deleted: int, total: int) -> None:
            nonlocal committed
            committed = deleted
            if not show_progress:
                return
            width = 40
            filled = width * deleted // max(total, 1)
            rate = deleted / max(time.monotonic() - started, 1e-9)
            self.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {deleted:,}/{total:,} ({rate:,.0f}/s)",
                style_func=str,  # not the error colour of stderr
                ending="",
            )
            self.stderr.flush()

        try:
            with ctrl_c_deferred() as interrupted:
                deleted = services.clear_expired_tokens(
                    batch_size=batch_size, pause=pause, progress=progress, stop_requested=interrupted.is_set
                )
        except KeyboardInterrupt:
            # A second Ctrl-C: stopped at once; a batch under way is whole or not at all, either way.
            raise CommandError(
                f"Interrupted after deleting {committed} expired access tokens (and perhaps the batch "
                "under way); run it again for the rest.",
                returncode=130,
            ) from None
        finally:
            if show_progress:
                self.stderr.write("")
        if interrupted.is_set():
            # Each batch is one transaction, finished before stopping: what went is whole batches.
            raise CommandError(
                f"Interrupted after deleting {deleted} expired access tokens; run it again for the rest.",
                returncode=130,
            )
        if options["verbosity"] > 0:  # -v0 (cron): errors only
            elapsed = time.monotonic() - started
            self.stdout.write(f"Deleted {deleted} expired access tokens in {elapsed:.1f} s")


class _Flag:
    """Set by a signal handler: a plain attribute (threading.Event.set takes a lock the interrupted
    code may hold)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@contextmanager
def ctrl_c_deferred() -> Iterator[_Flag]:
    """The first Ctrl-C (SIGINT) only asks to stop: a KeyboardInterrupt inside a batch's COMMIT
    would leave unknown whether the batch went (PostgreSQL may commit it all the same). A second
    one interrupts at once. Outside the main thread signals cannot be handled: nothing changes."""
    interrupted = _Flag()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_interrupt(signum, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
