"""Real clients against a real server: requests-oauthlib, threads, curl, over HTTPS from gunicorn."""

import base64
import gzip
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings
from oauthlib.oauth2 import BackendApplicationClient
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from tests.helpers import make_client
from tests.servers import LiveServer

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), LiveServer(workers=4) as live:
        yield live


def test_requests_oauthlib_backend_application_client_gets_a_token(server, transactional_db):
    new_client = make_client(scopes=["products:read"])
    application = new_client.application
    session = OAuth2Session(client=BackendApplicationClient(client_id=application.client_id))

    token = session.fetch_token(
        token_url=f"{server.url}/oauth2/token",
        auth=HTTPBasicAuth(application.client_id, new_client.client_secret),
        verify=server.verify,
    )

    assert token["token_type"] == "Bearer"
    assert token["scope"] == ["products:read"]
    assert token["expires_in"] == 3600


def test_requests_oauthlib_with_client_secret_post(server, transactional_db):
    new_client = make_client()
    application = new_client.application
    session = OAuth2Session(client=BackendApplicationClient(client_id=application.client_id))

    token = session.fetch_token(
        token_url=f"{server.url}/oauth2/token",
        client_id=application.client_id,
        client_secret=new_client.client_secret,
        include_client_id=True,
        verify=server.verify,
    )
    assert token["access_token"]


def test_sixteen_threads_get_distinct_tokens_from_a_multi_worker_server(server, transactional_db):
    new_client = make_client()
    credentials = (new_client.application.client_id, new_client.client_secret)

    def request_token(_):
        response = requests.post(
            f"{server.url}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=credentials,
            verify=server.verify,
            timeout=30,
        )
        return response.status_code, response.json().get("access_token")

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(request_token, range(160)))

    assert [status for status, _ in results] == [200] * 160, server.output()
    assert len({token for _, token in results}) == 160
    assert "database is locked" not in server.output()


def test_revoke_then_introspect_over_https(server, transactional_db):
    resource_server = make_client(scopes=["introspection"], name="resource server")
    new_client = make_client()
    credentials = (new_client.application.client_id, new_client.client_secret)
    token = requests.post(
        f"{server.url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=credentials,
        verify=server.verify,
        timeout=30,
    ).json()["access_token"]

    def introspect():
        return requests.post(
            f"{server.url}/oauth2/introspect",
            data={"token": token},
            auth=(resource_server.application.client_id, resource_server.client_secret),
            verify=server.verify,
            timeout=30,
        ).json()

    assert introspect()["active"] is True
    revoked = requests.post(
        f"{server.url}/oauth2/revoke",
        data={"token": token},
        auth=credentials,
        verify=server.verify,
        timeout=30,
    )
    assert revoked.status_code == 200
    assert introspect() == {"active": False}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_the_seed_command(server, transactional_db):
    new_client = make_client()
    command = [
        "curl", "--silent", "--show-error", "--user",
        f"{new_client.application.client_id}:{new_client.client_secret}", "-k",
        "-d", "grant_type=client_credentials", "-H", "Content-Type: application/x-www-form-urlencoded",
        f"{server.url}/oauth2/token",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(completed.stdout)["token_type"] == "Bearer"


def chunks(*pieces: bytes):
    """A body of unknown length: requests sends it with Transfer-Encoding: chunked."""
    yield from pieces


def test_a_chunked_token_request_is_read_whole(server, transactional_db):
    new_client = make_client(scopes=["products:read"])
    response = requests.post(
        f"{server.url}/oauth2/token",
        data=chunks(b"grant_type=client_", b"credentials&scope=products%3Aread"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(new_client.application.client_id, new_client.client_secret),
        verify=server.verify,
        timeout=30,
    )

    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "products:read"


def test_a_chunked_body_over_the_limit_is_413_like_a_declared_one(server, transactional_db):
    new_client = make_client()
    limit = settings.MAX_REQUEST_BODY_BYTES
    response = requests.post(
        f"{server.url}/oauth2/token",
        data=chunks(b"grant_type=client_credentials&padding=", b"a" * limit),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(new_client.application.client_id, new_client.client_secret),
        verify=server.verify,
        timeout=30,
    )

    assert response.status_code == 413
    assert response.json() == {
        "error": "invalid_request",
        "error_description": f"The request body is larger than {limit} bytes.",
    }


def exchange_bytes(server, request: bytes, timeout: float = 10) -> bytes:
    """Send `request` as it is (and nothing more); whatever the server answers before it closes."""
    context = ssl.create_default_context(cafile=server.verify)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    return answer


def raw_exchange(server, request: bytes) -> tuple[int, dict, bytes]:
    """Send bytes no HTTP client library would send; the status, headers and body of the answer."""
    head, _, body = exchange_bytes(server, request).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split(" ")[1]), headers, body


TOKEN_REQUEST_HEAD = (
    b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
)


@pytest.mark.parametrize(
    ("request_bytes", "status", "described"),
    [
        (TOKEN_REQUEST_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\ngrant_", 400, "CONTENT-LENGTH"),
        (TOKEN_REQUEST_HEAD + b"Content-Length: -1\r\n\r\n", 400, "CONTENT-LENGTH"),
        (TOKEN_REQUEST_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400, "chunk"),
        (TOKEN_REQUEST_HEAD + b"Transfer-Encoding: brotli\r\n\r\n", 501, "brotli"),
        (TOKEN_REQUEST_HEAD + b"Bad Header: x\r\nContent-Length: 0\r\n\r\n", 400, "Bad Header"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, "request line"),
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431, "fields"),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400, "HOST"),  # RFC 9112 3.2: HTTP/1.1 needs a Host
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n", 400, "HOST"),
    ],
    ids=[
        "two-content-lengths",
        "negative-length",
        "bad-chunk",
        "unknown-coding",
        "bad-header-name",
        "long-request-line",
        "too-many-headers",
        "no-host",
        "two-hosts",
    ],
)
def test_requests_gunicorn_refuses_are_answered_as_json_errors(server, request_bytes, status, described):
    answered, headers, body = raw_exchange(server, request_bytes)

    assert answered == status
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert int(headers["Content-Length"]) == len(body)
    error = json.loads(body)
    assert error["error"] == "invalid_request"
    assert described.lower() in error["error_description"].lower()
    assert "<html" not in body.decode()


