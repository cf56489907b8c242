"""The validity epoch: a value every worker reads before trusting what it remembers about tokens and
clients, changed by every commit that can make a stored token or client invalid.

What changes it: a token revoked or deleted, a client changed (disabled, its scopes, its secret) or
deleted (`tokens_or_clients_changed()`, called by the services and by the models' delete and save
signals, authserver/apps.py). Issuing a token does not: a new row invalidates nothing. Such a change
is also on disk before it is answered (on SQLite its WAL is flushed after the commit).

Why it is safe. A worker keeps a looked-up row together with the epoch it read *before* the lookup
(hotpath.RememberedLookup) and forgets everything as soon as the epoch differs. The epoch changes
when the change commits, never before: in the same transaction (shared) or right after it (local).
So a row read before the commit is forgotten at the next lookup, and a row read after it is
already the new one: a revocation takes effect at once in every worker, and no worker ever accepts
a revoked token from memory. (The gaps, with "local": a process killed between its COMMIT and
the advance right after it, microseconds in which Django runs the commit's callbacks, whose change
is then not seen by workers that remember the old row until the next advance; and a token issued on
a client looked up just before a change commits and written just after it, which keeps what the
change took from the client's tokens (a withdrawn scope). With "shared", a change made outside any
transaction, by hand in a shell, commits a moment before its epoch does.)

Where it lives (settings.TOKEN_CACHE):
- "local": 8 bytes in a file, mapped into the memory of every process that opens it, so reading it
  is a stat() and a memory read. Correct when every process that serves or changes tokens runs on
  this machine: always so with SQLite, whose file sits next to the database's own -wal and -shm.
  With PostgreSQL, only when every app server runs on this one machine (the operator says so). Not
  the default: the gaps above.
- "shared": a row of the database itself (ValidityEpoch), which every app server on every machine
  reads: once per request, one primary-key read before the request's first lookup (or, for the
  catalogue page, a subquery of the page's own statement: CompiledPages.page_and_epoch). It is changed
  by an UPDATE inside the very transaction that makes the change, so both commit together (no gap
  at all, where the change runs in a transaction, as the services' do). The default. With
  PostgreSQL an introspection then costs one round trip instead of two, and a client's
  authentication a primary-key read instead of the client with its scopes. The token endpoint
  does not read it first: it assumes the epoch its worker last saw (`assume_shared_epoch`). A token
  is written only while the epoch the request stands on, assumed or read
  (`standing_shared_epoch`), is still the epoch, read where a change's commit is waited for: in the
  very statement that writes the token, FOR SHARE, on PostgreSQL; in the token's write transaction,
  which a change's holds the lock of until it commits, on SQLite. Any other answer is given, and a
  failed authentication recorded, only once an assumed epoch is confirmed (`confirm_shared_epoch`).
  When it has changed meanwhile, nothing was written or answered on it (StaleEpoch), and the
  request is served again on the epoch found; when that one moves too, a third time with changes
  held off (hotpath.changes_held_off). The epoch a request stands on is the first its lookups were
  made under: a change of its own (a legacy secret re-hashed) does not move it.
- "off": nothing is remembered; every lookup reads the database.
"""

import fcntl
import functools
import mmap
import os
import secrets
import threading
from contextlib import suppress
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, connections, transaction
from django.db.models import F

from authserver.models import ValidityEpoch

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
            try:
                self._open()
            except OSError as error:
                # Beside the SQLite file (or in VAR_DIR), it is as unusable as the database: the
                # same 503 as an unreachable one (ProtocolErrorMiddleware), not a 500.
                raise OperationalError(f"The validity epoch file {self.path}: {error.strerror}") from error
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


class StaleEpoch(Exception):
    """The shared epoch a request assumed (`assume_shared_epoch`) is no longer the epoch. Nothing was
    written or answered on it: the request is to be served again, with the epoch read."""


