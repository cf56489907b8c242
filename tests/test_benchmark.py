"""The benchmark (`make bench`) keeps working, and what it made fast still behaves the same.

The bench runs here for a second per row: a smoke test that the command, its load generators and
its report do not rot. Nothing here judges speed.
"""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import IntegrityError, OperationalError, connection, connections, transaction
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext
from django.urls import resolve
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from authserver import hotpath, oauth, services
from authserver.models import Application, AuditEvent
from authserver.oauth import TOKEN_CHARACTERS, generate_access_token
from bench.run import parse_wrk_output, server_environment
from tests.helpers import (
    Terminal,
    basic,
    bearer,
    issue_token,
    make_client,
    post_form,
    request_token,
    stored_token,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def run_bench(*arguments: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    results = tmp_path / "bench.json"
    name = f"smoke-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    environment = {**os.environ, "DATABASE_URL": os.environ.get("DATABASE_URL", "")}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--seconds", "1", "--warmup", "0", "--connections", "4",
         "--name", name, "--drop", "--json", str(results), *arguments],
        cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed, json.loads(results.read_text())


@pytest.mark.live
def test_bench_measures_every_row_against_the_floor_and_counts_queries(tmp_path):
    completed, results = run_bench(tmp_path=tmp_path)

    rows = {row["kind"]: row for row in results["rows"]}
    assert set(rows) == {"floor", "token", "introspect", "products"}
    for row in rows.values():
        assert row["requests"] > 0
        assert row["errors"] == 0, row
        assert row["p50_ms"] <= row["p99_ms"]
    assert rows["floor"]["ratio"] == 1.0
    # Each row against the floor measured just before and just after it.
    before, after = rows["token"]["floor_around"]
    assert before > 0 and after > 0
    assert rows["token"]["ratio"] == pytest.approx(
        rows["token"]["requests_per_second"] / ((before + after) / 2)
    )
    assert rows["introspect"]["floor_around"][0] == after
    assert results["queries"]["floor"] == 0
    # Steady state, by what workers remember: with TOKEN_CACHE=local introspection reads nothing
    # and the catalogue only its page; with shared (the default) each request reads the epoch, the
    # catalogue in its page's statement, a token in its INSERT's (on SQLite in its transaction);
    # with off every lookup reads. On PostgreSQL a token and its audit event are one statement.
    token, introspect, products = {"local": (1, 0, 1), "shared": (1, 1, 1), "off": (2, 2, 2)}[
        settings.TOKEN_CACHE
    ]
    if connection.vendor == "postgresql":
        assert results["queries"]["token"] == token
    else:  # BEGIN, the two INSERTs, COMMIT besides
        assert results["queries"]["token"] >= token + 3
    assert results["queries"]["introspect"] == introspect
    assert results["queries"]["products"] == products
    assert "load generator: wrk" in completed.stdout
    assert "| POST /oauth2/token" in completed.stdout and "\u00d7 floor" in completed.stdout


@pytest.mark.live
def test_bench_names_the_python_generator_when_it_uses_it(tmp_path):
    completed, results = run_bench("--generator", "python", "--rows", "floor,token", tmp_path=tmp_path)

    assert "load generator: bench/loadgen.py" in completed.stdout
    assert [row["kind"] for row in results["rows"]] == ["floor", "token"]
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in results["rows"])


def test_bench_server_runs_with_production_settings_and_the_limiter_on():
    environment = server_environment("sqlite:////tmp/x.sqlite3", 8123, workers=2)
    assert environment["DEBUG"] == "off" and environment["TLS"] == "off"
    assert environment["BIND"] == "127.0.0.1:8123" and environment["WEB_CONCURRENCY"] == "2"
    assert environment["THROTTLE"] == "on"
    assert int(environment["THROTTLE_TOKEN_REQUESTS_PER_MINUTE"]) >= 10**9


def test_a_wrk_run_without_its_summary_line_is_an_error():
    assert parse_wrk_output('BENCH_RESULT {"requests": 3}\n') == {"requests": 3}
    with pytest.raises(SystemExit):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


