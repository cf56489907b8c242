import io
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.db.backends.signals import connection_created

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class ChunkedRequestBodies:
    """A request body sent with `Transfer-Encoding: chunked` reaches Django whole.

    Django reads a body only as far as CONTENT_LENGTH, so without this a chunked token request
    (what an HTTP client sends when it streams a body of unknown length) would arrive empty and be
    refused for a missing grant_type. gunicorn decodes the chunks and ends wsgi.input at the last one
    (`wsgi.input_terminated`); the body is read here up to one byte past MAX_REQUEST_BODY_BYTES and
    handed on with its length, so that a longer one is the same 413 as a declared one
    (authserver.middleware.ProtocolErrorMiddleware). A client that stops sending before the last
    chunk (config.workers.CLIENT_TIMEOUT) leaves Django a body that fails to read, as a short
    declared one does. A server that does not end its input leaves the request as it is."""

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        if "HTTP_TRANSFER_ENCODING" in environ and environ.get("wsgi.input_terminated"):
            try:
                body = environ["wsgi.input"].read(settings.MAX_REQUEST_BODY_BYTES + 1)
            except TimeoutError as error:
                environ["wsgi.input"] = UnreadableBody(error)
                environ["CONTENT_LENGTH"] = "1"  # a body to read, so that reading it fails
            else:
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
        return self.application(environ, start_response)


class UnreadableBody(io.RawIOBase):
    """A request body whose reading failed: every read raises that error again."""

    def __init__(self, error: OSError):
        self.error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer):
        raise self.error


class NoBodyForHead:
    """A HEAD request's answer goes without the body Django made for it (RFC 9110 9.3.2), and with
    the GET's headers, Content-Length included. gunicorn would drop the body too, but log a warning
    for each such answer: one log line any client could ask for as often as it likes. The
    response is still closed, which ends Django's request (request_finished)."""

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        body = self.application(environ, start_response)
        if environ["REQUEST_METHOD"] != "HEAD":
            return body
        if hasattr(body, "close"):
            body.close()
        return []


def bound_statements(sender, connection, **kwargs):
    """A served request's statements on PostgreSQL give up after DATABASE_STATEMENT_TIMEOUT, a wait
    for a lock included: the request is then a 503 (authserver.middleware), where it waited for as
    long as another session held the lock, until gunicorn killed the worker. Set when the
    connection is made, once: migrations and management commands are not served from here."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {settings.DATABASE_STATEMENT_TIMEOUT * 1000}")


application = NoBodyForHead(ChunkedRequestBodies(get_wsgi_application()))
connection_created.connect(bound_statements)