# RFC 6749 5.2: an error_description holds %x20-21 / %x23-5B / %x5D-7E.
_DESCRIPTION_CHARACTERS = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


@pytest.mark.parametrize(
    ("request_bytes", "status", "described"),
    [
        (TOKEN_REQUEST_HEAD + b'X"A\\: b\r\nContent-Length: 0\r\n\r\n', 400, "X%22A%5C"),
        (TOKEN_REQUEST_HEAD + b"X\xe9: b\r\nContent-Length: 0\r\n\r\n", 400, "X%C3%A9"),
        (b'PO"ST /oauth2/token HTTP/1.1\r\nHost: localhost\r\n\r\n', 400, "PO%22ST"),
        (TOKEN_REQUEST_HEAD + b'Expect: "\xe9\r\nContent-Length: 0\r\n\r\n', 417, "%22%C3%A9"),
        (TOKEN_REQUEST_HEAD + b"Transfer-Encoding: \xe9\\\r\n\r\n", 501, "%C3%A9%5C"),
        (b"POST /oauth2/t\x01ken HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "t%5Cx01ken"),
    ],
    ids=[
        "quote-in-header-name",
        "latin-1-header-name",
        "quote-in-method",
        "expectation",
        "coding",
        "control-character-in-path",
    ],
)
def test_what_gunicorn_refuses_is_described_in_rfc_6749s_characters(server, request_bytes, status, described):
    """gunicorn's descriptions quote what was sent: a quote, a backslash or a byte beyond ASCII
    is percent-encoded, as the site's own descriptions have it."""
    answered, _, body = raw_exchange(server, request_bytes)

    description = json.loads(body)["error_description"]
    assert answered == status
    assert _DESCRIPTION_CHARACTERS.fullmatch(description), description
    assert described in description


def test_the_status_line_of_a_refused_transfer_coding_is_501s_own(server):
    context = ssl.create_default_context(cafile=server.verify)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as tls,
    ):
        tls.sendall(TOKEN_REQUEST_HEAD + b"Transfer-Encoding: brotli\r\n\r\n")
        status_line = tls.recv(65536).partition(b"\r\n")[0]
    assert status_line == b"HTTP/1.1 501 Not Implemented"


_GZIPPED_FORM = gzip.compress(b"grant_type=client_credentials")


