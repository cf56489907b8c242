"""Workers remember the tokens and clients they looked up, and forget them the moment one is revoked,
disabled or changed: in this process, in another one, and in every worker of a live server."""

import dataclasses
import datetime
import errno
import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from django.contrib.auth.hashers import make_password
from django.db import OperationalError, connection, transaction
from django.db.models.signals import post_init, post_save
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import AccessToken

from authserver import hotpath, services, throttling, validity
from authserver.models import Application, AuditEvent, ClientScope, Scope, ValidityEpoch
from authserver.validity import EpochFile
from fooapi.services import seed_demo_catalogue
from fooapi.views import ProductList
from tests.helpers import HttpsClient, basic, bearer, issue_token, make_client, post_form, request_token
from tests.servers import LiveServer, catalogue_answers


@pytest.fixture(params=["local", "shared"])
def remembering(request, settings, transactional_db):
    """Workers remember, with the epoch in a file on this machine or in the database (the
    default): outside a test transaction, so that commits happen."""
    settings.TOKEN_CACHE = request.param
    validity.current()  # the shared epoch's row, made again after the last test emptied the tables
    return request.param


def checksum(token: str) -> str:
    """What is stored of a token: its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def lookup_queries(stored: str) -> tuple[object, int]:
    """The token looked up, and how many times its row was read (a shared epoch's own read, once
    per request or, as here outside one, per lookup, is not counted)."""
    with CaptureQueriesContext(connection) as captured:
        loaded = hotpath.access_token_with_client(stored)
    return loaded, len(rows_read(captured))


def rows_read(captured) -> list[dict]:
    return [query for query in captured.captured_queries if "authserver_validityepoch" not in query["sql"]]


def in_another_worker(work):
    """`work()` as another worker does it: another thread, with its own connection (this process's
    workers have not seen the epoch a change there commits). What it returns."""

    def run():
        try:
            return work()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as other:
        return other.submit(run).result()


def epoch_in_another_worker():
    """validity.current() as another worker sees it."""
    return in_another_worker(validity.current)


# --- in one process -------------------------------------------------------------------------------


def test_a_token_looked_up_again_is_remembered_as_new_instances(remembering):
    new_client = make_client(scopes=["products:read"])
    stored = checksum(issue_token(HttpsClient(), new_client))

    first, first_queries = lookup_queries(stored)
    first.scope = "changed by a caller"
    first.resource.append("https://changed.example")
    first.application.name = "changed by a caller"
    second, second_queries = lookup_queries(stored)

    assert (first_queries, second_queries) == (1, 0)
    assert second is not first and second.application is not first.application
    assert second.scope == "products:read" and second.resource == []
    assert second.application.name == new_client.application.name


def test_a_remembered_token_is_what_the_orm_builds(remembering):
    stored = checksum(issue_token(HttpsClient(), make_client(scopes=["products:read"])))
    lookup_queries(stored)

    remembered, queries = lookup_queries(stored)
    built = AccessToken.objects.select_related("application").get(token_checksum=stored)

    assert queries == 0
    for instance, expected in [(remembered, built), (remembered.application, built.application)]:
        assert type(instance) is type(expected)
        fields = expected._meta.concrete_fields
        assert [getattr(instance, field.attname) for field in fields] == [
            getattr(expected, field.attname) for field in fields
        ]
        assert (instance._state.db, instance._state.adding) == ("default", False)
    with CaptureQueriesContext(connection) as captured:
        assert remembered.user is None and remembered.application.client_id == built.application.client_id
    assert captured.captured_queries == []


def test_instances_are_built_by_from_db_while_anything_listens_to_their_init(remembering):
    stored = checksum(issue_token(HttpsClient(), make_client(scopes=["products:read"])))
    lookup_queries(stored)
    initialized = []

    def seen(sender, instance, **kwargs):
        initialized.append(type(instance).__name__)

    post_init.connect(seen, sender=AccessToken)
    try:
        remembered, queries = lookup_queries(stored)
    finally:
        post_init.disconnect(seen, sender=AccessToken)

    assert queries == 0 and initialized == ["AccessToken"]
    remembered.resource.append("https://changed.example")
    assert lookup_queries(stored)[0].resource == []  # JSON values copied on this path too
    assert remembered.application.name == lookup_queries(stored)[0].application.name


def revoke(token, client):
    services.revoke_token(token=token, actor="tests")


def revoke_all(token, client):
    services.revoke_client_tokens(application=client, actor="tests")


def disable(token, client):
    services.set_client_enabled(application=client, enabled=False, actor="tests")


def delete(token, client):
    services.delete_client(application=client, actor="tests")


@pytest.mark.parametrize("invalidate", [revoke, revoke_all, disable, delete])
def test_a_remembered_token_stops_working_at_the_next_request(remembering, invalidate):
    http = HttpsClient()
    new_client = make_client(scopes=["products:read"])
    token = issue_token(http, new_client)
    assert http.get("/api/v1/products", **bearer(token)).status_code == 200
    _, queries = lookup_queries(checksum(token))
    assert queries == 0  # remembered

    invalidate(AccessToken.objects.get(token_checksum=checksum(token)), new_client.application)

    response = http.get("/api/v1/products", **bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_introspection_sees_a_disabled_client_at_once(remembering):
    http = HttpsClient()
    resource_server = make_client(scopes=["introspection"], name="resource server")
    new_client = make_client(scopes=["products:read"])
    token = issue_token(http, new_client)
    credentials = basic(resource_server.application.client_id, resource_server.client_secret)
    assert post_form(http, "/oauth2/introspect", {"token": token}, **credentials).json()["active"] is True

    services.set_client_enabled(application=new_client.application, enabled=False, actor="tests")

    assert post_form(http, "/oauth2/introspect", {"token": token}, **credentials).json() == {"active": False}


def test_a_rotated_secret_is_refused_at_the_next_request(remembering):
    http = HttpsClient()
    new_client = make_client(scopes=["products:read"])
    assert request_token(http, new_client).status_code == 200  # the client is remembered

    services.rotate_secret(application=new_client.application, actor="tests")

    response = request_token(http, new_client)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_a_scope_taken_from_a_remembered_client_is_refused(remembering):
    http = HttpsClient()
    new_client = make_client(scopes=["products:read", "orders:read"])
    assert request_token(http, new_client, scope="orders:read").status_code == 200

    services.update_client(
        application=new_client.application, actor="tests", changed_fields=[], scopes=["products:read"]
    )

    assert request_token(http, new_client, scope="orders:read").json()["error"] == "invalid_scope"


def test_a_scope_taken_from_a_client_is_taken_from_its_tokens_at_once(remembering):
    """A removed scope takes access away (README, Security): the client's issued tokens lose it at
    the next request, remembered or not; a token left with no scope is revoked; others stay."""
    http = HttpsClient()
    resource_server = make_client(scopes=["introspection"], name="resource server")
    introspection = basic(resource_server.application.client_id, resource_server.client_secret)
    new_client = make_client(scopes=["products:read", "orders:read"])
    both = issue_token(http, new_client)
    orders_only = issue_token(http, new_client, scope="orders:read")
    products_only = issue_token(http, new_client, scope="products:read")
    for token in (both, orders_only):
        assert http.get("/api/v1/orders", **bearer(token)).status_code == 200  # remembered

    services.update_client(
        application=new_client.application, actor="tests", changed_fields=[], scopes=["products:read"]
    )

    narrowed = http.get("/api/v1/orders", **bearer(both))  # products:read left: RFC 6750 3.1
    assert (narrowed.status_code, narrowed.json()["error"]) == (403, "insufficient_scope")
    gone = http.get("/api/v1/orders", **bearer(orders_only))  # no scope left: no token
    assert (gone.status_code, gone.json()["error"]) == (401, "invalid_token")
    assert http.get("/api/v1/products", **bearer(both)).status_code == 200
    assert http.get("/api/v1/products", **bearer(products_only)).status_code == 200
    described = post_form(http, "/oauth2/introspect", {"token": both}, **introspection).json()
    assert described["scope"] == "products:read"
    assert post_form(http, "/oauth2/introspect", {"token": orders_only}, **introspection).json() == {
        "active": False
    }
    event = AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CHANGED).latest("pk")
    assert event.detail["withdrawn"] == ["orders:read"]
    assert event.detail["tokens_narrowed"] == 2


@pytest.mark.parametrize("grant", ["relation", "row"])
def test_a_scope_given_to_a_remembered_client_outside_the_services_is_granted(remembering, grant):
    http = HttpsClient()
    new_client = make_client(scopes=["products:read"])
    assert request_token(http, new_client, scope="orders:read").json()["error"] == "invalid_scope"

    application, orders = new_client.application, Scope.objects.get(name="orders:read")
    if grant == "relation":
        application.allowed_scopes.add(orders)
    else:
        ClientScope.objects.create(application=application, scope=orders)

    assert request_token(http, new_client, scope="orders:read").status_code == 200


def test_nothing_is_forgotten_before_the_change_commits(remembering):
    new_client = make_client(scopes=["products:read"])
    stored = checksum(issue_token(HttpsClient(), new_client))
    lookup_queries(stored)
    before = epoch_in_another_worker()

    with transaction.atomic():
        services.revoke_token(token=AccessToken.objects.get(token_checksum=stored), actor="tests")
        assert epoch_in_another_worker() == before  # other workers still see the committed token
        assert hotpath.access_token_with_client(stored) is None  # inside the transaction: the database

    assert epoch_in_another_worker() != before
    assert validity.current() != before
    assert lookup_queries(stored) == (None, 1)


def test_one_transaction_deleting_many_tokens_changes_the_epoch_once(remembering):
    http = HttpsClient()
    new_client = make_client(scopes=["products:read"])
    for _ in range(3):
        issue_token(http, new_client)
    _, before = validity.current()

    assert services.revoke_client_tokens(application=new_client.application, actor="tests") == 3

    _, after = validity.current()
    assert after == (before + 1) % 2**64


def test_a_change_rolled_back_changes_no_epoch(remembering):
    new_client = make_client(scopes=["products:read"])
    before = validity.current()

    with pytest.raises(RuntimeError), transaction.atomic():
        services.set_client_enabled(application=new_client.application, enabled=False, actor="tests")
        raise RuntimeError("rolled back")

    assert validity.current() == epoch_in_another_worker() == before


def test_registering_a_client_changes_no_epoch(remembering):
    """No worker can remember a client that did not exist (a missing row is not remembered): every
    worker keeps what it remembers, and the new client is found with its scopes."""
    before = validity.current()

    new_client = make_client(scopes=["products:read", "orders:read"])

    assert validity.current() == epoch_in_another_worker() == before
    assert in_another_worker(lambda: issue_token(HttpsClient(), new_client, scope="orders:read"))


# --- the epoch in the database (TOKEN_CACHE=shared) -----------------------------------------------


@pytest.fixture
def shared(settings, transactional_db):
    settings.TOKEN_CACHE = "shared"
    validity.current()


def test_a_shared_epoch_is_read_once_per_request(shared):
    http = HttpsClient()
    resource_server = make_client(scopes=["introspection"], name="resource server")
    token = issue_token(http, make_client(scopes=["products:read"]))
    credentials = basic(resource_server.application.client_id, resource_server.client_secret)
    post_form(http, "/oauth2/introspect", {"token": token}, **credentials)  # both rows remembered

    with CaptureQueriesContext(connection) as captured:
        response = post_form(http, "/oauth2/introspect", {"token": token}, **credentials)

    assert response.json()["active"] is True
    # Two lookups (the resource server, the token), one statement: the epoch.
    [statement] = [query["sql"] for query in captured.captured_queries]
    assert statement.startswith('SELECT "value" FROM "authserver_validityepoch"')


def test_a_request_sees_its_own_change_at_its_next_lookup(shared):
    validity.request_started()
    try:
        before = validity.current()
        with CaptureQueriesContext(connection) as captured:
            assert validity.current() == before
        assert captured.captured_queries == []  # read once for the request

        validity.tokens_or_clients_changed()  # committed at once: outside a transaction

        assert validity.current() != before
    finally:
        validity.request_finished()


@pytest.mark.parametrize("invalidate", [revoke, revoke_all, disable, delete, "rotate"])
def test_every_change_locks_the_shared_epoch_before_anything_else(shared, invalidate):
    # The same lock first in every such transaction: two of them cannot deadlock on the epoch.
    new_client = make_client(scopes=["products:read"])
    token = AccessToken.objects.get(token_checksum=checksum(issue_token(HttpsClient(), new_client)))
    with CaptureQueriesContext(connection) as captured:
        if invalidate == "rotate":
            services.rotate_secret(application=new_client.application, actor="tests")
        else:
            invalidate(token, new_client.application)

    statements = [
        query["sql"]
        for query in captured.captured_queries
        if not query["sql"].startswith(("BEGIN", "SAVEPOINT"))
    ]
    assert statements[0].startswith('UPDATE "authserver_validityepoch"')
    assert sum("authserver_validityepoch" in statement for statement in statements) == 1  # once


def test_a_shared_epoch_emptied_away_comes_back_as_another_value(shared):
    before = validity.current()
    ValidityEpoch.objects.all().delete()  # manage.py flush
    assert validity.current() != before

    ValidityEpoch.objects.all().delete()
    validity.tokens_or_clients_changed()  # an advance that finds no row makes one
    assert ValidityEpoch.objects.count() == 1


# The token endpoint assumes the epoch its worker last saw, and confirms it before anything counts.


def token_statements(http, new_client, **params) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = request_token(http, new_client, **params)
    return response, [query["sql"] for query in captured.captured_queries]


def written_rows() -> tuple[int, int, int]:
    """(access tokens, token_issued events, auth_failed events) stored."""
    kinds = list(AuditEvent.objects.values_list("kind", flat=True))
    return (
        AccessToken.objects.count(),
        kinds.count(AuditEvent.Kind.TOKEN_ISSUED),
        kinds.count(AuditEvent.Kind.AUTH_FAILED),
    )


def test_a_token_is_written_in_the_statement_that_confirms_the_epoch(shared):
    http = HttpsClient()
    new_client = make_client(scopes=["products:read"])
    issue_token(http, new_client)  # the client remembered, the epoch seen

    response, statements = token_statements(http, new_client)

    assert response.status_code == 200
    if connection.vendor == "postgresql":
        [statement] = statements  # one round trip: no read of the epoch before
        assert statement.startswith('WITH epoch AS (SELECT "value" FROM "authserver_validityepoch"')
        assert statement.count('WHERE (SELECT "value" FROM epoch) = ') == 2  # the token and its event
    else:  # read in the token's write transaction (which waits for a change's), then its two rows
        assert [statement.split()[0] for statement in statements] == [
            "BEGIN",
            "SELECT",
            "INSERT",
            "INSERT",
            "COMMIT",
        ]
        assert statements[1].startswith('SELECT "value" FROM "authserver_validityepoch"')
    assert AccessToken.objects.filter(token_checksum=checksum(response.json()["access_token"])).exists()


def take_scope(application, new_client):
    services.update_client(
        application=application, actor="tests", changed_fields=[], scopes=["products:read"]
    )


def disable_client(application, new_client):
    services.set_client_enabled(application=application, enabled=False, actor="tests")


@pytest.mark.parametrize(
    ("change", "error"), [(take_scope, "invalid_scope"), (disable_client, "invalid_client")]
)
def test_a_client_changed_since_the_epoch_was_seen_gets_no_token_from_memory(shared, change, error):
    http = HttpsClient()
    new_client = make_client(scopes=["products:read", "orders:read"])
    issue_token(http, new_client, scope="products:read")  # kept when orders:read is taken
    before = written_rows()

    in_another_worker(lambda: change(Application.objects.get(pk=new_client.application.pk), new_client))
    response, statements = token_statements(http, new_client, scope="orders:read")

    assert response.status_code in (400, 401) and response.json()["error"] == error
    tokens, issued, failed = written_rows()
    assert (tokens, issued) == before[:2]  # the INSERT on the old epoch wrote nothing
    assert failed == before[2] + (error == "invalid_client")  # recorded once, when served again
    if connection.vendor == "postgresql":
        assert statements[0].startswith("WITH epoch AS")  # tried on the epoch last seen first


def test_a_new_secret_is_accepted_though_the_worker_remembers_the_old_one(shared):
    http = HttpsClient()
    new_client = make_client(scopes=["products:read"])
    issue_token(http, new_client)  # remembered with the old secret's hash
    rotated = []
    in_another_worker(
        lambda: rotated.append(
            services.rotate_secret(
                application=Application.objects.get(pk=new_client.application.pk), actor="x"
            )
        )
    )
    before = written_rows()

    response = request_token(http, dataclasses.replace(new_client, client_secret=rotated[0]))

    assert response.status_code == 200
    tokens, issued, failed = written_rows()
    assert (tokens, issued, failed) == (before[0] + 1, before[1] + 1, before[2])  # no failure recorded
    assert throttling.client_auth_retry_after(new_client.application.client_id, "127.0.0.1") == 0


def test_a_wrong_secret_is_refused_once_the_epoch_is_confirmed(shared):
    http = HttpsClient()
    new_client = make_client(scopes=["products:read"])
    issue_token(http, new_client)
    before = written_rows()

    response, statements = token_statements(http, dataclasses.replace(new_client, client_secret="wrong"))

    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    confirmed = next(n for n, sql in enumerate(statements) if "authserver_validityepoch" in sql)
    recorded = next(
        n for n, sql in enumerate(statements) if sql.startswith('INSERT INTO "authserver_auditevent"')
    )
    assert confirmed < recorded  # the epoch read before the failure is recorded
    assert not any('"client_id" IS NULL' in sql for sql in statements)  # no body credentials: no lookup
    assert written_rows() == (*before[:2], before[2] + 1)


def test_an_epoch_is_assumed_only_in_a_request_outside_transactions_once_one_was_seen(shared):
    epoch = validity._epoch("default")
    epoch.last_seen = None
    assert validity.assume_shared_epoch() is False  # outside a request
    validity.request_started()
    try:
        assert validity.assume_shared_epoch() is False  # nothing seen yet by this process
        _, seen = validity.current()  # read: this request's epoch, and the one last seen
        validity.request_finished()

        validity.request_started()
        with transaction.atomic():
            assert validity.assume_shared_epoch() is False
        assert validity.assume_shared_epoch() is True
        assert validity.assumed_shared_epoch() == seen
        assert validity.assume_shared_epoch() is False  # once per request
        validity.confirm_shared_epoch()  # unchanged: nothing raised
        assert validity.assumed_shared_epoch() is None
        validity.confirm_shared_epoch()  # nothing left to confirm: no read
    finally:
        validity.request_finished()


def test_an_assumed_epoch_changed_since_is_stale(shared):
    _, seen = validity.current()
    validity.tokens_or_clients_changed()
    validity.request_started()
    try:
        assert validity.assume_shared_epoch() is True
        assert validity.current() == ("shared", seen)  # what lookups use, unread
        with pytest.raises(validity.StaleEpoch):
            validity.confirm_shared_epoch()
        assert validity.current() == ("shared", (seen + 1) % 2**64)  # read, from then on
    finally:
        validity.request_finished()


@pytest.fixture(params=["compiled INSERTs", "save()"])
def token_rows_written_by(request):
    """How a token and its audit event are written: the compiled INSERTs, or save() while a
    post_save receiver listens (hotpath.CompiledInsert.goes_through_save): then the events it
    saw (else None)."""
    if request.param != "save()":
        yield None
        return
    saved = []

    def noticed(instance, **signal_arguments):
        saved.append(instance)

    post_save.connect(noticed, sender=AuditEvent)
    yield saved
    post_save.disconnect(noticed, sender=AuditEvent)


@pytest.mark.parametrize("epoch", ["assumed", "read"])
def test_a_legacy_secret_upgraded_by_a_token_request_writes_one_token(shared, monkeypatch, epoch):
    """The request that re-hashes a legacy secret changes the epoch itself, after its client was
    looked up on the one before: its token is not written on that one but served again, once."""
    http = HttpsClient()
    new_client = make_client(scopes=["products:read"])
    issue_token(http, new_client)  # the client remembered, the epoch seen
    legacy_hash = make_password(new_client.client_secret, hasher="pbkdf2_sha256")
    Application.objects.filter(pk=new_client.application.pk).update(client_secret=legacy_hash)
    validity.tokens_or_clients_changed()  # as a rotation would: every worker reads the client again
    issue_token(http, make_client(scopes=["products:read"]))  # the epoch seen again
    if epoch == "read":
        monkeypatch.setattr(validity, "assume_shared_epoch", lambda using="default": False)
    tokens = AccessToken.objects.filter(application=new_client.application)
    events = AuditEvent.objects.filter(application=new_client.application, kind=AuditEvent.Kind.TOKEN_ISSUED)
    before = (tokens.count(), events.count())

    response = request_token(http, new_client)

    assert response.status_code == 200
    assert (tokens.count(), events.count()) == (before[0] + 1, before[1] + 1)
    assert tokens.filter(token_checksum=checksum(response.json()["access_token"])).exists()
    assert Application.objects.get(pk=new_client.application.pk).client_secret != legacy_hash


def test_a_token_request_whose_epoch_keeps_moving_is_served_with_changes_held_off(
    shared, monkeypatch, token_rows_written_by
):
    """Served again when the token's write finds another epoch than its lookups'; a second time
    (changes committing faster than a token is issued), in a transaction beside which no change
    commits, whose lookups read the database: a token, and nothing written on a stale epoch."""
    http = HttpsClient()
    new_client = make_client(scopes=["products:read"])
    issue_token(http, new_client)
    tokens, issued, failed = written_rows()
    attempts = []

    def never_the_epoch(epoch):
        attempts.append(epoch)
        return -1  # no epoch is -1: every write on one finds the epoch moved

    monkeypatch.setattr(validity.SharedEpoch, "stood_on", never_the_epoch)
    saved_before = len(token_rows_written_by or [])  # the client's and the first token's events
    with CaptureQueriesContext(connection) as captured:
        response = request_token(http, new_client)

    assert response.status_code == 200
    assert len(attempts) == 2  # the third, with changes held off, stands on no epoch
    assert written_rows() == (tokens + 1, issued + 1, failed)
    if token_rows_written_by is not None:  # through save(): once, none on a stale epoch
        saved = [event.kind for event in token_rows_written_by[saved_before:]]
        assert saved == [AuditEvent.Kind.TOKEN_ISSUED]
    statements = [query["sql"] for query in captured.captured_queries]
    held_off = statements.index(next(sql for sql in reversed(statements) if sql.startswith("BEGIN")))
    if connection.vendor == "postgresql":
        assert statements[held_off + 1].endswith("FOR SHARE")
    assert any("authserver_application" in sql for sql in statements[held_off:])  # read in it


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's one statement")
def test_the_statement_written_while_an_epoch_binds_its_parameters_on_the_client_too(shared):
    # DATABASE_PREPARED_STATEMENTS=off (a pooler): psycopg writes the parameters into the text.
    new_client = make_client(scopes=["products:read"])
    token = AccessToken(
        application=new_client.application,
        scope="products:read",
        expires=timezone.now() + datetime.timedelta(hours=1),
        token="x" * 30,
        resource=["https://example.test/"],
    )
    event = services.audit_event(
        kind=AuditEvent.Kind.TOKEN_ISSUED, application=new_client.application, actor="tests", detail={"a": 1}
    )
    _, seen = validity.current()
    compiled = hotpath._ISSUED_TOKENS._compile("default", while_epoch=True)
    statements = [
        insert.prepare("default", each)
        for insert, each in zip(hotpath._ISSUED_TOKENS._inserts, [token, event], strict=True)
    ]
    with psycopg.ClientCursor(connection.connection) as cursor:
        for epoch, written in ((seen + 1, False), (seen, True)):
            cursor.execute(compiled.sql, hotpath._params_while_epoch(statements, epoch))
            *keys, epoch_now = cursor.fetchone()
            assert epoch_now == seen
            assert all(key is not None for key in keys) is written
            assert AccessToken.objects.filter(token_checksum=checksum("x" * 30)).exists() is written


def test_only_a_compiled_one_row_insert_is_rewritten():
    with pytest.raises(ValueError, match="one-row INSERT"):
        hotpath._insert_while_epoch('INSERT INTO "t" ("a") VALUES (%s), (%s) RETURNING "t"."id"')
    rewritten = hotpath._insert_while_epoch('INSERT INTO "t" ("a", "b") VALUES (%s, %s) RETURNING "t"."id"')
    condition = 'WHERE (SELECT "value" FROM epoch) = %s'
    assert rewritten == f'INSERT INTO "t" ("a", "b") SELECT %s, %s {condition} RETURNING "t"."id"'


# The catalogue page reads the request's epoch in its own statement, before the token is checked.


@pytest.fixture
def catalogue_reader(shared) -> str:
    seed_demo_catalogue()
    return issue_token(HttpsClient(), make_client(scopes=["products:read"]))


def catalogue_statements(http, path: str = "/api/v1/products", **headers) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = http.get(path, **headers)
    return response, [query["sql"] for query in captured.captured_queries]


def test_the_catalogue_page_reads_the_epoch_in_the_same_statement(catalogue_reader):
    http = HttpsClient()
    expected = http.get("/api/v1/products", **bearer(catalogue_reader)).json()  # the token remembered

    response, [statement] = catalogue_statements(http, **bearer(catalogue_reader))

    assert response.status_code == 200 and response.json() == expected
    assert '"fooapi_product"' in statement and '"authserver_validityepoch"' in statement
    assert expected["count"] == len(expected["results"]) > 0


def test_a_page_read_before_the_check_is_not_answered_to_a_revoked_token(catalogue_reader):
    http = HttpsClient()
    assert http.get("/api/v1/products", **bearer(catalogue_reader)).status_code == 200
    # Revoked in another worker: this process still remembers the token.
    with ThreadPoolExecutor(1) as other:
        other.submit(revoke_elsewhere, checksum(catalogue_reader)).result()

    response, statements = catalogue_statements(http, **bearer(catalogue_reader))

    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    assert "results" not in response.json()
    # The page with the new epoch, then the token read again (forgotten), nothing more.
    assert len(statements) == 2 and '"authserver_validityepoch"' in statements[0]


def revoke_elsewhere(stored: str) -> None:
    try:
        services.revoke_token(token=AccessToken.objects.get(token_checksum=stored), actor="tests")
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/v1/products", {}, 401),  # no token: nothing to check, nothing read ahead
        ("/api/v1/products?page=0", None, 400),  # the 400 after the token's check, as before
    ],
)
def test_no_page_is_read_ahead_where_the_request_fails_anyway(catalogue_reader, path, headers, status):
    response, statements = catalogue_statements(
        HttpsClient(), path, **(bearer(catalogue_reader) if headers is None else headers)
    )

    assert response.status_code == status
    assert not [statement for statement in statements if '"fooapi_product"' in statement]


def test_past_the_last_page_the_empty_read_ahead_leaves_the_epoch_to_the_check(catalogue_reader):
    http = HttpsClient()
    assert http.get("/api/v1/products", **bearer(catalogue_reader)).status_code == 200  # remembered
    past_the_end = "/api/v1/products?page=99"
    response, statements = catalogue_statements(http, past_the_end, **bearer(catalogue_reader))

    assert response.status_code == 404
    # Ahead: no row, so no epoch either; the check reads it; the page is read again, as without it.
    ahead, epoch, page = statements
    assert '"fooapi_product"' in ahead and '"authserver_validityepoch"' in ahead
    assert epoch.startswith('SELECT "value" FROM "authserver_validityepoch"')
    assert '"fooapi_product"' in page and '"authserver_validityepoch"' not in page


def test_a_page_is_read_ahead_only_while_the_request_has_yet_to_read_its_epoch(catalogue_reader):
    pages = ProductList.catalogue
    assert pages.page_and_epoch(0, 10) is None  # outside a request: nothing to stand for
    validity.request_started()
    try:
        with transaction.atomic():
            assert pages.page_and_epoch(0, 10) is None  # an uncommitted epoch must not stand
        rows, total = pages.page_and_epoch(0, 10)
        assert (rows, total) == pages.page(0, 10)
        assert pages.page_and_epoch(0, 10) is None  # read: the request's epoch stays the one read
        with CaptureQueriesContext(connection) as captured:
            validity.current()
        assert captured.captured_queries == []
    finally:
        validity.request_finished()


def test_a_page_read_ahead_with_the_epoch_row_gone_leaves_the_read_to_the_check(catalogue_reader):
    ValidityEpoch.objects.all().delete()  # manage.py flush

    response = HttpsClient().get("/api/v1/products", **bearer(catalogue_reader))

    assert response.status_code == 200
    assert ValidityEpoch.objects.count() == 1  # made again by the check's own read


def test_with_the_cache_off_every_lookup_reads_the_database(settings, transactional_db):
    settings.TOKEN_CACHE = "off"
    new_client = make_client(scopes=["products:read"])
    stored = checksum(issue_token(HttpsClient(), new_client))

    assert validity.current() is None
    assert [lookup_queries(stored)[1] for _ in range(3)] == [1, 1, 1]


def test_missing_tokens_are_not_remembered(remembering):
    assert [lookup_queries("0" * 64) for _ in range(2)] == [(None, 1), (None, 1)]


def test_a_worker_remembers_at_most_size_rows_forgetting_the_oldest_first(remembering):
    http, new_client = HttpsClient(), make_client(scopes=["products:read"])
    first, second, third = (checksum(issue_token(http, new_client)) for _ in range(3))
    lookup = hotpath.RememberedLookup(hotpath._access_token_with_client, size=2)

    def queries(stored: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert lookup.get(stored).token_checksum == stored
        return len(rows_read(captured))

    assert [queries(first), queries(second), queries(third)] == [1, 1, 1]  # the third pushes out the first
    assert [queries(third), queries(second), queries(first)] == [0, 0, 1]


# --- the epoch file shared by processes -----------------------------------------------------------


def test_an_advance_in_one_process_is_seen_by_another(tmp_path):
    path = tmp_path / "epoch"
    here, elsewhere = EpochFile(path), EpochFile(path)  # two processes mapping the same file
    before = here.read()

    elsewhere.advance()

    assert here.read() != before
    assert here.read() == elsewhere.read()


def test_a_new_file_starts_from_a_random_value(tmp_path):
    assert EpochFile(tmp_path / "one").read()[1] != EpochFile(tmp_path / "two").read()[1]


def test_a_file_replaced_under_a_worker_is_noticed(tmp_path):
    path = tmp_path / "epoch"
    worker = EpochFile(path)
    before = worker.read()
    os.unlink(path)
    EpochFile(path).advance()  # var/ cleaned, then a revocation in another process

    assert worker.read() != before
    assert worker.read() == EpochFile(path).read()


def read_only_file_system(path, flags, *args):
    raise OSError(errno.EROFS, "Read-only file system", str(path))


def test_an_epoch_file_that_cannot_be_opened_is_a_database_error(tmp_path, monkeypatch):
    # A read-only directory beside the SQLite file: an OSError, which the token endpoint answered
    # with a 500 while /readyz said 503. As unusable as the database: OperationalError, a 503.
    monkeypatch.setattr(validity.os, "open", read_only_file_system)
    with pytest.raises(OperationalError, match="Read-only file system"):
        EpochFile(tmp_path / "epoch").read()


def test_the_token_endpoint_answers_503_when_the_epoch_file_cannot_be_opened(
    settings, transactional_db, monkeypatch
):
    settings.TOKEN_CACHE = "local"
    new_client = make_client(scopes=["products:read"])
    epoch_file = validity._epoch("default").epoch_file
    monkeypatch.setattr(epoch_file, "_inode", None)  # as in a worker that has not mapped it yet
    monkeypatch.setattr(validity.os, "open", read_only_file_system)

    response = request_token(HttpsClient(), new_client)

    assert response.status_code == 503, response.content
    assert response.json()["error"] == "temporarily_unavailable"
    assert response["Retry-After"]


# --- every worker of a live server ----------------------------------------------------------------


@pytest.fixture
def server(django_db_setup, django_db_blocker, remembering):
    with django_db_blocker.unblock(), LiveServer(workers=2, TOKEN_CACHE=remembering) as live:
        yield live


def statuses(server, token: str, count: int = 32) -> set[int]:
    """The statuses of `count` catalogue requests from 8 threads: served by both workers."""
    return {response.status_code for response in catalogue_answers(server, token, count)}


def post_as(server, new_client, path: str, data: dict) -> requests.Response:
    """A form POST to the live server with the client's id and secret (HTTP Basic)."""
    credentials = (new_client.application.client_id, new_client.client_secret)
    return requests.post(f"{server.url}{path}", data=data, auth=credentials, verify=server.verify, timeout=30)


