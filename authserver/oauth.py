"""django-oauth-toolkit, extended through the classes its settings name (config/settings.py).

- ClientCredentialsServer (OAUTH2_SERVER_CLASS): the one grant this server offers, with each
  client's own access-token lifetime.
- Validator (OAUTH2_VALIDATOR_CLASS): per-client scopes, enabled/disabled clients, fast secret
  hashes with upgrade of legacy ones, audit events, one authentication method per request.
- OAuthLibCore (OAUTH2_BACKEND_CLASS): keeps repeated parameters so oauthlib can reject them, and
  answers failed client authentication with a Basic challenge (RFC 6749 5.2); `oauthlib_core()`
  is the one instance of it a process needs.
"""

import base64
import binascii
import functools
import hashlib
import re
import secrets
import string
from collections.abc import Callable
from urllib.parse import unquote, unquote_plus, urlsplit

from django.contrib.auth.hashers import identify_hasher, make_password
from django.core.signals import setting_changed
from django.db import router
from django.dispatch import receiver
from oauth2_provider import oauth2_backends
from oauth2_provider.models import get_access_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator, validate_resource_as_url_prefix
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OauthlibRequest
from oauthlib.oauth2 import BackendApplicationServer, RevocationEndpoint
from oauthlib.oauth2.rfc6749 import errors, grant_types
from oauthlib.oauth2.rfc6749.tokens import get_token_from_header

from authserver import errors as protocol_errors
from authserver import hotpath, services, throttling, validity
from authserver.models import Application, AuditEvent
from authserver.scopes import SCOPE_SYNTAX_MESSAGE, well_formed_scope

AccessToken = get_access_token_model()


# oauthlib's token alphabet; 248 is the largest multiple of its 62 characters below 256.
TOKEN_CHARACTERS = string.ascii_letters + string.digits
TOKEN_LENGTH = 30
_UNBIASED_BYTE_LIMIT = 248
# Random bytes to characters in one bytes.translate(): byte b is character b % 62, and the bytes from
# 248 up are dropped (rejection sampling keeps every character equally likely).
_BYTE_TO_CHARACTER = bytes(ord(TOKEN_CHARACTERS[byte % len(TOKEN_CHARACTERS)]) for byte in range(256))
_BIASED_BYTES = bytes(range(_UNBIASED_BYTE_LIMIT, 256))


def generate_access_token(request) -> str:
    """ACCESS_TOKEN_GENERATOR: what oauthlib's default makes (30 characters of [A-Za-z0-9], ~178
    bits), from one read of the system's random source instead of one per character."""
    characters = b""
    while len(characters) < TOKEN_LENGTH:  # 60 bytes keep fewer than 30 once in ~10^29 draws
        characters += secrets.token_bytes(2 * TOKEN_LENGTH).translate(_BYTE_TO_CHARACTER, _BIASED_BYTES)
    return characters[:TOKEN_LENGTH].decode("ascii")


class ClientCredentialsGrant(grant_types.ClientCredentialsGrant):
    """oauthlib's grant, whose `unsupported_grant_type` also says which grant this server offers."""

    def validate_token_request(self, request):
        grant_type = getattr(request, "grant_type", None)
        if grant_type and grant_type != "client_credentials":  # oauthlib's check, at the same point
            if "grant_type" in request.duplicate_params:
                # RFC 6749 3.2: a repeated grant_type is invalid_request whichever value comes last
                # (oauthlib reads the last; `client_credentials` then `password` was "unsupported").
                raise errors.InvalidRequestError(
                    description="Duplicate grant_type parameter.", request=request
                )
            raise errors.UnsupportedGrantTypeError(
                description="This server offers the client_credentials grant only.", request=request
            )
        super().validate_token_request(request)


