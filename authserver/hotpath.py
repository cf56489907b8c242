"""The token endpoint's and the API's hot path: the two lookups, the catalogue page and the two
inserts of a token issue (the access token and its audit event) compiled once per process; the two
inserts written together; token writers queued on SQLite.

Compiled once. The ORM builds a query's SQL anew each time it runs, and for these one-row lookups
building costs several times more than the database answering (bench/profile.py,
docs/benchmarks.md). Each statement here is an ordinary queryset or model INSERT, compiled by the
ORM once per process and database; each call runs that SQL with the new values and turns rows into
model instances with the same compiler (converters, select_related): the same SQL and the same
objects as the ORM, without compiling again.

Remembered. The two lookups (a token with its client, a client with its scopes) keep their rows in
each worker while the validity epoch stays the same (authserver/validity.py): every revocation,
disabled client, new secret or changed scope changes it as it commits, so it takes effect at once
in every worker. With TOKEN_CACHE=off only SQL text is kept and every call reads the database.

Written together. A token and its audit event are saved all or none. On PostgreSQL that is one
statement (both INSERTs as data-modifying WITH queries, atomic by itself: one round trip instead of
BEGIN, INSERT, INSERT, COMMIT); on SQLite one transaction, run on sqlite3's own cursor when nothing
watches Django's (BEGIN IMMEDIATE, INSERT, INSERT, COMMIT, without atomic()'s bookkeeping).
Parameters are prepared before it starts. On PostgreSQL that statement's commit does not wait for
the WAL flush unless TOKEN_SYNCHRONOUS_COMMIT says so (a lost token fails closed; config/settings.py).

Writers. SQLite has one writer at a time; a worker that finds the write lock taken sleeps and
retries (1, 2, 5, 10 ms...), so under load workers sleep while the lock is already free again.
Token writes are queued on an OS lock instead (flock on the database file, which SQLite's own
fcntl locks ignore): a waiting worker wakes the moment the previous writer commits.
"""

import copy
import datetime
import fcntl
import functools
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from django.conf import settings
from django.db import connections, models, router, transaction
from django.db.models import OuterRef, Subquery, signals
from django.db.models.base import ModelState
from django.db.models.query import get_related_populators
from django.db.models.sql import InsertQuery
from oauth2_provider.models import get_access_token_model

from authserver import validity
from authserver.models import Application, AuditEvent, ClientScope, ValidityEpoch

# Stands for the looked-up value while compiling; found again among the compiled parameters.
_PLACEHOLDER = "\x1f authserver.hotpath placeholder \x1f"


class SpaceSeparated(models.Aggregate):
    """The values joined with single spaces: GROUP_CONCAT on SQLite, STRING_AGG on PostgreSQL."""

    function = "GROUP_CONCAT"
    template = "%(function)s(%(expressions)s, ' ')"
    output_field = models.TextField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, function="STRING_AGG", **extra_context)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple
    value_position: int
    compiler: object
    converters: dict
    model: type[models.Model]
    init_list: list[str]
    fields_start: int
    fields_end: int
    related_populators: list
    annotation_col_map: dict


def _cursor(connection):
    """The cursor for a hot statement: one kept by the connection where its backend keeps one
    (config.postgresql: psycopg builds every new cursor's loaders anew), else a new one."""
    return getattr(connection, "kept_cursor", connection.cursor)()


class _CompiledPerConnection(ABC):
    """SQL compiled once per thread and database: a compiler holds the connection it was compiled
    for, and Django's connections are per thread. Subclasses say what `_compile(alias, ...)` keeps."""

    def __init__(self):
        self._local = threading.local()

    def _compiled(self, alias: str, *compile_arguments, variant: Hashable = False):
        """What `_compile(alias, *compile_arguments)` made, once per thread, database and variant."""
        by_key = self._local.__dict__.setdefault("by_key", {})
        compiled = by_key.get((alias, variant))
        if compiled is None or compiled.compiler.connection is not connections[alias]:
            compiled = by_key[(alias, variant)] = self._compile(alias, *compile_arguments)
        return compiled

    @abstractmethod
    def _compile(self, alias: str, *compile_arguments):
        """What running the statement needs besides its parameters (with `compiler`)."""