@pytest.fixture
def client_and_token(server) -> tuple:
    """A client and a token of it that every worker of `server` has accepted (and remembers)."""
    new_client = make_client(scopes=["products:read"])
    issued = post_as(server, new_client, "/oauth2/token", {"grant_type": "client_credentials"})
    token = issued.json()["access_token"]
    assert statuses(server, token) == {200}
    return new_client, token


@pytest.mark.live
def test_every_worker_remembers_a_token_until_the_epoch_changes(server, client_and_token):
    _, token = client_and_token

    # Deleted behind the services' back (no signal): the workers still remember it...
    AccessToken.objects.filter(token_checksum=checksum(token))._raw_delete(connection.alias)
    assert statuses(server, token) == {200}

    # ...until anything that invalidates tokens commits: then no worker accepts it.
    validity.tokens_or_clients_changed()
    assert statuses(server, token) == {401}


@pytest.mark.live
def test_a_token_revoked_through_one_worker_is_refused_by_every_worker_at_once(server, client_and_token):
    new_client, token = client_and_token

    revoked = post_as(server, new_client, "/oauth2/revoke", {"token": token})

    assert revoked.status_code == 200
    assert statuses(server, token) == {401}


@pytest.mark.live
def test_a_client_disabled_by_an_operator_loses_its_tokens_in_every_worker(server, client_and_token):
    new_client, token = client_and_token

    services.set_client_enabled(application=new_client.application, enabled=False, actor="tests")

    assert statuses(server, token) == {401}


