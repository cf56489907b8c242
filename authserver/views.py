"""The authorization server's HTTP endpoints.

Token and revocation are django-oauth-toolkit's views; introspection and dynamic registration are
DRF views composed of the classes in authentication.py and permissions.py, calling services.py.
DOT's own views for those two do not fit and are not mounted: its IntrospectTokenView also answers
GET (tokens in URLs), lets any client with a valid secret introspect without the `introspection`
scope, and omits token_type, iat and iss; its DynamicClientRegistrationView creates applications
itself (not through services.register_client, so no per-client scopes, lifetime or audit event),
ignores the `scope` metadata, leaves out client_secret_expires_at (REQUIRED by RFC 7591 3.2.1) and
answers a missing token with 401 `access_denied` rather than RFC 6750's challenge.
"""

import json

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from oauth2_provider import views as dot_views
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.signals import app_authorized
from oauth2_provider.utils import parse_bearer_token
from rest_framework import exceptions, status
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from authserver import errors, oauth, services, throttling
from authserver.authentication import FORM_CONTENT_TYPE, BearerTokenAuthentication, ClientSecretAuthentication
from authserver.models import Application
from authserver.parsers import FormParser, JSONParser
from authserver.permissions import TokenHasRequiredScopes
from authserver.scopes import sandbox_scope_names
from authserver.serializers import SERVER_ASSIGNED_FIELDS, ClientMetadataSerializer, registration_response


def remote_addr(request) -> str:
    return throttling.client_address(request.META)


class BareOptionsMixin:
    """OPTIONS answers with what the endpoint allows and nothing else (RFC 9110 9.3.7): 204, Allow,
    no body and so no Content-Type, where Django's View answers with an empty text/html page."""

    def options(self, request, *args, **kwargs):
        response = HttpResponse(status=status.HTTP_204_NO_CONTENT)
        response.headers["Allow"] = ", ".join(self._allowed_methods())
        del response.headers["Content-Type"]
        return response

    def http_method_not_allowed(self, request, *args, **kwargs):
        # Django's logs "Method Not Allowed (PUT)" and django.request then logs the 405 again: one
        # line per request, as a DRF view's 405 (ProtocolErrorMiddleware makes it JSON).
        return HttpResponseNotAllowed(self._allowed_methods())


class BareOptionsAPIMixin:
    """BareOptionsMixin for a DRF view: OPTIONS answered 204 with Allow (finalize_response adds it)
    and no body, before authentication, permissions and throttles: what an endpoint allows is no
    secret (its 401s and 405s name it too), and DRF's own answer needed credentials and recited the
    view's docstring. A method the view does not serve is a 405 before them too, as a Django view
    answers it: DRF checked the token first, and a GET with a token lacking the scope was a 403
    where the method was the error."""

    checks_caller = True  # by initial(), for this request: a method this view serves, not OPTIONS

    def initial(self, request, *args, **kwargs):
        method = request.method.lower()
        self.checks_caller = (
            method != "options" and method in self.http_method_names and hasattr(self, method)
        )
        super().initial(request, *args, **kwargs)

    def perform_authentication(self, request):
        if self.checks_caller:
            super().perform_authentication(request)

    def check_permissions(self, request):
        if self.checks_caller:
            super().check_permissions(request)

    def check_throttles(self, request):
        if self.checks_caller:
            super().check_throttles(request)

    def options(self, request, *args, **kwargs):
        return Response(status=status.HTTP_204_NO_CONTENT)


class FormPostEndpointMixin(BareOptionsMixin):
    """OAuth endpoints take POSTed form bodies (RFC 6749 3.2, RFC 7009 2.1). For DOT's TokenView and
    RevokeTokenView, whose dispatch is View.dispatch wrapped in method_decorator(csrf_exempt) and
    method_decorator(login_not_required): wrappers built anew on every request (4 µs each, a
    token's hot path ran three), whose only effect is the attributes set on `dispatch` below, which
    as_view() copies onto the view. Clients authenticate themselves; there is no session to forge."""

    http_method_names = ["post", "options"]

    def dispatch(self, request, *args, **kwargs):
        if request.method == "POST" and request.content_type != FORM_CONTENT_TYPE:
            return errors.error_response("invalid_request", f"Content-Type must be {FORM_CONTENT_TYPE}.")
        if request.method == "POST" and request.META.get("QUERY_STRING"):
            # RFC 6749 3.2 and 2.3.1, as oauthlib answers, and at introspection: parameters and
            # credentials travel in the body. oauthlib raised on a malformed escape (`?%zz`): a 500.
            return errors.error_response("invalid_request", "URL query parameters are not allowed.")
        return View.dispatch(self, request, *args, **kwargs)

    dispatch.csrf_exempt = True  # what csrf_exempt sets
    dispatch.login_required = False  # what login_not_required sets


