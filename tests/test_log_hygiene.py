"""Secrets and tokens never reach a log: every log line of a full flow (register a client, get
tokens, call the API, introspect, revoke, the mistakes clients make on the way) is captured, at
DEBUG, and none holds a raw client secret, access token or registration access token."""

import json
import logging
import socket
import subprocess
import sys
from urllib.parse import quote

import pytest
import requests
from django.db import OperationalError, connection
from django.views.debug import SafeExceptionReporterFilter

from authserver.log_filters import redact
from fooapi.services import seed_demo_catalogue
from tests.helpers import basic, bearer, make_client, post_form
from tests.servers import PROJECT_DIR, LiveServer, server_environment


def assert_no_credential_in(text: str, credentials: list[str], where: str) -> None:
    assert len(credentials) >= 4 and all(len(credential) >= 20 for credential in credentials)
    for credential in credentials:
        assert credential not in text, f"a credential appears in {where}"


def mangled(credential: str) -> str:
    """The credential with its last character changed (to another one, whatever it was)."""
    return credential[:-1] + ("y" if credential.endswith("x") else "x")


def full_flow(send, credentials: list[str]) -> None:
    """Drive the flow through `send(method, path, **kwargs) -> (status, json)`, collecting every
    credential the server hands out into `credentials`."""
    registrar = make_client(scopes=["registration"], name="registrar")
    resource_server = make_client(scopes=["introspection"], name="resource server")
    credentials += [registrar.client_secret, resource_server.client_secret]

    _, issued = send("token", registrar.application.client_id, registrar.client_secret)
    initial_access_token = issued["access_token"]
    credentials.append(initial_access_token)
    status, registered = send("register", initial_access_token)
    assert status == 201, registered
    credentials += [registered["client_secret"], registered["registration_access_token"]]
    client_id, client_secret = registered["client_id"], registered["client_secret"]

    status, issued = send("token", client_id, client_secret)
    assert status == 200
    token = issued["access_token"]
    credentials.append(token)
    status, _ = send("token_in_body", client_id, client_secret)
    assert status == 200
    status, _ = send("token", client_id, mangled(client_secret))  # a wrong secret
    assert status == 401
    status, _ = send("secret_in_query", client_id, client_secret)  # a client doing it wrong
    assert status == 400

    status, products = send("api", token, "/api/v1/products")
    assert status == 200, products
    status, _ = send("api", token, "/api/v1/orders")
    assert status == 200
    status, _ = send("api", mangled(token), "/api/v1/products")  # a mangled token
    assert status == 401
    status, _ = send("token_in_query", token)
    assert status in {400, 401}

    introspector = (resource_server.application.client_id, resource_server.client_secret)
    status, answer = send("introspect", introspector, token)
    assert answer["active"] is True
    status, _ = send("revoke", client_id, client_secret, token)
    assert status == 200
    status, answer = send("introspect", introspector, token)
    assert answer == {"active": False}
    status, _ = send("manage_registration", client_id, registered["registration_access_token"])
    assert status == 200


# --- in-process: every log record, before any redaction ------------------------------------------


def in_process_sender(http):
    def send(action: str, *args):
        if action in {"token", "token_in_body", "secret_in_query"}:
            client_id, client_secret = args
            if action == "token":
                pairs, headers, path = (
                    {"grant_type": "client_credentials"},
                    basic(client_id, client_secret),
                    "/oauth2/token",
                )
            elif action == "token_in_body":
                pairs = {
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": client_secret,
                }
                headers, path = {}, "/oauth2/token"
            else:
                pairs, headers = {"grant_type": "client_credentials"}, {}
                path = f"/oauth2/token?client_id={client_id}&client_secret={client_secret}"
            response = post_form(http, path, pairs, **headers)
        elif action == "register":
            response = http.post(
                "/oauth2/register",
                {"client_name": "logged"},
                content_type="application/json",
                **bearer(args[0]),
            )
        elif action == "api":
            response = http.get(args[1], **bearer(args[0]))
        elif action == "token_in_query":
            response = http.get(f"/api/v1/products?access_token={args[0]}")
        elif action == "introspect":
            (resource_id, resource_secret), token = args
            response = post_form(
                http, "/oauth2/introspect", {"token": token}, **basic(resource_id, resource_secret)
            )
        elif action == "revoke":
            client_id, client_secret, token = args
            response = post_form(http, "/oauth2/revoke", {"token": token}, **basic(client_id, client_secret))
        else:  # manage_registration
            response = http.get(f"/oauth2/register/{args[0]}", **bearer(args[1]))
        body = response.json() if response.content else {}
        return response.status_code, body

    return send


