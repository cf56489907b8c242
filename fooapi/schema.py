"""The OpenAPI schema of the Foo API (drf-spectacular): which paths it describes, and how it
describes their security: OAuth 2.0 client credentials, with the scopes each operation requires."""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.generators import SchemaGenerator

from authserver.permissions import TokenHasRequiredScopes
from authserver.scopes import scope_catalogue


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "authserver.authentication.BearerTokenAuthentication"
    name = "oauth2"
    # Above drf-spectacular's own extension for DOT's OAuth2Authentication, our base class.
    priority = 1

    def get_security_definition(self, auto_schema):
        scopes = {entry["name"]: entry["description"] for entry in scope_catalogue() if entry["public"]}
        return {
            "type": "oauth2",
            "description": (
                "Bearer tokens from the client credentials grant, sent in the Authorization header "
                "(never in the query string)."
            ),
            "flows": {"clientCredentials": {"tokenUrl": f"{settings.ISSUER}/oauth2/token", "scopes": scopes}},
        }

    def get_security_requirement(self, auto_schema):
        view = auto_schema.view
        scopes = TokenHasRequiredScopes.required_scopes(view.request, view)
        return {self.name: scopes}


class FooApiSchemaGenerator(SchemaGenerator):
    """DEFAULT_GENERATOR_CLASS: the Foo API's canonical paths only, not the authorization server's
    own DRF endpoints, wherever drf-spectacular generates (the schema view, `check --deploy`)."""

    def __init__(self, *args, patterns=None, urlconf=None, **kwargs):
        if patterns is None and urlconf is None:
            from fooapi.urls import schema_patterns

            patterns = schema_patterns
        super().__init__(*args, patterns=patterns, urlconf=urlconf, **kwargs)
