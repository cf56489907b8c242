"""The PostgreSQL backend (config/postgresql): health checks skip a connection that just worked; the
hot path's statements share a cursor kept per connection."""

import json
from collections.abc import Iterator

import psycopg
import pytest
import requests
from django.db import NotSupportedError, OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from config.postgresql.base import HEALTH_CHECK_BYPASS_SECONDS
from fooapi.models import Product
from fooapi.services import seed_demo_catalogue
from tests.helpers import HttpsClient, basic, bearer, issue_token, make_client, post_form, request_token
from tests.servers import LiveServer

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's backend")


@pytest.fixture
def pings(monkeypatch) -> list[bool]:
    answered = []
    wrapper_class = type(connections["default"])
    real_is_usable = wrapper_class.is_usable

    def counted(wrapper):
        answered.append(real_is_usable(wrapper))
        return answered[-1]

    monkeypatch.setattr(wrapper_class, "is_usable", counted)
    return answered


def next_request() -> None:
    connection.health_check_done = False  # what Django does when a request starts


def test_a_connection_used_a_moment_ago_is_not_pinged(db, pings):
    assert connection.health_check_enabled
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    next_request()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    assert pings == []


def test_an_idle_connection_is_pinged_before_its_first_query(db, pings):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection._cursor_opened_at -= HEALTH_CHECK_BYPASS_SECONDS + 1  # idle since

    next_request()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    next_request()
    with connection.cursor() as cursor:  # used a moment ago again
        cursor.execute("SELECT 1")

    assert pings == [True]


def test_a_connection_that_failed_is_pinged_even_if_just_used(db, pings):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.errors_occurred = True  # as Django's error wrapper marks a connection error

    next_request()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    assert pings == [True]
    connection.errors_occurred = False


# --- the cursor kept for the hot path's statements ------------------------------------------------


def kept_cursor_answer(sql: str = "SELECT 1") -> tuple[object, list]:
    with connection.kept_cursor() as cursor:
        cursor.execute(sql)
        return cursor, cursor.fetchall()


def test_the_kept_cursor_is_the_same_cursor_every_time(db):
    first, first_rows = kept_cursor_answer()
    second, second_rows = kept_cursor_answer("SELECT 2")

    assert second is first and not first.cursor.closed  # not closed by leaving the block
    assert (first_rows, second_rows) == ([(1,)], [(2,)])


def test_while_queries_are_logged_each_statement_gets_a_new_logging_cursor(db):
    kept, _ = kept_cursor_answer()
    with CaptureQueriesContext(connection) as captured:
        logging, _ = kept_cursor_answer("SELECT 3")

    assert logging is not kept and logging.cursor.closed  # the debug cursor, closed as usual
    assert [query["sql"] for query in captured.captured_queries] == ["SELECT 3"]
    assert kept_cursor_answer()[0] is kept


def test_execute_wrappers_see_the_kept_cursors_statements(db):
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    kept_cursor_answer()
    with connection.execute_wrapper(wrapper):
        kept_cursor_answer("SELECT 4")

    assert seen == ["SELECT 4"]


def test_a_new_connection_gets_a_new_kept_cursor(transactional_db):
    kept, _ = kept_cursor_answer()
    connection.close()

    again, rows = kept_cursor_answer("SELECT 5")

    assert again is not kept and rows == [(5,)]
    assert again.cursor.connection is connection.connection


def test_the_kept_cursor_counts_as_use_for_the_health_check_window(db, pings):
    kept_cursor_answer()
    connection._cursor_opened_at -= HEALTH_CHECK_BYPASS_SECONDS + 1
    next_request()
    kept_cursor_answer()  # idle: pinged first
    next_request()
    kept_cursor_answer()  # used a moment ago by the kept cursor: not pinged

    assert pings == [True]


def other_connection() -> psycopg.Connection:
    return psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        user=connection.settings_dict["USER"],
        host=connection.settings_dict["HOST"],
        port=connection.settings_dict["PORT"],
        autocommit=True,
    )


def test_a_connection_dropped_while_idle_is_replaced_before_the_kept_cursor_is_used(transactional_db):
    kept, _ = kept_cursor_answer()
    with other_connection() as other:
        other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    connection._cursor_opened_at -= HEALTH_CHECK_BYPASS_SECONDS + 1  # idle since
    next_request()

    again, rows = kept_cursor_answer("SELECT 6")

    assert rows == [(6,)] and again is not kept