def test_no_log_record_of_a_full_flow_holds_a_credential(client, db, caplog):
    seed_demo_catalogue()
    caplog.set_level(logging.DEBUG)  # the root logger: every record any logger lets through
    credentials: list[str] = []

    full_flow(in_process_sender(client), credentials)

    assert caplog.records, "nothing was logged: the capture is not working"
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    text = "\n".join(formatter.format(record) for record in caplog.records)  # message and traceback
    assert_no_credential_in(text, credentials, "the log records")


# --- a real server: everything gunicorn writes, access log included ------------------------------


def live_sender(server: LiveServer):
    def call(method: str, path: str, **kwargs):
        response = requests.request(method, f"{server.url}{path}", verify=server.verify, timeout=30, **kwargs)
        return response.status_code, (response.json() if response.content else {})

    def send(action: str, *args):
        if action == "token":
            return call("POST", "/oauth2/token", data={"grant_type": "client_credentials"}, auth=args)
        if action == "token_in_body":
            client_id, client_secret = args
            data = {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            }
            return call("POST", "/oauth2/token", data=data)
        if action == "secret_in_query":
            client_id, client_secret = args
            path = f"/oauth2/token?client_id={client_id}&client_secret={client_secret}"
            return call("POST", path, data={"grant_type": "client_credentials"})
        if action == "register":
            return call(
                "POST", "/oauth2/register", json={"client_name": "logged"}, headers=bearer_header(args[0])
            )
        if action == "api":
            return call("GET", args[1], headers=bearer_header(args[0]))
        if action == "token_in_query":
            return call("GET", f"/api/v1/products?access_token={args[0]}")
        if action == "introspect":
            return call("POST", "/oauth2/introspect", data={"token": args[1]}, auth=args[0])
        if action == "revoke":
            return call("POST", "/oauth2/revoke", data={"token": args[2]}, auth=args[:2])
        return call("GET", f"/oauth2/register/{args[0]}", headers=bearer_header(args[1]))

    return send


