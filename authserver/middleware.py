import codecs
import logging
import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse, UnreadablePostError
from django.shortcuts import render
from django.utils.http import parse_header_parameters
from django.utils.log import log_response

from authserver import errors
from authserver.authentication import FORM_CONTENT_TYPE

log = logging.getLogger(__name__)


class ProtocolErrorMiddleware:
    """Errors around the views, answered the way the rest of the server answers:

    - a body larger than MAX_REQUEST_BODY_BYTES: 413, before a byte of it is read; one whose client
      went silent before it was whole: 408; one of more than DATA_UPLOAD_MAX_NUMBER_FIELDS
      parameters on a machine path: 400 saying so (Django's said only "not understood");
    - a body in a transfer coding other than chunked (gzip, deflate, compress: gunicorn passes them
      on undecoded): 501 (RFC 9112 6.1); a body in a content coding (Content-Encoding): 415 with
      `Accept-Encoding: identity` (RFC 9110 8.4, 12.5.3), rather than read as if it were plain;
    - a body whose Content-Type names a charset that is no text encoding (rot13, base64, zlib,
      bz2: codecs Python knows, which Django would take as the request's encoding and fail on
      while parsing a form, a 500; or run on a body): 415; UTF-8 under another name (utf8) is
      read as UTF-8 at every endpoint, and so is a form body declared in a charset that extends
      ASCII (ISO-8859-1: Apache HttpClient's default) whose every byte and escape is ASCII;
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
        # More than 20 digits is more than any body; int() refuses over 4300 (a 500).
        if len(declared_length) > 20 or int(declared_length) > settings.MAX_REQUEST_BODY_BYTES:
            return errors.request_too_large()
        if "HTTP_TRANSFER_ENCODING" in request.META or (
            "HTTP_CONTENT_ENCODING" in request.META and declared_length != "0"
        ):
            refused = _undecoded_body(request.META)
            if refused is not None:
                return refused
        if "charset" in request.META.get("CONTENT_TYPE", "").lower():
            _, parameters = parse_header_parameters(request.META["CONTENT_TYPE"])
            try:
                refused = _read_declared_charset(request, parameters.get("charset", ""))
            except UnreadablePostError as exception:  # read here, before any view
                return _unreadable_body(exception)
            if refused is not None:
                return refused
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
        if isinstance(exception, TooManyFieldsSent) and errors.is_machine_path(request.path):
            return errors.too_many_parameters()  # a browser's form: Django's 400 page, as before
        if isinstance(exception, UnreadablePostError):
            return _unreadable_body(exception)
        if isinstance(exception, OperationalError | InterfaceError):
            if errors.is_machine_path(request.path):
                response = errors.database_unavailable()
            else:
                context = {"status": 503, "description": "We will be back in a moment."}
                response = render(request, "error.html", context, status=503)
            # One line for the event, with what failed and no traceback (its message may name the
            # database's host and user): logged as this response's, Django's own line for it
            # ("Service Unavailable: /path") is not written again.
            log_response(
                "Database unavailable: %s: %s",
                exception.__class__.__name__,
                request.path,
                response=response,
                request=request,
                logger=log,
            )
            return response
        return None


def _undecoded_body(meta) -> JsonResponse | None:
    """The answer to a body in a coding this server does not decode, if it is in one."""
    transfer_codings = _codings(meta.get("HTTP_TRANSFER_ENCODING", ""))
    if transfer_codings - {"chunked"}:
        return errors.error_response(
            "invalid_request",
            "Transfer-Encoding: only chunked is supported.",
            status=501,
        )
    if _codings(meta.get("HTTP_CONTENT_ENCODING", "")) - {"identity"}:
        return errors.error_response(
            "invalid_request",
            "Content-Encoding: send the body uncompressed.",
            status=415,
            headers={"Accept-Encoding": "identity"},
        )
    return None


def _read_declared_charset(request, charset: str) -> JsonResponse | None:
    """The answer to a charset that is a codec Python knows but cannot decode text with, if it is
    one. UTF-8 under another of Python's names (`charset=utf8`) is read as "utf-8": Django's form
    parsing refuses every other name (a 400 at the token and revocation endpoints), DRF's
    (introspection, registration) takes the aliases. A name Python does not know is left to Django,
    which ignores it."""
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        return None
    if codec.name == "utf-8":
        if charset.lower() != "utf-8":
            request.encoding = "utf-8"
        return None
    try:
        b"a\xff".decode(charset, "replace")  # as Django decodes a form's fields
    except (LookupError, ValueError):  # no text encoding (rot13, zlib), or one that fails even so (idna)
        return errors.error_response(
            "invalid_request",
            "The charset of the Content-Type is not a text encoding; send UTF-8.",
            status=415,
        )
    if _ascii_form_body(request, codec):
        request.encoding = "utf-8"  # what it says in its charset, it says in UTF-8
    return None


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))
# A form body's escapes of bytes beyond ASCII: the only part of it whose meaning is its charset's.
_ESCAPE_BEYOND_ASCII = re.compile(rb"%[89a-fA-F][0-9a-fA-F]")


def _ascii_form_body(request, codec: codecs.CodecInfo) -> bool:
    """Whether a form body of declared length, in a charset that reads printable ASCII as ASCII
    (ISO-8859-1, windows-1252, US-ASCII; not UTF-16 or UTF-7), is printable ASCII escaping no byte
    beyond it: then it means the same in UTF-8 (RFC 6749 Appendix B). Anything else is refused."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if request.content_type != FORM_CONTENT_TYPE or length == "0":
        return False
    try:
        if codec.decode(_PRINTABLE_ASCII)[0] != _PRINTABLE_ASCII.decode("ascii"):
            return False
    except ValueError:
        return False
    body = request.body  # no more than MAX_REQUEST_BODY_BYTES: its declared length was checked
    return not body.translate(None, _PRINTABLE_ASCII) and not _ESCAPE_BEYOND_ASCII.search(body)


def _unreadable_body(exception: UnreadablePostError) -> JsonResponse:
    if _timed_out(exception):  # the client went silent (config.workers.CLIENT_TIMEOUT)
        return errors.error_response(
            "invalid_request", "The request body did not arrive in time.", status=408
        )
    return errors.error_response("invalid_request", "The request body could not be read.")


def _timed_out(exception: BaseException | None) -> bool:
    while exception is not None:  # Django re-raises the read's error, once or twice
        if isinstance(exception, TimeoutError):
            return True
        exception = exception.__cause__
    return False


def _codings(header: str) -> set[str]:
    return {coding.strip().lower() for coding in header.split(",")} - {""}


def _is_json(response) -> bool:
    return response.get("Content-Type", "").startswith("application/json")