class CompiledLookup(_CompiledPerConnection):
    """`queryset_for(value)`: a queryset of at most one row, filtered on the text `value` once.

    `get(value)` returns what `queryset_for(value).first()` would (None when there is no row).
    """

    def __init__(self, queryset_for: Callable[[str], models.QuerySet]):
        super().__init__()
        self._queryset_for = queryset_for
        self._model = queryset_for(_PLACEHOLDER).model

    def get(self, value: str) -> models.Model | None:
        alias = router.db_for_read(self._model)
        row = self._row(alias, value)
        return None if row is None else self._instance(alias, row)

    def _row(self, alias: str, value: str) -> tuple | None:
        """The row for `value`, its values converted as the ORM converts them."""
        compiled = self._compiled(alias)
        params = list(compiled.params)
        params[compiled.value_position] = value
        with _cursor(connections[alias]) as cursor:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone()
        if row is not None and compiled.converters:
            row = next(compiled.compiler.apply_converters([row], compiled.converters))
        return None if row is None else tuple(row)

    def _instance(self, alias: str, row: tuple) -> models.Model:
        """New model instances from a converted row."""
        compiled = self._compiled(alias)
        instance = compiled.model.from_db(
            alias, compiled.init_list, row[compiled.fields_start : compiled.fields_end]
        )
        for populator in compiled.related_populators:
            populator.populate(row, instance)
        for name, position in compiled.annotation_col_map.items():
            setattr(instance, name, row[position])
        return instance

    def _compile(self, alias: str) -> _Compiled:
        # What ModelIterable does for every query, done once (django/db/models/query.py).
        compiler = self._queryset_for(_PLACEHOLDER).query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        if list(params).count(_PLACEHOLDER) != 1:
            raise ValueError("A compiled lookup filters on its value exactly once.")
        select, klass_info = compiler.select, compiler.klass_info
        select_fields = klass_info["select_fields"]
        start, end = select_fields[0], select_fields[-1] + 1
        return _Compiled(
            sql=sql,
            params=tuple(params),
            value_position=list(params).index(_PLACEHOLDER),
            compiler=compiler,
            converters=compiler.get_converters([column[0] for column in select[: compiler.col_count]]),
            model=klass_info["model"],
            init_list=[column[0].target.attname for column in select[start:end]],
            fields_start=start,
            fields_end=end,
            related_populators=get_related_populators(klass_info, select, alias),
            annotation_col_map=dict(compiler.annotation_col_map),
        )


class RememberedLookup(CompiledLookup):
    """A CompiledLookup whose rows each worker remembers while the validity epoch stays the same
    (authserver/validity.py): a revocation, a disabled client or a new secret changes the epoch, and
    the next lookup in every worker reads the database again. Without an epoch (TOKEN_CACHE=off),
    and inside a transaction, every lookup reads the database.

    Every call returns new instances (callers may change them); values a caller could change in
    place (JSON lists and dicts) are copied. Rows found missing are not remembered, and at most
    `size` rows are, the oldest forgotten first."""

    def __init__(self, queryset_for: Callable[[str], models.QuerySet], *, size: int = 4096):
        super().__init__(queryset_for)
        self.size = size
        self._memory = threading.local()

    def get(self, value: str) -> models.Model | None:
        alias = router.db_for_read(self._model)
        if connections[alias].in_atomic_block:
            # Inside a transaction the database may already differ from what every worker sees
            # (a revocation not yet committed, hence no new epoch): read it.
            return super().get(value)
        epoch = validity.current(alias)
        if epoch is None:
            return super().get(value)
        memory = self._memory.__dict__
        if memory.get("epoch") != (alias, epoch):
            memory["epoch"], memory["rows"] = (alias, epoch), {}  # read before the lookups it covers
        rows = memory["rows"]
        remembered = rows.get(value)
        if remembered is None:
            row = self._row(alias, value)
            if row is None:
                return None
            if len(rows) >= self.size:
                del rows[next(iter(rows))]
            remembered = rows[value] = _Remembered.of(self._instance(alias, row))
        return remembered.copy()

    def forget(self) -> None:
        """Forget this thread's rows (tests)."""
        self._memory.__dict__.clear()


@dataclass(frozen=True)
class _Remembered:
    """A looked-up instance (with the related instances loaded with it), never handed out itself:
    each caller gets a copy, as from_db() would have built it from the row, for a fifth of the cost
    (its __dict__ copied instead of Model.__init__ run field by field). Values a caller could
    change in place (JSON lists and dicts) are copied too."""

    instance: models.Model
    mutable: tuple[str, ...]
    related: tuple[tuple[str, "_Remembered | None"], ...]

    @classmethod
    def of(cls, instance: models.Model) -> "_Remembered":
        return cls(
            instance=instance,
            mutable=tuple(name for name, value in vars(instance).items() if isinstance(value, list | dict)),
            related=tuple(
                (name, None if related is None else cls.of(related))
                for name, related in instance._state.fields_cache.items()
            ),
        )

    def copy(self) -> models.Model:
        model = type(self.instance)
        if not _built_by_init_alone(model):  # something else sees or makes instances: from_db()
            return self._rebuilt()
        instance = model.__new__(model)
        values = instance.__dict__
        values.update(self.instance.__dict__)
        for name in self.mutable:
            value = values[name]
            values[name] = copy.deepcopy(value) if value else type(value)()  # most often []
        state = values["_state"] = ModelState()
        state.db, state.adding = self.instance._state.db, False
        if self.related:
            state.fields_cache = {name: None if each is None else each.copy() for name, each in self.related}
        return instance

    def _rebuilt(self) -> models.Model:
        remembered = self.instance
        fields = remembered._meta.concrete_fields
        instance = type(remembered).from_db(
            remembered._state.db,
            [field.attname for field in fields],
            [copy.deepcopy(getattr(remembered, field.attname)) for field in fields],
        )
        for name, each in self.related:
            instance._state.fields_cache[name] = None if each is None else each.copy()
        for name, value in vars(remembered).items():
            if name not in instance.__dict__:  # annotations
                setattr(instance, name, copy.deepcopy(value))
        return instance


