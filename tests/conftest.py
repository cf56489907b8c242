"""Fixtures shared by the whole suite.

Tests ask for `db` or `transactional_db` (not the django_db marker): both are extended here so
that every test starts with the default scopes bootstrap seeds.
"""

import os
from pathlib import Path
from types import SimpleNamespace

import hypothesis
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache

from authserver import hotpath, services, throttling
from authserver.scopes import forget_scope_catalogue
from tests import helpers

# The generated tests draw the same examples on every run (Hypothesis's own profile for CI, which it
# picks only where a CI variable is set), as the schemathesis one has a fixed seed: a run fails for
# the code, never for a new draw. `pytest --hypothesis-profile=default` explores further.
hypothesis.settings.load_profile("ci")


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """One test database per pytest process: a file for SQLite, so live servers can share it."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        name = str(settings.VAR_DIR / f"test-db-{os.getpid()}.sqlite3")
    else:
        name = f"test_{database['NAME']}_{os.getpid()}"
    database.setdefault("TEST", {})["NAME"] = name
    yield
    # Beside a SQLite test database: the validity epoch its processes shared (authserver/validity.py).
    Path(f"{name}-epoch").unlink(missing_ok=True)


@pytest.fixture
def db(db):
    services.ensure_default_scopes()


@pytest.fixture
def transactional_db(transactional_db):
    services.ensure_default_scopes()


@pytest.fixture(autouse=True)
def _empty_cache():
    # The shared cache, the scope catalogue and the token and client rows each process keeps
    # (rolled-back and flushed rows send no signal).
    cache.clear()
    throttling.counters.cache_clear()  # a new ProcessCounters: no counts (without REDIS_URL)
    forget_scope_catalogue()
    hotpath.forget_remembered_rows()
    yield
    cache.clear()
    throttling.counters.cache_clear()
    forget_scope_catalogue()
    hotpath.forget_remembered_rows()


@pytest.fixture(autouse=True)
def one_throttle_window(monkeypatch):
    """The throttles' clock (authserver/throttling.py) stands still in this process: a test's attempts
    all count in one fixed window even when it runs across a window's end (attempts split between two
    windows reach the limit in neither: a flaky failure in CI). Tests of the windows themselves set
    the time again; a live server's clock is its own (servers.wait_for_time_left_in_window)."""
    now = throttling.time.time()
    monkeypatch.setattr(throttling, "time", SimpleNamespace(time=lambda: now))


@pytest.fixture
def client():
    """Django's test client, speaking HTTPS as every client of this server does."""
    return helpers.HttpsClient()


@pytest.fixture
def new_client(db):
    """A client-credentials client holding products:read and orders:read."""
    return helpers.make_client(scopes=["products:read", "orders:read"])


@pytest.fixture
def console(db) -> helpers.HttpsClient:
    """An operator (staff, in the operators group) signed in to the management console."""
    operator = get_user_model().objects.create_user("olivia", password="x", is_staff=True)
    operator.groups.add(services.ensure_operators_group())
    http = helpers.HttpsClient()
    http.force_login(operator)
    return http