class TokenView(FormPostEndpointMixin, dot_views.TokenView):
    """POST /oauth2/token: the client credentials grant (RFC 6749 4.4)."""

    def post(self, request, *args, **kwargs):
        retry_after = throttling.TOKEN_REQUESTS_PER_ADDRESS.record(
            throttling.counted_address(remote_addr(request))
        )
        if retry_after:
            return errors.too_many_requests(retry_after)
        # DOT's device-code branch is skipped: this server offers one grant, and oauthlib answers
        # any other grant_type with unsupported_grant_type.
        return self.authorization_flow_token_response(request)

    def authorization_flow_token_response(self, request, *args, **kwargs):
        # What sensitive_post_parameters("client_secret") does, without its per-call wrappers: error
        # reports show the form without the secret.
        request.sensitive_post_parameters = ["client_secret"]
        if app_authorized.has_listeners():
            # DOT reads the new token back from the database to send the signal with it.
            return super().authorization_flow_token_response(request, *args, **kwargs)
        _, headers, body, status_code = self.create_token_response(request)
        response = HttpResponse(content=body, status=status_code)
        for name, value in headers.items():
            response[name] = value
        return response


# What sensitive_post_parameters() would mark, for Django's error reports (DEBUG pages, mail to
# ADMINS): the client's secret and the token the request is about.
SENSITIVE_FORM_PARAMETERS = ["client_secret", "token"]


class RevokeView(FormPostEndpointMixin, dot_views.RevokeTokenView):
    """POST /oauth2/revoke (RFC 7009): a client revokes one of its own tokens."""

    def post(self, request, *args, **kwargs):
        request.sensitive_post_parameters = SENSITIVE_FORM_PARAMETERS  # kept out of error reports
        # RFC 6749 3.2: no parameter more than once. oauthlib checks the client's credentials for
        # that, not the token: it would revoke one of two tokens sent and answer 200.
        for parameter in ("token", "token_type_hint"):
            if len(oauth.sent_values(request.POST, parameter)) > 1:
                return errors.error_response("invalid_request", f"Repeated {parameter} parameter.")
        response = super().post(request, *args, **kwargs)
        if not response.content:  # 200: revoked (RFC 7009 2.2), no body and so no Content-Type
            del response.headers["Content-Type"]
        return response


class ReadOnlyEndpointMixin(BareOptionsMixin):
    """A machine endpoint that only reads: no form, no session, so no CSRF check, which would answer
    any other method with 403 before the view could answer it with 405 and Allow (RFC 9110 15.5.6)."""

    @classmethod
    def as_view(cls, **initkwargs):
        view = super().as_view(**initkwargs)  # a new function, the view's own
        view.csrf_exempt = True  # what csrf_exempt() marks, without wrapping every call
        return view


def without_empty_claims(
    response: HttpResponse, amend=None, *, required: tuple[str, ...] = ()
) -> HttpResponse:
    """A metadata document (DOT's view's response) changed by `amend(metadata)`, and without the
    claims that have zero elements (RFC 8414 3.2, RFC 9728 3.2: an empty scopes_supported says no
    scope is supported at all), except `required` ones."""
    metadata = json.loads(response.content)
    if amend is not None:
        amend(metadata)
    for claim, value in list(metadata.items()):
        if isinstance(value, list) and not value and claim not in required:
            del metadata[claim]
    response.content = json.dumps(metadata, cls=DjangoJSONEncoder)
    return response


class ServerMetadataView(ReadOnlyEndpointMixin, dot_views.OAuthServerMetadataView):
    """GET /.well-known/oauth-authorization-server (RFC 8414): DOT's, without RFC 9207's claim about
    authorization responses while there is no authorization endpoint to give any (DOT makes the
    claim with its COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS gate, which stays set: its deploy check
    W005 asks for it, and it would hold the day an authorization endpoint is added), and with the
    bearer token among the introspection endpoint's authentication methods (IntrospectView takes
    one; RFC 8414 2 names access token types as values there); no empty claim but the REQUIRED one."""

    def get(self, request, *args, **kwargs):
        # RFC 8414 2: REQUIRED, so kept when empty (this server has no authorization endpoint).
        return without_empty_claims(
            super().get(request, *args, **kwargs), self.amend, required=("response_types_supported",)
        )

    @staticmethod
    def amend(metadata: dict) -> None:
        if "authorization_endpoint" not in metadata:
            metadata.pop("authorization_response_iss_parameter_supported", None)
        if "introspection_endpoint_auth_methods_supported" in metadata:
            metadata["introspection_endpoint_auth_methods_supported"] = [
                *metadata["introspection_endpoint_auth_methods_supported"],
                "Bearer",
            ]


