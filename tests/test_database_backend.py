"""The PostgreSQL backend (config/postgresql): health checks skip a connection that just worked; the
hot path's statements share a cursor kept per connection."""

import psycopg
import pytest
from django.db import DatabaseError, connection, connections
from django.test.utils import CaptureQueriesContext

from config.postgresql.base import HEALTH_CHECK_BYPASS_SECONDS

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


@pytest.mark.parametrize("invalidated_by", ["a migration", "a pooler's DISCARD ALL"])
def test_a_prepared_statement_invalidated_under_a_worker_fails_one_request(transactional_db, invalidated_by):
    with other_connection() as other:
        other.execute("CREATE TABLE review_prepared (id integer PRIMARY KEY, name varchar(10))")
        other.execute("INSERT INTO review_prepared VALUES (1, 'one')")
    try:
        for _ in range(6):  # prepared from the fifth run on (prepare_threshold)
            kept_cursor_answer("SELECT name FROM review_prepared WHERE id = 1")
        if invalidated_by == "a migration":  # another process, while the worker keeps its connection
            with other_connection() as other:
                other.execute("ALTER TABLE review_prepared ALTER COLUMN name TYPE varchar(20)")
        else:  # behind the driver's back, as a pooler resets the server connection
            connection.connection.pgconn.exec_(b"DISCARD ALL")
        with pytest.raises(DatabaseError):
            kept_cursor_answer("SELECT name FROM review_prepared WHERE id = 1")
        connection.close_if_unusable_or_obsolete()  # what Django does when that request ends

        next_request()
        assert kept_cursor_answer("SELECT name FROM review_prepared WHERE id = 1")[1] == [("one",)]
    finally:
        with other_connection() as other:
            other.execute("DROP TABLE review_prepared")