class ClientCredentialsServer(BackendApplicationServer):
    """oauthlib's client credentials server: token, revocation, introspection and resource endpoints.

    Any other grant type is answered `unsupported_grant_type`. DOT passes its whole set of server
    keyword arguments; the ones for grants this server does not run are not used.
    """

    def __init__(self, request_validator, token_generator=None, **dot_server_kwargs):
        super().__init__(
            request_validator, token_generator=token_generator, token_expires_in=self.access_token_lifetime
        )
        # The token endpoint's one grant (its default too: any grant_type goes to it), ours.
        self.credentials_grant = ClientCredentialsGrant(request_validator)
        self.grant_types["client_credentials"] = self.credentials_grant
        # RFC 7009 2.1: token_type_hint is a hint, and a token not found under it is searched for
        # under every type (Validator.revoke_token looks at the token alone). oauthlib would refuse
        # a refresh_token hint as unsupported_token_type and leave the access token it names valid.
        self.supported_token_types = RevocationEndpoint.valid_token_types

    @staticmethod
    def access_token_lifetime(request) -> int:
        return request.client.token_lifetime


# RFC 7617 2: Basic credentials are base64 (RFC 4648 4) and nothing else.
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


# Characters no URI holds (RFC 3986 2) that DOT's resource check lets through: C0 controls and DEL.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def names_basic(authorization: str | None) -> bool:
    """Whether an Authorization header value is of the Basic scheme (its name in any case, RFC 9110
    11.1), whatever follows."""
    return (authorization or "").partition(" ")[0].lower() == "basic"


def basic_credentials(authorization: str | None) -> str | None:
    """The base64 credentials of an `Authorization: Basic ...` header value, the scheme's name
    followed by one or more spaces; None for another scheme, and for anything that is not base64
    alone: stray characters, or two Authorization headers joined by a comma."""
    if not names_basic(authorization):
        return None
    encoded = authorization.partition(" ")[2].lstrip(" ")
    return encoded if _BASE64.fullmatch(encoded) else None


def sent_values(form, name: str) -> list[str]:
    """The values of form parameter `name` that are not empty: a parameter sent without a value is
    treated as if it were omitted (RFC 6749 3.1, 3.2; RFC 7009 and RFC 7662 requests alike)."""
    return [value for value in form.getlist(name) if value]


def presented_basic_credentials(request) -> tuple[str, str] | None:
    """(client_id, client_secret) from `Authorization: Basic`, form-decoded as RFC 6749 2.3.1 says."""
    encoded = basic_credentials(request.headers.get("HTTP_AUTHORIZATION"))
    if encoded is None:
        return None
    try:
        client_id, separator, client_secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not separator:
        return None
    return unquote_plus(client_id), unquote_plus(client_secret)