class ProtectedResourceMetadataView(ReadOnlyEndpointMixin, dot_views.OAuthProtectedResourceMetadataView):
    """GET /.well-known/oauth-protected-resource (RFC 9728): DOT's, without empty claims."""

    def get(self, request, *args, **kwargs):
        return without_empty_claims(super().get(request, *args, **kwargs))


class IntrospectView(BareOptionsAPIMixin, APIView):
    """POST /oauth2/introspect (RFC 7662) for resource servers holding the `introspection` scope,
    authenticated as a client (Basic or body) or with a bearer token."""

    authentication_classes = [ClientSecretAuthentication, BearerTokenAuthentication]
    required_scopes = ["introspection"]
    # RFC 7662 2.3: a bearer token without the privileges for this request is a 401, not RFC 6750 3.1's 403.
    bearer_without_scope_status = status.HTTP_401_UNAUTHORIZED
    parser_classes = [FormParser]
    http_method_names = ["post", "options"]

    def initial(self, request, *args, **kwargs):
        # RFC 6749 3.2 and 2.3.1, as at the token and revocation endpoints: parameters and
        # credentials travel in the body, never the URL (a secret there would be refused, not used).
        if request.method == "POST" and request.META.get("QUERY_STRING"):
            raise exceptions.ParseError("URL query parameters are not allowed.")
        request._request.sensitive_post_parameters = SENSITIVE_FORM_PARAMETERS  # kept out of error reports
        super().initial(request, *args, **kwargs)

    def post(self, request):
        form = request.data  # a QueryDict, or {} when the body is empty
        # RFC 6749 3.2: each parameter at most once, and one sent without a value is omitted.
        tokens = oauth.sent_values(form, "token") if hasattr(form, "getlist") else []
        if len(tokens) != 1:
            raise exceptions.ParseError("Send exactly one token parameter.")
        if len(oauth.sent_values(form, "token_type_hint")) > 1:
            raise exceptions.ParseError("Repeated token_type_hint parameter.")
        return Response(services.introspect_token(tokens[0]), headers=errors.NO_STORE)


def client_metadata(request) -> dict:
    """The JSON object of client metadata a registration or an update sends (RFC 7591 3.1, RFC 7592
    2.2). An empty body is none: DRF reads it as {}, which would register a client of defaults."""
    data = request.data
    if request.stream is None or not isinstance(data, dict):
        raise exceptions.ParseError("The body must be a JSON object of client metadata.")
    return data


class RegistrationView(BareOptionsAPIMixin, APIView):
    """POST /oauth2/register (RFC 7591), authorized by an initial access token with `registration`;
    each registrar registers a limited number of clients an hour and a day (throttling.py)."""

    required_scopes = ["registration"]
    parser_classes = [JSONParser]
    http_method_names = ["post", "options"]
    bad_request_error = "invalid_client_metadata"

    @method_decorator(transaction.atomic)  # no client without its registration access token
    def post(self, request):
        metadata = ClientMetadataSerializer(data=client_metadata(request))
        metadata.is_valid(raise_exception=True)
        registrar = request.auth.application
        retry_after = throttling.record_registration(registrar.client_id)
        if retry_after:
            raise errors.TooManyRegistrations(wait=retry_after)
        try:
            new_client = services.register_client(
                name=metadata.validated_data["client_name"],
                scopes=metadata.validated_data["scope"],
                access_token_lifetime=settings.SANDBOX_TOKEN_LIFETIME,
                registration_source=Application.RegistrationSource.DCR,
                token_endpoint_auth_method=metadata.validated_data["token_endpoint_auth_method"],
                actor=f"client:{registrar.client_id}",
                remote_addr=remote_addr(request),
            )
        except ValidationError as refused:  # the model's checks (a scope deleted meanwhile): no 500
            detail = refused.message_dict if hasattr(refused, "error_dict") else refused.messages
            raise exceptions.ValidationError(detail) from None
        registration_token = services.issue_registration_token(application=new_client.application)
        body = registration_response(new_client.application, registration_token, new_client.client_secret)
        return Response(body, status=status.HTTP_201_CREATED, headers=errors.NO_STORE)