# --- queries per request kind (what the bench reports), without transaction control -----------


def statements(captured) -> list[str]:
    return [
        query["sql"]
        for query in captured.captured_queries
        if not query["sql"].startswith(TRANSACTION_CONTROL)
    ]


def test_the_floor_tries_no_other_url_and_the_api_none_of_the_authorization_servers():
    """The floor is a bare view: its URL is Django's first pattern, so it pays for no other
    resolution (docs/benchmarks.md item 17). The API's prefix comes next, so an API call tries
    only the probes before it, and a token request one prefix more (item 28)."""
    assert [len(each) for each in resolve("/healthz").tried] == [1]
    assert [str(each[0].pattern) for each in resolve("/api/v1/products").tried] == [
        "healthz",
        "readyz",
        "api/v1/",
    ]
    tried = [" ".join(str(part.pattern) for part in each) for each in resolve("/oauth2/token").tried]
    assert tried == ["healthz", "readyz", "api/v1/", " ^oauth2/token/?$"]


def test_a_token_request_reads_the_client_once_and_writes_token_and_audit_event(client, new_client):
    request_token(client, new_client)  # per-process caches
    with CaptureQueriesContext(connection) as captured:
        response = request_token(client, new_client)

    assert response.status_code == 200
    sql = statements(captured)
    assert "authserver_scope" in sql[0]  # the client's scopes come with the client
    if connection.vendor == "postgresql":  # both rows in one statement, atomic by itself
        assert [statement.split()[0] for statement in sql] == ["SELECT", "WITH"]
        assert 'INSERT INTO "oauth2_provider_accesstoken"' in sql[1]
        assert 'INSERT INTO "authserver_auditevent"' in sql[1]
        assert not any(query["sql"].startswith("BEGIN") for query in captured.captured_queries)
    else:
        assert [statement.split()[0] for statement in sql] == ["SELECT", "INSERT", "INSERT"]
        assert "oauth2_provider_accesstoken" in sql[1] and "authserver_auditevent" in sql[2]


def test_introspection_reads_the_client_and_the_token_once_each(client, new_client):
    resource_server = make_client(scopes=["introspection"], name="resource server")
    token = issue_token(client, new_client)
    credentials = basic(resource_server.application.client_id, resource_server.client_secret)
    post_form(client, "/oauth2/introspect", {"token": token}, **credentials)
    with CaptureQueriesContext(connection) as captured:
        response = post_form(client, "/oauth2/introspect", {"token": token}, **credentials)

    assert response.json()["active"] is True
    assert len(statements(captured)) == 2


def test_a_catalogue_page_reads_the_token_and_then_the_page_with_its_count(client, new_client):
    token = issue_token(client, new_client)
    client.get("/api/v1/products", **bearer(token))
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/api/v1/products", **bearer(token))

    assert response.status_code == 200
    sql = statements(captured)
    assert len(sql) == 2
    assert "oauth2_provider_accesstoken" in sql[0]
    assert "fooapi_product" in sql[1] and '(SELECT COUNT(U0."id")' in sql[1]  # the count, in the page's


# --- the compiled lookups return what the ORM returns, read afresh every time -----------------------


def test_the_client_lookup_returns_the_client_with_its_scopes(new_client):
    application = new_client.application
    loaded = hotpath.client_with_scope_names(application.client_id)

    stored = Application.objects.get(pk=application.pk)
    assert {field.attname: getattr(loaded, field.attname) for field in Application._meta.concrete_fields} == {
        field.attname: getattr(stored, field.attname) for field in Application._meta.concrete_fields
    }
    with CaptureQueriesContext(connection) as captured:
        assert loaded.allowed_scope_names == ["orders:read", "products:read"]
    assert captured.captured_queries == []
    assert hotpath.client_with_scope_names("no such client") is None


def test_a_client_without_scopes_has_none(db):
    application = make_client(scopes=[]).application
    assert hotpath.client_with_scope_names(application.client_id).allowed_scope_names == []


