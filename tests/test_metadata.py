"""Clients discover the server: RFC 8414 authorization server metadata, RFC 9728 resource metadata."""

import time

import pytest
from django.core.cache import cache

from authserver import scopes, services
from authserver.models import Scope
from tests.helpers import HttpsClient


def test_authorization_server_metadata_lists_what_really_works(client, db, settings):
    response = client.get("/.well-known/oauth-authorization-server")

    assert response.status_code == 200
    metadata = response.json()
    issuer = settings.ISSUER
    assert metadata["issuer"] == issuer
    assert metadata["token_endpoint"] == f"{issuer}/oauth2/token"
    assert metadata["revocation_endpoint"] == f"{issuer}/oauth2/revoke"
    assert metadata["introspection_endpoint"] == f"{issuer}/oauth2/introspect"
    assert metadata["registration_endpoint"] == f"{issuer}/oauth2/register"
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert metadata["response_types_supported"] == []
    assert "authorization_endpoint" not in metadata
    # RFC 9207's `iss` in authorization responses: there are none to carry it.
    assert "authorization_response_iss_parameter_supported" not in metadata
    assert response["Access-Control-Allow-Origin"] == "*"
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    assert set(metadata["revocation_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    # RFC 8414 2: an access token type where the endpoint takes one (a resource server's token).
    assert set(metadata["introspection_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "Bearer",
    }


def test_scopes_supported_lists_the_public_scopes_only(client, db):
    Scope.objects.create(name="catalogue:admin", description="Edit the catalogue", public=False)
    scopes = client.get("/.well-known/oauth-authorization-server").json()["scopes_supported"]
    assert scopes == ["orders:read", "orders:write", "products:read"]


def test_no_public_scope_leaves_scopes_supported_out_rather_than_empty(client, db):
    """RFC 8414 3.2 and RFC 9728 3.2: a claim with zero elements is omitted; an empty
    scopes_supported says no scope is supported at all (clients give up on the server)."""
    Scope.objects.update(public=False)
    scopes.forget_scope_catalogue()

    server = client.get("/.well-known/oauth-authorization-server").json()
    resource = client.get("/.well-known/oauth-protected-resource").json()

    assert "scopes_supported" not in server
    assert "scopes_supported" not in resource
    assert server["response_types_supported"] == []  # REQUIRED by RFC 8414 2, so kept
    assert resource["bearer_methods_supported"] == ["header"]


def test_a_scope_edit_shows_at_once_here_and_within_seconds_in_other_workers(client, db, monkeypatch):
    def scopes_supported() -> list[str]:
        return client.get("/.well-known/oauth-authorization-server").json()["scopes_supported"]

    assert "catalogue:admin" not in scopes_supported()
    scope = Scope.objects.create(name="catalogue:admin", description="Edit the catalogue", public=True)
    assert "catalogue:admin" in scopes_supported()  # saving forgets this process's copy

    # Another worker's edit (no signal here): this process's copy and the shared cache's age out.
    Scope.objects.filter(pk=scope.pk).update(public=False)
    assert "catalogue:admin" in scopes_supported()
    cache.clear()  # the shared cache's 60 s passed
    later = time.monotonic() + scopes.CATALOGUE_PROCESS_SECONDS + 1
    monkeypatch.setattr(scopes.time, "monotonic", lambda: later)
    assert "catalogue:admin" not in scopes_supported()


def test_a_scope_edit_is_not_undone_by_a_worker_reading_the_scopes_before_it_commits(
    client, db, django_capture_on_commit_callbacks
):
    """Another worker reading the scopes between the save and its commit reads the old rows, and
    keeps them in the shared cache for CATALOGUE_CACHE_SECONDS: forgotten before the commit, the
    edit did not show even here."""

    def scopes_supported() -> list[str]:
        return client.get("/.well-known/oauth-authorization-server").json()["scopes_supported"]

    assert "orders:write" in scopes_supported()
    before_the_edit = scopes._catalogue_from_database()
    scope = Scope.objects.get(name="orders:write")
    with django_capture_on_commit_callbacks(execute=True):
        scope.public = False
        services.save_scope(scope=scope, actor="tests", changed_fields=["public"])
        # Another worker, meanwhile: the rows as committed, into the shared cache.
        cache.set(scopes.CATALOGUE_CACHE_KEY, before_the_edit, scopes.CATALOGUE_CACHE_SECONDS)

    assert "orders:write" not in scopes_supported()


def test_the_issuer_follows_the_setting(client, db, settings):
    settings.ISSUER = "https://auth.foo.example"
    # A new dict (not a mutation of the shared one) so pytest-django restores it; DOT reloads on change.
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": settings.ISSUER}
    metadata = client.get("/.well-known/oauth-authorization-server", HTTP_HOST="localhost").json()
    assert metadata["issuer"] == "https://auth.foo.example"
    assert metadata["token_endpoint"] == "https://auth.foo.example/oauth2/token"


def test_protected_resource_metadata_points_at_this_server(client, db, settings):
    response = client.get("/.well-known/oauth-protected-resource")

    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == settings.ISSUER
    assert metadata["authorization_servers"] == [settings.ISSUER]
    assert metadata["bearer_methods_supported"] == ["header"]
    assert "products:read" in metadata["scopes_supported"]
    assert "introspection" not in metadata["scopes_supported"]


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource",
        "/healthz",
        "/readyz",
        # The API's documentation page answered the CSRF check's 403 access_denied.
        "/api/v1/docs",
        "/api/v1/schema",
    ],
)
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_read_only_endpoints_answer_other_methods_405(db, path, method):
    # CSRF checked as a live server checks it: no 403 before the endpoint's own 405.
    response = getattr(HttpsClient(enforce_csrf_checks=True), method)(path)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/.well-known/oauth-authorization-server", "GET, HEAD, OPTIONS"),
        ("/.well-known/oauth-protected-resource", "GET, HEAD, OPTIONS"),
        ("/oauth2/token", "POST, OPTIONS"),
        ("/oauth2/revoke", "POST, OPTIONS"),
        # DRF's endpoints too: no credentials needed to ask, and no metadata (DRF's recites the
        # view's docstring).
        ("/oauth2/introspect", "POST, OPTIONS"),
        ("/oauth2/register", "POST, OPTIONS"),
        ("/oauth2/register/some-client", "GET, HEAD, PUT, DELETE, OPTIONS"),
        ("/api/v1/products", "GET, HEAD, OPTIONS"),
        ("/api/v1/products/1", "GET, HEAD, OPTIONS"),
        ("/api/v1/orders", "GET, POST, HEAD, OPTIONS"),
        ("/api/v1/orders/1", "GET, HEAD, OPTIONS"),
        # These were an empty HTML page and the schema view's docstring.
        ("/api/v1/docs", "GET, HEAD, OPTIONS"),
        ("/api/v1/schema", "GET, HEAD, OPTIONS"),
        ("/healthz", "GET, HEAD, OPTIONS"),
        ("/readyz", "GET, HEAD, OPTIONS"),
    ],
)
def test_options_says_what_is_allowed_and_nothing_more(client, db, path, allowed):
    response = client.options(path)

    assert response.status_code == 204
    assert response["Allow"] == allowed
    assert response.content == b""
    assert "Content-Type" not in response