def _built_by_init_alone(model: type[models.Model]) -> bool:
    """Whether a copy of an instance's __dict__ is what from_db() would build: Model's own
    __init__ and from_db(), and nothing listening to the model's init signals."""
    return (
        model.__init__ is models.Model.__init__
        and model.from_db.__func__ is models.Model.from_db.__func__
        and not signals.pre_init.has_listeners(model)
        and not signals.post_init.has_listeners(model)
    )


@dataclass(frozen=True)
class _CompiledInsert:
    sql: str
    compiler: object
    returning_params: tuple
    preparers: list  # per field: instance -> the INSERT's parameter


# What Django's backends make of a timezone-aware datetime in UTC (adapt_datetimefield_value):
# SQLite stores the UTC wall time as text, PostgreSQL takes the value itself.
_UTC_DATETIME_AS_STORED = {
    "sqlite": lambda value: str(value.replace(tzinfo=None)),
    "postgresql": lambda value: value,
}


def _preparer(compiler, field: models.Field) -> Callable[[models.Model], object]:
    """The parameter the compiler makes of `field` of a new instance (pre_save(), then
    get_db_prep_save()). A timezone-aware datetime in UTC (timezone.now(), DOT's expiry) goes
    straight to what the backend would make of it, without the conversions around it."""

    def prepare(instance):
        return compiler.prepare_value(field, field.pre_save(instance, True))

    connection = compiler.connection
    stored = _UTC_DATETIME_AS_STORED.get(connection.vendor)
    if (
        stored is None
        or not isinstance(field, models.DateTimeField)
        or connection.timezone is not datetime.UTC
    ):
        return prepare

    def prepare_datetime(instance):
        value = field.pre_save(instance, True)
        if value.__class__ is datetime.datetime and value.tzinfo is datetime.UTC:
            return stored(value)
        return compiler.prepare_value(field, value)

    return prepare_datetime


class CompiledInsert(_CompiledPerConnection):
    """`insert(instance)`: what `instance.save()` does for a new instance of a model that does not
    override save(), with the INSERT compiled once per process and database. Values are plain (no
    expressions); fields' pre_save() runs as usual (auto_now, DOT's token checksum). While anything
    listens to the model's save signals, it is save() itself."""

    def __init__(self, model: type[models.Model]):
        super().__init__()
        self.model = model

    def goes_through_save(self) -> bool:
        return signals.pre_save.has_listeners(self.model) or signals.post_save.has_listeners(self.model)

    def insert(self, instance: models.Model) -> models.Model:
        """Save a new `instance` (primary key left to the database), as `instance.save()` would."""
        if self.goes_through_save():
            instance.save(force_insert=True)
            return instance
        alias = router.db_for_write(self.model, instance=instance)
        sql, params = self.prepare(alias, instance)
        with connections[alias].cursor() as cursor:
            cursor.execute(sql, params)
            primary_key = self.returned_primary_key(cursor)
        return saved(instance, alias, primary_key)

    def prepare(self, alias: str, instance: models.Model) -> tuple[str, list]:
        """The INSERT of `instance` and its parameters (which pre_save() makes, e.g. timestamps)."""
        compiled = self._compiled(alias, instance)
        params = [prepare(instance) for prepare in compiled.preparers]
        return compiled.sql, [*params, *compiled.returning_params]

    def returned_primary_key(self, cursor):
        alias = cursor.db.alias
        connection, compiled = connections[alias], self._compiled(alias)
        if connection.features.can_return_columns_from_insert:
            (primary_key,) = connection.ops.fetch_returned_insert_columns(cursor, compiled.returning_params)
            return primary_key
        meta = self.model._meta
        return connection.ops.last_insert_id(cursor, meta.db_table, meta.pk.column)

    def _compile(self, alias: str, instance: models.Model | None = None) -> _CompiledInsert:
        # The fields Model._save_table inserts when the primary key is the database's to choose.
        meta = self.model._meta
        fields = [
            field
            for field in meta.local_concrete_fields
            if field is not meta.auto_field and not field.generated
        ]
        query = InsertQuery(self.model)
        query.insert_values(fields, [instance or self.model()])
        compiler = query.get_compiler(using=alias)
        if compiler.connection.features.can_return_columns_from_insert:
            compiler.returning_fields = [meta.pk]
        [(sql, _)] = compiler.as_sql()
        return _CompiledInsert(
            sql=sql,
            compiler=compiler,
            returning_params=tuple(getattr(compiler, "returning_params", ())),
            preparers=[_preparer(compiler, field) for field in fields],
        )


