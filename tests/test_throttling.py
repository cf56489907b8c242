"""Brute force and floods are throttled (authserver/throttling.py, settings.THROTTLE_LIMITS).

Failed client authentication is counted per client id and address and per address, token requests
per address, failed logins per username and address and per address (a session already signed in
is no success), sign-up attempts per address, clients registered with initial access tokens per
registering client (an hour and a day). Over a limit: 429 with Retry-After (JSON on machine
paths, a page in the browser); a caller who knows only a client id or a username cannot lock its
owner out from the owner's own address.
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import redis
import requests
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from oauth2_provider.models import AccessToken

from authserver import throttling
from authserver.models import Application, AuditEvent
from tests.helpers import basic, bearer, issue_token, make_client, post_form
from tests.servers import PROJECT_DIR, LiveServer, RedisServer, wait_for_time_left_in_window

ATTACKER = "203.0.113.66"
OWNER = "198.51.100.7"
PASSWORD = "correct horse battery staple 42"


def token_request(http, client_id: str, client_secret: str, address: str):
    credentials = basic(client_id, client_secret)
    return post_form(
        http, "/oauth2/token", {"grant_type": "client_credentials"}, REMOTE_ADDR=address, **credentials
    )


def assert_throttled_json(response, *, at_most: int):
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "too_many_requests"
    assert response["Cache-Control"] == "no-store"
    assert 0 < int(response["Retry-After"]) <= at_most + 1
    # The wait the header gives is the one the description tells a person.
    assert f" {response['Retry-After']} second" in response.json()["error_description"]


def limit(name: str) -> throttling.Limit:
    return throttling.Limit.from_setting(name)


def test_the_limits_are_the_documented_settings():
    """README "What the server promises" quotes these numbers."""
    assert django_settings.THROTTLE_LIMITS == {
        "token_requests_per_address": (6000, 60),
        "client_auth_failures_per_client_and_address": (10, 300),
        "client_auth_failures_per_address": (50, 300),
        "login_failures_per_user_and_address": (5, 900),
        "login_failures_per_address": (30, 900),
        "signups_per_address": (10, 3600),
        "password_resets_per_address": (10, 3600),
        "password_resets_per_email": (3, 3600),
        "registrations_per_registrar_per_hour": (100, 3600),
        "registrations_per_registrar_per_day": (500, 86400),
    }
    assert (
        limit("client_auth_failures_per_client_and_address")
        == throttling.CLIENT_AUTH_FAILURES_PER_CLIENT_AND_ADDRESS
    )


# --- client authentication at the token endpoint -------------------------------------------------


def test_failed_secrets_for_one_client_lock_that_client_at_that_address_only(client, new_client):
    client_id, allowed = (
        new_client.application.client_id,
        limit("client_auth_failures_per_client_and_address"),
    )
    for _ in range(allowed.count):
        assert token_request(client, client_id, "guess", ATTACKER).status_code == 401

    # The right secret from the attacker's address is refused unchecked...
    assert_throttled_json(token_request(client, client_id, new_client.client_secret, ATTACKER), at_most=300)
    # ...while the client, from its own address, is not locked out.
    assert token_request(client, client_id, new_client.client_secret, OWNER).status_code == 200


def test_failures_across_many_client_ids_lock_the_address(client, new_client):
    per_address = limit("client_auth_failures_per_address")
    for attempt in range(per_address.count):
        response = token_request(client, f"made-up-{attempt}", "guess", ATTACKER)
        assert response.status_code == 401

    response = token_request(client, new_client.application.client_id, new_client.client_secret, ATTACKER)
    assert_throttled_json(response, at_most=300)
    assert token_request(client, "yet-another", "guess", OWNER).status_code == 401


def test_a_throttled_attempt_is_not_checked_and_not_audited(client, new_client):
    client_id = new_client.application.client_id
    for _ in range(limit("client_auth_failures_per_client_and_address").count):
        token_request(client, client_id, "guess", ATTACKER)
    failures = new_client.application.audit_events.filter(kind="auth_failed").count()

    assert token_request(client, client_id, "guess", ATTACKER).status_code == 429
    assert new_client.application.audit_events.filter(kind="auth_failed").count() == failures


def test_the_lock_ends_with_its_window(client, new_client, monkeypatch):
    client_id = new_client.application.client_id
    now = 1_800_000_000.0
    monkeypatch.setattr(throttling, "time", SimpleNamespace(time=lambda: now))
    for _ in range(limit("client_auth_failures_per_client_and_address").count):
        token_request(client, client_id, "guess", ATTACKER)
    response = token_request(client, client_id, new_client.client_secret, ATTACKER)
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])

    now += retry_after
    assert token_request(client, client_id, new_client.client_secret, ATTACKER).status_code == 200


def test_a_forged_x_forwarded_for_does_not_dodge_the_limit(client, new_client):
    """Without a trusted proxy (TRUSTED_PROXY_COUNT=0), X-Forwarded-For is the caller's own text."""
    client_id = new_client.application.client_id
    for attempt in range(limit("client_auth_failures_per_client_and_address").count):
        response = post_form(
            client,
            "/oauth2/token",
            {"grant_type": "client_credentials"},
            REMOTE_ADDR=ATTACKER,
            HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}",
            **basic(client_id, "guess"),
        )
        assert response.status_code == 401
    assert token_request(client, client_id, new_client.client_secret, ATTACKER).status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(client, new_client, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    client_id = new_client.application.client_id

    def via_proxy(secret: str, caller: str):
        return post_form(
            client,
            "/oauth2/token",
            {"grant_type": "client_credentials"},
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=f"192.0.2.1, {caller}",  # the first hop is the caller's own text
            **basic(client_id, secret),
        )

    for _ in range(limit("client_auth_failures_per_client_and_address").count):
        assert via_proxy("guess", ATTACKER).status_code == 401
    assert via_proxy(new_client.client_secret, ATTACKER).status_code == 429
    assert via_proxy(new_client.client_secret, OWNER).status_code == 200


def test_token_requests_per_address_are_limited(client, new_client, monkeypatch):
    monkeypatch.setattr(
        throttling, "TOKEN_REQUESTS_PER_ADDRESS", throttling.Limit("token_requests_per_address", 5, 60)
    )
    client_id, secret = new_client.application.client_id, new_client.client_secret
    for _ in range(5):
        assert token_request(client, client_id, secret, ATTACKER).status_code == 200

    assert_throttled_json(token_request(client, client_id, secret, ATTACKER), at_most=60)
    assert token_request(client, client_id, secret, OWNER).status_code == 200


# One IPv6 subscriber, one /64: a new address for every guess is no way around a limit.
ATTACKERS_64 = [f"2001:db8:66:1::{number:x}" for number in range(1, 200)]
OWNER_64 = "2001:db8:66:2::7"


@pytest.mark.parametrize(
    ("address", "counted"),
    [
        ("203.0.113.66", "203.0.113.66"),
        ("2001:db8:66:1::1", "2001:db8:66:1::/64"),
        ("2001:db8:66:1:ffff:ffff:ffff:ffff", "2001:db8:66:1::/64"),
        ("::ffff:203.0.113.66", "203.0.113.66"),
        ("", ""),
        ("unix:/run/gunicorn.sock", "unix:/run/gunicorn.sock"),
    ],
)
def test_a_limit_counts_an_ipv6_address_by_its_64_network(address, counted):
    assert throttling.counted_address(address) == counted


def test_failed_secrets_from_one_ipv6_64_lock_the_client_there_only(client, new_client):
    client_id, allowed = (
        new_client.application.client_id,
        limit("client_auth_failures_per_client_and_address"),
    )
    for address in ATTACKERS_64[: allowed.count]:
        assert token_request(client, client_id, "guess", address).status_code == 401

    next_address = ATTACKERS_64[allowed.count]
    assert_throttled_json(
        token_request(client, client_id, new_client.client_secret, next_address), at_most=300
    )
    assert token_request(client, client_id, new_client.client_secret, OWNER_64).status_code == 200
    # The audit trail keeps each address as it was.
    failed = AuditEvent.objects.filter(kind=AuditEvent.Kind.AUTH_FAILED).values_list("remote_addr", flat=True)
    assert sorted(failed) == sorted(ATTACKERS_64[: allowed.count])


def test_token_requests_from_one_ipv6_64_are_limited_together(client, new_client, monkeypatch):
    monkeypatch.setattr(
        throttling, "TOKEN_REQUESTS_PER_ADDRESS", throttling.Limit("token_requests_per_address", 5, 60)
    )
    client_id, secret = new_client.application.client_id, new_client.client_secret
    for address in ATTACKERS_64[:5]:
        assert token_request(client, client_id, secret, address).status_code == 200

    assert_throttled_json(token_request(client, client_id, secret, ATTACKERS_64[5]), at_most=60)
    assert token_request(client, client_id, secret, OWNER_64).status_code == 200


def test_failed_client_authentication_at_introspection_and_revocation_counts_too(client, db):
    resource_server = make_client(scopes=["introspection"], name="resource server")
    client_id = resource_server.application.client_id
    for attempt in range(limit("client_auth_failures_per_client_and_address").count):
        path = "/oauth2/introspect" if attempt % 2 else "/oauth2/revoke"
        response = post_form(client, path, {"token": "x"}, REMOTE_ADDR=ATTACKER, **basic(client_id, "guess"))
        assert response.status_code == 401, response.content

    for path in ("/oauth2/introspect", "/oauth2/revoke"):
        response = post_form(
            client,
            path,
            {"token": "x"},
            REMOTE_ADDR=ATTACKER,
            **basic(client_id, resource_server.client_secret),
        )
        assert_throttled_json(response, at_most=300)


def test_throttling_can_be_switched_off(client, new_client, settings):
    settings.THROTTLE_ENABLED = False
    client_id = new_client.application.client_id
    for _ in range(limit("client_auth_failures_per_client_and_address").count + 5):
        token_request(client, client_id, "guess", ATTACKER)
    assert token_request(client, client_id, new_client.client_secret, ATTACKER).status_code == 200


class RacingCache:
    """A cache where another worker creates, or the window expires, the counter between our calls."""

    def __init__(self, *, counter_created_by_another: bool):
        self.values, self.another = {}, counter_created_by_another

    def incr(self, key):
        if key not in self.values:
            raise ValueError(key)
        self.values[key] += 1
        return self.values[key]

    def add(self, key, value, timeout):
        # Too late: the other worker's counter exists now (or it expired again right after).
        if self.another:
            self.values[key] = 4
        return False

    def set(self, key, value, timeout):
        self.values[key] = value


@pytest.mark.parametrize(("counter_created_by_another", "counted"), [(True, 5), (False, 1)])
def test_counting_survives_another_worker_creating_the_counter(counter_created_by_another, counted):
    """With REDIS_URL the counters are shared (CacheCounters)."""
    racing = RacingCache(counter_created_by_another=counter_created_by_another)
    limit = throttling.Limit("race", count=10, seconds=60)

    assert throttling.CacheCounters(racing).count(limit, ("198.51.100.7",), window=1) == counted
    assert list(racing.values.values()) == [counted]


@pytest.mark.parametrize(
    "redis_url", ["127.0.0.1:6379", "hunter2@127.0.0.1:6379/7", "redis://h:6379,h2:6379"]
)
def test_a_redis_url_that_is_no_redis_url_stops_the_server_with_one_line(tmp_path, redis_url):
    """Every cache call failed: the server ran, logged "cache unreachable" and limited nothing."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60,
        env={**os.environ, "VAR_DIR": str(tmp_path), "REDIS_URL": redis_url}, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == "Configuration error: REDIS_URL: expected redis://, rediss:// or unix:// URLs\n"
    assert "hunter2" not in result.stderr  # Redis's password may be in the URL


def test_a_client_id_of_any_text_is_counted(client, db):
    """Counter keys are hashed: spaces, control characters or kilobytes in a client id count like any."""
    odd_id = "a client id\twith spaces\x01and " + "x" * 3000
    for _ in range(limit("client_auth_failures_per_client_and_address").count):
        assert token_request(client, odd_id, "guess", ATTACKER).status_code == 401
    assert token_request(client, odd_id, "guess", ATTACKER).status_code == 429


# --- clients registered with an initial access token (POST /oauth2/register) --------------------


def register(http, initial_access_token: str, address: str = OWNER, metadata=None):
    body = json.dumps({"client_name": "ci run"} if metadata is None else metadata)
    return http.post(
        "/oauth2/register",
        body,
        content_type="application/json",
        REMOTE_ADDR=address,
        **bearer(initial_access_token),
    )


@pytest.fixture
def registrar(db):
    """A client holding the `registration` scope: its tokens are initial access tokens."""
    return make_client(scopes=["registration"], name="registrar")


@pytest.fixture
def few_registrations(monkeypatch):
    """Registration limits a test reaches quickly: 3 an hour, 5 a day."""
    monkeypatch.setattr(
        throttling,
        "REGISTRATIONS_PER_REGISTRAR_PER_HOUR",
        throttling.Limit("registrations_per_registrar_per_hour", 3, 3600),
    )
    monkeypatch.setattr(
        throttling,
        "REGISTRATIONS_PER_REGISTRAR_PER_DAY",
        throttling.Limit("registrations_per_registrar_per_day", 5, 86400),
    )


def registered_state() -> tuple:
    return (
        Application.objects.count(),
        AccessToken.objects.count(),
        AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CREATED).count(),
    )


def test_a_leaked_initial_access_token_registers_at_most_the_hourly_limit(client, registrar):
    initial_access_token = issue_token(client, registrar)
    for _ in range(limit("registrations_per_registrar_per_hour").count):
        assert register(client, initial_access_token).status_code == 201

    before = registered_state()
    throttled = register(client, initial_access_token, ATTACKER)
    assert_throttled_json(throttled, at_most=3600)
    assert registered_state() == before  # no client, secret, registration token or audit event
    # Counted for the registering client, whatever token or address it uses...
    assert register(client, issue_token(client, registrar), ATTACKER).status_code == 429
    # ...and for that client alone.
    other_registrar = make_client(scopes=["registration"], name="another registrar")
    assert register(client, issue_token(client, other_registrar)).status_code == 201


def test_a_registrar_registers_at_most_the_daily_limit(client, registrar, few_registrations, monkeypatch):
    """Refusals count for nothing: bad metadata, and registrations over the hourly limit."""
    now = 1_800_000_000.0  # 8 hours into a UTC day
    monkeypatch.setattr(throttling, "time", SimpleNamespace(time=lambda: now))
    initial_access_token = issue_token(client, registrar)
    for _ in range(6):
        assert register(client, initial_access_token, metadata={"scope": "orders:write"}).status_code == 400
    for _ in range(3):
        assert register(client, initial_access_token).status_code == 201
    for _ in range(6):
        assert_throttled_json(register(client, initial_access_token), at_most=3600)

    now += 3600  # the next hour: the day's last two
    for _ in range(2):
        assert register(client, initial_access_token).status_code == 201
    throttled = register(client, initial_access_token)
    assert_throttled_json(throttled, at_most=86400)
    assert int(throttled["Retry-After"]) > 3600  # until the day's end, not the hour's
    registered = Application.objects.filter(registration_source=Application.RegistrationSource.DCR)
    assert registered.count() == 5

    now += int(throttled["Retry-After"])
    assert register(client, initial_access_token).status_code == 201


def test_registrations_are_not_limited_with_throttling_off(client, registrar, few_registrations, settings):
    settings.THROTTLE_ENABLED = False
    initial_access_token = issue_token(client, registrar)
    for _ in range(6):
        assert register(client, initial_access_token).status_code == 201


def test_with_redis_every_worker_counts_the_registrations(client, registrar, few_registrations, settings):
    initial_access_token = issue_token(client, registrar)
    with RedisServer() as redis_server:
        redis_cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_server.url}
        settings.CACHES = {"default": redis_cache}
        assert isinstance(throttling.counters(), throttling.CacheCounters)
        for _ in range(3):
            assert register(client, initial_access_token).status_code == 201
            throttling.counters.cache_clear()  # the next request served by another worker

        assert_throttled_json(register(client, initial_access_token), at_most=3600)
        stored = redis.Redis(port=redis_server.port).keys("*throttle:registrations_per_registrar_per_*")
        assert len(stored) == 2  # the hour's and the day's counter


# --- counters in each worker's memory (no REDIS_URL) ---------------------------------------------

WINDOW_LIMIT = throttling.Limit("test", count=3, seconds=60)


def test_without_redis_each_worker_counts_in_its_own_memory(client, new_client):
    counters = throttling.counters()
    assert isinstance(counters, throttling.ProcessCounters)
    client_id = new_client.application.client_id
    assert token_request(client, client_id, "guess", ATTACKER).status_code == 401

    limit = throttling.CLIENT_AUTH_FAILURES_PER_CLIENT_AND_ADDRESS
    assert counters.used([(limit, (client_id, ATTACKER), limit._window()[0])]) == [1]


def test_a_window_is_forgotten_when_the_next_one_starts():
    counters = throttling.ProcessCounters()
    assert [counters.count(WINDOW_LIMIT, ("a",), window=7) for _ in range(3)] == [1, 2, 3]
    assert counters.used([(WINDOW_LIMIT, ("a",), 7), (WINDOW_LIMIT, ("b",), 7)]) == [3, 0]

    assert counters.count(WINDOW_LIMIT, ("a",), window=8) == 1
    assert counters.used([(WINDOW_LIMIT, ("a",), 7), (WINDOW_LIMIT, ("a",), 8)]) == [0, 1]


def test_a_reset_counter_starts_again():
    counters = throttling.ProcessCounters()
    counters.count(WINDOW_LIMIT, ("a",), window=1)
    counters.count(WINDOW_LIMIT, ("b",), window=1)
    counters.reset(WINDOW_LIMIT, ("a",), window=1)
    assert counters.used([(WINDOW_LIMIT, ("a",), 1), (WINDOW_LIMIT, ("b",), 1)]) == [0, 1]


def test_a_flood_of_new_keys_forgets_the_oldest_third():
    counters = throttling.ProcessCounters(size=30)
    addresses = [(f"192.0.2.{number}",) for number in range(31)]
    for address in addresses:
        counters.count(WINDOW_LIMIT, address, window=1)
    assert counters.used([(WINDOW_LIMIT, address, 1) for address in addresses]) == [0] * 10 + [1] * 21


def test_kilobytes_of_client_id_are_counted_by_their_digest():
    counters = throttling.ProcessCounters()
    long_id, other_long_id = "x" * 5000 + "1", "x" * 5000 + "2"
    counters.count(WINDOW_LIMIT, (long_id, ATTACKER), window=1)
    counters.count(WINDOW_LIMIT, (long_id, ATTACKER), window=1)
    counters.count(WINDOW_LIMIT, (other_long_id, ATTACKER), window=1)

    assert counters.used(
        [(WINDOW_LIMIT, (long_id, ATTACKER), 1), (WINDOW_LIMIT, (other_long_id, ATTACKER), 1)]
    ) == [2, 1]
    _, counts = counters._windows[WINDOW_LIMIT]
    assert all(len(repr(key)) < 200 for key in counts)


# --- logins and sign-ups in the browser --------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_password_hashes(settings):
    # Dozens of login attempts per test; the production hasher would take most of a minute.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser(username="operator", email="", password=PASSWORD)


@pytest.fixture
def developer(db):
    return get_user_model().objects.create_user(username="dev", email="dev@example.com", password=PASSWORD)


LOGIN_PAGES = [("/admin/login/", "operator"), ("/accounts/login/", "developer")]


def login(http, path: str, username: str, password: str, address: str):
    return http.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def assert_throttled_page(response, *, at_most: int):
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    assert 0 < int(response["Retry-After"]) <= at_most + 1
    assert b"Too many attempts" in response.content


@pytest.mark.parametrize(("path", "account"), LOGIN_PAGES)
def test_failed_logins_lock_that_username_at_that_address_only(client, request, path, account):
    user = request.getfixturevalue(account)
    for _ in range(limit("login_failures_per_user_and_address").count):
        assert login(client, path, user.username, "wrong", ATTACKER).status_code == 200  # the form again

    assert_throttled_page(login(client, path, user.username, PASSWORD, ATTACKER), at_most=900)
    # Usernames are counted case-insensitively: changing the case is no way around the lock.
    assert login(client, path, user.username.upper(), PASSWORD, ATTACKER).status_code == 429
    assert login(client, path, user.username, PASSWORD, OWNER).status_code == 302


@pytest.mark.parametrize(("path", "account"), LOGIN_PAGES)
def test_a_username_in_compatibility_characters_is_no_way_around_the_lock(client, request, path, account):
    """The login form normalizes a username (NFKC): written in fullwidth letters it logs in to the
    same account, and is counted as that username."""
    user = request.getfixturevalue(account)
    for _ in range(limit("login_failures_per_user_and_address").count):
        login(client, path, user.username, "wrong", ATTACKER)

    fullwidth = "".join(chr(ord(character) + 0xFEE0) for character in user.username)
    assert_throttled_page(login(client, path, fullwidth, PASSWORD, ATTACKER), at_most=900)


@pytest.mark.parametrize(("path", "account"), LOGIN_PAGES)
def test_failed_logins_across_usernames_lock_the_address(client, request, path, account):
    user = request.getfixturevalue(account)
    for attempt in range(limit("login_failures_per_address").count):
        login(client, path, f"nobody-{attempt}", "wrong", ATTACKER)

    assert_throttled_page(login(client, path, user.username, PASSWORD, ATTACKER), at_most=900)
    assert login(client, path, user.username, PASSWORD, OWNER).status_code == 302


@pytest.mark.parametrize(("path", "account"), LOGIN_PAGES)
def test_failed_logins_from_one_ipv6_64_lock_the_username_there(client, request, path, account):
    user = request.getfixturevalue(account)
    allowed = limit("login_failures_per_user_and_address").count
    for address in ATTACKERS_64[:allowed]:
        assert login(client, path, user.username, "wrong", address).status_code == 200

    assert_throttled_page(login(client, path, user.username, PASSWORD, ATTACKERS_64[allowed]), at_most=900)
    assert login(client, path, user.username, PASSWORD, OWNER_64).status_code == 302


@pytest.mark.parametrize(("path", "account"), LOGIN_PAGES)
def test_a_successful_login_clears_the_usernames_failures(client, request, path, account):
    user = request.getfixturevalue(account)
    allowed = limit("login_failures_per_user_and_address").count
    for _ in range(allowed - 1):
        login(client, path, user.username, "wrong", OWNER)
    assert login(client, path, user.username, PASSWORD, OWNER).status_code == 302
    client.logout()

    for _ in range(allowed - 1):
        login(client, path, user.username, "wrong", OWNER)
    assert login(client, path, user.username, PASSWORD, OWNER).status_code == 302


@pytest.fixture
def signed_in_developer(client, db):
    """A session anyone can have: a developer who signed up to the portal."""
    someone = get_user_model().objects.create_user(username="someone", email="", password=PASSWORD)
    client.force_login(someone)
    return someone


def assert_still_signed_in_as(client, user):
    assert client.session["_auth_user_id"] == str(user.pk)


def test_failed_logins_from_a_signed_in_session_lock_the_username(client, operator, signed_in_developer):
    """The console checks passwords over any session: one signed in before the attempt is no
    success, and resets nothing."""
    for _ in range(limit("login_failures_per_user_and_address").count):
        assert login(client, "/admin/login/", operator.username, "wrong", ATTACKER).status_code == 200
        assert_still_signed_in_as(client, signed_in_developer)

    # The right password from that session is refused unchecked while the lock lasts.
    assert_throttled_page(login(client, "/admin/login/", operator.username, PASSWORD, ATTACKER), at_most=900)
    assert_still_signed_in_as(client, signed_in_developer)
    assert login(client, "/admin/login/", operator.username, PASSWORD, OWNER).status_code == 302


def test_failed_logins_from_a_signed_in_session_lock_the_address(client, operator, signed_in_developer):
    for attempt in range(limit("login_failures_per_address").count):
        assert login(client, "/admin/login/", f"nobody-{attempt}", "wrong", ATTACKER).status_code == 200

    assert_throttled_page(login(client, "/admin/login/", operator.username, PASSWORD, ATTACKER), at_most=900)
    assert_still_signed_in_as(client, signed_in_developer)


def test_the_portal_login_checks_no_password_for_a_signed_in_session(client, developer, signed_in_developer):
    """It sends a signed-in developer to the portal (redirect_authenticated_user): nothing to guess."""
    for password in ["wrong", PASSWORD]:
        response = login(client, "/accounts/login/", developer.username, password, ATTACKER)
        assert (response.status_code, response["Location"]) == (302, "/portal/")
        assert_still_signed_in_as(client, signed_in_developer)


def test_an_operator_logging_in_over_a_developers_session_clears_the_failures(
    client, operator, signed_in_developer
):
    allowed = limit("login_failures_per_user_and_address").count
    for _ in range(allowed - 1):
        login(client, "/admin/login/", operator.username, "wrong", OWNER)
    assert login(client, "/admin/login/", operator.username, PASSWORD, OWNER).status_code == 302
    assert_still_signed_in_as(client, operator)

    client.force_login(signed_in_developer)
    for _ in range(allowed - 1):
        login(client, "/admin/login/", operator.username, "wrong", OWNER)
    assert login(client, "/admin/login/", operator.username, PASSWORD, OWNER).status_code == 302


def change_console_password(http, old: str, new: str, address: str, *, again: str | None = None):
    form = {"old_password": old, "new_password1": new, "new_password2": again or new}
    return http.post("/admin/password_change/", form, REMOTE_ADDR=address)


def test_wrong_old_passwords_in_the_console_count_as_failed_logins(client, operator):
    """As at the portal's /accounts/password/: a console session left open is no way to guess its
    account's password without limit. New passwords that do not match are no guess."""
    client.force_login(operator)
    new = "another horse battery staple 77"
    for _ in range(limit("login_failures_per_user_and_address").count):
        assert change_console_password(client, PASSWORD, new, ATTACKER, again="mismatch").status_code == 200
    for _ in range(limit("login_failures_per_user_and_address").count):
        assert change_console_password(client, "wrong", new, ATTACKER).status_code == 200

    # The right old password is refused unchecked while the lock lasts, and the login page is locked too.
    assert_throttled_page(change_console_password(client, PASSWORD, new, ATTACKER), at_most=900)
    assert_throttled_page(login(client, "/admin/login/", operator.username, PASSWORD, ATTACKER), at_most=900)
    operator.refresh_from_db()
    assert operator.check_password(PASSWORD)
    response = change_console_password(client, PASSWORD, new, OWNER)
    assert (response.status_code, response["Location"]) == (302, "/admin/password_change/done/")


def test_sign_ups_per_address_are_limited(client, db):
    for number in range(limit("signups_per_address").count):
        response = client.post(
            "/accounts/signup/",
            {
                "username": f"developer{number}",
                "email": f"developer{number}@example.com",
                "password1": PASSWORD,
                "password2": PASSWORD,
            },
            REMOTE_ADDR=ATTACKER,
        )
        assert response.status_code == 302, response.content
        client.logout()

    response = client.post(
        "/accounts/signup/",
        {"username": "one-more", "email": "more@example.com", "password1": PASSWORD, "password2": PASSWORD},
        REMOTE_ADDR=ATTACKER,
    )
    assert_throttled_page(response, at_most=3600)
    assert not get_user_model().objects.filter(username="one-more").exists()


def test_sign_ups_from_one_ipv6_64_are_limited_together(client, db):
    def sign_up(name: str, address: str):
        account = {
            "username": name,
            "email": f"{name}@example.com",
            "password1": PASSWORD,
            "password2": PASSWORD,
        }
        response = client.post("/accounts/signup/", account, REMOTE_ADDR=address)
        client.logout()
        return response

    allowed = limit("signups_per_address").count
    for number, address in enumerate(ATTACKERS_64[:allowed]):
        assert sign_up(f"developer{number}", address).status_code == 302

    assert_throttled_page(sign_up("one-more", ATTACKERS_64[allowed]), at_most=3600)
    assert sign_up("owner", OWNER_64).status_code == 302


def test_refused_sign_ups_count_against_the_limit_too(client, developer):
    """The form says when an email address already has an account: every attempt is counted, so
    addresses cannot be tried without limit."""
    for attempt in range(limit("signups_per_address").count):
        response = client.post(
            "/accounts/signup/",
            {
                "username": f"prober{attempt}",
                "email": f"guess{attempt}@example.com" if attempt % 2 else developer.email,
                "password1": PASSWORD,
                "password2": PASSWORD + "x" if attempt % 2 else PASSWORD,
            },
            REMOTE_ADDR=ATTACKER,
        )
        assert response.status_code == 200, response.content  # the form again, with its errors

    response = client.post(
        "/accounts/signup/",
        {"username": "one-more", "email": developer.email, "password1": PASSWORD, "password2": PASSWORD},
        REMOTE_ADDR=ATTACKER,
    )
    assert_throttled_page(response, at_most=3600)
    assert b"already exists" not in response.content
    assert get_user_model().objects.count() == 1

    response = client.post(
        "/accounts/signup/",
        {"username": "owner", "email": "owner@example.com", "password1": PASSWORD, "password2": PASSWORD},
        REMOTE_ADDR=OWNER,
    )
    assert response.status_code == 302


# --- counters shared by several app nodes through Redis -----------------------------------------


@pytest.mark.live
def test_app_nodes_sharing_redis_share_the_counters(django_db_setup, django_db_blocker, transactional_db):
    """Two servers (two app nodes) with one REDIS_URL: failures on either count for both."""
    new_client = make_client()
    client_id, secret = new_client.application.client_id, new_client.client_secret
    with django_db_blocker.unblock(), RedisServer() as redis_server:
        nodes = [LiveServer(workers=1, REDIS_URL=redis_server.url) for _ in range(2)]
        with nodes[0] as first, nodes[1] as second:

            def post(node: LiveServer, secret: str) -> requests.Response:
                return requests.post(
                    f"{node.url}/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(client_id, secret),
                    verify=node.verify,
                    timeout=30,
                )

            wait_for_time_left_in_window(throttling.CLIENT_AUTH_FAILURES_PER_CLIENT_AND_ADDRESS)
            for attempt in range(limit("client_auth_failures_per_client_and_address").count):
                assert post((first, second)[attempt % 2], "guess").status_code == 401

            for node in (first, second):
                throttled = post(node, secret)
                assert throttled.status_code == 429, throttled.text
                assert throttled.json()["error"] == "too_many_requests"
                assert int(throttled.headers["Retry-After"]) > 0

        # The counters are in Redis, where every node reads them.
        stored = redis.Redis(port=redis_server.port).keys("*throttle:client_auth_failures_per_client_and*")
        assert len(stored) == 1
