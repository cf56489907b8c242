"""The gunicorn worker of `config/gunicorn.conf.py`: gunicorn's sync worker, except that a request
gunicorn itself refuses (a malformed request line or header, two Content-Length headers, a bad
chunk, a request line or headers over the limits, a transfer coding other than chunked) is answered
the way the site answers every other machine error, `{"error": "invalid_request",
"error_description": ...}` as JSON, instead of gunicorn's HTML page. Status codes and logging stay
gunicorn's (400, 414, 431, 501); the warning gunicorn logs for each, which quotes a malformed
request line whole, has its credentials masked like every other log line of the site. It also
refuses an HTTP/1.1 request without a Host header, as RFC 9112 3.2 says a server must, and stops
waiting for a client that goes silent for CLIENT_TIMEOUT seconds (a body shorter than its
Content-Length, a chunked body never ended): a 408 from the site, where gunicorn's worker waited
until the arbiter killed it at its timeout (a 500 and a worker lost to one client).

No Django here: gunicorn loads the worker class before the application."""

import json
from contextlib import contextmanager
from http import HTTPStatus
from urllib.parse import quote

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.http.errors import InvalidHeader
from gunicorn.workers import sync

from authserver.log_filters import (
    RESET_LINK_PREFIX,
    RedactCredentials,
    SilentClientsWithoutTracebacks,
    redact,
    redact_reset_link,
)

# What authserver.errors.NO_STORE and the security headers give every JSON error of the site.
_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Connection": "close",
}


# RFC 6749 5.2's error_description characters, as authserver.errors.describable keeps them (that
# module imports Django): printable ASCII but the double quote, the backslash and the percent sign.
_DESCRIBABLE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) not in '"%\\')

# Seconds a client may leave its request unfinished (or its answer unread) between two reads: well
# under gunicorn's worker timeout (30 s, config/gunicorn.conf.py).
CLIENT_TIMEOUT = 10


def json_error(status: int, reason: str, description: str) -> bytes:
    """A whole HTTP/1.1 response: `status` with a JSON error body (RFC 6749 5.2's members)."""
    # 501 is RFC 9112's answer to a transfer coding gunicorn does not implement: still the request's fault.
    error = "server_error" if status == 500 else "invalid_request"
    # gunicorn's description may quote the request line, a credential in its URL included, and
    # whatever bytes a header held (a quote, a backslash, latin-1): those percent-encoded.
    description = quote(redact(description or reason), safe=_DESCRIBABLE)
    body = json.dumps({"error": error, "error_description": description}).encode()
    head = [
        f"HTTP/1.1 {status} {_phrase(status, reason)}",
        *(f"{name}: {value}" for name, value in _HEADERS.items()),
    ]
    head.append(f"Content-Length: {len(body)}")
    return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body


def _phrase(status: int, reason: str) -> str:
    """The status's own reason phrase: gunicorn keeps "Bad Request" for the 501 it answers."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return reason


def _write_json_error(sock, status_int, reason, mesg) -> None:
    # gunicorn.util.write_error's signature: the status, reason and message handle_error chose.
    util.write_nonblock(sock, json_error(status_int, reason, mesg))


@contextmanager
def _errors_as_json():
    # Worker.handle_error writes its answer through gunicorn.util.write_error, looked up at the
    # call; a sync worker handles one request at a time, so the swap is this call's alone.
    html_writer = util.write_error
    util.write_error = _write_json_error
    try:
        yield
    finally:
        util.write_error = html_writer


class SyncWorker(sync.SyncWorker):
    def init_process(self):
        # "Invalid HTTP request line: 'GET /?access_token=...'" is logged to gunicorn.error.
        self.log.error_log.addFilter(RedactCredentials())
        self.log.error_log.addFilter(SilentClientsWithoutTracebacks())
        super().init_process()

    def handle(self, listener, client, addr):
        # A read that times out raises TimeoutError: in Django, reading the body, an
        # UnreadablePostError (authserver.middleware answers 408); before, gunicorn closes.
        client.settimeout(CLIENT_TIMEOUT)
        super().handle(listener, client, addr)

    def handle_request(self, listener, req, client, addr):
        # gunicorn refuses a second Host itself; handle() answers this through handle_error: a 400.
        if req.version >= (1, 1) and not any(name == "HOST" for name, _ in req.headers):
            raise InvalidHeader("HOST", req=req)
        super().handle_request(listener, req, client, addr)

    def handle_error(self, req, client, addr, exc):
        with _errors_as_json():
            super().handle_error(req, client, addr, exc)


class AccessLogger(Logger):
    """gunicorn's logger, with the token of a password reset link kept out of the access log, and
    the path's control characters escaped (as Django escapes it in its own lines): PATH_INFO is
    percent-decoded, and a %0A in the URL would start a forged line of the client's."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        path = atoms["U"]
        # Two tests of a short path per request: the token endpoint's lines cost next to nothing more.
        if path and not path.isprintable():
            path = atoms["U"] = path.encode("unicode_escape").decode("ascii")
        if path and path.startswith(RESET_LINK_PREFIX):
            atoms["U"] = redact_reset_link(path)
        return atoms