# --- prepared statements PostgreSQL forgot under a worker ----------------------------------------

PREPARED_READ = "SELECT name FROM review_prepared WHERE id = 1"


@pytest.fixture
def review_prepared(transactional_db) -> Iterator[None]:
    """A table of one row, read by PREPARED_READ, which the kept cursor has run prepared (autocommit)."""
    with other_connection() as other:
        other.execute("CREATE TABLE review_prepared (id integer PRIMARY KEY, name varchar(10))")
        other.execute("INSERT INTO review_prepared VALUES (1, 'one')")
    try:
        for _ in range(6):  # prepared from the fifth run on (prepare_threshold)
            kept_cursor_answer(PREPARED_READ)
        assert prepared_statements() >= 1
        yield
    finally:
        with other_connection() as other:
            other.execute("DROP TABLE review_prepared")


def prepared_statements() -> int:
    """How many statements the server has prepared for this connection (read without preparing)."""
    result = connection.connection.pgconn.exec_(b"SELECT count(*) FROM pg_prepared_statements")
    return int(result.get_value(0, 0))


def invalidate_prepared_statements(invalidated_by: str) -> None:
    if invalidated_by == "a migration":  # another process, while the worker keeps its connection
        with other_connection() as other:
            other.execute("ALTER TABLE review_prepared ALTER COLUMN name TYPE varchar(20)")
    else:  # behind the driver's back, as a pooler resets the server connection
        connection.connection.pgconn.exec_(invalidated_by.encode())


INVALIDATIONS = ["a migration", "DISCARD ALL", "DEALLOCATE ALL"]


@pytest.mark.parametrize("invalidated_by", INVALIDATIONS)
def test_a_statement_whose_prepared_statement_was_forgotten_runs_again(review_prepared, invalidated_by):
    invalidate_prepared_statements(invalidated_by)

    assert kept_cursor_answer(PREPARED_READ)[1] == [("one",)]  # not a DatabaseError: not a 500
    assert not connection.errors_occurred  # nothing for Django to replace the connection for
    for _ in range(6):  # prepared again, on the server this time
        assert kept_cursor_answer(PREPARED_READ)[1] == [("one",)]
    assert prepared_statements() >= 1


@pytest.mark.parametrize("invalidated_by", INVALIDATIONS)
def test_inside_a_transaction_a_forgotten_prepared_statement_is_an_operational_error(
    review_prepared, invalidated_by
):
    invalidate_prepared_statements(invalidated_by)

    with pytest.raises(OperationalError), transaction.atomic():  # the transaction was aborted: a 503
        kept_cursor_answer(PREPARED_READ)

    assert kept_cursor_answer(PREPARED_READ)[1] == [("one",)]  # the rollback forgot them all
    connection.close_if_unusable_or_obsolete()  # what Django does when that request ends
    next_request()
    assert kept_cursor_answer(PREPARED_READ)[1] == [("one",)]


def test_another_unsupported_statement_is_not_run_again(review_prepared):
    unsupported = "SELECT count(*) FROM review_prepared FOR UPDATE"  # FeatureNotSupported too

    with pytest.raises(NotSupportedError, match="FOR UPDATE is not allowed"):
        kept_cursor_answer(unsupported)

    assert prepared_statements() >= 1  # nothing deallocated for it


# --- a client's request on a connection whose prepared statements were forgotten -----------------

FULL_CLIENT_SCOPES = ["products:read", "orders:read", "orders:write", "introspection", "registration"]


