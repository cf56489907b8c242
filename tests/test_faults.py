"""Broken dependencies and crashing workers, against real gunicorn servers.

- PostgreSQL unreachable (connections refused, or a silent host): the token endpoint, the Foo API
  and /readyz answer 503 JSON `temporarily_unavailable` within the connect timeout, and the same
  workers serve again by themselves when the database is back. A TCP proxy this test controls sits
  between the server and the real PostgreSQL, so the shared PostgreSQL is never stopped.
- Redis down or hung with REDIS_URL set: tokens are still issued; throttling fails open and logs it.
- A gunicorn worker SIGKILLed under load (tokens issued, clients registered, a secret rotated): no
  client without its scopes, audit event and registration token, no token row without its audit
  event, every rotation audited, the other workers keep serving.
- Secret rotation racing token requests: every answer is 200 or 401, never a 5xx, and afterwards
  only the newest secret works (a legacy-hash upgrade does not resurrect an old one).
"""

import hashlib
import os
import random
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, suppress

import psycopg
import pytest
import requests
from django.contrib.auth.hashers import make_password
from django.db import connection
from oauth2_provider.models import AccessToken

from authserver import services, throttling
from authserver.models import Application, AuditEvent
from config.postgresql.base import HEALTH_CHECK_BYPASS_SECONDS
from tests.helpers import make_client
from tests.servers import LiveServer, RedisServer, free_port, wait_for_time_left_in_window

pytestmark = pytest.mark.live

REGISTRATION_SCOPE = "client:configure"


def post_token(server: LiveServer, client_id: str, client_secret: str, timeout: float = 30):
    return requests.post(
        f"{server.url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, client_secret),
        verify=server.verify,
        timeout=timeout,
    )


def assert_temporarily_unavailable(response):
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) > 0


# --- the database goes away ------------------------------------------------------------------------


class TcpProxy:
    """A loopback TCP proxy to `upstream` that a test can cut (connections refused), blackhole
    (connections accepted, never answered: a host that does not respond) and restore."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self.mode = "forward"
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()

    def __enter__(self) -> "TcpProxy":
        self._listen()
        return self

    def __exit__(self, *exc_info) -> None:
        self._close_listener()
        self._drop_connections()

    def cut(self) -> None:
        """Like a database that was stopped: open connections drop, new ones are refused."""
        self.mode = "refuse"
        self._close_listener()
        self._drop_connections()

    def blackhole(self) -> None:
        """Like a host that vanished: open connections drop, new ones hang unanswered."""
        self.mode = "blackhole"
        self._drop_connections()
        if self.listener is None:
            self._listen()

    def restore(self) -> None:
        self.mode = "forward"
        self._drop_connections()  # the blackholed ones
        if self.listener is None:
            self._listen()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _close_listener(self) -> None:
        if self.listener is not None:
            with suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close() alone does not
            self.listener.close()
            self.listener = None

    def _drop_connections(self) -> None:
        with self.lock:
            dropped, self.connections = self.connections, []
        for sock in dropped:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # listener closed
            with self.lock:
                self.connections.append(downstream)
            if self.mode == "refuse":
                downstream.close()
                continue
            if self.mode == "blackhole":
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.connections.append(upstream)
            for source, target in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with suppress(OSError):  # either side closed: the pipe ends
            while chunk := source.recv(65536):
                target.sendall(chunk)
        for sock in (source, target):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def requires_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("database faults are tested against PostgreSQL: run with DATABASE_URL=postgres://...")


def database_url_through(proxy: TcpProxy) -> str:
    database = connection.settings_dict
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    return f"postgres://{credentials}@127.0.0.1:{proxy.port}/{database['NAME']}"


@pytest.fixture
def database_proxy(django_db_setup, django_db_blocker, transactional_db):
    requires_postgresql()
    database = connection.settings_dict
    with TcpProxy((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432))) as proxy:
        yield proxy


@pytest.fixture
def server_behind_proxy(database_proxy, django_db_blocker):
    with (
        django_db_blocker.unblock(),
        LiveServer(tls=False, DATABASE_URL=database_url_through(database_proxy)) as live,
    ):
        yield live


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def wait_for(predicate, *, seconds: float) -> float:
    """Seconds until predicate() held; fails after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"not within {seconds}s")