class SharedEpoch:
    """The epoch as the one row of ValidityEpoch in the database `using` (TOKEN_CACHE=shared)."""

    def __init__(self, using: str):
        self.using = using
        self.last_seen: int | None = None  # by any request or command of this process

    def read(self) -> tuple[str, int]:
        """The epoch: read from the database once per request (`request_started`), and on every
        call outside requests (commands, shell)."""
        epochs = _request.__dict__.get("epochs")
        if epochs is not None and self.using in epochs:
            return epochs[self.using]
        epoch = ("shared", self._value())
        if epochs is not None:
            epochs[self.using] = epoch
            _request.stood.setdefault(self.using, epoch[1])
        return epoch

    def changing(self) -> None:
        """Inside the transaction of a change: the new epoch commits with it."""
        the_row = ValidityEpoch.objects.using(self.using).filter(pk=ValidityEpoch.ROW)
        rows = the_row.update(value=F("value") + 1)
        if not rows:
            self._create()

    def committed(self) -> None:
        """After the change committed: this request's next lookup reads the epoch again (what it
        looked up before still stands on the epoch it read first: `stood_on`)."""
        epochs = _request.__dict__.get("epochs")
        if epochs is not None:
            epochs.pop(self.using, None)

    def assume(self) -> bool:
        """Let the epoch this process last saw stand for this request's read, until `confirm()`.
        Not inside a transaction, outside requests, or once this request has read the epoch."""
        epochs = _request.__dict__.get("epochs")
        if (
            epochs is None
            or self.using in epochs
            or self.last_seen is None
            or connections[self.using].in_atomic_block
        ):
            return False
        epochs[self.using] = ("shared", self.last_seen)
        _request.stood.setdefault(self.using, self.last_seen)
        _request.assumed[self.using] = self.last_seen
        return True

    def assumed(self) -> int | None:
        """The value this request assumed and has not confirmed yet, if any."""
        return _request.__dict__.get("assumed", {}).get(self.using)

    def confirm(self, value: int | None = None) -> None:
        """Check this request's assumed value, if any, against the epoch: `value` when another
        statement of this request read it (None: no row), else read now. From then on the epoch
        counts as read. StaleEpoch when it has changed."""
        assumed = _request.__dict__.get("assumed", {}).pop(self.using, None)
        if assumed is not None:
            self.written_under(assumed, value)

    def stood_on(self) -> int | None:
        """The value this request stands on, assumed or read: the first its lookups were made
        under, kept when a change this request commits has it read the epoch again."""
        return _request.__dict__.get("stood", {}).get(self.using)

    def written_under(self, stood_on: int, value: int | None) -> None:
        """What this request stood on, `stood_on`, against the epoch as a statement of it found it,
        `value` (None: no row; then read now), e.g. where it writes, under a lock that a change's
        commit waits for. From then on `value` is this request's epoch, read. StaleEpoch when they
        differ."""
        _request.__dict__.get("assumed", {}).pop(self.using, None)
        if value is None:
            value = self._value()
        self.last_seen = value
        _request.epochs[self.using] = ("shared", value)
        _request.stood[self.using] = value  # served again, it stands on this one
        if value != stood_on:
            raise StaleEpoch(self.using)

    def unread(self) -> bool:
        """Whether this request has yet to read the epoch (False outside requests)."""
        epochs = _request.__dict__.get("epochs")
        return epochs is not None and self.using not in epochs

    def read_along(self, value: int | None) -> None:
        """The epoch as another statement of this request read it, outside any transaction and
        before any lookup (`hotpath.CompiledPages.page_and_epoch`): it stands for this request's
        read. None (no row: the table was emptied) leaves the read to the first lookup."""
        epochs = _request.__dict__.get("epochs")
        if value is not None and epochs is not None:
            epochs.setdefault(self.using, ("shared", value))
            _request.stood.setdefault(self.using, value)
            self.last_seen = value

    def _value(self) -> int:
        connection = connections[self.using]
        if reads_on_the_driver(connection):
            connection.ensure_connection()
            with connection.wrap_database_errors:
                sql = select_epoch_sql(self.using).replace("%s", "?")
                row = connection.connection.execute(sql, [ValidityEpoch.ROW]).fetchone()
        else:
            # A cursor kept for hot statements where the backend keeps one (config.postgresql).
            with getattr(connection, "kept_cursor", connection.cursor)() as cursor:
                cursor.execute(select_epoch_sql(self.using), [ValidityEpoch.ROW])
                row = cursor.fetchone()
        if row is None:  # the table was emptied (manage.py flush): a new, random value
            self._create()
            return self._value()
        self.last_seen = row[0]
        return row[0]

    def _create(self) -> None:
        ValidityEpoch.objects.using(self.using).get_or_create(
            pk=ValidityEpoch.ROW, defaults={"value": secrets.randbelow(2**62)}
        )