def saved(instance: models.Model, alias: str, primary_key) -> models.Model:
    """Mark a new instance saved, as Model.save_base does after its INSERT."""
    instance.pk = primary_key
    instance._state.adding = False
    instance._state.db = alias
    return instance


@dataclass(frozen=True)
class _CompiledTogether:
    sql: str
    compiler: object


# INSERT INTO t (columns) VALUES (%s, ...) RETURNING ...: one row of parameters, as compiled.
_ONE_ROW_INSERT = re.compile(
    r"(?P<into>INSERT INTO .+?) VALUES \((?P<values>(?:%s, )*%s)\)(?P<returning> RETURNING .+)"
)


class CompiledInsertsTogether(_CompiledPerConnection):
    """`insert(*instances)`: one new instance of each model, saved all or none. On PostgreSQL as one
    statement (the INSERTs as data-modifying WITH queries: one round trip and atomic by itself); on
    other databases in one transaction, queued on SQLite (`queued_writes`). Either way the
    parameters are prepared before any lock is taken.

    `while_epoch`: the shared validity epoch this request stands on, assumed or read
    (validity.standing_shared_epoch). The rows are written only while it is still the epoch, read
    where a change's commit is waited for: in the same statement, FOR SHARE, on PostgreSQL; in the
    write transaction, which a change's holds the lock of until it commits, elsewhere. Otherwise
    nothing is written: StaleEpoch.

    `synchronous_commit=False`: on PostgreSQL, outside any transaction, the rows' commit does not
    wait for its WAL to reach the disk (`synchronous_commit` off for that transaction only, as
    SQLite's WAL with synchronous=NORMAL commits every write): they are visible and answered at
    once, and a database crash within the WAL writer's delay may lose them, both together. Inside
    a transaction the caller's commit decides, as ever."""

    def __init__(self, *models_in_order: type[models.Model]):
        super().__init__()
        self._inserts = [CompiledInsert(model) for model in models_in_order]

    def insert(
        self, *instances: models.Model, while_epoch: int | None = None, synchronous_commit: bool = True
    ) -> None:
        alias = router.db_for_write(self._inserts[0].model)
        connection = connections[alias]
        pairs = list(zip(self._inserts, instances, strict=True))
        through_save = any(insert.goes_through_save() for insert in self._inserts)
        checked = while_epoch is not None
        asynchronous = not synchronous_commit and _commits_by_itself(connection)
        epoch_now = while_epoch  # as found where the rows are written (nothing written otherwise)
        if through_save:
            with transaction.atomic(using=alias):
                if checked:
                    epoch_now = _epoch_in_transaction(connection)
                if epoch_now == while_epoch:
                    if asynchronous:
                        with connection.cursor() as cursor:
                            cursor.execute(_ASYNCHRONOUS_COMMIT)
                    for insert, instance in pairs:
                        insert.insert(instance)
            if checked:
                validity.written_under_shared_epoch(alias, while_epoch, epoch_now)
            return
        statements = [insert.prepare(alias, instance) for insert, instance in pairs]
        if connection.vendor == "postgresql":
            together = self._compiled(alias, checked, asynchronous, variant=(checked, asynchronous))
            if checked:
                params = _params_while_epoch(statements, while_epoch)
            else:
                params = [param for _, row in statements for param in row]
            with _cursor(connection) as cursor:
                cursor.execute(together.sql, params)
                primary_keys = cursor.fetchone()
            if checked:
                *primary_keys, epoch_now = primary_keys
        elif _runs_on_the_driver(connection):
            primary_keys, epoch_now = _insert_on_the_driver(connection, statements, while_epoch)
        else:
            with queued_writes(alias), transaction.atomic(using=alias), connection.cursor() as cursor:
                if checked:
                    epoch_now = _epoch_in_transaction(connection)
                primary_keys = []
                if epoch_now == while_epoch:
                    for (sql, params), (insert, _) in zip(statements, pairs, strict=True):
                        cursor.execute(sql, params)
                        primary_keys.append(insert.returned_primary_key(cursor))
        if checked:
            validity.written_under_shared_epoch(alias, while_epoch, epoch_now)  # StaleEpoch: none written
        for instance, primary_key in zip(instances, primary_keys, strict=True):
            saved(instance, alias, primary_key)

    def _compile(
        self, alias: str, while_epoch: bool = False, asynchronous: bool = False
    ) -> _CompiledTogether:
        # WITH row_0 AS (INSERT ... RETURNING id), row_1 AS (...) SELECT (SELECT * FROM row_0), ...
        # While an epoch: WITH epoch AS (SELECT "value" ... WHERE "id" = %s FOR SHARE), row_0 AS
        # (INSERT INTO t (...) SELECT %s, ... WHERE (SELECT "value" FROM epoch) = %s RETURNING id),
        # ... SELECT (SELECT * FROM row_0), ..., (SELECT "value" FROM epoch): all in one snapshot.
        # FOR SHARE: a change that has taken the epoch (its UPDATE) and not committed yet is waited
        # for, and its new epoch read once it commits. Read without a lock, the old value would
        # pass while that change narrows or revokes tokens that cannot include this one yet (READ
        # COMMITTED), and this token would keep what the change took away.
        # Asynchronous: ... SELECT ... FROM (SELECT set_config('synchronous_commit', 'off', true))
        # AS commit_setting, for this statement's own transaction.
        compiled = [insert._compiled(alias) for insert in self._inserts]
        names = [f"row_{position}" for position in range(len(compiled))]
        inserts = [each.sql for each in compiled]
        columns = [f"(SELECT * FROM {name})" for name in names]  # noqa: S608 (our names only)
        ctes = []
        if while_epoch:
            ctes.append(f"epoch AS ({validity.select_epoch_sql(alias)} FOR SHARE)")
            inserts = [_insert_while_epoch(sql) for sql in inserts]
            columns.append('(SELECT "value" FROM epoch)')
        ctes += [f"{name} AS ({sql})" for name, sql in zip(names, inserts, strict=True)]
        # Only our own names and the ORM's compiled statements go into the text; values are parameters.
        sql = f"WITH {', '.join(ctes)} SELECT {', '.join(columns)}"
        if asynchronous:
            sql += f" FROM ({_ASYNCHRONOUS_COMMIT}) AS commit_setting"
        return _CompiledTogether(sql=sql, compiler=compiled[0].compiler)


