"""The authorization server's endpoints, named as django-oauth-toolkit names its own so that DOT's
metadata views (RFC 8414, RFC 9728) find and advertise them."""

from django.urls import re_path

from authserver import views

app_name = "oauth2_provider"


def endpoint(route: str, view, name: str):
    """`route` with or without a trailing slash: never a redirect that would turn a POST into a GET."""
    return re_path(rf"^{route}/?$", view, name=name)


urlpatterns = [
    endpoint("oauth2/token", views.TokenView.as_view(), "token"),
    endpoint("oauth2/revoke", views.RevokeView.as_view(), "revoke-token"),
    endpoint("oauth2/introspect", views.IntrospectView.as_view(), "introspect"),
    endpoint("oauth2/register", views.RegistrationView.as_view(), "dcr-register"),
    endpoint(
        r"oauth2/register/(?P<client_id>[^/]+)",
        views.RegistrationManagementView.as_view(),
        "dcr-register-management",
    ),
    endpoint(
        r"\.well-known/oauth-authorization-server",
        views.ServerMetadataView.as_view(),
        "oauth-server-metadata",
    ),
    endpoint(
        r"\.well-known/oauth-protected-resource",
        views.ProtectedResourceMetadataView.as_view(),
        "oauth-resource-metadata",
    ),
]