def test_the_token_lookup_returns_the_token_with_its_client(client, new_client):
    token = issue_token(client, new_client)
    stored = AccessToken.objects.get(application=new_client.application)

    loaded = hotpath.access_token_with_client(stored.token_checksum)

    assert loaded.pk == stored.pk and loaded.expires == stored.expires and loaded.scope == stored.scope
    assert loaded.resource == stored.resource
    with CaptureQueriesContext(connection) as captured:
        assert loaded.application.client_id == new_client.application.client_id
        assert loaded.user is None
    assert captured.captured_queries == []
    assert token  # the raw token itself is never stored
    assert hotpath.access_token_with_client("0" * 64) is None


def test_a_scope_taken_from_a_client_is_refused_at_the_next_request(client, new_client):
    issue_token(client, new_client, scope="orders:read")
    services.update_client(
        application=new_client.application, actor="tests", changed_fields=[], scopes=["products:read"]
    )

    response = request_token(client, new_client, scope="orders:read")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_revocation_and_disabling_take_effect_at_the_next_request(client, new_client):
    revoked, kept = issue_token(client, new_client), issue_token(client, new_client)
    assert client.get("/api/v1/products", **bearer(revoked)).status_code == 200

    services.revoke_token(token=stored_token(revoked), actor="tests")
    assert client.get("/api/v1/products", **bearer(revoked)).status_code == 401
    assert client.get("/api/v1/products", **bearer(kept)).status_code == 200

    services.set_client_enabled(application=new_client.application, enabled=False, actor="tests")
    assert client.get("/api/v1/products", **bearer(kept)).status_code == 401
    assert request_token(client, new_client).status_code == 401


# --- the audit event: one per token, in the token's transaction ----------------------------------


def test_every_token_has_its_audit_event(client, new_client):
    for _ in range(3):
        issue_token(client, new_client)
    events = AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_ISSUED, application=new_client.application)
    assert events.count() == AccessToken.objects.filter(application=new_client.application).count() == 3
    event = events.first()
    assert event.client_id == new_client.application.client_id
    assert event.remote_addr == "127.0.0.1"
    assert event.detail == {"scope": "orders:read products:read", "expires_in": 3600}


def test_no_token_is_stored_when_its_audit_event_cannot_be(client, transactional_db, monkeypatch):
    # The database refuses the audit row (it names a client that does not exist: a foreign key
    # violation, checked at commit); the token written with it, in the same statement or
    # transaction, is not kept. Committed for real: no test transaction around it.
    new_client = make_client(scopes=["products:read"])

    def event_of_a_missing_client(**what):
        event = real_audit_event(**what)
        event.application_id = 10**12
        return event

    real_audit_event = services.audit_event
    monkeypatch.setattr(services, "audit_event", event_of_a_missing_client)
    with pytest.raises(IntegrityError):
        request_token(client, new_client)
    assert not AccessToken.objects.filter(application=new_client.application).exists()
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_ISSUED).exists()


sqlite_only = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="SQLite's write path"
)


postgresql_only = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="PostgreSQL's synchronous_commit"
)