# The transaction's commit does not wait for its WAL to be flushed (PostgreSQL; is_local: this
# transaction only, then the session's own setting again).
_ASYNCHRONOUS_COMMIT = "SELECT set_config('synchronous_commit', 'off', true)"


def _commits_by_itself(connection) -> bool:
    """Whether a statement on PostgreSQL would be its own transaction: autocommit, none open."""
    return (
        connection.vendor == "postgresql" and connection.get_autocommit() and not connection.in_atomic_block
    )


def _insert_while_epoch(sql: str) -> str:
    """A compiled one-row INSERT ... VALUES (...) RETURNING ... as INSERT ... SELECT ... WHERE the
    `epoch` CTE's value is one more parameter, given after the row's (PostgreSQL resolves the
    SELECT's parameters to the columns' types, as for VALUES)."""
    match = _ONE_ROW_INSERT.fullmatch(sql)
    if match is None:
        raise ValueError(f"Not a compiled one-row INSERT: {sql}")
    condition = '(SELECT "value" FROM epoch) = %s'
    # The ORM's compiled text rearranged, and a condition of our own: values stay parameters.
    return f"{match['into']} SELECT {match['values']} WHERE {condition}{match['returning']}"


def _params_while_epoch(statements: list[tuple[str, list]], epoch: int) -> list:
    """The parameters of the statement `_compile(while_epoch=True)` makes: the epoch's row, then each
    INSERT's row followed by the epoch it is written under."""
    params = [ValidityEpoch.ROW]
    for _, row in statements:
        params += [*row, epoch]
    return params


def _epoch_in_transaction(connection) -> int | None:
    """The epoch's value read inside the open write transaction (None: no row): on PostgreSQL FOR
    SHARE, which waits for a change that has taken it; on SQLite the transaction holds the write
    lock a change holds until it commits. Either way, the value is the latest."""
    sql = validity.select_epoch_sql(connection.alias)
    if connection.vendor == "postgresql":
        sql += " FOR SHARE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [ValidityEpoch.ROW])
        row = cursor.fetchone()
    return None if row is None else row[0]


def _runs_on_the_driver(connection) -> bool:
    """Whether a token's two INSERTs can run on SQLite's own cursor (`_insert_on_the_driver`):
    outside any transaction (every request; the portal's test token is written inside the
    registration's transaction) and while nothing watches Django's cursor (its query log under
    DEBUG or CaptureQueriesContext, execute wrappers): the bench's and the tests' query counts see
    the same statements through Django's cursor and atomic())."""
    return (
        connection.vendor == "sqlite"
        and not connection.queries_logged
        and not connection.execute_wrappers  # connection.execute_wrapper() instrumentation sees them
        and not connection.in_atomic_block
        and connection.get_autocommit()
        and connection.features.can_return_columns_from_insert
    )


