"""The validity epoch: a value every worker reads before trusting what it remembers about tokens and
clients, changed after every commit that can make a stored token or client invalid.

What changes it: a token revoked or deleted, a client changed (disabled, its scopes, its secret) or
deleted (`tokens_or_clients_changed()`, called by the services and by the models' delete and save
signals, authserver/apps.py). Issuing a token does not: a new row invalidates nothing.

Why it is safe. A worker keeps a looked-up row together with the epoch it read *before* the lookup
(hotpath.RememberedLookup) and forgets everything as soon as the epoch differs. The epoch changes
only after the change has committed. So a row read before the commit is forgotten at the next
lookup, and a row read after it is already the new one: a revocation takes effect at once in every
worker, and no worker ever accepts a revoked token from memory. (The one gap: a process killed
between its COMMIT and the advance right after it, microseconds in which Django runs the commit's
callbacks. Its change is then not seen by workers that remember the old row until the next advance.)

Where it lives (settings.TOKEN_CACHE):
- "local": 8 bytes in a file, mapped into the memory of every process that opens it, so reading it
  is a stat() and a memory read. Correct when every process that serves or changes tokens runs on
  this machine: always so with SQLite, whose file sits next to the database's own -wal and -shm.
  With PostgreSQL, only when every app server runs on this one machine (the operator says so).
- "off": nothing is remembered; every lookup reads the database. The default with PostgreSQL, whose
  app servers may run on several machines.
"""

import fcntl
import mmap
import os
import secrets
from contextlib import suppress
from pathlib import Path

from django.conf import settings
from django.db import connections, transaction

_SIZE = 8


class EpochFile:
    """A 64-bit value in a file, shared through the page cache by every process mapping it.

    A new file starts from a random value, and a file replaced under a running worker (var/ cleaned)
    is noticed by its inode: an old value can never come back and look current."""

    def __init__(self, path: Path):
        self.path = path
        self._map: mmap.mmap | None = None
        self._inode: int | None = None
        self._descriptor: int | None = None

    def read(self) -> tuple[int, int]:
        """The epoch: (the file's inode, its value)."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if inode is None or inode != self._inode:
            self._open()
        return self._inode, int.from_bytes(self._map[:_SIZE], "little")

    def advance(self) -> None:
        self.read()  # mapped, and the current file
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)
        try:
            value = (int.from_bytes(self._map[:_SIZE], "little") + 1) % 2**64
            self._map[:_SIZE] = value.to_bytes(_SIZE, "little")
        finally:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            self._create()
            descriptor = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        self.close()
        self._descriptor = descriptor
        self._inode = os.fstat(descriptor).st_ino
        self._map = mmap.mmap(descriptor, _SIZE)

    def _create(self) -> None:
        # Written in full under another name, then linked into place: no process ever maps a file
        # shorter than the value, and of two processes creating it at once, one file wins.
        draft = self.path.with_name(f"{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        with open(draft, "xb") as handle:
            handle.write(secrets.token_bytes(_SIZE))
        try:
            with suppress(FileExistsError):  # another process's file won: that one is the epoch
                os.link(draft, self.path)
        finally:
            draft.unlink()

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            os.close(self._descriptor)
        self._map = self._descriptor = self._inode = None


_files: dict[tuple, EpochFile | None] = {}


def _epoch_file(using: str) -> EpochFile | None:
    # On every lookup: found by what decides it (the setting and the database), built once.
    key = (settings.TOKEN_CACHE, using, connections[using].settings_dict["NAME"])
    try:
        return _files[key]
    except KeyError:
        epoch_file = _files[key] = _new_epoch_file(*key)
        return epoch_file


def _new_epoch_file(token_cache: str, using: str, name) -> EpochFile | None:
    if token_cache != "local":
        return None
    if connections[using].vendor == "sqlite":
        name = str(name)
        if name == ":memory:" or name.startswith("file:"):
            return None  # one process's own database: nothing to share, nothing to remember
        return EpochFile(Path(f"{name}-epoch"))
    return EpochFile(settings.VAR_DIR / "validity-epoch")


def current(using: str = "default") -> tuple[int, int] | None:
    """The epoch now, or None when workers remember nothing (TOKEN_CACHE=off)."""
    epoch_file = _epoch_file(using)
    return None if epoch_file is None else epoch_file.read()


def tokens_or_clients_changed(using: str = "default", **signal_arguments) -> None:
    """A token or client may have become invalid: every worker forgets what it remembers, once the
    current transaction commits (at once outside one). Also a signal receiver."""
    epoch_file = _epoch_file(using)
    if epoch_file is None:
        return
    connection = connections[using]
    # Once per transaction, however many tokens it deletes (each sends post_delete).
    pending = connection.in_atomic_block and any(
        callback == epoch_file.advance for _, callback, _ in connection.run_on_commit
    )
    if not pending:
        transaction.on_commit(epoch_file.advance, using=using)


def client_saved(sender, instance, created: bool, using: str, **signal_arguments) -> None:
    """post_save of a client: a new one invalidates nothing; a changed one may have been disabled."""
    if not created:
        tokens_or_clients_changed(using)


def client_scopes_changed(sender, action: str, using: str, **signal_arguments) -> None:
    """m2m_changed of clients' scopes: after scopes were added, removed or cleared."""
    if action in ("post_add", "post_remove", "post_clear"):
        tokens_or_clients_changed(using)