def token_statuses(server, new_client, count: int = 32, **form) -> list[int]:
    """The statuses of `count` token requests from 8 threads: served by both workers."""
    data = {"grant_type": "client_credentials", **form}
    with ThreadPoolExecutor(8) as pool:
        return list(
            pool.map(lambda _: post_as(server, new_client, "/oauth2/token", data).status_code, range(count))
        )


@pytest.mark.live
def test_no_worker_issues_a_token_on_what_it_remembered_once_the_client_changed(server):
    new_client = make_client(scopes=["products:read", "orders:read"])
    assert set(token_statuses(server, new_client, scope="orders:read")) == {200}  # every worker remembers
    tokens = AccessToken.objects.filter(application=new_client.application)

    services.update_client(
        application=new_client.application, actor="tests", changed_fields=[], scopes=["products:read"]
    )
    assert not tokens.exists()  # the orders:read tokens went with the scope
    assert set(token_statuses(server, new_client, scope="orders:read")) == {400}  # invalid_scope
    services.set_client_enabled(application=new_client.application, enabled=False, actor="tests")
    assert set(token_statuses(server, new_client, count=10)) == {401}  # 10: below the failure limit

    assert not tokens.exists()  # none issued since
    failures = AuditEvent.objects.filter(application=new_client.application, kind=AuditEvent.Kind.AUTH_FAILED)
    assert failures.count() == 10  # each refusal recorded once