def bearer_header(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.live
def test_no_line_a_server_writes_during_a_full_flow_holds_a_credential(
    django_db_setup, django_db_blocker, transactional_db
):
    seed_demo_catalogue()
    credentials: list[str] = []
    # The documented way to register a client, its stderr captured too (stdout shows the secret once).
    command = subprocess.run(
        [sys.executable, "manage.py", "create_client", "--name", "by command", "--json"],
        cwd=PROJECT_DIR,
        env=server_environment(LOG_LEVEL="DEBUG"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    created = json.loads(command.stdout)
    credentials.append(created["client_secret"])

    with django_db_blocker.unblock(), LiveServer(workers=2, LOG_LEVEL="DEBUG", ACCESS_LOG="on") as server:
        send = live_sender(server)
        status, issued = send("token", created["client_id"], created["client_secret"])
        assert status == 200
        credentials.append(issued["access_token"])
        full_flow(send, credentials)
        output = server.output()

    assert "/oauth2/token" in output and "/api/v1/products" in output, "the access log is not captured"
    assert_no_credential_in(output, credentials, "the server's output")
    assert_no_credential_in(command.stderr, credentials, "create_client's stderr")


# --- what a client gets wrong is a line, not a traceback ------------------------------------------


@pytest.mark.live
def test_a_clients_mistake_is_one_warning_line_without_a_traceback(
    django_db_setup, django_db_blocker, transactional_db
):
    with django_db_blocker.unblock(), LiveServer(workers=1, tls=False) as server:
        bad_host = requests.get(f"{server.url}/healthz", headers={"Host": "evil.example"}, timeout=30)
        other_charset = requests.post(
            f"{server.url}/oauth2/token",
            data="grant_type=client_credentials".encode("utf-16"),
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-16"},
            timeout=30,
        )
        output = server.output()

    assert (bad_host.status_code, bad_host.json()["error"]) == (400, "invalid_request")
    assert (other_charset.status_code, other_charset.json()["error"]) == (400, "invalid_request")
    assert other_charset.json()["error_description"] == (
        "HTTP requests with the 'application/x-www-form-urlencoded' content type must be UTF-8 encoded."
    )
    assert bad_host.json()["error_description"] == "The request could not be understood."  # no settings
    lines = output.splitlines()
    [host_line] = [line for line in lines if "Invalid HTTP_HOST header: 'evil.example'" in line]
    [charset_line] = [line for line in lines if "must be UTF-8 encoded" in line]
    assert " WARNING django.security.DisallowedHost " in host_line  # Django's own level: ERROR
    assert " WARNING django.request " in charset_line
    assert "Traceback" not in output


@pytest.mark.live
def test_a_request_line_gunicorn_refuses_is_logged_without_its_credentials(
    django_db_setup, django_db_blocker, transactional_db
):
    token, secret = "T" * 30, "S" * 48
    malformed = [
        f"GET /api/v1/products?access_token={token}\r\n".encode(),  # no HTTP version
        f"POST /oauth2/token?client_secret={secret} HTTP/1.1 \r\n".encode(),  # a space after it
    ]
    with django_db_blocker.unblock(), LiveServer(workers=1, tls=False) as server:
        answers = []
        for request_line in malformed:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
                connection.sendall(request_line + b"Host: 127.0.0.1\r\n\r\n")
                answers.append(connection.makefile("rb").read())
        output = server.output()

    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        assert json.loads(body)["error"] == "invalid_request"
        assert token.encode() not in body and secret.encode() not in body
    refusals = [line for line in output.splitlines() if "Invalid request from ip=127.0.0.1" in line]
    assert len(refusals) == 2, output
    assert "access_token=[redacted]" in output
    assert token not in output and secret not in output


@pytest.mark.live
def test_a_path_cannot_forge_a_line_of_the_access_log(django_db_setup, django_db_blocker, transactional_db):
    """gunicorn percent-decodes the path: a %0A in the URL was a line break in the access log, and
    what followed it a line of the client's making. Escaped there, as Django escapes it in its own."""
    forged = '203.0.113.9 [28/Nov/2026:10:00:00 +0000] "POST /admin/ HTTP/1.1" 200 - 1ms'
    with django_db_blocker.unblock(), LiveServer(workers=1, tls=False, ACCESS_LOG="on") as server:
        response = requests.get(f"{server.url}/healthz%0A{quote(forged)}%0D", timeout=30)
        # The one worker logs a request once answered: the next is answered after that line.
        requests.get(f"{server.url}/healthz", timeout=30)
        output = server.output()

    assert response.status_code == 404
    lines = output.splitlines()
    assert not [line for line in lines if line.startswith("203.0.113.9")], output
    [access_line] = [line for line in lines if line.startswith("127.0.0.1 ") and " 404 " in line]
    assert '"GET /healthz\\n203.0.113.9 ' in access_line and '1ms\\r HTTP/1.1" 404 ' in access_line


@pytest.mark.parametrize(
    "path, sensitive",
    [
        ("/oauth2/token", ["client_secret"]),
        ("/oauth2/revoke", ["client_secret", "token"]),
        ("/oauth2/introspect", ["client_secret", "token"]),
    ],
)
def test_error_reports_leave_out_the_secret_and_the_token(client, db, path, sensitive):
    """Django's error reports (a DEBUG page, mail to ADMINS) show a request's form: not these."""
    new_client = make_client(scopes=["introspection"])
    application = new_client.application
    form = {"client_id": application.client_id, "client_secret": new_client.client_secret, "token": "t0ken"}
    if path == "/oauth2/token":
        form = {"grant_type": "client_credentials", **form}
        del form["token"]

    response = post_form(client, path, form)

    assert response.status_code == 200, response.content
    shown = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert set(shown) == set(form)
    for name in form:
        assert (shown[name] == form[name]) is (name not in sensitive), name


# --- the filter itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "access_token=abcd1234efgh&x=1",
        '{"client_secret": "s3cr3t-value"}',
        "password: hunter22",
        "GET /oauth2/token?token=abcd1234efgh HTTP/1.1",
        "Authorization: Bearer abcd1234efgh",
        "X-Token: abcd1234efgh",
    ],
)
def test_credentials_in_a_line_are_masked(line):
    masked = redact(line)

    assert "[redacted]" in masked
    assert "abcd1234efgh" not in masked and "s3cr3t-value" not in masked and "hunter22" not in masked


def test_a_url_ending_in_token_is_no_credential():
    """The portal's warning when the catalogue is unavailable names the token endpoint and what
    requests said; "token: HTTPSConnectionPool(host=" read as a credential hid the host."""
    line = (
        "Catalogue unavailable: https://localhost:9443/oauth2/token: HTTPSConnectionPool(host='localhost', "
        "port=9443): Max retries exceeded"
    )

    assert redact(line) == line


# --- one event, one line ------------------------------------------------------------------------


def database_down(*args, **kwargs):
    raise OperationalError('connection to server at "db.internal" failed: password for user "foo" rejected')


def logged_lines(caplog) -> list[str]:
    """What each record at WARNING or above says (its traceback apart)."""
    return [
        f"{record.levelname} {record.name} {record.getMessage()}"
        for record in caplog.records
        if record.levelno >= logging.WARNING
    ]


DATABASE_CALLERS = {
    "/api/v1/products": lambda http, caller: http.get("/api/v1/products", **bearer("a-token-to-look-up")),
    "/oauth2/token": lambda http, caller: post_form(
        http, "/oauth2/token", {"grant_type": "client_credentials"}, **basic(*caller)
    ),
    "/accounts/login/": lambda http, caller: http.post(
        "/accounts/login/", {"username": "someone", "password": "x"}
    ),  # a person in a browser: the HTML page
}


@pytest.mark.parametrize("path", DATABASE_CALLERS)
def test_an_unreachable_database_is_one_error_line_per_request(client, db, caplog, monkeypatch, path):
    # Two ERROR lines for one 503: the middleware's "Database unavailable: OperationalError" and
    # django.request's "Service Unavailable: /path".
    registered = make_client()
    caller = (registered.application.client_id, registered.client_secret)
    caplog.set_level(logging.DEBUG)
    with monkeypatch.context() as patched:
        patched.setattr(connection, "cursor", database_down)
        patched.setattr(connection, "kept_cursor", database_down, raising=False)  # config.postgresql's
        caplog.clear()
        response = DATABASE_CALLERS[path](client, caller)

    assert response.status_code == 503, response.content
    assert logged_lines(caplog) == [
        f"ERROR authserver.middleware Database unavailable: OperationalError: {path}"
    ]
    assert not caplog.records[-1].exc_info  # no traceback: the driver's message names hosts and users


def test_a_server_error_is_still_logged_once_with_its_traceback(client, db, caplog, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    client.raise_request_exception = False
    caplog.set_level(logging.DEBUG)
    with monkeypatch.context() as patched:
        patched.setattr(connection, "cursor", broken)
        patched.setattr(connection, "kept_cursor", broken, raising=False)
        caplog.clear()
        response = client.get("/api/v1/products", **bearer("a-token-to-look-up"))

    assert response.status_code == 500
    assert logged_lines(caplog) == ["ERROR django.request Internal Server Error: /api/v1/products"]
    assert caplog.records[-1].exc_info[0] is RuntimeError