_SELECT_EPOCH = 'SELECT "value" FROM {table} WHERE "id" = %s'


def select_epoch_sql(using: str = "default") -> str:
    """The statement that reads the epoch's row; its one parameter is ValidityEpoch.ROW."""
    return _SELECT_EPOCH.format(table=connections[using].ops.quote_name(ValidityEpoch._meta.db_table))


def reads_on_the_driver(connection) -> bool:
    """Whether a read of the epoch (with a version's: hotpath.CompiledPages) on SQLite can run on
    sqlite3's own connection: Django's cursor (its wrapper, placeholders rewritten on every call)
    costs three times the read itself. Not while anything watches Django's cursor (its query log,
    execute wrappers): they see it there."""
    return connection.vendor == "sqlite" and not connection.queries_logged and not connection.execute_wrappers


_request = threading.local()


def request_started(**signal_arguments) -> None:
    """A request begins (signal receiver): each shared epoch is read once for all of it. A change
    committed meanwhile by another worker is seen by the next request, as if this one had been
    served a moment earlier; one committed by this request is seen at its next lookup."""
    _request.epochs = {}
    _request.assumed = {}
    _request.stood = {}


def request_finished(**signal_arguments) -> None:
    _request.__dict__.pop("epochs", None)
    _request.__dict__.pop("assumed", None)
    _request.__dict__.pop("stood", None)


class _LocalEpoch:
    """The epoch file's part in a change: advanced once the change has committed."""

    def __init__(self, epoch_file: EpochFile):
        self.epoch_file = epoch_file

    def read(self) -> tuple[int, int]:
        return self.epoch_file.read()

    def changing(self) -> None:
        """Nothing before the commit: other workers must not forget before the change is visible."""

    def committed(self) -> None:
        self.epoch_file.advance()


_epochs: dict[tuple, "_LocalEpoch | SharedEpoch | None"] = {}


def _epoch(using: str) -> "_LocalEpoch | SharedEpoch | None":
    # On every lookup: found by what decides it (the setting and the database), built once.
    key = (settings.TOKEN_CACHE, using, connections[using].settings_dict["NAME"])
    try:
        return _epochs[key]
    except KeyError:
        epoch = _epochs[key] = _new_epoch(*key)
        return epoch


def _new_epoch(token_cache: str, using: str, name) -> "_LocalEpoch | SharedEpoch | None":
    if token_cache == "shared":
        return SharedEpoch(using)
    if token_cache != "local":
        return None
    if connections[using].vendor == "sqlite":
        name = str(name)
        if name == ":memory:" or name.startswith("file:"):
            return None  # one process's own database: nothing to share, nothing to remember
        return _LocalEpoch(EpochFile(Path(f"{name}-epoch")))
    return _LocalEpoch(EpochFile(settings.VAR_DIR / "validity-epoch"))


def current(using: str = "default") -> tuple | None:
    """The epoch now, or None when workers remember nothing (TOKEN_CACHE=off)."""
    epoch = _epoch(using)
    return None if epoch is None else epoch.read()


def unread_shared_epoch(using: str = "default") -> SharedEpoch | None:
    """The shared epoch (TOKEN_CACHE=shared) when this request has yet to read it, else None."""
    epoch = _epoch(using)
    return epoch if isinstance(epoch, SharedEpoch) and epoch.unread() else None