class Validator(OAuth2Validator):
    def authenticate_client(self, request, *args, **kwargs):
        basic = presented_basic_credentials(request)
        if basic is None and names_basic(request.headers.get("HTTP_AUTHORIZATION")):
            # Basic credentials that are no base64 of id:secret fail as they are; a secret in the
            # body is a second method, not a way around them.
            basic = ("", "")
        self._reject_ambiguous_credentials(request, basic)
        client_id, client_secret = basic or (request.client_id or "", getattr(request, "client_secret", None))
        address = throttling.client_address(request.headers)
        retry_after = throttling.client_auth_retry_after(client_id, address)
        if retry_after:
            raise protocol_errors.TooManyRequestsError(retry_after, request=request)

        authenticated = super().authenticate_client(request, *args, **kwargs)
        if authenticated:
            self._upgrade_secret_hash(request.client, client_secret)
            return True
        # A client remembered under an epoch the token endpoint assumed may have a new secret since:
        # no failure is recorded before the epoch is confirmed (StaleEpoch: served again).
        validity.confirm_shared_epoch(_token_database())
        throttling.record_client_auth_failure(client_id, address)
        services.record_event(
            kind=AuditEvent.Kind.AUTH_FAILED,
            client_id=client_id,
            application=services.find_client(client_id),
            actor=f"client:{client_id}",
            remote_addr=address,
            detail={"endpoint": request.uri.partition("?")[0][-64:]},
        )
        return False

    @staticmethod
    def _reject_ambiguous_credentials(request, basic) -> None:
        for parameter in ("client_id", "client_secret"):
            if parameter in request.duplicate_params:
                raise errors.InvalidRequestError(
                    description=f"Repeated {parameter} parameter.", request=request
                )
        if basic is None:
            return
        # RFC 6749 2.3: a client MUST NOT use more than one authentication method in a request.
        if getattr(request, "client_secret", None) is not None:
            raise errors.InvalidRequestError(
                description="Use one client authentication method: HTTP Basic or client_secret in the body.",
                request=request,
            )
        # A Basic header that names no client (malformed, or an empty user-id) fails as it is: 401.
        if request.client_id and basic[0] and request.client_id != basic[0]:
            raise errors.InvalidRequestError(
                description="client_id does not match the client in the Authorization header.",
                request=request,
            )

    def _load_application(self, client_id, request):
        # No client id contains NUL, and PostgreSQL (psycopg 3) raises DataError for one, which
        # DOT does not expect (it catches psycopg 2's ValueError).
        if client_id and "\x00" in client_id:
            return None
        if not client_id:
            # No client named (DOT tries the body after Basic failed): what DOT ends with, without its
            # query for a client whose client_id IS NULL.
            request.client = None
            return None
        if not request.client and client_id:
            # The client and the scopes it may hold in one query; DOT then checks and keeps it.
            request.client = hotpath.client_with_scope_names(client_id)
        return super()._load_application(client_id, request)

    def _load_access_token(self, token):
        # What DOT loads (the token, its client and user in one query), without compiling it each time.
        return hotpath.access_token_with_client(hashlib.sha256(token.encode("utf-8")).hexdigest())

    def _extract_basic_auth(self, request):
        # DOT's, with the scheme's name in any case; non-ASCII credentials, on which DOT's base64
        # decoding raises ValueError (a 500), are none.
        return basic_credentials(request.headers.get("HTTP_AUTHORIZATION"))

    def _check_secret(self, provided_secret, stored_secret):
        # An empty secret never matches; DOT compares hashes and plain values in constant time.
        return bool(provided_secret) and super()._check_secret(provided_secret, stored_secret)

    @staticmethod
    def _upgrade_secret_hash(application: Application, client_secret: str | None) -> None:
        """Re-hash a secret stored with a slow or outdated hasher (or none), now that we know it."""
        stored = application.client_secret
        wanted = oauth2_settings.CLIENT_SECRET_HASHER
        if not client_secret or not application.hash_client_secret:
            return
        try:
            current = identify_hasher(stored).algorithm
        except ValueError:
            current = None  # stored in plain text: hash it now
        if current == wanted:
            return
        # Conditional on the old hash: a secret rotated meanwhile must not be overwritten.
        upgraded = Application.objects.filter(pk=application.pk, client_secret=stored).update(
            client_secret=make_password(client_secret, hasher=wanted)
        )
        if upgraded:  # not when another worker did it first
            # Workers remember the client with its old hash. This request's token, decided on the
            # epoch before, is then written nowhere: it is served again (validity.StaleEpoch).
            validity.tokens_or_clients_changed()

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        sent = request.scope  # as sent: oauthlib strips it of any whitespace, a no-break space too
        if isinstance(sent, str) and not well_formed_scope(sent):
            raise errors.InvalidScopeError(description=SCOPE_SYNTAX_MESSAGE, request=request)
        requested = list(dict.fromkeys(scopes))  # a scope asked for twice is granted once
        request.scopes = requested
        if requested and super().validate_scopes(client_id, requested, client, request, *args, **kwargs):
            return True
        # RFC 6749 5.2's invalid_scope, saying what the client (authenticated by now) may ask for;
        # a client that may hold no scope gets no token.
        allowed = " ".join(sorted(client.allowed_scope_names)) or "no scope"
        raise errors.InvalidScopeError(description=f"This client may be granted: {allowed}.", request=request)

    def _validate_resource_uris(self, request, resources):
        # RFC 8707 2: DOT rejects a resource that is no absolute URI; a resource this server does not
        # protect is "unknown" to it, invalid_target too, rather than a token for someone else's API.
        for resource in resources:
            try:
                if _CONTROL_CHARACTER.search(resource):  # no URI's (RFC 3986 2); a NUL: a 500 on PostgreSQL
                    raise ValueError("A control character in a resource.")
                urlsplit(resource)  # DOT's check lets its ValueError through (`https://[::1`): a 500
                super()._validate_resource_uris(request, [resource])
            except (ValueError, errors.CustomOAuth2Error):
                # DOT's description quotes the resource as sent: RFC 6749 5.2 allows none of its
                # quotes, backslashes or non-ASCII characters there, so it is named percent-encoded
                # (a space too: it is a URI's).
                named = protocol_errors.describable(resource).replace(" ", "%20")
                raise errors.CustomOAuth2Error(
                    error="invalid_target",
                    description=(
                        f"The resource {named} is not a valid resource indicator: it must be an "
                        "absolute URI with a scheme and host."
                    ),
                    request=request,
                ) from None
        protected = oauth2_settings.OAUTH2_PROTECTED_RESOURCE_IDENTIFIER  # RFC 9728's `resource`
        for resource in resources:
            # A dot-segment (RFC 3986 3.3, percent-encoded too) names another path than its text:
            # `/api/v1/../../admin` begins like ours and is not under it.
            dot_segment = any(
                unquote(segment) in {".", ".."} for segment in urlsplit(resource).path.split("/")
            )
            if dot_segment or not validate_resource_as_url_prefix(resource, [protected]):
                raise errors.CustomOAuth2Error(
                    error="invalid_target",
                    description=f"This server issues tokens for {protected} and the resources under it.",
                    request=request,
                )

    def save_bearer_token(self, token, request, *args, **kwargs):
        # DOT runs _save_bearer_token in a transaction of its own. Here _save_bearer_token only
        # builds the access token (_create_access_token); the token and its audit event are then
        # written together: one statement on PostgreSQL, one short queued transaction on SQLite
        # (authserver/hotpath.py). Both rows or neither.
        self._save_bearer_token(token, request, *args, **kwargs)
        event = services.audit_event(
            kind=AuditEvent.Kind.TOKEN_ISSUED,
            application=request.client,
            # services.issue_token_for_owner names who asked on the client's behalf. Read from the
            # request's own attributes: oauthlib's getattr() falls back to the form's parameters,
            # and a client's `actor=...` must not write the trail's actor (RFC 6749 3.2: ignored).
            actor=vars(request).get("actor") or f"client:{request.client.client_id}",
            remote_addr=throttling.client_address(request.headers),
            detail={"scope": token["scope"], "expires_in": token["expires_in"]},
        )
        hotpath.insert_issued_token(request.unsaved_access_token, event)

    def _create_access_token(self, expires, request, token, source_refresh_token=None):
        # The AccessToken DOT builds for a client credentials grant (the only grant this server
        # runs: no ID token, no refresh token), left for save_bearer_token to write.
        access_token = AccessToken(
            user=request.user,
            scope=token["scope"],
            expires=expires,
            application=request.client,
            resource=getattr(request, "resource", []),  # RFC 8707
        )
        self._set_token_value(access_token, token["access_token"])
        request.unsaved_access_token = access_token
        return access_token

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        try:
            services.revoke_presented_token(
                token=token,
                application=request.client,
                actor=f"client:{request.client.client_id}",
                remote_addr=throttling.client_address(request.headers),
            )
        except services.AnotherClientsToken as refused:
            # RFC 7009 2.1: refused, and the client told so with an RFC 6749 5.2 error (what
            # Keycloak and Hydra answer). Raised out of oauthlib's revocation endpoint, which
            # calls this after its own checks: OAuthLibCore.create_revocation_response answers it.
            raise errors.UnauthorizedClientError(
                description="This token was not issued to this client.", request=request
            ) from refused