@pytest.fixture
def commit_settings(transactional_db):
    """What synchronous_commit was when each access-token row's transaction committed, as
    [(operation, setting)]: a deferred constraint trigger runs just before its transaction commits,
    under the transaction's own settings (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE test_commit_setting (id serial PRIMARY KEY, operation text, setting text);"
            " CREATE FUNCTION test_record_commit_setting() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN INSERT INTO test_commit_setting (operation, setting)"
            " VALUES (TG_OP, current_setting('synchronous_commit')); RETURN NULL; END $$;"
            " CREATE CONSTRAINT TRIGGER test_record_commit_setting AFTER INSERT OR DELETE"
            ' ON "oauth2_provider_accesstoken" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW'
            " EXECUTE FUNCTION test_record_commit_setting()"
        )

    def recorded() -> list[tuple[str, str]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT operation, setting FROM test_commit_setting ORDER BY id")
            return cursor.fetchall()

    yield recorded
    with connection.cursor() as cursor:
        cursor.execute(
            'DROP TRIGGER test_record_commit_setting ON "oauth2_provider_accesstoken";'
            " DROP FUNCTION test_record_commit_setting(); DROP TABLE test_commit_setting"
        )


def session_synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@postgresql_only
def test_on_postgresql_a_token_issue_commits_without_waiting_for_the_disk(commit_settings, client):
    new_client = make_client(scopes=["products:read"])
    token = issue_token(client, new_client)
    assert commit_settings() == [("INSERT", "off")]
    assert session_synchronous_commit() == "on"  # that transaction's only: the connection's is unchanged

    # The token and its event are there at once, for every reader.
    assert stored_token(token).application_id == new_client.application.pk
    assert AuditEvent.objects.filter(
        kind=AuditEvent.Kind.TOKEN_ISSUED, application=new_client.application
    ).exists()
    response = client.get("/api/v1/products", **bearer(token))
    assert response.status_code == 200

    # A revocation waits for the disk: a revoked token must stay revoked.
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    assert post_form(client, "/oauth2/revoke", {"token": token}, **credentials).status_code == 200
    assert commit_settings() == [("INSERT", "off"), ("DELETE", "on")]
    assert client.get("/api/v1/products", **bearer(token)).status_code == 401


@postgresql_only
def test_on_postgresql_token_issues_wait_for_the_disk_when_configured_to(commit_settings, client, settings):
    settings.TOKEN_SYNCHRONOUS_COMMIT = True
    issue_token(client, make_client(scopes=["products:read"]))
    assert commit_settings() == [("INSERT", "on")]


@postgresql_only
def test_on_postgresql_a_token_written_inside_a_transaction_commits_with_it(commit_settings):
    # The portal's test token is written inside the registration's transaction: that commit decides.
    new_client = make_client(scopes=["products:read"])
    with transaction.atomic():
        hotpath.insert_issued_token(
            *token_and_event(new_client.application, raw_token="t" * 30, issued=timezone.now())
        )
        assert session_synchronous_commit() == "on"
    assert commit_settings() == [("INSERT", "on")]


@postgresql_only
def test_on_postgresql_a_token_saved_through_save_commits_without_waiting_too(commit_settings, client):
    heard = []

    def receiver(sender, instance, **kwargs):
        heard.append(instance)

    new_client = make_client(scopes=["products:read"])
    post_save.connect(receiver, sender=AuditEvent, weak=False, dispatch_uid="commit-test")
    try:
        issue_token(client, new_client)
    finally:
        post_save.disconnect(sender=AuditEvent, dispatch_uid="commit-test")
    # Through atomic() and save(), not the compiled statement.
    assert [event.kind for event in heard] == [AuditEvent.Kind.TOKEN_ISSUED]
    assert commit_settings() == [("INSERT", "off")]
    assert session_synchronous_commit() == "on"


def token_and_event(application, *, raw_token: str, issued) -> tuple[AccessToken, AuditEvent]:
    access_token = AccessToken(
        scope="products:read", expires=issued + timedelta(hours=1), application=application
    )
    access_token._raw_token = raw_token  # DOT's set_token_value, hashed at rest
    event = services.audit_event(kind=AuditEvent.Kind.TOKEN_ISSUED, actor="tests", application=application)
    event.created, event.detail = issued, {"scope": "products:read", "expires_in": 3600}
    return access_token, event


def stored_rows(model, *primary_keys) -> list[tuple]:
    # Each column as an SQL literal of what SQLite holds (timestamps: their text), id left out.
    columns = ", ".join(
        f'quote("{field.column}")' for field in model._meta.local_concrete_fields if not field.primary_key
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT {columns} FROM "{model._meta.db_table}" WHERE id IN (%s, %s) ORDER BY id',  # noqa: S608
            primary_keys,
        )
        return cursor.fetchall()


@sqlite_only
def test_on_sqlite_a_token_is_written_on_the_driver_as_the_orm_writes_it(transactional_db, monkeypatch):
    # Outside a transaction, with no query log (every request of a server): sqlite3's own cursor,
    # BEGIN IMMEDIATE, INSERT, INSERT, COMMIT. The rows are the ones save() writes, column by column.
    new_client = make_client(scopes=["products:read"])
    issued = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: issued)  # created, updated: auto_now fields
    assert hotpath._runs_on_the_driver(connection)
    fast = token_and_event(new_client.application, raw_token="driver-" + "x" * 23, issued=issued)
    hotpath.insert_issued_token(*fast)
    assert not connection.in_atomic_block and not connection.connection.in_transaction
    orm = token_and_event(new_client.application, raw_token="orm-" + "x" * 26, issued=issued)
    orm[0].save()
    orm[1].save()

    names = [field.name for field in AccessToken._meta.local_concrete_fields if not field.primary_key]
    fast_token, orm_token = (
        dict(zip(names, row, strict=True)) for row in stored_rows(AccessToken, fast[0].pk, orm[0].pk)
    )
    assert fast_token.pop("token_checksum") == f"'{hashlib.sha256(b'driver-' + b'x' * 23).hexdigest()}'"
    orm_token.pop("token_checksum")
    assert fast_token == orm_token  # user, application, expires, scope, resource, created...: the same text
    assert fast_token["expires"] == f"'{issued.replace(tzinfo=None) + timedelta(hours=1)}'"
    fast_event, orm_event = stored_rows(AuditEvent, fast[1].pk, orm[1].pk)
    assert fast_event == orm_event
    assert AccessToken.objects.get(pk=fast[0].pk).expires == issued + timedelta(hours=1)


@sqlite_only
def test_on_sqlite_the_driver_path_runs_the_statements_the_query_log_shows(transactional_db):
    new_client = make_client(scopes=["products:read"])
    with CaptureQueriesContext(connection) as captured:  # logged: through Django's cursor and atomic()
        assert not hotpath._runs_on_the_driver(connection)
        hotpath.insert_issued_token(
            *token_and_event(new_client.application, raw_token="l" * 30, issued=timezone.now())
        )
    assert [query["sql"].split()[0] for query in captured.captured_queries] == [
        "BEGIN",
        "INSERT",
        "INSERT",
        "COMMIT",
    ]
    with transaction.atomic():  # the portal's test token: inside the registration's transaction
        assert not hotpath._runs_on_the_driver(connection)


@sqlite_only
def test_on_sqlite_a_failed_write_rolls_back_and_leaves_the_connection_usable(transactional_db):
    new_client = make_client(scopes=["products:read"])
    access_token, event = token_and_event(new_client.application, raw_token="f" * 30, issued=timezone.now())
    event.application_id = 10**12  # a foreign key violation, found at COMMIT
    with pytest.raises(IntegrityError):  # Django's error, translated from sqlite3's
        hotpath.insert_issued_token(access_token, event)
    assert not connection.connection.in_transaction
    assert not AccessToken.objects.filter(application=new_client.application).exists()

    hotpath.insert_issued_token(
        *token_and_event(new_client.application, raw_token="g" * 30, issued=timezone.now())
    )
    assert AccessToken.objects.filter(application=new_client.application).count() == 1


@sqlite_only
def test_on_sqlite_a_connection_whose_rollback_fails_is_closed(transactional_db):
    # As atomic() does: a connection left inside a failed transaction is not used again.
    new_client = make_client(scopes=["products:read"])
    connection.ensure_connection()
    real = connection.connection

    class FailingCursor:
        def __init__(self):
            self.cursor = real.cursor()

        def execute(self, sql, params=()):
            if sql in ("COMMIT", "ROLLBACK"):
                raise sqlite3.OperationalError(f"{sql} failed (test)")
            return self.cursor.execute(sql, params)

        def close(self):
            self.cursor.close()

    class FailingDriver:
        in_transaction = property(lambda self: real.in_transaction)

        def cursor(self):
            return FailingCursor()

        def __getattr__(self, name):
            return getattr(real, name)

    wrapper = connections["default"]
    wrapper.connection = FailingDriver()
    try:
        with pytest.raises(OperationalError, match="COMMIT failed"):  # Django's, translated
            hotpath.insert_issued_token(
                *token_and_event(new_client.application, raw_token="r" * 30, issued=timezone.now())
            )
        assert wrapper.connection is None  # closed (the real one too): the next query opens another
    finally:
        if wrapper.connection is not None:
            wrapper.connection = real
    assert not AccessToken.objects.filter(application=new_client.application).exists()


def test_a_token_and_its_event_written_together_are_saved_instances(new_client):
    access_token = AccessToken(
        scope="products:read", expires=timezone.now() + timedelta(hours=1), application=new_client.application
    )
    access_token._raw_token = "together-" + "x" * 21  # DOT's set_token_value, hashed at rest
    event = services.audit_event(
        kind=AuditEvent.Kind.TOKEN_ISSUED, actor="tests", application=new_client.application
    )

    hotpath.insert_issued_token(access_token, event)

    assert not access_token._state.adding and not event._state.adding
    stored = AccessToken.objects.get(pk=access_token.pk)
    assert (
        stored.token == "" and stored.token_checksum == hashlib.sha256(b"together-" + b"x" * 21).hexdigest()
    )
    assert AuditEvent.objects.get(pk=event.pk).application == new_client.application


def test_audit_events_go_through_save_while_something_listens_to_it(new_client):
    heard = []

    def receiver(sender, instance, created, **kwargs):
        heard.append((instance.pk, created))

    post_save.connect(receiver, sender=AuditEvent)
    try:
        event = services.record_event(kind=AuditEvent.Kind.AUTH_FAILED, actor="tests", client_id="x")
    finally:
        post_save.disconnect(receiver, sender=AuditEvent)
    assert heard == [(event.pk, True)]


def test_a_recorded_event_is_a_saved_instance(new_client):
    event = services.record_event(
        kind=AuditEvent.Kind.AUTH_FAILED, actor="tests", client_id="x\x00y", remote_addr="::1"
    )
    assert event.pk is not None and not event._state.adding
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.client_id, stored.remote_addr, stored.detail) == ("xy", "::1", {})


# --- tokens, writers, cleanup, bulk loading ------------------------------------------------------


def test_access_tokens_keep_oauthlibs_format_and_never_repeat():
    tokens = {generate_access_token(None) for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(len(token) == 30 and set(token) <= set(TOKEN_CHARACTERS) for token in tokens)
    assert set("".join(tokens)) == set(TOKEN_CHARACTERS)  # every character is drawn


def test_every_token_character_is_equally_likely_and_short_draws_are_topped_up(monkeypatch):
    # Each character stands for exactly 4 of the 248 bytes kept; the 8 bytes above are dropped.
    kept = bytes(range(256)).translate(oauth._BYTE_TO_CHARACTER, oauth._BIASED_BYTES).decode()
    assert len(kept) == 248 and {kept.count(character) for character in TOKEN_CHARACTERS} == {4}
    # A draw of mostly dropped bytes is topped up by another draw.
    draws = iter([bytes([255] * 50 + list(range(10))), bytes(range(60))])
    monkeypatch.setattr(oauth.secrets, "token_bytes", lambda size: next(draws))
    assert generate_access_token(None) == (TOKEN_CHARACTERS[:10] + TOKEN_CHARACTERS[:20])


@pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="SQLite's single writer only"
)
def test_token_writers_on_sqlite_take_turns(transactional_db):
    second_in = threading.Event()

    def second_writer():
        with hotpath.queued_writes():
            second_in.set()
        connection.close()

    with hotpath.queued_writes():
        other = threading.Thread(target=second_writer)
        other.start()
        assert not second_in.wait(0.3)  # queued behind the first
    assert second_in.wait(5)
    other.join()


@pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="SQLite's single writer only"
)
def test_a_writer_already_in_a_transaction_does_not_queue(transactional_db):
    # It holds SQLite's write lock already (the portal issues a token inside its own transaction):
    # waiting behind a queued writer, who waits for that lock, would stall both.
    holder_in, release = threading.Event(), threading.Event()

    def holder():
        with hotpath.queued_writes():
            holder_in.set()
            release.wait(5)
        connection.close()

    other = threading.Thread(target=holder)
    other.start()
    assert holder_in.wait(5)
    try:
        started = time.monotonic()
        with transaction.atomic(), hotpath.queued_writes():
            waited = time.monotonic() - started
        assert waited < 0.3
    finally:
        release.set()
        other.join()


def make_tokens(application, *, count: int, expires) -> list[AccessToken]:
    tokens = [
        AccessToken(
            application=application, token_checksum=f"{application.pk}-{expires:%s}-{n}", expires=expires
        )
        for n in range(count)
    ]
    return AccessToken.objects.bulk_create(tokens)


def test_cleanup_deletes_expired_tokens_in_batches_and_keeps_the_rest(new_client, django_user_model):
    application = new_client.application
    expired = make_tokens(application, count=7, expires=timezone.now() - timedelta(minutes=1))
    valid = make_tokens(application, count=2, expires=timezone.now() + timedelta(hours=1))
    kept_for_its_refresh_token = expired.pop()
    RefreshToken.objects.create(
        user=django_user_model.objects.create_user("owner"),
        application=application,
        token="r",
        access_token=kept_for_its_refresh_token,
    )
    progress = []

    deleted = services.clear_expired_tokens(
        batch_size=2, pause=0, progress=lambda *done: progress.append(done)
    )

    assert deleted == 6
    assert progress == [(2, 6), (4, 6), (6, 6)]
    remaining = set(AccessToken.objects.values_list("pk", flat=True))
    assert remaining == {token.pk for token in valid} | {kept_for_its_refresh_token.pk}


def test_the_cleanup_command_shows_progress_and_reports(new_client, capsys):
    make_tokens(new_client.application, count=3, expires=timezone.now() - timedelta(seconds=1))
    terminal = Terminal()  # the bar is drawn on a terminal only

    call_command("clear_expired_tokens", "--batch-size", "2", stderr=terminal)

    assert "Deleted 3 expired access tokens" in capsys.readouterr().out
    assert "3/3" in terminal.getvalue() and "#" in terminal.getvalue()
    assert not AccessToken.objects.exists()


def test_bench_load_tokens_stores_tokens_for_a_client_of_its_own(transactional_db, capsys):
    call_command("bench_load_tokens", "--count", "25", "--batch-size", "10", "--expired")

    application = Application.objects.get(name="benchmark: bulk-loaded tokens")
    tokens = AccessToken.objects.filter(application=application)
    assert tokens.count() == 25
    assert tokens.filter(expires__lt=timezone.now()).count() == 25
    assert len(set(tokens.values_list("token_checksum", flat=True))) == 25
    assert "Loaded 25 expired access tokens" in capsys.readouterr().out
    assert services.clear_expired_tokens(batch_size=10, pause=0) == 25


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's maintenance")
def test_bench_load_tokens_leaves_the_table_vacuumed_analyzed_and_checkpointed(transactional_db):
    # Otherwise autovacuum and the checkpointer work on the new rows during the measurement after it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT checkpoints_req FROM pg_stat_bgwriter")
        (checkpoints_before,) = cursor.fetchone()

    call_command("bench_load_tokens", "--count", "25", "--batch-size", "10")

    with connection.cursor() as cursor:
        cursor.execute("SELECT checkpoints_req FROM pg_stat_bgwriter")
        assert cursor.fetchone()[0] > checkpoints_before
        cursor.execute(
            "SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL FROM pg_stat_user_tables"
            " WHERE relname = %s",
            [AccessToken._meta.db_table],
        )
        assert cursor.fetchone() == (True, True)