def _insert_on_the_driver(
    connection, statements: list[tuple[str, list]], while_epoch: int | None = None
) -> tuple[list, int | None]:
    """BEGIN IMMEDIATE, each INSERT ... RETURNING, COMMIT, in the writers' queue, on the sqlite3
    cursor under Django's error translation (an OperationalError is still the 503 of
    ProtocolErrorMiddleware): the statements atomic() and Django's cursor would run, without their
    bookkeeping (autocommit switched off and on, savepoint state, cursor wrappers, placeholders
    rewritten on every call), which cost as much CPU as the INSERTs themselves.

    With `while_epoch`, the shared epoch is read first inside the transaction, and nothing is
    written unless it is still that value. (The primary keys, or [] when nothing was written; the
    epoch read, else `while_epoch`.)"""
    driver_statements = [(_qmark_sql(sql), params) for sql, params in statements]
    driver = connection.connection
    with queued_writes(connection.alias), connection.wrap_database_errors:
        cursor = driver.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            if while_epoch is not None:
                sql = _qmark_sql(validity.select_epoch_sql(connection.alias))
                row = cursor.execute(sql, [ValidityEpoch.ROW]).fetchone()
                epoch_now = None if row is None else row[0]
                if epoch_now != while_epoch:
                    cursor.execute("ROLLBACK")
                    return [], epoch_now
            primary_keys = [cursor.execute(sql, params).fetchone()[0] for sql, params in driver_statements]
            cursor.execute("COMMIT")
        except BaseException:
            # Nothing half-written: a failed INSERT or COMMIT (a foreign key checked at commit)
            # leaves the transaction open; a failed BEGIN opened none.
            if driver.in_transaction:
                try:
                    cursor.execute("ROLLBACK")
                except connection.Database.Error:
                    cursor.close()
                    connection.close()  # as atomic() does when its rollback fails
            raise
        finally:
            with suppress(connection.Database.Error):
                cursor.close()
    return primary_keys, while_epoch


_FORMAT_PLACEHOLDER = re.compile(r"(?<!%)%s")  # as django.db.backends.sqlite3.base's FORMAT_QMARK_REGEX


@functools.lru_cache(maxsize=64)
def _qmark_sql(sql: str) -> str:
    """SQL with Django's %s placeholders as SQLite's ? (what Django's SQLite cursor does per call)."""
    return _FORMAT_PLACEHOLDER.sub("?", sql).replace("%%", "%")


@dataclass(frozen=True)
class _CompiledPage:
    sql: str
    params: tuple
    compiler: object
    converters: dict
    width: int  # the values_list()'s columns, before the count (and the epoch and the version)


@dataclass(frozen=True)
class _CompiledReads:
    sql: str
    params: tuple
    compiler: object


# The databases whose migrations make a version model's triggers (fooapi/migrations/0002).
_VERSIONED_VENDORS = ("sqlite", "postgresql")