class _BearerTokenRequest(OauthlibRequest):
    """oauthlib's Request for checking a bearer token from the Authorization header, whose absolute
    URI is built when first read: DOT's validate_bearer_token reads it only for a token restricted
    to resources (RFC 8707's audience check), and building it (DOT's escaping, the host and scheme)
    cost 25 µs of every API call (docs/benchmarks.md item 27). The URL's parameters are not among
    its parameters: the token is never read from them (RFC 9700 4.3.2) and nothing else is."""

    def __init__(self, build_uri: Callable[[], str], http_method: str, authorization: str):
        super().__init__("", http_method, headers={"Authorization": authorization})
        del self.uri  # the stand-in __init__ parsed; `uri` is now the property below
        self._build_uri = build_uri

    @functools.cached_property
    def uri(self) -> str:
        return self._build_uri()


def _token_database() -> str:
    """The database tokens are written to, whose epoch the token endpoint assumes and confirms."""
    return router.db_for_write(AccessToken)


def oauthlib_core() -> "OAuthLibCore":
    """DOT's get_oauthlib_core(), built once per process as DOT's views keep theirs
    (OAuthLibMixin.get_oauthlib_core), not on every API request as DOT's DRF authentication does:
    the backend, the oauthlib server and the validator hold no per-request state.
    ALWAYS_RELOAD_OAUTHLIB_CORE builds a new one every time, as it does for DOT's views."""
    if oauth2_settings.ALWAYS_RELOAD_OAUTHLIB_CORE:
        return oauth2_backends.get_oauthlib_core()
    return _process_oauthlib_core()


