"""The PostgreSQL backend (config/postgresql): health checks skip a connection that just worked."""

import pytest
from django.db import connection, connections

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
