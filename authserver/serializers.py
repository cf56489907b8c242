"""Client metadata of dynamic client registration (RFC 7591 2, RFC 7592 2.2)."""

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from authserver import bidi
from authserver.errors import InvalidRedirectUri
from authserver.models import Application
from authserver.scopes import SCOPE_SYNTAX_MESSAGE, sandbox_scope_names, well_formed_scope

CLIENT_CREDENTIALS = "client_credentials"
# Set by the server, never by the client (RFC 7592 2.2).
SERVER_ASSIGNED_FIELDS = (
    "registration_access_token",
    "registration_client_uri",
    "client_secret_expires_at",
    "client_id_issued_at",
)


class MetadataString(serializers.CharField):
    """A JSON string: a number, which DRF's CharField would take as its text, is invalid metadata
    (RFC 7591 2: client_name, scope and the values of grant_types are strings)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ClientMetadataSerializer(serializers.Serializer):
    """What a client may ask for: a client-credentials client holding at most the sandbox scopes.

    Metadata this server does not understand is ignored, as RFC 7591 2 requires.
    """

    client_name = MetadataString(max_length=255, required=False, allow_blank=True, default="")
    grant_types = serializers.ListField(child=MetadataString(), required=False, default=[CLIENT_CREDENTIALS])
    response_types = serializers.ListField(child=MetadataString(), required=False, default=list)
    redirect_uris = serializers.ListField(child=MetadataString(), required=False, default=list)
    # Kept and echoed as asked (RFC 7591 3.2.1: a client checks it in the response); the token
    # endpoint takes either method from every client.
    token_endpoint_auth_method = serializers.ChoiceField(
        choices=Application.TokenEndpointAuthMethod.values,
        required=False,
        default=Application.TokenEndpointAuthMethod.CLIENT_SECRET_BASIC,
    )
    # As sent: DRF would trim any Unicode whitespace (a no-break space too) before the syntax check.
    scope = MetadataString(required=False, allow_blank=True, default="", trim_whitespace=False)

    def is_valid(self, *, raise_exception: bool = False) -> bool:
        valid = super().is_valid()
        if not valid and raise_exception:
            # RFC 7591 3.2.2: refused redirection URIs are invalid_redirect_uri, the rest
            # invalid_client_metadata (the view's bad_request_error).
            if "redirect_uris" in self.errors:
                raise InvalidRedirectUri(self.errors)
            raise serializers.ValidationError(self.errors)
        return valid

    def to_internal_value(self, data: dict) -> dict:
        # RFC 7592 2.2: a null value asks what an omitted field asks (delete it: the default here).
        return super().to_internal_value({name: value for name, value in data.items() if value is not None})

    def validate_client_name(self, client_name: str) -> str:
        # In an update, the name the client holds (`name` in the context), given before bidi
        # controls were refused, may be sent back as read.
        if client_name != self.context.get("name"):
            bidi.validate_name(client_name)
        return client_name

    def validate_grant_types(self, grant_types: list[str]) -> list[str]:
        if set(grant_types) != {CLIENT_CREDENTIALS}:
            raise serializers.ValidationError("Only the client_credentials grant can be registered.")
        return [CLIENT_CREDENTIALS]

    def validate_response_types(self, response_types: list[str]) -> list[str]:
        if response_types:
            raise serializers.ValidationError("Client-credentials clients use no response types.")
        return []

    def validate_redirect_uris(self, redirect_uris: list[str]) -> list[str]:
        if redirect_uris:
            raise serializers.ValidationError("Client-credentials clients have no redirect URIs.")
        return []

    def validate_scope(self, scope: str) -> list[str]:
        """Space-separated scopes (RFC 7591 2, RFC 6749 3.3), all of them sandbox scopes or, in an
        update (RFC 7592 2.2), scopes the client holds already (`held` in the context: an operator
        may have granted it more, and the client sends back what it read); none asked for means all
        sandbox scopes."""
        if scope and not well_formed_scope(scope):
            raise serializers.ValidationError(SCOPE_SYNTAX_MESSAGE)
        available = sandbox_scope_names()
        requested = list(dict.fromkeys(scope.split()))
        refused = sorted(set(requested) - set(available) - set(self.context.get("held", ())))
        if refused:
            raise serializers.ValidationError(
                f"Not available to registered clients: {' '.join(refused)}. "
                f"Available: {' '.join(sorted(available))}."
            )
        return requested or available


def registration_response(
    application: Application, registration_access_token: str, client_secret=None
) -> dict:
    """The client information response of RFC 7591 3.2.1 and RFC 7592 3."""
    path = reverse("oauth2_provider:dcr-register-management", kwargs={"client_id": application.client_id})
    data = {
        "client_id": application.client_id,
        "client_id_issued_at": int(application.created.timestamp()),
        "client_name": application.name,
        "grant_types": [CLIENT_CREDENTIALS],
        "response_types": [],
        "token_endpoint_auth_method": application.token_endpoint_auth_method,
        "scope": " ".join(application.allowed_scope_names),
        "registration_access_token": registration_access_token,
        "registration_client_uri": settings.ISSUER + path,
    }
    if client_secret is not None:  # shown once: stored hashed, it is in no later response
        data["client_secret"] = client_secret
    # RFC 7591 3.2.1: REQUIRED while the client has a secret, as every client here has, whether
    # or not this response shows it (RFC 7592 3's read and update responses too). 0: no expiry.
    data["client_secret_expires_at"] = 0
    return data