@functools.cache
def _process_oauthlib_core() -> "OAuthLibCore":
    return oauth2_backends.get_oauthlib_core()


@receiver(setting_changed)
def _forget_oauthlib_core(setting, **kwargs) -> None:
    if setting == "OAUTH2_PROVIDER":  # DOT reloads its settings then (oauth2_provider.settings)
        _process_oauthlib_core.cache_clear()


# What DOT's extract_headers adds for oauthlib, and the CGI variables besides HTTP_* that the
# validator reads (the caller's address, the body's type).
_OAUTHLIB_HEADERS = frozenset(
    {"Authorization", "Content-Type", "Origin", "X_DJANGO_OAUTH_TOOLKIT_SECURE"}
    | {"CONTENT_TYPE", "CONTENT_LENGTH", "REMOTE_ADDR"}
)


class OAuthLibCore(oauth2_backends.OAuthLibCore):
    def extract_headers(self, request):
        # oauthlib decodes every entry it is given, on every request; META's server and WSGI
        # variables (wsgi.*, SERVER_*, the socket...) are no request headers and nothing reads them.
        return {
            name: value
            for name, value in super().extract_headers(request).items()
            if name.startswith("HTTP_") or name in _OAUTHLIB_HEADERS
        }

    def extract_body(self, request):
        if request.method in ("GET", "HEAD"):
            return []  # a bearer token is never read from a GET body (RFC 6750 2.2)
        # Every value of every parameter, so that oauthlib rejects repeated ones, but none sent
        # without a value: those are treated as if omitted (RFC 6749 3.2; `scope=` asks for the
        # client's default scopes, `client_secret=` beside Basic is no second method). Nor `state`,
        # an authorization request's (RFC 6749 4.1.1), which oauthlib echoed into every error.
        return [
            (key, value)
            for key, values in request.POST.lists()
            if key != "state"
            for value in values
            if value
        ]

    def verify_request(self, request, scopes):
        """DOT's verify_request. A request whose token is in an `Authorization: Bearer` header (RFC
        6750 2.1: how every API call sends it) goes to the validator's validate_bearer_token with
        what oauthlib's resource endpoint would give it: the token read from the header by oauthlib
        (get_token_from_header), the request's absolute URI (RFC 8707 audience; built if read,
        _BearerTokenRequest), the scopes and the header; none of DOT's and oauthlib's copying of
        every header and parameter (40 µs of a 600 µs catalogue call, docs/benchmarks.md item 25).
        That URI is the request's path on the resource's identifier (RFC 9728's `resource`, under
        which the token endpoint takes resources), whatever Host header the request came with: on
        it (DOT's build_absolute_uri), another name of the server or a proxy passing its upstream's
        address refused every token restricted to resources.
        Any other request, a token in the query string (which DOT refuses, RFC 9700 4.3.2) or no
        Bearer header, takes DOT's whole path; an `access_token` sent without a value is no token
        (RFC 6749 3.2), as malformed_bearer() and a form body's count it: DOT refused the header's."""
        authorization = request.META.get("HTTP_AUTHORIZATION")
        if authorization is None or any(request.GET.getlist("access_token")):
            return super().verify_request(request, scopes)
        oauthlib_request = _BearerTokenRequest(
            lambda: (
                oauth2_settings.OAUTH2_PROTECTED_RESOURCE_IDENTIFIER + self._get_escaped_full_path(request)
            ),
            request.method,
            authorization,
        )
        token = get_token_from_header(oauthlib_request)
        if token is None:  # not a Bearer header: DOT's path (oauthlib's answer for it)
            return super().verify_request(request, scopes)
        oauthlib_request.token_type = "Bearer"
        oauthlib_request.scopes = scopes
        valid = self.server.request_validator.validate_bearer_token(token, scopes, oauthlib_request)
        return valid, oauthlib_request

    def create_token_response(self, request):
        try:
            uri, headers, body, status = self._token_response_on_stable_epoch(request)
        except validity.StaleEpoch:
            # Changes kept committing while the request was served twice: once more, in a
            # transaction no change commits beside (what it reads and writes is all one state).
            with hotpath.changes_held_off(_token_database()):
                uri, headers, body, status = super().create_token_response(request)
        return uri, protocol_errors.oauth_response_headers(headers, status), body, status

    def _token_response_on_stable_epoch(self, request):
        try:
            return self._token_response_on_assumed_epoch(request)
        except validity.StaleEpoch:
            # A token or client changed since the epoch this request stood on: nothing was written
            # or answered on what it looked up; served again on the epoch the token's write found.
            return super().create_token_response(request)

    def _token_response_on_assumed_epoch(self, request):
        """With TOKEN_CACHE=shared, DOT's token response on the epoch this worker last saw rather
        than one read first (a round trip): the token's INSERT writes only while that is still the
        epoch, and confirms it (validity.py); any other answer is given only once it is confirmed."""
        alias = _token_database()
        validity.assume_shared_epoch(alias)
        response = super().create_token_response(request)
        validity.confirm_shared_epoch(alias)  # nothing to do once the INSERT confirmed it
        return response

    def create_revocation_response(self, request):
        try:
            uri, headers, body, status = super().create_revocation_response(request)
        except errors.OAuth2Error as error:  # from the validator's revoke_token: nothing was revoked
            uri, headers, body, status = None, error.headers, error.json, error.status_code
        return uri, protocol_errors.oauth_response_headers(headers, status), body, status

    def authenticated_client(self, request) -> Application | None:
        """The client that authenticated this request with its secret (Basic or body), if any."""
        uri, http_method, body, headers = self._extract_params(request)
        # Credentials never come from the URL (RFC 6749 2.3.1); a malformed query made oauthlib raise.
        oauthlib_request = OauthlibRequest(uri.partition("?")[0], http_method, body, headers)
        if self.server.request_validator.authenticate_client(oauthlib_request):
            return oauthlib_request.client
        return None
