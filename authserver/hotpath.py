"""The token endpoint's and the API's hot path: two lookups and the audit-event insert compiled once
per process, and token writers queued on SQLite.

Lookups. The ORM builds a query's SQL anew each time it runs, and for these one-row lookups
building costs several times more than the database answering (bench/profile.py,
docs/benchmarks.md). Each lookup here is an ordinary queryset, compiled by the ORM once per process
and database; each call runs that SQL with the new value and turns the row into model instances
with the same compiler (converters, select_related): the same SQL and the same objects as the
queryset, without compiling it again. The audit event written with every token is inserted the
same way. Only SQL text is kept between calls: every call reads the database, so a revoked token,
a disabled client or a changed scope takes effect at once in every worker.

Writers. SQLite has one writer at a time; a worker that finds the write lock taken sleeps and
retries (1, 2, 5, 10 ms...), so under load workers sleep while the lock is already free again.
Token writes are queued on an OS lock instead (flock on the database file, which SQLite's own
fcntl locks ignore): a waiting worker wakes the moment the previous writer commits.
"""

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connections, models, router
from django.db.models import OuterRef, Subquery, signals
from django.db.models.query import get_related_populators
from django.db.models.sql import InsertQuery
from oauth2_provider.models import get_access_token_model

from authserver.models import Application, AuditEvent, ClientScope

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


class CompiledLookup:
    """`queryset_for(value)`: a queryset of at most one row, filtered on the text `value` once.

    `get(value)` returns what `queryset_for(value).first()` would (None when there is no row).
    """

    def __init__(self, queryset_for: Callable[[str], models.QuerySet]):
        self._queryset_for = queryset_for
        self._model = queryset_for(_PLACEHOLDER).model
        # Per thread: a compiler holds the connection it was compiled for, and connections are per thread.
        self._local = threading.local()

    def get(self, value: str) -> models.Model | None:
        alias = router.db_for_read(self._model)
        compiled = self._compiled(alias)
        params = list(compiled.params)
        params[compiled.value_position] = value
        with connections[alias].cursor() as cursor:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        if compiled.converters:
            row = next(compiled.compiler.apply_converters([row], compiled.converters))
        instance = compiled.model.from_db(
            alias, compiled.init_list, row[compiled.fields_start : compiled.fields_end]
        )
        for populator in compiled.related_populators:
            populator.populate(row, instance)
        for name, position in compiled.annotation_col_map.items():
            setattr(instance, name, row[position])
        return instance

    def _compiled(self, alias: str) -> _Compiled:
        by_alias = self._local.__dict__.setdefault("by_alias", {})
        connection = connections[alias]
        compiled = by_alias.get(alias)
        if compiled is None or compiled.compiler.connection is not connection:
            compiled = by_alias[alias] = self._compile(alias)
        return compiled

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


@dataclass(frozen=True)
class _CompiledInsert:
    sql: str
    compiler: object
    fields: list
    returning_params: tuple


class CompiledInsert:
    """`create(**values)`: what `model.objects.create(**values)` does for a model that does not
    override save(), with its INSERT compiled once per process and database. Values are plain
    (no expressions). While anything listens to the model's save signals, it is create() itself."""

    def __init__(self, model: type[models.Model]):
        self._model = model
        self._local = threading.local()

    def create(self, **values) -> models.Model:
        model = self._model
        if signals.pre_save.has_listeners(model) or signals.post_save.has_listeners(model):
            return model.objects.create(**values)
        instance = model(**values)
        alias = router.db_for_write(model, instance=instance)
        connection = connections[alias]
        compiled = self._compiled(alias, instance)
        compiler = compiled.compiler
        params = [
            compiler.prepare_value(field, compiler.pre_save_val(field, instance)) for field in compiled.fields
        ]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, [*params, *compiled.returning_params])
            if connection.features.can_return_columns_from_insert:
                (primary_key,) = connection.ops.fetch_returned_insert_columns(
                    cursor, compiled.returning_params
                )
            else:
                primary_key = connection.ops.last_insert_id(
                    cursor, model._meta.db_table, model._meta.pk.column
                )
        instance.pk = primary_key
        instance._state.adding = False
        instance._state.db = alias
        return instance

    def _compiled(self, alias: str, instance: models.Model) -> _CompiledInsert:
        by_alias = self._local.__dict__.setdefault("by_alias", {})
        compiled = by_alias.get(alias)
        if compiled is None or compiled.compiler.connection is not connections[alias]:
            compiled = by_alias[alias] = self._compile(alias, instance)
        return compiled

    def _compile(self, alias: str, instance: models.Model) -> _CompiledInsert:
        # The fields Model._save_table inserts when the primary key is the database's to choose.
        meta = self._model._meta
        fields = [
            field
            for field in meta.local_concrete_fields
            if field is not meta.auto_field and not field.generated
        ]
        query = InsertQuery(self._model)
        query.insert_values(fields, [instance])
        compiler = query.get_compiler(using=alias)
        if compiler.connection.features.can_return_columns_from_insert:
            compiler.returning_fields = [meta.pk]
        [(sql, _)] = compiler.as_sql()
        return _CompiledInsert(
            sql=sql,
            compiler=compiler,
            fields=fields,
            returning_params=tuple(getattr(compiler, "returning_params", ())),
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
    # What DOT's OAuth2Validator._load_access_token selects.
    return (
        get_access_token_model()
        .objects.select_related("application", "user")
        .filter(token_checksum=token_checksum)[:1]
    )


_AUDIT_EVENTS = CompiledInsert(AuditEvent)
_CLIENT_WITH_SCOPE_NAMES = CompiledLookup(_client_with_scope_names)
_ACCESS_TOKEN_WITH_CLIENT = CompiledLookup(_access_token_with_client)


def create_audit_event(**values) -> AuditEvent:
    """AuditEvent.objects.create(**values), one per token issued."""
    return _AUDIT_EVENTS.create(**values)


def client_with_scope_names(client_id: str) -> Application | None:
    """The client with this client_id, its allowed_scope_names loaded by the same query."""
    return _CLIENT_WITH_SCOPE_NAMES.get(client_id)


def access_token_with_client(token_checksum: str):
    """The AccessToken with this checksum, with its application (and user) in the same query."""
    return _ACCESS_TOKEN_WITH_CLIENT.get(token_checksum)


_writer_locks = threading.local()  # one open file per thread: flock excludes open files, not processes


@contextmanager
def queued_writes(using: str = "default") -> Iterator[None]:
    """Around a write transaction: on SQLite, wait in an OS queue for the other writers to finish."""
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
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