class IsRegistrationTokenOfClient(BasePermission):
    """RFC 7592 2: the registration access token is valid for the client in the URL and no other."""

    def has_permission(self, request, view) -> bool:
        application = request.auth.application
        if application is None or application.client_id != view.kwargs["client_id"]:
            raise errors.InvalidToken("The registration access token is not valid for this client.")
        return True


class RegistrationManagementView(BareOptionsAPIMixin, APIView):
    """GET/PUT/DELETE /oauth2/register/<client_id> (RFC 7592), with the registration access token."""

    permission_classes = [TokenHasRequiredScopes, IsRegistrationTokenOfClient]
    required_scopes = [oauth2_settings.DCR_REGISTRATION_SCOPE]
    parser_classes = [JSONParser]
    http_method_names = ["get", "head", "put", "delete", "options"]
    bad_request_error = "invalid_client_metadata"

    def get(self, request, client_id):
        application = request.auth.application
        return Response(
            registration_response(application, self._presented_token(request)), headers=errors.NO_STORE
        )

    def put(self, request, client_id):
        application = request.auth.application
        data = client_metadata(request)
        self._check_update_request(data, application)
        metadata = ClientMetadataSerializer(
            data=data, context={"held": application.allowed_scope_names, "name": application.name}
        )
        metadata.is_valid(raise_exception=True)
        changed_fields = []
        for field, metadata_name in (
            ("name", "client_name"),
            ("token_endpoint_auth_method", "token_endpoint_auth_method"),
        ):
            if getattr(application, field) != metadata.validated_data[metadata_name]:
                setattr(application, field, metadata.validated_data[metadata_name])
                changed_fields.append(field)
        try:
            services.update_client(
                application=application,
                scopes=metadata.validated_data["scope"],
                grantable_scopes=sandbox_scope_names(),
                changed_fields=changed_fields,
                actor=f"client:{client_id}",
                remote_addr=remote_addr(request),
            )
        except Application.DoesNotExist:  # deleted since its token was checked: gone with it
            raise errors.InvalidToken() from None
        except ValidationError as refused:  # a scope taken from the client since its token was checked
            raise exceptions.ValidationError(refused.message_dict) from None
        return Response(
            registration_response(application, self._presented_token(request)), headers=errors.NO_STORE
        )

    def delete(self, request, client_id):
        deleted = services.delete_client(
            application=request.auth.application,
            actor=f"client:{client_id}",
            remote_addr=remote_addr(request),
        )
        if not deleted:  # deleted since its token was checked: gone with it (RFC 7592 2.3)
            raise errors.InvalidToken()
        return Response(status=status.HTTP_204_NO_CONTENT, headers=errors.NO_STORE)

    @staticmethod
    def _presented_token(request) -> str:
        return parse_bearer_token(request.META["HTTP_AUTHORIZATION"])

    @staticmethod
    def _check_update_request(data: dict, application: Application) -> None:
        if data.get("client_id") != application.client_id:
            raise exceptions.ValidationError({"client_id": ["Must be this client's client_id."]})
        assigned = sorted(field for field in SERVER_ASSIGNED_FIELDS if field in data)
        if assigned:
            raise exceptions.ValidationError(
                {field: ["Set by the server; leave it out."] for field in assigned}
            )
        secret = data.get("client_secret")
        if secret is not None and not (
            isinstance(secret, str) and check_password(secret, application.client_secret)
        ):
            raise exceptions.ValidationError({"client_secret": ["Does not match the current secret."]})


class HealthView(ReadOnlyEndpointMixin, View):
    """GET /healthz: the process is up and serving (no database)."""

    http_method_names = ["get", "head", "options"]

    def get(self, request):
        return JsonResponse({"status": "ok"})


class ReadinessView(ReadOnlyEndpointMixin, View):
    """GET /readyz: ready for traffic when the database answers and has every migration of this
    code applied (a new node, or new code, before `manage.py migrate`: each request needing a
    missing table or column failed); 503 otherwise."""

    http_method_names = ["get", "head", "options"]
    # Once this process has seen them all applied, the probe only asks the database to answer:
    # reading the migration files is for the probes before then.
    schema_ready = False

    def get(self, request):
        try:
            if not ReadinessView.schema_ready:
                executor = MigrationExecutor(connection)
                if executor.migration_plan(executor.loader.graph.leaf_nodes()):
                    return errors.error_response(
                        "temporarily_unavailable",
                        "The database has migrations not yet applied (manage.py migrate).",
                        status=503,
                        headers={"Retry-After": "5"},
                    )
                ReadinessView.schema_ready = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            return errors.database_unavailable()
        return JsonResponse({"status": "ready", "database": "ok"})