@pytest.mark.parametrize("epoch", ["assumed", "read"])
def test_a_token_issued_while_a_scope_is_taken_does_not_keep_it(shared, monkeypatch, epoch):
    """A scope withdrawn while a token with it is being issued: the token is refused, or issued
    before the withdrawal and narrowed by it, never left holding the scope the client lost. On the
    epoch its worker last saw, or on one it read first (a worker's first request, or a request
    served again)."""
    http = HttpsClient()
    new_client = make_client(scopes=["products:read", "orders:read"])
    issue_token(http, new_client, scope="orders:read")  # the client remembered, the epoch seen
    if epoch == "read":
        monkeypatch.setattr(validity, "assume_shared_epoch", lambda using="default": False)
    withdrawn, withdraw = threading.Event(), services._withdraw

    def withdraw_then_linger(application, scopes):
        narrowed = withdraw(application, scopes)
        withdrawn.set()
        time.sleep(1)  # the epoch changed, the tokens narrowed: not committed yet
        return narrowed

    monkeypatch.setattr(services, "_withdraw", withdraw_then_linger)
    with ThreadPoolExecutor(1) as other:
        taking = other.submit(in_another_worker, lambda: take_scope(new_client.application, new_client))
        assert withdrawn.wait(10)
        response = request_token(http, new_client, scope="orders:read")
        taking.result()

    holding = AccessToken.objects.filter(application=new_client.application, scope__contains="orders:read")
    assert (response.status_code, holding.count()) == (400, 0)