def test_database_stopped_then_back(server_behind_proxy, database_proxy):
    server, proxy = server_behind_proxy, database_proxy
    new_client = make_client(scopes=["products:read"])
    client_id, secret = new_client.application.client_id, new_client.client_secret
    token = post_token(server, client_id, secret).json()["access_token"]
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
    workers = sorted(server.worker_pids())
    login_page = requests.get(f"{server.url}/accounts/login/", timeout=10)
    csrf_token = login_page.cookies["csrftoken"]

    proxy.cut()
    cut_at = time.monotonic()

    response, elapsed = timed(lambda: post_token(server, client_id, secret))
    assert_temporarily_unavailable(response)
    assert elapsed < 2  # refused at once: no waiting for a timeout
    assert_temporarily_unavailable(post_token(server, client_id, "a wrong secret is no different"))
    assert_temporarily_unavailable(requests.get(f"{server.url}/readyz", timeout=10))
    api = requests.get(
        f"{server.url}/api/v1/products", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert_temporarily_unavailable(api)
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200  # alive, not ready
    # A person in a browser gets a page, not JSON and not a 500.
    login = requests.post(
        f"{server.url}/accounts/login/",
        data={"username": "someone", "password": "x", "csrfmiddlewaretoken": csrf_token},
        headers={"Cookie": f"csrftoken={csrf_token}"},  # a Secure cookie requests keeps off plain HTTP
        timeout=10,
    )
    assert login.status_code == 503
    assert login.headers["Content-Type"].startswith("text/html")
    assert "Traceback" not in server.output()
    # One line for each 503, the one naming what failed; not Django's "Service Unavailable: /path"
    # as well (/readyz answers its 503 itself: that line is its only one).
    lines = server.output().splitlines()
    unavailable = [line.rpartition(": ")[2] for line in lines if " Database unavailable: " in line]
    assert sorted(unavailable) == ["/accounts/login/", "/api/v1/products", "/oauth2/token", "/oauth2/token"]
    assert [line for line in lines if "Service Unavailable: " in line] == [
        line for line in lines if "Service Unavailable: /readyz" in line
    ]
    # An outage of a second at least: a worker that served nothing during it pings its connection
    # before using it again (within HEALTH_CHECK_BYPASS_SECONDS of its last use it would not, and a
    # connection broken that soon fails one request: config/postgresql/base.py).
    time.sleep(max(0.0, cut_at + HEALTH_CHECK_BYPASS_SECONDS - time.monotonic()))

    proxy.restore()

    wait_for(lambda: requests.get(f"{server.url}/readyz", timeout=10).status_code == 200, seconds=10)
    for _ in range(4):  # every worker, whichever takes the request, has reconnected
        assert post_token(server, client_id, secret).status_code == 200
        products = requests.get(
            f"{server.url}/api/v1/products", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert products.status_code == 200
    assert sorted(server.worker_pids()) == workers  # recovered without a restart


def test_an_unresponsive_database_host_is_a_503_within_the_connect_timeout(
    server_behind_proxy, database_proxy
):
    server, proxy = server_behind_proxy, database_proxy
    new_client = make_client()
    client_id, secret = new_client.application.client_id, new_client.client_secret
    assert post_token(server, client_id, secret).status_code == 200

    proxy.blackhole()

    response, elapsed = timed(lambda: post_token(server, client_id, secret))
    assert_temporarily_unavailable(response)
    assert elapsed < 3 + 3, elapsed  # DATABASE_CONNECT_TIMEOUT (3 s), not gunicorn's 30 s timeout
    readiness, elapsed = timed(lambda: requests.get(f"{server.url}/readyz", timeout=20))
    assert_temporarily_unavailable(readiness)
    assert elapsed < 3 + 3, elapsed

    proxy.restore()

    wait_for(lambda: post_token(server, client_id, secret).status_code == 200, seconds=15)


def test_a_lock_held_by_another_session_is_a_503_within_the_statement_timeout(
    django_db_setup, django_db_blocker, transactional_db
):
    # A change left uncommitted (a console action stuck mid-transaction, an operator's psql session)
    # holds the validity epoch's row, which a token's write waits for (authserver/validity.py): the
    # token endpoint waited until gunicorn killed the worker at 30 s, a 500 and a traceback.
    requires_postgresql()
    new_client = make_client()
    client_id, secret = new_client.application.client_id, new_client.client_secret
    database = connection.settings_dict
    with (
        django_db_blocker.unblock(),
        LiveServer(tls=False, DATABASE_STATEMENT_TIMEOUT=2) as server,
        psycopg.connect(
            dbname=database["NAME"], user=database["USER"], host=database["HOST"], port=database["PORT"]
        ) as other_session,
    ):
        assert post_token(server, client_id, secret).status_code == 200
        other_session.execute("UPDATE authserver_validityepoch SET value = value")  # held, uncommitted

        response, elapsed = timed(lambda: post_token(server, client_id, secret))
        assert_temporarily_unavailable(response)
        assert elapsed < 2 + 3, elapsed

        other_session.rollback()
        assert post_token(server, client_id, secret).status_code == 200
        assert "Traceback" not in server.output()


# --- Redis goes away -------------------------------------------------------------------------------


@pytest.fixture
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def server_with_redis(redis_server, django_db_setup, django_db_blocker, transactional_db):
    with django_db_blocker.unblock(), LiveServer(workers=2, REDIS_URL=redis_server.url) as live:
        yield live


def test_with_redis_down_tokens_are_still_issued_and_throttling_fails_open(server_with_redis, redis_server):
    server = server_with_redis
    new_client = make_client()
    client_id, secret = new_client.application.client_id, new_client.client_secret
    assert post_token(server, client_id, secret).status_code == 200

    redis_server.kill()

    for _ in range(3):
        response, elapsed = timed(lambda: post_token(server, client_id, secret))
        assert response.status_code == 200, response.text
        assert elapsed < 3
    assert post_token(server, client_id, "wrong").status_code == 401
    metadata = requests.get(
        f"{server.url}/.well-known/oauth-authorization-server", verify=server.verify, timeout=10
    )
    assert metadata.status_code == 200
    assert "products:read" in metadata.json()["scopes_supported"]
    assert requests.get(f"{server.url}/portal/", verify=server.verify, timeout=30).status_code == 200
    log = server.output()
    assert "cache unreachable; not limiting" in log
    assert "Traceback" not in log

    # Back: the limits apply again, without a restart.
    redis_server.start()
    wait_for_time_left_in_window(throttling.CLIENT_AUTH_FAILURES_PER_CLIENT_AND_ADDRESS)
    for _ in range(10):
        assert post_token(server, client_id, "wrong").status_code == 401
    assert post_token(server, client_id, secret).status_code == 429


def test_with_redis_hung_tokens_are_still_issued_in_seconds(server_with_redis, redis_server):
    server = server_with_redis
    new_client = make_client()
    client_id, secret = new_client.application.client_id, new_client.client_secret
    assert post_token(server, client_id, secret).status_code == 200

    os.kill(redis_server.process.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        response, elapsed = timed(lambda: post_token(server, client_id, secret))
        assert response.status_code == 200, response.text
        assert elapsed < 8, elapsed  # each cache call gives up after 1 s (socket_timeout)
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert post_token(server, client_id, secret).status_code == 200


# --- a worker dies under load ----------------------------------------------------------------------


def test_killing_workers_under_load_leaves_no_half_written_state(
    django_db_setup, django_db_blocker, transactional_db
):
    issuer = make_client(name="issuer")
    rotating = make_client(name="rotating")
    rotating_secrets = [rotating.client_secret]
    registrar = make_client(scopes=["registration"], name="registrar")
    deadline_seconds, kills = 8.0, 4
    outcomes: list[tuple[str, object]] = []
    issued_tokens: list[str] = []
    registered_ids: list[str] = []
    answered_at: list[float] = []
    killed_at: list[float] = []
    record = threading.Lock()

    with django_db_blocker.unblock(), LiveServer(workers=4, THROTTLE="off") as server:
        initial_access_token = post_token(
            server, registrar.application.client_id, registrar.client_secret
        ).json()["access_token"]
        stop_at = time.monotonic() + deadline_seconds

        def work(worker_number: int) -> None:
            session = requests.Session()
            while time.monotonic() < stop_at:
                registering, rotated = worker_number % 3 == 0, worker_number % 3 == 1
                client_id, secret = (
                    (rotating.application.client_id, rotating_secrets[-1])
                    if rotated
                    else (issuer.application.client_id, issuer.client_secret)
                )
                try:
                    if registering:
                        response = session.post(
                            f"{server.url}/oauth2/register",
                            json={"client_name": f"load {worker_number}", "scope": "products:read"},
                            headers={"Authorization": f"Bearer {initial_access_token}"},
                            verify=server.verify,
                            timeout=30,
                        )
                    else:
                        response = session.post(
                            f"{server.url}/oauth2/token",
                            data={"grant_type": "client_credentials"},
                            auth=(client_id, secret),
                            verify=server.verify,
                            timeout=30,
                        )
                except requests.RequestException as error:  # the worker died mid-request
                    with record:
                        outcomes.append(("connection", type(error).__name__))
                    session = requests.Session()
                    continue
                with record:
                    outcomes.append(("rotated" if rotated else "status", response.status_code))
                    answered_at.append(time.monotonic())
                    if response.status_code == 200 and not rotated:
                        issued_tokens.append(response.json()["access_token"])
                    elif response.status_code == 201:
                        registered_ids.append(response.json()["client_id"])

        with ThreadPoolExecutor(max_workers=9) as pool:
            futures = [pool.submit(work, number) for number in range(9)]
            kill_at = [
                stop_at - deadline_seconds * (1 - share / (kills + 1)) for share in range(1, kills + 1)
            ]
            while time.monotonic() < stop_at:
                time.sleep(0.4)
                rotating_secrets.append(
                    services.rotate_secret(application=rotating.application, actor="tests")
                )
                if kill_at and time.monotonic() >= kill_at[0]:
                    kill_at.pop(0)
                    os.kill(random.choice(server.worker_pids()), signal.SIGKILL)
                    killed_at.append(time.monotonic())
            for future in futures:
                future.result()

        wait_for(lambda: len(server.worker_pids()) == 4, seconds=20)  # the master replaced them
        assert post_token(server, issuer.application.client_id, issuer.client_secret).status_code == 200
        assert post_token(server, rotating.application.client_id, rotating_secrets[-1]).status_code == 200
        assert post_token(server, rotating.application.client_id, rotating_secrets[-2]).status_code == 401

    statuses = [value for kind, value in outcomes if kind == "status"]
    dropped = [value for kind, value in outcomes if kind == "connection"]
    assert set(statuses) <= {200, 201}, sorted(set(statuses))
    assert {value for kind, value in outcomes if kind == "rotated"} <= {200, 401}
    assert len(dropped) <= kills * 2, dropped  # only requests the killed workers were serving
    assert statuses.count(200) >= 10 and statuses.count(201) >= 5, (statuses.count(200), statuses.count(201))
    # The other workers kept serving: answers came between the kills and after the last one.
    assert len(killed_at) == kills
    for since, until in zip(killed_at, [*killed_at[1:], float("inf")], strict=True):
        assert any(since < answered < until for answered in answered_at)

    # Every answered token and registration was committed...
    checksums = {hashlib.sha256(token.encode()).hexdigest() for token in issued_tokens}
    assert AccessToken.objects.filter(token_checksum__in=checksums).count() == len(checksums)
    assert Application.objects.filter(client_id__in=registered_ids).count() == len(registered_ids)
    # ...and nothing is half written, answered or not.
    issuer_tokens = AccessToken.objects.filter(application=issuer.application).count()
    issued_events = AuditEvent.objects.filter(
        application=issuer.application, kind=AuditEvent.Kind.TOKEN_ISSUED
    )
    assert issuer_tokens == issued_events.count() >= len(issued_tokens)
    rotated_events = rotating.application.audit_events
    assert rotated_events.filter(kind=AuditEvent.Kind.SECRET_ROTATED).count() == len(rotating_secrets) - 1
    assert (
        AccessToken.objects.filter(application=rotating.application).count()
        == rotated_events.filter(kind=AuditEvent.Kind.TOKEN_ISSUED).count()
    )
    dynamic = Application.objects.filter(registration_source=Application.RegistrationSource.DCR)
    assert dynamic.count() >= len(registered_ids)
    for application in dynamic:
        assert application.allowed_scope_names == ["products:read"]
        assert application.audit_events.filter(kind=AuditEvent.Kind.CLIENT_CREATED).count() == 1
        assert AccessToken.objects.filter(application=application, scope=REGISTRATION_SCOPE).count() == 1


# --- secret rotation races token requests --------------------------------------------------------


def test_rotating_a_secret_while_tokens_are_requested(django_db_setup, django_db_blocker, transactional_db):
    """Each secret is valid from its rotation's commit to the next one's: a 200 for a secret that
    was already replaced when the request was sent, or a 401 for one that was current the whole
    time, would be a race. Times are this process's monotonic clock."""
    new_client = make_client()
    application = new_client.application
    # A legacy hash: the first successful request re-hashes it, racing the rotations below.
    Application.objects.filter(pk=application.pk).update(
        client_secret=make_password(new_client.client_secret, hasher="pbkdf2_sha256")
    )
    secrets = [new_client.client_secret]
    # (secret's index, sent at, answered at, status)
    answers: list[tuple[int, float, float, int]] = []
    # secret i is current from valid_from[i] (at the latest) until replaced_at[i] (at the earliest)
    valid_from, replaced_at = [0.0], []
    done = threading.Event()

    with django_db_blocker.unblock(), LiveServer(workers=4, THROTTLE="off") as server:

        def request_tokens() -> None:
            session = requests.Session()
            while not done.is_set():
                index = max(
                    0, len(secrets) - 1 - random.randint(0, 1)
                )  # the current secret or the one before
                sent = time.monotonic()
                response = session.post(
                    f"{server.url}/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(application.client_id, secrets[index]),
                    verify=server.verify,
                    timeout=30,
                )
                answers.append((index, sent, time.monotonic(), response.status_code))
                if response.status_code == 401:
                    assert response.json()["error"] == "invalid_client"

        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(request_tokens) for _ in range(4)]
            for _ in range(5):
                time.sleep(1.0)
                replaced_at.append(time.monotonic())
                secrets.append(services.rotate_secret(application=application, actor="tests"))
                valid_from.append(time.monotonic())
            time.sleep(1.0)
            done.set()
            for future in futures:
                future.result()

        assert {status for *_, status in answers} <= {200, 401}, sorted({status for *_, status in answers})
        for index, sent, answered, status in answers:
            replaced = replaced_at[index] if index < len(replaced_at) else float("inf")
            if status == 200:
                assert sent < (valid_from[index + 1] if index + 1 < len(valid_from) else float("inf"))
            elif valid_from[index] < sent and answered < replaced:
                pytest.fail(f"secret {index} was current from send to answer, yet got 401")
        assert sum(status == 200 for *_, status in answers) >= 5
        assert post_token(server, application.client_id, secrets[-1]).status_code == 200
        for old_secret in secrets[:-1]:
            assert post_token(server, application.client_id, old_secret).status_code == 401


def test_the_tcp_proxy_really_cuts(database_proxy):
    """The fault above is real: with the proxy cut, PostgreSQL cannot be reached through it."""
    database_proxy.cut()
    with closing(socket.socket()) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", database_proxy.port))