class CompiledPages(_CompiledPerConnection):
    """`page(offset, limit)`: `limit` rows from `offset` of the `values_list()` queryset
    `queryset_for()`, and how many rows all of it has, from one statement compiled once per process
    and database (the count as a scalar subquery, LIMIT and OFFSET as parameters).

    `page_and_epoch(offset, limit)`: the same, also reading the request's shared validity epoch
    (TOKEN_CACHE=shared) in that statement, so that a remembered token is checked without a round
    trip of its own. With a `version` model (one row, `ROW`, whose `value` the database changes with
    every change to the queryset's table: fooapi.models.CatalogueVersion), that statement also
    reads the version, and the worker remembers the page under it: while the version is the same,
    the page is answered again from one statement that reads the epoch and the version only. At
    most `remember` pages per worker, the oldest forgotten first."""

    def __init__(
        self,
        queryset_for: Callable[[], models.QuerySet],
        version: type[models.Model] | None = None,
        remember: int = 64,
    ):
        super().__init__()
        self._queryset_for = queryset_for
        self._model = queryset_for().model
        self._version = version
        self.remember = remember
        # (alias, offset, limit): (version, rows, total), the rows as page() gives them.
        self._remembered: dict[tuple, tuple[int, Sequence[Sequence], int]] = {}
        self._lock = threading.Lock()

    def page(self, offset: int, limit: int) -> tuple[list[Sequence], int | None]:
        """(rows, total rows); the total is None when there is no row at `offset`."""
        alias = router.db_for_read(self._model)
        rows, total, _, _ = self._page(alias, offset, limit, with_epoch=False)
        return rows, total

    def page_and_epoch(self, offset: int, limit: int) -> tuple[Sequence[Sequence], int] | None:
        """page(), read before the request's token is checked, in the statement that reads the
        epoch the check needs: one round trip instead of two. The caller answers with the rows only
        once the token is accepted. None, having read nothing, when the epoch is not shared, this
        request has read it already, or a transaction is open (where lookups read the database and
        an uncommitted epoch must not stand for the request's; nor is a page read there
        remembered); None also when there is no row at `offset` (the epoch is then read by the
        check, the page again by page()).

        A page remembered under a version is checked with one statement that reads the epoch and
        the version; when the version has changed, the page is read again as above."""
        alias = router.db_for_read(self._model)
        epoch = validity.unread_shared_epoch(alias)
        if epoch is None or connections[alias].in_atomic_block:
            return None
        key = (alias, offset, limit)
        remembered = self._remembered.get(key)
        if remembered is not None:
            epoch_value, version = self._epoch_and_version(alias)
            if version == remembered[0]:
                epoch.read_along(epoch_value)
                return remembered[1], remembered[2]
        rows, total, epoch_value, version = self._page(alias, offset, limit, with_epoch=True)
        if not rows:
            return None
        if version is not None:
            rows = tuple(rows)  # shared by the requests that answer it: not to be changed
            self._remember(key, (version, rows, total))
        epoch.read_along(epoch_value)
        return rows, total

    def forget(self) -> None:
        """Forget every remembered page (for tests: a worker reads a page again once its version
        has moved)."""
        with self._lock:
            self._remembered.clear()

    def _remember(self, key: tuple, page: tuple[int, Sequence[Sequence], int]) -> None:
        with self._lock:
            self._remembered.pop(key, None)
            while len(self._remembered) >= self.remember:
                del self._remembered[next(iter(self._remembered))]
            self._remembered[key] = page

    def _versioned(self, alias: str) -> bool:
        return self._version is not None and connections[alias].vendor in _VERSIONED_VENDORS

    def _epoch_and_version(self, alias: str) -> tuple[int | None, int | None]:
        connection = connections[alias]
        compiled = self._compiled(alias, None, variant="epoch and version")
        if validity.reads_on_the_driver(connection):  # as the epoch's own read
            connection.ensure_connection()
            with connection.wrap_database_errors:
                return connection.connection.execute(_qmark_sql(compiled.sql), compiled.params).fetchone()
        with _cursor(connection) as cursor:
            cursor.execute(compiled.sql, compiled.params)
            return cursor.fetchone()

    def _page(
        self, alias: str, offset: int, limit: int, with_epoch: bool
    ) -> tuple[list, int | None, int | None, int | None]:
        """(rows, total, epoch, version); the last two None unless read (and when there is no
        row at `offset`, or no version row: the table was emptied)."""
        compiled = self._compiled(alias, with_epoch, variant=with_epoch)
        with _cursor(connections[alias]) as cursor:
            cursor.execute(compiled.sql, [*compiled.params, limit, offset])
            rows = cursor.fetchall()
        if not rows:
            return [], None, None, None
        total, *read = rows[0][compiled.width :]  # the count, then the epoch and the version if read
        epoch = read[0] if read else None
        version = read[1] if len(read) > 1 else None
        if compiled.converters:
            rows = compiled.compiler.apply_converters(rows, compiled.converters)
        return [row[: compiled.width] for row in rows], total, epoch, version

    def _compile(self, alias: str, with_epoch: bool | None) -> _CompiledPage | _CompiledReads:
        """The page's statement, with the epoch (and the version) or without; with_epoch None:
        the statement that reads the epoch and the version alone."""
        if with_epoch is None:
            version = self._version.objects.using(alias).filter(pk=self._version.ROW).values("value")
            compiler = version.query.get_compiler(using=alias)
            version_sql, version_params = compiler.as_sql()
            # Two scalar subqueries: one row, with None for a missing row (an emptied table).
            return _CompiledReads(
                sql=f"SELECT ({validity.select_epoch_sql(alias)}), ({version_sql})",
                params=(ValidityEpoch.ROW, *version_params),
                compiler=compiler,
            )
        queryset = self._queryset_for()
        width = len(queryset.query.values_select)
        # The count as a scalar subquery, which the database runs once (on an index where it has
        # one): COUNT(*) OVER () would number every row and sort them again for the ORDER BY.
        counted = queryset.order_by().annotate(_all=models.Value(1)).values("_all")
        counted = counted.annotate(rows=models.Count("pk")).values("rows")
        queryset = queryset.annotate(_total_rows=Subquery(counted))
        if with_epoch:
            epoch = ValidityEpoch.objects.using(alias).filter(pk=ValidityEpoch.ROW).values("value")
            queryset = queryset.annotate(_validity_epoch=Subquery(epoch))
            if self._versioned(alias):
                version = self._version.objects.using(alias).filter(pk=self._version.ROW).values("value")
                queryset = queryset.annotate(_version=Subquery(version))
        compiler = queryset.query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        selected = [column[0] for column in compiler.select[: compiler.col_count]]
        # The count, the epoch and the version are read from the first row as the driver gives
        # them (integers): only the values_list()'s own columns are converted, on every row.
        converters = {
            position: each for position, each in compiler.get_converters(selected).items() if position < width
        }
        # LIMIT and OFFSET as parameters, which SQLite and PostgreSQL both take.
        return _CompiledPage(
            sql=f"{sql} LIMIT %s OFFSET %s",
            params=tuple(params),
            compiler=compiler,
            converters=converters,
            width=width,
        )