def test_a_scope_taken_while_changes_are_held_off_waits_for_the_token(shared, monkeypatch):
    """The third attempt of a token request whose epoch kept moving holds changes off: a scope
    withdrawn as it looks its client up waits until the token is written, then narrows it too."""
    http = HttpsClient()
    new_client = make_client(scopes=["products:read", "orders:read"])
    issue_token(http, new_client, scope="orders:read")
    monkeypatch.setattr(validity.SharedEpoch, "stood_on", lambda epoch: -1)  # two stale attempts
    withdrawn, withdraw = threading.Event(), services._withdraw

    def withdraw_then_linger(application, scopes):
        narrowed = withdraw(application, scopes)
        withdrawn.set()
        time.sleep(1)  # not committed yet
        return narrowed

    monkeypatch.setattr(services, "_withdraw", withdraw_then_linger)
    lookup, taking = hotpath.client_with_scope_names, []

    def lookup_as_a_scope_is_taken(client_id):
        if connection.in_atomic_block and not taking:  # the third attempt, changes held off
            other = ThreadPoolExecutor(1)
            taking.append(other.submit(in_another_worker, lambda: take_scope(new_client.application, None)))
            withdrawn.wait(0.5)  # held off: it cannot withdraw before this request commits
        return lookup(client_id)

    monkeypatch.setattr(hotpath, "client_with_scope_names", lookup_as_a_scope_is_taken)
    response = request_token(http, new_client, scope="orders:read")
    taking[0].result(timeout=30)

    assert response.status_code == 200  # issued before the withdrawal...
    holding = AccessToken.objects.filter(application=new_client.application, scope__contains="orders:read")
    assert holding.count() == 0  # ...and narrowed by it
