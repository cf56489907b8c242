"""How callers of the Foo API, introspection and registration prove who they are (DRF classes)."""

import re

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import SuspiciousOperation
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from oauthlib.oauth2 import OAuth2Error
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from authserver.errors import (
    InvalidClient,
    MalformedBearer,
    TooManyRequests,
    TooManyRequestsError,
    basic_challenge,
    bearer_challenge,
)
from authserver.oauth import oauthlib_core, sent_values

# RFC 6750 2.1: credentials = "Bearer" 1*SP b64token
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
TOKEN_SENT_TWICE = "Send the access token once, in the Authorization header only."


def malformed_bearer(request) -> str:
    """Why a request's Bearer credentials are malformed (RFC 6750 3.1 invalid_request), or "": an
    `Authorization: Bearer` header that is not followed by exactly one b64token, or a Bearer header
    with a token in the URL as well (more than one method; the URL's is never accepted anyway)."""
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if not parts or parts[0].lower() != "bearer":
        return ""
    if len(parts) != 2 or not _B64TOKEN.fullmatch(parts[1]):
        return "The Authorization header must be: Bearer <access token>."
    if any(request.GET.getlist("access_token")):
        return TOKEN_SENT_TWICE
    return ""


def _token_in_form_body(request) -> bool:
    """Whether a POSTed form body carries an `access_token` (RFC 6750 2.2's method)."""
    django_request = getattr(request, "_request", request)  # DRF's Request wraps Django's
    return django_request.content_type == FORM_CONTENT_TYPE and any(
        django_request.POST.getlist("access_token")
    )


class BearerTokenAuthentication(OAuth2Authentication):
    """An access token in `Authorization: Bearer` (never the query string: RFC 9700 4.3.2).

    Client-credentials tokens act for a client, not a user: `request.auth` is the AccessToken and
    `request.auth.application` the client; `request.user` is anonymous.
    """

    def authenticate(self, request):
        if request.method == "POST" and _token_in_form_body(request):
            # RFC 6750 2.2's form body is not a method this server takes (its metadata's
            # bearer_methods_supported: header); beside a header it is two methods (3.1).
            if request.META.get("HTTP_AUTHORIZATION", "").partition(" ")[0].lower() == "bearer":
                raise MalformedBearer(TOKEN_SENT_TWICE)
            return None
        # DOT's OAuth2Authentication.authenticate, with the process's oauthlib core rather than one
        # built for every request.
        try:
            valid, oauthlib_request = oauthlib_core().verify_request(request, scopes=[])
        except ValueError as error:
            if str(error) == "Invalid hex encoding in query string.":
                raise SuspiciousOperation(error) from error
            raise
        if not valid:
            problem = malformed_bearer(request)
            if problem:
                raise MalformedBearer(problem)
            # What the validator set, never a query parameter: oauthlib's Request answers
            # getattr() with the URL's parameters too (`?oauth2_error=x` was a str here, then a
            # 500). No request at all: a token in the query string (RFC 9700 4.3.2).
            attributes = vars(oauthlib_request) if oauthlib_request is not None else {}
            request.oauth2_error = attributes.get("oauth2_error", {})
            return None
        return oauthlib_request.user or AnonymousUser(), oauthlib_request.access_token

    def authenticate_header(self, request):
        return bearer_challenge()


class ClientSecretAuthentication(BaseAuthentication):
    """A client authenticating with its id and secret (HTTP Basic or form body, RFC 6749 2.3.1).

    `request.auth` is then the client (Application). Only tried when the request carries Basic
    credentials or a client_secret; a wrong secret is `invalid_client`.
    """

    def authenticate(self, request):
        scheme = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")[0]
        # The scheme's name in any case (RFC 9110 11.1); a client_secret sent without a value is
        # none (RFC 6749 3.2).
        if scheme.lower() != "basic" and not sent_values(request.POST, "client_secret"):
            return None
        if scheme.lower() == "bearer":
            # A secret in the body beside a bearer token: two methods (RFC 6749 2.3, 5.2), refused as
            # at the token endpoint rather than one of them taken and the other ignored.
            raise exceptions.ParseError("Use one authentication method: a client secret or a bearer token.")
        try:
            client = oauthlib_core().authenticated_client(request)
        except TooManyRequestsError as throttled:
            raise TooManyRequests(wait=throttled.retry_after) from throttled
        except OAuth2Error as error:  # two authentication methods, a repeated client_secret...
            raise exceptions.ParseError(error.description) from error
        if client is None:
            raise InvalidClient()
        return AnonymousUser(), client

    def authenticate_header(self, request):
        return basic_challenge()