def _client_with_scope_names(client_id: str) -> models.QuerySet:
    scope_names = (
        ClientScope.objects.filter(application=OuterRef("pk"))
        .values("application")
        .annotate(joined=SpaceSeparated("scope__name"))
        .values("joined")
    )
    return Application.objects.filter(client_id=client_id).annotate(
        allowed_scope_names_joined=Subquery(scope_names)
    )[:1]


def _access_token_with_client(token_checksum: str) -> models.QuerySet:
    # What DOT's OAuth2Validator._load_access_token selects but the user: client credentials tokens
    # have none (token.user is then None without a query; a token with a user would load it).
    return (
        get_access_token_model()
        .objects.select_related("application")
        .filter(token_checksum=token_checksum)[:1]
    )


_AUDIT_EVENTS = CompiledInsert(AuditEvent)
_ISSUED_TOKENS = CompiledInsertsTogether(get_access_token_model(), AuditEvent)
_CLIENT_WITH_SCOPE_NAMES = RememberedLookup(_client_with_scope_names)
_ACCESS_TOKEN_WITH_CLIENT = RememberedLookup(_access_token_with_client)


def forget_remembered_rows() -> None:
    """Forget the rows this thread remembers (tests whose database is emptied under them)."""
    _CLIENT_WITH_SCOPE_NAMES.forget()
    _ACCESS_TOKEN_WITH_CLIENT.forget()


def insert_audit_event(event: AuditEvent) -> AuditEvent:
    """event.save() for a new AuditEvent."""
    return _AUDIT_EVENTS.insert(event)


def insert_issued_token(access_token, event: AuditEvent) -> None:
    """A new AccessToken and its audit event, saved all or none; on the shared epoch this request
    stands on (assumed or read: what its client and scopes were looked up under) only while it is
    still the epoch, else validity.StaleEpoch: a change committed meanwhile (a scope withdrawn, the
    client's tokens revoked) would not have reached this token.
    Committed without waiting for the disk unless TOKEN_SYNCHRONOUS_COMMIT (PostgreSQL): a token
    lost in a database crash fails closed, and its client asks for a new one."""
    alias = router.db_for_write(access_token.__class__)
    # Inside a transaction (the portal's test token, with the client it registers) the lookups read
    # the database in it, and the caller's commit decides.
    in_transaction = connections[alias].in_atomic_block
    _ISSUED_TOKENS.insert(
        access_token,
        event,
        while_epoch=None if in_transaction else validity.standing_shared_epoch(alias),
        synchronous_commit=settings.TOKEN_SYNCHRONOUS_COMMIT,
    )


def client_with_scope_names(client_id: str) -> Application | None:
    """The client with this client_id, its allowed_scope_names loaded by the same query."""
    return _CLIENT_WITH_SCOPE_NAMES.get(client_id)


def access_token_with_client(token_checksum: str):
    """The AccessToken with this checksum, with its application in the same query."""
    return _ACCESS_TOKEN_WITH_CLIENT.get(token_checksum)


@contextmanager
def changes_held_off(using: str = "default") -> Iterator[None]:
    """A transaction beside which no change to tokens or clients commits: on SQLite the write lock
    (taken at BEGIN, in the writers' queue), on PostgreSQL the validity epoch's row FOR SHARE,
    which every change updates before anything else (services.changes_validity). What is read in
    it and written in it is one state: a token issued in it needs no epoch to be confirmed (its
    lookups read the database). For a token request whose epoch kept moving."""
    connection = connections[using]
    with queued_writes(using), transaction.atomic(using=using):
        if connection.vendor != "sqlite":
            _epoch_in_transaction(connection)  # FOR SHARE
        yield


_writer_locks = threading.local()  # one open file per thread: flock excludes open files, not processes


@contextmanager
def queued_writes(using: str = "default") -> Iterator[None]:
    """Around a write transaction: on SQLite, wait in an OS queue for the other writers to finish.

    Not inside a transaction that is already open (the portal issues its test token inside the
    transaction that registers the client): that one holds SQLite's write lock since it began, and
    queueing behind a writer that waits for that lock would stall both for SQLite's busy timeout."""
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.is_in_memory_db() or connection.in_atomic_block:
        yield
        return
    path = str(connection.settings_dict["NAME"])
    files = _writer_locks.__dict__.setdefault("files", {})
    descriptor = files.get(path)
    if descriptor is None:
        descriptor = files[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
