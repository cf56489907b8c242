"""A resource server asks POST /oauth2/introspect whether a token is active (RFC 7662)."""

import hashlib
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from oauth2_provider.models import AccessToken

from authserver import hotpath, services
from authserver.parsers import FORM_NOT_UTF8
from tests.helpers import (
    EMPTY_VALUES_BESIDE_A_TOKEN,
    FORM,
    basic,
    bearer,
    issue_token,
    make_client,
    post_form,
)


@pytest.fixture
def resource_server(db):
    return make_client(scopes=["introspection"], name="resource server")


def introspect(http, resource_server, token, **headers):
    credentials = headers or basic(resource_server.application.client_id, resource_server.client_secret)
    return post_form(http, "/oauth2/introspect", {"token": token}, **credentials)


def test_an_active_token_is_described(client, resource_server, new_client, settings):
    token = issue_token(client, new_client)
    before = int(time.time())

    response = introspect(client, resource_server, token)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"active", "scope", "client_id", "token_type", "exp", "iat", "iss"}
    assert body["active"] is True
    assert body["scope"] == "orders:read products:read"
    assert body["client_id"] == new_client.application.client_id
    assert body["token_type"] == "Bearer"
    assert body["iss"] == settings.ISSUER
    assert before - 5 <= body["iat"] <= before + 5
    assert body["exp"] - body["iat"] == 3600


def test_iat_and_exp_are_a_lifetime_apart_when_a_second_ends_between_their_readings(
    client, resource_server, new_client
):
    """DOT reads the clock for `expires`, the row's `created` a moment later: were a second to end
    in between, exp - iat read from the two would be one short of the token's lifetime."""
    token = issue_token(client, new_client)
    stored = AccessToken.objects.get(token_checksum=hashlib.sha256(token.encode()).hexdigest())
    stored.expires = stored.expires.replace(microsecond=999_000)
    stored.created = stored.expires - timedelta(seconds=3600) + timedelta(milliseconds=2)
    stored.save(update_fields=["expires", "created"])
    hotpath.forget_remembered_rows()

    body = introspect(client, resource_server, token).json()

    assert body["exp"] - body["iat"] == 3600


def test_a_resource_server_may_authenticate_with_a_bearer_token(client, resource_server, new_client):
    own_token = issue_token(client, resource_server)
    token = issue_token(client, new_client)
    response = introspect(client, resource_server, token, **bearer(own_token))
    assert response.json()["active"] is True


def test_a_resource_server_may_send_its_secret_in_the_body(client, resource_server, new_client):
    token = issue_token(client, new_client)
    params = {
        "token": token,
        "client_id": resource_server.application.client_id,
        "client_secret": resource_server.client_secret,
    }
    assert post_form(client, "/oauth2/introspect", params).json()["active"] is True


@pytest.mark.parametrize("case", ["unknown", "expired", "revoked", "client disabled", "client deleted"])
def test_anything_but_an_active_token_is_just_inactive(client, resource_server, new_client, case):
    token = issue_token(client, new_client)
    if case == "unknown":
        token = "never-issued"
    elif case == "expired":
        AccessToken.objects.filter(application=new_client.application).update(
            expires=timezone.now() - timedelta(seconds=1)
        )
    elif case == "revoked":
        services.revoke_presented_token(token=token, application=new_client.application, actor="tests")
    elif case == "client disabled":
        services.set_client_enabled(application=new_client.application, enabled=False, actor="tests")
    else:
        services.delete_client(application=new_client.application, actor="tests")

    response = introspect(client, resource_server, token)

    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_a_registration_access_token_is_just_inactive(client, resource_server, new_client):
    """It manages its client's registration (RFC 7592) and is valid at no resource server: a resource
    server must not be told it is active (RFC 7662 2.2), as one checking `active` alone would take it."""
    registration_token = services.issue_registration_token(application=new_client.application)

    response = introspect(client, resource_server, registration_token)

    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_a_client_without_the_introspection_scope_is_refused(client, new_client):
    token = issue_token(client, new_client)
    response = introspect(client, new_client, token)

    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert response.json()["scope"] == "introspection"
    assert "WWW-Authenticate" not in response  # it authenticated with Basic: no Bearer challenge


