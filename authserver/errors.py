"""Every error a client can cause, shaped the way its RFC says, built in this one module.

OAuth endpoints answer RFC 6749 5.2 / RFC 7009 / RFC 7591 / RFC 7662 JSON errors, the protected
resources answer RFC 6750 Bearer challenges; paths for machines never get an HTML error page.
"""

import math
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import BadRequest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from django.middleware.csrf import REASON_NO_CSRF_COOKIE
from django.shortcuts import render
from django.urls import reverse
from oauthlib.oauth2 import OAuth2Error
from rest_framework import exceptions
from rest_framework.response import Response

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MACHINE_PATH_PREFIXES = ("/oauth2/", "/api/", "/.well-known/", "/healthz", "/readyz")
OAUTH_PATH_PREFIX = "/oauth2/"
PROTECTED_RESOURCE_PREFIX = "/api/"  # the Foo API, whose RFC 9728 metadata DOT's view publishes


# RFC 6749 5.2 (RFC 7591 3.2.2 and RFC 7662 too): an error_description holds %x20-21 / %x23-5B /
# %x5D-7E, printable ASCII without the double quote and the backslash.
_DESCRIBABLE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) not in '"%\\')


def describable(text: str) -> str:
    """`text` as an OAuth error_description may hold it: any other character (a quote, a backslash,
    non-ASCII, a control character) percent-encoded, and so a percent sign too."""
    return quote(text, safe=_DESCRIBABLE)


def is_machine_path(path: str) -> bool:
    # Leading slashes as one: a client whose base URL ends in a slash asks for //api/..., no such
    # path, but a machine's.
    return ("/" + path.lstrip("/")).startswith(MACHINE_PATH_PREFIXES)


def error_body(error: str, description: str = "", **extra) -> dict:
    body = {"error": error}
    if description:
        body["error_description"] = description
    body.update(extra)
    return body


def error_response(
    error: str, description: str = "", *, status: int = 400, headers=None, **extra
) -> JsonResponse:
    response = JsonResponse(error_body(error, description, **extra), status=status)
    for name, value in {**NO_STORE, **(headers or {})}.items():
        response[name] = value
    return response


def database_unavailable() -> JsonResponse:
    return error_response(
        "temporarily_unavailable",
        "The database is unreachable; try again shortly.",
        status=503,
        headers={"Retry-After": "5"},
    )


def request_too_large() -> JsonResponse:
    limit = settings.MAX_REQUEST_BODY_BYTES
    return error_response("invalid_request", f"The request body is larger than {limit} bytes.", status=413)


def too_many_parameters() -> JsonResponse:
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    return error_response("invalid_request", f"The request has more than {limit} parameters.")


def too_many_requests(retry_after: int) -> JsonResponse:
    description = f"Too many requests; retry after {retry_after} seconds."
    return error_response(
        "too_many_requests", description, status=429, headers={"Retry-After": str(retry_after)}
    )


class TooManyRequestsError(OAuth2Error):
    """Raised inside oauthlib (client authentication) when the caller is throttled."""

    error = "too_many_requests"
    status_code = 429

    def __init__(self, retry_after: int, **kwargs):
        super().__init__(
            description=f"Too many failed attempts; retry after {retry_after} seconds.", **kwargs
        )
        self.retry_after = retry_after

    @property
    def headers(self) -> dict:
        return {"Retry-After": str(self.retry_after)}


def _quoted(value: str) -> str:
    """An RFC 9110 quoted-string: no way out of the quotes, no header injection."""
    value = str(value).replace("\r", "").replace("\n", "")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def basic_challenge() -> str:
    return f'Basic realm={_quoted(settings.OAUTH_REALM)}, charset="UTF-8"'


def bearer_challenge(error: str = "", description: str = "", scope: str = "") -> str:
    """RFC 6750 3: no error attribute when the request carried no token at all."""
    params = {"realm": settings.OAUTH_REALM, "error": error, "error_description": description, "scope": scope}
    return "Bearer " + ", ".join(f"{name}={_quoted(value)}" for name, value in params.items() if value)


def with_resource_metadata(request, challenge: str) -> str:
    """RFC 9728 5.1: a Bearer challenge from the Foo API names the resource's metadata, where a
    client finds the authorization server that issues its tokens and the scopes it accepts."""
    if not (challenge.startswith("Bearer") and request.path.startswith(PROTECTED_RESOURCE_PREFIX)):
        return challenge
    metadata = settings.ISSUER + reverse("oauth2_provider:oauth-resource-metadata")
    return f"{challenge}, resource_metadata={_quoted(metadata)}"