@pytest.mark.parametrize(
    ("coding", "status", "described"),
    [
        # gunicorn takes these transfer codings and passes the body on undecoded (RFC 9112 6.1).
        (("Transfer-Encoding", "gzip, chunked"), 501, "Transfer-Encoding"),
        (("Transfer-Encoding", "deflate, chunked"), 501, "Transfer-Encoding"),
        (("Content-Encoding", "gzip"), 415, "Content-Encoding"),  # RFC 9110 8.4
        (("Content-Encoding", "br"), 415, "Content-Encoding"),
    ],
)
def test_a_body_in_a_coding_the_server_does_not_decode_is_refused(
    server, transactional_db, coding, status, described
):
    """Never read as if it were plain: a gzipped form would be "missing grant type"."""
    new_client = make_client()
    credentials = base64.b64encode(f"{new_client.application.client_id}:{new_client.client_secret}".encode())
    name, value = coding
    chunked = "chunked" in value
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(_GZIPPED_FORM), _GZIPPED_FORM) if chunked else _GZIPPED_FORM
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=ssl.create_default_context(cafile=server.verify), timeout=10
    )
    connection.putrequest("POST", "/oauth2/token", skip_host=True)
    for header, content in [
        ("Host", "localhost"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", f"Basic {credentials.decode()}"),
        (name, value),
        *([] if chunked else [("Content-Length", str(len(body)))]),
    ]:
        connection.putheader(header, content)
    connection.endheaders(body)
    response = connection.getresponse()

    assert response.status == status
    assert response.getheader("Content-Type") == "application/json"
    error = json.loads(response.read())
    assert error["error"] == "invalid_request"
    assert described in error["error_description"]
    if status == 415:
        assert response.getheader("Accept-Encoding") == "identity"
    connection.close()


def test_an_http_1_0_request_needs_no_host(server):
    status, _, body = raw_exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_a_client_that_goes_silent_gets_a_408_and_the_worker_lives_on(server):
    """gunicorn's worker waited for the rest of the body until the arbiter killed it at its timeout
    (30 s): a 500, a CRITICAL line with a traceback, and a worker lost to one silent client."""
    workers = set(server.worker_pids())
    unfinished = {
        "short body": TOKEN_REQUEST_HEAD + b"Content-Length: 100\r\n\r\ngrant_type=client_credentials",
        "unended chunks": TOKEN_REQUEST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1d\r\ngrant_type",
        "unended head": b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\n",
    }
    with ThreadPoolExecutor(len(unfinished)) as pool:
        sent = {
            name: pool.submit(exchange_bytes, server, request, 25) for name, request in unfinished.items()
        }
        answers = {name: answer.result() for name, answer in sent.items()}

    for name in ("short body", "unended chunks"):
        head, _, body = answers[name].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), name
        assert b"Content-Type: application/json" in head
        assert json.loads(body) == {
            "error": "invalid_request",
            "error_description": "The request body did not arrive in time.",
        }
    assert answers["unended head"] == b""  # no request to answer: the connection is closed
    assert set(server.worker_pids()) == workers
    log = server.output()
    assert "WORKER TIMEOUT" not in log
    assert "Traceback" not in log
    assert "Client silent too long; connection closed." in log


def test_a_head_request_gets_the_gets_headers_no_body_and_no_log_line(server, transactional_db):
    """gunicorn dropped the body Django sent for HEAD, but logged "WSGI app sent body bytes on a
    no-body response" for each: a log line any client could ask for."""
    new_client = make_client(scopes=["products:read"])
    token = requests.post(
        f"{server.url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(new_client.application.client_id, new_client.client_secret),
        verify=server.verify,
        timeout=10,
    ).json()["access_token"]
    for path, headers in [
        ("/healthz", {}),
        ("/.well-known/oauth-authorization-server", {}),
        ("/api/v1/products", {"Authorization": f"Bearer {token}"}),
        ("/portal/", {}),
    ]:
        got = requests.get(server.url + path, headers=headers, verify=server.verify, timeout=10)
        head = requests.head(server.url + path, headers=headers, verify=server.verify, timeout=10)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.headers["Content-Type"] == got.headers["Content-Type"], path
        assert head.headers.get("Content-Length") == got.headers.get("Content-Length"), path

    assert "no-body response" not in server.output()