def test_a_bearer_token_without_the_introspection_scope_is_a_401(client, new_client):
    """RFC 7662 2.3: a token without the privileges for this request is answered 401 with RFC 6750's
    challenge (more specific than RFC 6750 3.1's 403); resource servers take 401 as "not allowed"."""
    token = issue_token(client, new_client)
    response = introspect(client, new_client, token, **bearer(token))

    assert response.status_code == 401
    assert response["Cache-Control"] == "no-store"
    assert response.json() == {
        "error": "insufficient_scope",
        "error_description": "This request needs the scope: introspection.",
        "scope": "introspection",
    }
    assert response["WWW-Authenticate"] == (
        'Bearer realm="foo", error="insufficient_scope", '
        'error_description="This request needs the scope: introspection.", scope="introspection"'
    )


def test_a_wrong_secret_is_invalid_client(client, resource_server, new_client):
    token = issue_token(client, new_client)
    response = introspect(
        client, resource_server, token, **basic(resource_server.application.client_id, "nope")
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response["WWW-Authenticate"].startswith("Basic")


def test_an_invalid_bearer_token_is_invalid_token(client, resource_server, new_client):
    token = issue_token(client, new_client)
    response = introspect(client, resource_server, token, **bearer("not-a-token"))

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


@pytest.mark.parametrize("authorization", [None, 'Digest username="x"'])
def test_no_credentials_is_invalid_client_with_a_challenge_for_each_scheme(client, new_client, authorization):
    """RFC 6749 5.2: no client authentication included, or an unsupported method, is invalid_client
    (as revocation answers); the endpoint takes a client's secret or a bearer token, and challenges
    with both, neither carrying an error (RFC 6750 3.1: none was presented)."""
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = post_form(client, "/oauth2/introspect", {"token": "x"}, **headers)

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.json()["error"] == "invalid_client"
    assert response["WWW-Authenticate"] == 'Basic realm="foo", charset="UTF-8", Bearer realm="foo"'
    revocation = post_form(client, "/oauth2/revoke", {"token": "x"}, **headers)
    assert (revocation.status_code, revocation.json()["error"]) == (401, "invalid_client")


@pytest.mark.parametrize("secret", ["right", "wrong"])
def test_a_bearer_token_beside_a_body_secret_is_two_methods(client, resource_server, new_client, secret):
    """RFC 6749 2.3 and 5.2: one authentication method a request, at this endpoint as at the token
    endpoint; the server does not pick one of the two (and answer as the other never came)."""
    token = issue_token(client, new_client)
    params = {
        "token": token,
        "client_id": resource_server.application.client_id,
        "client_secret": resource_server.client_secret if secret == "right" else "nope",
    }

    response = post_form(client, "/oauth2/introspect", params, **bearer(issue_token(client, resource_server)))

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"
    assert "active" not in response.json()


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("token", "")],
        [("token", "a"), ("token", "b")],
        [("token", "a"), ("token_type_hint", "access_token"), ("token_type_hint", "access_token")],
    ],
)
def test_exactly_one_token_and_at_most_one_hint_are_required(client, resource_server, pairs):
    credentials = basic(resource_server.application.client_id, resource_server.client_secret)
    response = post_form(client, "/oauth2/introspect", pairs, **credentials)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("extra", EMPTY_VALUES_BESIDE_A_TOKEN)
def test_a_parameter_sent_without_a_value_is_treated_as_omitted(client, resource_server, new_client, extra):
    """RFC 6749 3.2 (RFC 7662 2.1): an empty value is no second token, hint or client_secret."""
    token = issue_token(client, new_client)
    credentials = basic(resource_server.application.client_id, resource_server.client_secret)

    response = post_form(client, "/oauth2/introspect", [("token", token), *extra], **credentials)

    assert response.status_code == 200, response.content
    assert response.json()["active"] is True


def test_a_client_secret_without_a_value_is_no_client_authentication(client, resource_server, new_client):
    token = issue_token(client, new_client)
    pairs = [("token", token), ("client_id", resource_server.application.client_id), ("client_secret", "")]

    response = post_form(client, "/oauth2/introspect", pairs)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "active" not in response.json()


@pytest.mark.parametrize(("charset", "escaped"), [("utf-16", ""), ("latin-1", "&x=%E9")])
def test_a_form_body_in_another_charset_is_refused_as_at_the_token_endpoint(
    client, resource_server, new_client, charset, escaped
):
    """RFC 6749 Appendix B: form parameters are UTF-8; Django refuses other charsets for the token
    and revocation endpoints, and introspection (DRF's form parser) answers the same: a body in
    UTF-16, or one escaping a byte that means another character in its charset than in UTF-8."""
    token = issue_token(client, new_client)
    credentials = basic(resource_server.application.client_id, resource_server.client_secret)
    body = f"token={token}{escaped}"  # the test client encodes it in the charset declared

    for path in ["/oauth2/introspect", "/oauth2/token"]:
        response = client.post(path, body, content_type=f"{FORM}; charset={charset}", **credentials)
        assert response.status_code == 400, (path, response.content)
        assert response.json() == {"error": "invalid_request", "error_description": FORM_NOT_UTF8}
    declared_utf8 = client.post(
        "/oauth2/introspect", body, content_type=f"{FORM}; charset=UTF-8", **credentials
    )
    assert declared_utf8.json()["active"] is True