def oauth_response_headers(headers: dict, status: int) -> dict:
    """Headers for an oauthlib response: JSON and no-store always (oauthlib sets them only for
    some errors), and for a 401 the scheme clients authenticate with (RFC 6749 5.2: Basic), not
    the Bearer challenge oauthlib puts on every 401."""
    headers = {"Content-Type": "application/json", **NO_STORE, **headers}
    if status == 401:
        headers["WWW-Authenticate"] = basic_challenge()
    return headers


# --- Django REST framework: the Foo API, introspection and registration ----------------------------


class InvalidClient(exceptions.AuthenticationFailed):
    default_detail = "Client authentication failed."
    default_code = "invalid_client"


class InvalidToken(exceptions.AuthenticationFailed):
    default_detail = "The access token is invalid."
    default_code = "invalid_token"


class MalformedBearer(exceptions.ParseError):
    """RFC 6750 3.1 invalid_request: Bearer credentials that are no one access token, or a token sent
    in more than one way. 400, with a Bearer challenge naming the error."""

    default_code = "invalid_request"


class InvalidRedirectUri(exceptions.ValidationError):
    """Registration metadata whose redirection URIs are refused: RFC 7591 3.2.2 names its own code."""

    default_code = "invalid_redirect_uri"


class InsufficientScope(exceptions.PermissionDenied):
    default_code = "insufficient_scope"

    def __init__(self, required_scopes):
        self.required_scopes = " ".join(required_scopes)
        super().__init__(f"This request needs the scope: {self.required_scopes}.")


class TooManyRequests(exceptions.Throttled):
    default_code = "too_many_requests"


class TooManyRegistrations(TooManyRequests):
    """A registrar over its limit of clients registered (throttling.record_registration)."""

    default_detail = "This client has registered as many clients as it may for now."


def _drf_error(exc: exceptions.APIException, view) -> tuple[str, dict]:
    """(error code, extra body fields) for a DRF exception on `view`."""
    if isinstance(exc, InsufficientScope):
        return "insufficient_scope", {"scope": exc.required_scopes}
    if isinstance(exc, InvalidClient):
        return "invalid_client", {}
    if isinstance(exc, MalformedBearer):  # RFC 6750's, wherever the token is presented
        return "invalid_request", {}
    if isinstance(exc, InvalidRedirectUri):
        return "invalid_redirect_uri", {}
    if isinstance(exc, (exceptions.ParseError, exceptions.ValidationError)):
        # A view may name its RFC's own code for a bad body, e.g. invalid_client_metadata (RFC 7591);
        # a body of another media type is no metadata at all: invalid_request, as everywhere else.
        return getattr(view, "bad_request_error", "invalid_request"), {}
    if isinstance(exc, exceptions.Throttled):
        return "too_many_requests", {}
    return {
        exceptions.NotFound: "not_found",
        exceptions.MethodNotAllowed: "method_not_allowed",
        exceptions.NotAcceptable: "not_acceptable",
        exceptions.PermissionDenied: "access_denied",
    }.get(type(exc), "invalid_request"), {}


def _description(exc: exceptions.APIException) -> str:
    detail = exc.detail
    if isinstance(detail, dict):
        return "; ".join(f"{field}: {messages}" for field, messages in _field_messages(detail))
    if isinstance(detail, list):
        return " ".join(map(str, detail))
    return str(detail)


def _field_messages(detail, path: str = ""):
    """(dotted field path, messages) of a nested DRF error, e.g. ("lines.0.quantity", "...")."""
    if isinstance(detail, dict):
        for field, nested in detail.items():
            yield from _field_messages(nested, f"{path}.{field}" if path else str(field))
    elif isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        for index, nested in enumerate(detail):
            if nested:  # a list serializer reports {} for the items without errors
                yield from _field_messages(nested, f"{path}.{index}")
    else:
        yield path, " ".join(map(str, detail)) if isinstance(detail, list) else str(detail)