def assume_shared_epoch(using: str = "default") -> bool:
    """With TOKEN_CACHE=shared: let the epoch this process last saw stand for this request's read
    (no round trip), to be confirmed by `confirm_shared_epoch` before anything decided on it is
    written or answered. Whether it was assumed."""
    epoch = _epoch(using)
    return isinstance(epoch, SharedEpoch) and epoch.assume()


def assumed_shared_epoch(using: str = "default") -> int | None:
    """The epoch this request assumed and has yet to confirm, if any."""
    epoch = _epoch(using)
    return epoch.assumed() if isinstance(epoch, SharedEpoch) else None


def standing_shared_epoch(using: str = "default") -> int | None:
    """The shared epoch this request stands on (assumed or read), if any: what a token it writes
    must still be the epoch for (`written_under_shared_epoch`)."""
    epoch = _epoch(using)
    return epoch.stood_on() if isinstance(epoch, SharedEpoch) else None


def written_under_shared_epoch(using: str, stood_on: int, value: int | None) -> None:
    """A write made on the shared epoch `stood_on` found the epoch at `value` in its own transaction
    (and wrote nothing unless they are the same): StaleEpoch when they differ."""
    epoch = _epoch(using)
    if isinstance(epoch, SharedEpoch):
        epoch.written_under(stood_on, value)


def confirm_shared_epoch(using: str = "default", value: int | None = None) -> None:
    """The epoch this request assumed, if any, checked (against `value`, which a statement of this
    request read, or read now): StaleEpoch when it has changed since."""
    epoch = _epoch(using)
    if isinstance(epoch, SharedEpoch):
        epoch.confirm(value)


def tokens_or_clients_changed(using: str = "default", **signal_arguments) -> None:
    """A token or client may have become invalid: the change is on disk and every worker forgets
    what it remembers, once the current transaction commits (at once outside one). Also a signal
    receiver."""
    _flush_when_committed(using)
    epoch = _epoch(using)
    if epoch is None or _awaits_commit(epoch.committed, using):
        return
    epoch.changing()
    transaction.on_commit(epoch.committed, using=using)


def _awaits_commit(callback, using: str) -> bool:
    """Whether `callback` already waits for the open transaction's commit: what a change does once
    it commits is done once per transaction, however many rows it changes (each token deleted sends
    post_delete)."""
    connection = connections[using]
    return connection.in_atomic_block and any(
        registered == callback for _, registered, _ in connection.run_on_commit
    )


def client_saved(sender, instance, created: bool, using: str, **signal_arguments) -> None:
    """post_save of a client: a new one invalidates nothing; a changed one may have been disabled."""
    if not created:
        tokens_or_clients_changed(using)


def client_scopes_changed(sender, action: str, using: str, **signal_arguments) -> None:
    """m2m_changed of clients' scopes: after scopes were added, removed or cleared."""
    if action in ("post_add", "post_remove", "post_clear"):
        tokens_or_clients_changed(using)


def _flush_when_committed(using: str) -> None:
    """SQLite (WAL, synchronous=NORMAL) answers a COMMIT before its WAL reaches the disk, so a
    power loss could undo it. A change that takes access away (a revocation, a disabled client, a
    new secret) must not come back undone: once it commits, its WAL is flushed, as
    synchronous=FULL would for every commit. PostgreSQL flushes every such commit itself
    (synchronous_commit; only a token issue may skip it: settings.TOKEN_SYNCHRONOUS_COMMIT)."""
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return
    flush = _wal_flush(using)
    if not _awaits_commit(flush, using):
        transaction.on_commit(flush, using=using)


@functools.cache
def _wal_flush(using: str):
    """fsync of the database's write-ahead log (one function per database, so that a transaction's
    commit callbacks hold it once)."""

    def flush() -> None:
        with suppress(FileNotFoundError):  # not in WAL mode: nothing written ahead
            descriptor = os.open(
                f"{connections[using].settings_dict['NAME']}-wal", os.O_RDONLY | os.O_CLOEXEC
            )
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    return flush
