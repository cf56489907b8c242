import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import UnreadablePostError
from django.shortcuts import render

from authserver import errors

log = logging.getLogger(__name__)


class ProtocolErrorMiddleware:
    """Errors around the views, answered the way the rest of the server answers:

    - a body larger than MAX_REQUEST_BODY_BYTES: 413, before a byte of it is read;
    - the database unreachable: 503 `temporarily_unavailable`, so clients retry (the connection
      comes back by itself: CONN_HEALTH_CHECKS);
    - a 405 from a plain Django view on a machine path: JSON, like every other error there.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared_length = request.META.get("CONTENT_LENGTH") or "0"
        if not (declared_length.isascii() and declared_length.isdigit()):  # not "²": int() refuses it
            return errors.error_response("invalid_request", "Content-Length is not a number.")
        if int(declared_length) > settings.MAX_REQUEST_BODY_BYTES:
            return errors.request_too_large()
        response = self.get_response(request)
        if response.status_code == 405 and errors.is_machine_path(request.path) and not _is_json(response):
            return errors.error_response(
                "method_not_allowed",
                f"{request.method} is not allowed here.",
                status=405,
                headers={"Allow": response.get("Allow", "")},
            )
        return response

    def process_exception(self, request, exception):
        if isinstance(exception, RequestDataTooBig):
            return errors.request_too_large()
        if isinstance(exception, UnreadablePostError):
            return errors.error_response("invalid_request", "The request body could not be read.")
        if isinstance(exception, OperationalError | InterfaceError):
            log.error("Database unavailable: %s", exception.__class__.__name__)
            if errors.is_machine_path(request.path):
                return errors.database_unavailable()
            context = {"status": 503, "description": "We will be back in a moment."}
            return render(request, "error.html", context, status=503)
        return None


def _is_json(response) -> bool:
    return response.get("Content-Type", "").startswith("application/json")