def api_exception_handler(exc, context):
    """DRF EXCEPTION_HANDLER: RFC-shaped JSON and challenges for every API error."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # not a client error: ProtocolErrorMiddleware or the 500 handler answers

    request, view = context["request"], context.get("view")
    headers = dict(NO_STORE)
    status = exc.status_code
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        if isinstance(exc, InvalidClient):
            error, description, challenge = "invalid_client", _description(exc), basic_challenge()
        elif isinstance(exc, InvalidToken):
            error, description = "invalid_token", _description(exc)
            challenge = bearer_challenge(error, description)
        else:
            # DOT's authentication leaves what was wrong with a presented token on the request.
            oauth2_error = getattr(request, "oauth2_error", None) or {}
            error = oauth2_error.get("error", "")
            description = oauth2_error.get("error_description", "")
            challenge = bearer_challenge(error, description)
            schemes = [each.authenticate_header(request) for each in getattr(request, "authenticators", ())]
            if not error and basic_challenge() in schemes:
                # No credentials where a client may authenticate with its secret (introspection):
                # RFC 6749 5.2's invalid_client ("no client authentication included"), as the
                # revocation endpoint answers, challenging with each scheme it takes (RFC 7235 4.1).
                error, description = "invalid_client", "No client authentication was included."
                challenge = ", ".join(schemes)
        body = error_body(error or "unauthorized", description or _description(exc))
        challenge = with_resource_metadata(request, challenge)
        return Response(body, status=401, headers={**headers, "WWW-Authenticate": challenge})
    if isinstance(exc, MalformedBearer):
        headers["WWW-Authenticate"] = bearer_challenge("invalid_request", str(exc.detail))
    if isinstance(exc, InsufficientScope) and _authenticated_with_a_bearer_token(request):
        # RFC 6750 3.1's challenge, for a token; a client that authenticated with its secret
        # (introspection) is told in the body alone: Basic has no scopes to challenge for.
        headers["WWW-Authenticate"] = bearer_challenge(
            "insufficient_scope", str(exc.detail), exc.required_scopes
        )
        # A view may answer it otherwise than RFC 6750 3.1's 403: introspection's 401 (RFC 7662 2.3).
        status = getattr(view, "bearer_without_scope_status", status)
    if "WWW-Authenticate" in headers:
        headers["WWW-Authenticate"] = with_resource_metadata(request, headers["WWW-Authenticate"])
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(math.ceil(exc.wait))  # what DRF says in the description
    error, extra = _drf_error(exc, view)
    description = _description(exc)
    if request.path.startswith(OAUTH_PATH_PREFIX):
        # DRF's messages quote what the client sent ("é" is not a valid choice.): quoted in single
        # quotes, and what RFC 6749 5.2 allows no error_description to hold percent-encoded.
        description = describable(description.replace('"', "'"))
    return Response(error_body(error, description, **extra), status=status, headers=headers)


def _authenticated_with_a_bearer_token(request) -> bool:
    authenticator = getattr(request, "successful_authenticator", None)
    return authenticator is not None and authenticator.authenticate_header(request).startswith("Bearer")


# --- Django's error views (config/urls.py handler400 ... handler500) ------------------------------

_PAGES = {
    400: ("invalid_request", "The request could not be understood."),
    403: ("access_denied", "You do not have access to this page."),
    404: ("not_found", "There is nothing at this address."),
    500: ("server_error", "Something went wrong on our side; it has been logged."),
}


def _error_page(request, status: int, description: str = ""):
    error, general = _PAGES[status]
    description = description or general
    if is_machine_path(request.path):
        return error_response(error, description, status=status)
    return render(request, "error.html", {"status": status, "description": description}, status=status)


def bad_request(request, exception=None):
    # A BadRequest says what was wrong in words meant for the client (Django's: a form body in
    # another charset than UTF-8; the console's); a SuspiciousOperation's may name settings.
    description = str(exception) if isinstance(exception, BadRequest) else ""
    return _error_page(request, 400, description)


def permission_denied(request, exception=None):
    return _error_page(request, 403)


def page_not_found(request, exception=None):
    return _error_page(request, 404)


def csrf_failure(request, reason=""):
    if reason == REASON_NO_CSRF_COOKIE:
        # Cookies blocked for the site (or cleared since the page loaded): reloading alone would
        # fail the same way.
        return _error_page(
            request,
            403,
            "This form needs a cookie your browser did not send. If cookies are blocked for this "
            "site, allow them; then reload the page and try again.",
        )
    # Most often a page loaded before a login or logout in another tab: its form is out of date.
    return _error_page(
        request,
        403,
        "This form is out of date: you may have logged in or out in another tab since the page was "
        "loaded. Go back, reload the page and try again.",
    )


def server_error(request):
    return _error_page(request, 500)