@pytest.mark.parametrize("charset", ["utf8", "UTF8", "utf_8", "U8"])
def test_utf8_under_another_name_is_read_as_utf8_at_every_endpoint(
    client, resource_server, new_client, charset
):
    """Python's aliases of UTF-8 name the encoding RFC 6749 Appendix B asks for: DRF's form parser
    (introspection) took them, Django's (token, revocation) answered 400."""
    content_type = f"{FORM}; charset={charset}"
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    issued = client.post(
        "/oauth2/token", "grant_type=client_credentials", content_type=content_type, **credentials
    )
    assert issued.status_code == 200, issued.content
    token = issued.json()["access_token"]

    server = basic(resource_server.application.client_id, resource_server.client_secret)
    introspected = client.post("/oauth2/introspect", f"token={token}", content_type=content_type, **server)
    assert introspected.json()["active"] is True

    revoked = client.post("/oauth2/revoke", f"token={token}", content_type=content_type, **credentials)
    assert revoked.status_code == 200, revoked.content
    assert client.post("/oauth2/introspect", f"token={token}", content_type=FORM, **server).json() == {
        "active": False
    }


def test_tokens_never_travel_in_urls(client, resource_server, new_client):
    token = issue_token(client, new_client)
    credentials = basic(resource_server.application.client_id, resource_server.client_secret)
    response = client.get(f"/oauth2/introspect?token={token}", **credentials)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_a_json_body_is_refused_with_a_json_error(client, resource_server):
    credentials = basic(resource_server.application.client_id, resource_server.client_secret)
    response = client.post(
        "/oauth2/introspect", {"token": "x"}, content_type="application/json", **credentials
    )
    assert response.status_code == 415
    assert response.json()["error"] == "invalid_request"


def test_a_token_restricted_to_resources_names_them_as_its_audience(client, resource_server, new_client):
    """RFC 8707 and RFC 7662 2.2: a resource server that introspects learns where the token is good."""
    products = f"{settings.ISSUER}/api/v1/products"
    orders = f"{settings.ISSUER}/api/v1/orders"
    restricted = issue_token(client, new_client, resource=[products, orders])

    body = introspect(client, resource_server, restricted).json()

    assert body["active"] is True
    assert body["aud"] == [products, orders]
    unrestricted = introspect(client, resource_server, issue_token(client, new_client)).json()
    assert unrestricted["active"] is True
    assert "aud" not in unrestricted


@pytest.mark.parametrize("query", ["client_secret={secret}", "token={token}", "x=1"])
def test_parameters_in_the_url_are_refused(client, resource_server, new_client, query):
    """RFC 6749 3.2 and 2.3.1: a secret or token in a URL is refused, not quietly ignored."""
    token = issue_token(client, new_client)
    secret = resource_server.client_secret
    credentials = basic(resource_server.application.client_id, secret)
    path = f"/oauth2/introspect?{query.format(secret=secret, token=token)}"

    response = post_form(client, path, {"token": token}, **credentials)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "URL query parameters are not allowed.",
    }


def test_a_bearer_token_in_the_form_body_is_not_accepted(client, resource_server, new_client):
    """The caller's token goes in the Authorization header (RFC 6750 2.1; the server's metadata says
    so): the form body's access_token (2.2) authenticates nobody, and beside a header it is a token
    sent twice (3.1)."""
    token = issue_token(client, new_client)
    caller = issue_token(client, resource_server)

    alone = post_form(client, "/oauth2/introspect", {"token": token, "access_token": caller})
    assert alone.status_code == 401
    assert "active" not in alone.json()

    both = post_form(client, "/oauth2/introspect", {"token": token, "access_token": caller}, **bearer(caller))
    assert both.status_code == 400
    assert both.json()["error"] == "invalid_request"
    assert both["WWW-Authenticate"].startswith('Bearer realm="foo", error="invalid_request"')
    assert introspect(client, resource_server, token, **bearer(caller)).json()["active"] is True