class HotRequests:
    """One client, holding every scope, that makes each hot request kind; `make(kind)` is one
    request of that kind (each revocation revokes another of its tokens)."""

    def __init__(self):
        seed_demo_catalogue()
        self.http = HttpsClient(raise_request_exception=False)  # a 500 as the client gets it
        self.client = make_client(scopes=FULL_CLIENT_SCOPES, name="everything")
        self.credentials = basic(self.client.application.client_id, self.client.client_secret)
        self.token = issue_token(self.http, self.client)
        self.to_revoke = [issue_token(self.http, self.client) for _ in range(10)]
        self.product = Product.objects.first()
        self.registered = 0

    def make(self, kind: str):
        if kind == "token":
            return request_token(self.http, self.client)
        if kind == "introspection":
            return post_form(self.http, "/oauth2/introspect", {"token": self.token}, **self.credentials)
        if kind == "products":
            return self.http.get("/api/v1/products", **bearer(self.token))
        if kind == "order":
            lines = [{"product": self.product.pk, "quantity": 1}]
            body = json.dumps({"lines": lines})
            return self.http.post(
                "/api/v1/orders", body, content_type="application/json", **bearer(self.token)
            )
        if kind == "revocation":
            return post_form(self.http, "/oauth2/revoke", {"token": self.to_revoke.pop()}, **self.credentials)
        self.registered += 1
        return self.post_json("/oauth2/register", {"client_name": f"service {self.registered}"})

    def post_json(self, path: str, body: dict):
        return self.http.post(path, json.dumps(body), content_type="application/json", **bearer(self.token))


def request_ends() -> None:
    connection.close_if_unusable_or_obsolete()  # what Django does when a request ends
    next_request()


HOT_REQUESTS = ["token", "introspection", "products", "order", "revocation", "registration"]


@pytest.mark.parametrize("kind", HOT_REQUESTS)
def test_a_request_after_a_poolers_deallocate_all_succeeds(transactional_db, kind):
    requests = HotRequests()
    for _ in range(6):  # its statements prepared (prepare_threshold)
        assert requests.make(kind).status_code in (200, 201)
        request_ends()
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")  # behind the driver's back, as a pooler

    response = requests.make(kind)

    assert response.status_code in (200, 201), response.content
    request_ends()
    assert requests.make(kind).status_code in (200, 201)


@pytest.mark.parametrize("kind", ["order", "revocation", "registration"])  # each writes in a transaction
def test_a_request_whose_transaction_meets_a_forgotten_statement_is_a_503_and_the_next_succeeds(
    transactional_db, kind
):
    requests = HotRequests()
    for _ in range(6):
        assert requests.make(kind).status_code in (200, 201)
        request_ends()
    forgotten_before = []

    def forget_before_the_transactions_first_statement(execute, sql, params, many, context):
        if connection.in_atomic_block and not forgotten_before:
            forgotten_before.append(sql)
            connection.connection.pgconn.exec_(b"DEALLOCATE ALL")  # as a pooler, between two statements
        return execute(sql, params, many, context)

    with connection.execute_wrapper(forget_before_the_transactions_first_statement):
        response = requests.make(kind)

    assert forgotten_before
    assert response.status_code == 503, response.content
    assert response.json()["error"] == "temporarily_unavailable"
    assert response["Retry-After"] == "5"
    request_ends()
    assert requests.make(kind).status_code in (200, 201)


@pytest.mark.live
def test_a_live_worker_answers_while_a_migration_changes_a_column_its_prepared_statements_read(
    transactional_db,
):
    everything = make_client(scopes=FULL_CLIENT_SCOPES, name="everything")
    seed_demo_catalogue()
    epoch_type = "ALTER TABLE authserver_validityepoch ALTER COLUMN value TYPE {}"  # read by every request
    with LiveServer(workers=1) as server:

        def call(method: str, path: str, **arguments) -> requests.Response:
            arguments.setdefault("auth", (everything.application.client_id, everything.client_secret))
            return requests.request(method, server.url + path, verify=server.verify, timeout=30, **arguments)

        def answers() -> list[int]:
            issued = call("POST", "/oauth2/token", data={"grant_type": "client_credentials"})
            token = issued.json()["access_token"]
            bearer_token = {"Authorization": f"Bearer {token}"}
            return [
                issued.status_code,
                call("POST", "/oauth2/introspect", data={"token": token}).status_code,
                call("GET", "/api/v1/products", auth=None, headers=bearer_token).status_code,
                call("POST", "/oauth2/revoke", data={"token": token}).status_code,
            ]

        for _ in range(6):  # the one worker's statements prepared
            assert answers() == [200] * 4
        try:
            with other_connection() as other:  # as a deploy's migration, from another process
                other.execute(epoch_type.format("numeric"))
            assert answers() == [200] * 4  # "cached plan must not change result type" no more
        finally:
            with other_connection() as other:
                other.execute(epoch_type.format("bigint"))
        assert answers() == [200] * 4
        assert "Traceback" not in server.output()
