"""A client asks POST /oauth2/token for an access token with the client credentials grant."""

import base64
import hashlib
import inspect
import logging
import re
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.hashers import identify_hasher, make_password
from django.views import View
from django.views.debug import SafeExceptionReporterFilter
from oauth2_provider import views as dot_views
from oauth2_provider.models import AccessToken
from oauth2_provider.settings import oauth2_settings

from authserver import services
from authserver.models import Application, AuditEvent
from authserver.views import RevokeView, TokenView
from tests.helpers import (
    FORM,
    HttpsClient,
    basic,
    bearer,
    form,
    issue_token,
    make_client,
    post_form,
    request_token,
    stored_token,
)


def assert_oauth_error(response, status: int, error: str):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == error
    assert response["Cache-Control"] == "no-store"


# --- success (RFC 6749 4.4.3, 5.1) -------------------------------------------------------------


def test_client_secret_basic_gets_a_bearer_token(client, new_client):
    response = request_token(client, new_client)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "orders:read products:read"
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    assert response["Content-Type"] == "application/json"
    assert "refresh_token" not in body


def test_client_secret_post_gets_a_token(client, new_client):
    params = {
        "grant_type": "client_credentials",
        "client_id": new_client.application.client_id,
        "client_secret": new_client.client_secret,
    }
    response = post_form(client, "/oauth2/token", params)
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


def test_basic_credentials_are_form_decoded(client, db):
    """RFC 6749 2.3.1: id and secret are form-urlencoded before base64; a '+' must arrive as '+'."""
    new_client = make_client()
    Application.objects.filter(pk=new_client.application.pk).update(
        client_secret=make_password("s3cret+with:colon&more", hasher="client_secret_sha256")
    )
    new_client = services.NewClient(new_client.application, "s3cret+with:colon&more")
    assert request_token(client, new_client).status_code == 200


def test_each_token_is_new_and_stored_hashed(client, new_client):
    first = request_token(client, new_client).json()["access_token"]
    second = request_token(client, new_client).json()["access_token"]

    assert first != second
    for raw in (first, second):
        stored = AccessToken.objects.get(token_checksum=hashlib.sha256(raw.encode()).hexdigest())
        assert stored.token == ""  # only the checksum is kept (RFC 9700 token storage)
        assert stored.user is None
        assert stored.application_id == new_client.application.pk


def test_asking_for_no_scope_grants_every_allowed_scope(client, db):
    new_client = make_client(scopes=["products:read", "orders:read", "orders:write"])
    assert request_token(client, new_client).json()["scope"] == "orders:read orders:write products:read"


def test_asking_for_a_subset_grants_that_subset(client, new_client):
    response = request_token(client, new_client, scope="products:read")
    assert response.json()["scope"] == "products:read"


def test_a_scope_asked_twice_is_granted_once(client, new_client):
    response = request_token(client, new_client, scope="products:read products:read")
    assert response.json()["scope"] == "products:read"


def test_each_client_has_its_own_token_lifetime(client, db):
    new_client = make_client(access_token_lifetime=120)
    response = request_token(client, new_client)
    assert response.json()["expires_in"] == 120
    stored = AccessToken.objects.get(application=new_client.application)
    assert 115 <= (stored.expires - stored.created).total_seconds() <= 125


def test_trailing_slash_works_too(client, new_client):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    response = post_form(client, "/oauth2/token/", {"grant_type": "client_credentials"}, **credentials)
    assert response.status_code == 200


def test_issuing_a_token_is_audited_with_the_token_in_one_transaction(client, new_client):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    post_form(
        client,
        "/oauth2/token",
        {"grant_type": "client_credentials"},
        REMOTE_ADDR="203.0.113.7",
        **credentials,
    )
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_ISSUED)
    assert event.application == new_client.application
    assert event.remote_addr == "203.0.113.7"
    assert event.detail["scope"] == "orders:read products:read"


# --- invalid_client (RFC 6749 5.2) -------------------------------------------------------------


def test_wrong_secret_is_invalid_client_with_a_basic_challenge(client, new_client):
    wrong = services.NewClient(new_client.application, "not-the-secret")
    response = request_token(client, wrong)

    assert_oauth_error(response, 401, "invalid_client")
    assert response["WWW-Authenticate"].startswith("Basic realm=")
    failure = AuditEvent.objects.get(kind=AuditEvent.Kind.AUTH_FAILED)
    assert failure.client_id == new_client.application.client_id
    assert failure.application == new_client.application


def test_unknown_client_is_invalid_client(client, db):
    response = post_form(
        client, "/oauth2/token", {"grant_type": "client_credentials"}, **basic("nobody", "x")
    )
    assert_oauth_error(response, 401, "invalid_client")
    assert AuditEvent.objects.get(kind=AuditEvent.Kind.AUTH_FAILED).client_id == "nobody"


def test_no_credentials_at_all_is_invalid_client(client, db):
    response = post_form(client, "/oauth2/token", {"grant_type": "client_credentials"})
    assert_oauth_error(response, 401, "invalid_client")
    assert "WWW-Authenticate" in response


def test_wrong_secret_in_the_body_is_invalid_client(client, new_client):
    params = {
        "grant_type": "client_credentials",
        "client_id": new_client.application.client_id,
        "client_secret": "x",
    }
    assert_oauth_error(post_form(client, "/oauth2/token", params), 401, "invalid_client")


@pytest.mark.parametrize("stored", [make_password(""), ""], ids=["hashed", "plain"])
def test_empty_secret_never_matches(client, new_client, stored):
    """Not even a stored secret that is empty itself (hashed or not): a client needs a secret."""
    Application.objects.filter(pk=new_client.application.pk).update(client_secret=stored)
    client_id = new_client.application.client_id
    params = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": ""}
    assert_oauth_error(post_form(client, "/oauth2/token", params), 401, "invalid_client")
    as_basic = post_form(
        client, "/oauth2/token", {"grant_type": "client_credentials"}, **basic(client_id, "")
    )
    assert_oauth_error(as_basic, 401, "invalid_client")


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic",
        "Basic !!!notbase64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic \xff\xfe",
        "Bearer x",
    ],
)
def test_malformed_authorization_headers_are_invalid_client(client, new_client, authorization):
    response = post_form(
        client, "/oauth2/token", {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=authorization
    )
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    "around",
    [
        "@@{}",  # stray characters before
        "{}!!",  # and after
        "{}*#{}",  # between two credentials
        "{}QUJD",  # data after the padding
        "{}, Basic {}",  # two Authorization headers, joined by a comma
        "{}, Bearer abc",
    ],
)
def test_valid_basic_credentials_with_anything_beside_them_are_refused(client, new_client, around):
    """RFC 7617 2: the credentials are base64 and nothing else; a lenient decoder that skips what is
    not base64 would let a request with two Authorization headers through on the first. Beside a
    secret in the body they are still a second method, not skipped for it."""
    good = basic(new_client.application.client_id, new_client.client_secret)["HTTP_AUTHORIZATION"]
    authorization = "Basic " + around.format(*[good.removeprefix("Basic ")] * 2)
    in_body = {"client_id": new_client.application.client_id, "client_secret": new_client.client_secret}

    alone = post_form(
        client, "/oauth2/token", {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=authorization
    )
    assert_oauth_error(alone, 401, "invalid_client")
    beside = post_form(
        client,
        "/oauth2/token",
        {"grant_type": "client_credentials", **in_body},
        HTTP_AUTHORIZATION=authorization,
    )
    assert_oauth_error(beside, 400, "invalid_request")
    assert not AccessToken.objects.exists()


@pytest.mark.parametrize("scheme", ["basic ", "BASIC ", "bAsIc ", "Basic  "])
def test_the_basic_scheme_is_matched_whatever_its_case(client, new_client, scheme):
    """RFC 9110 11.1: an authentication scheme's name is case-insensitive; one or more spaces follow."""
    [(name, value)] = basic(new_client.application.client_id, new_client.client_secret).items()
    header = {name: scheme + value.removeprefix("Basic ")}

    issued = post_form(client, "/oauth2/token", {"grant_type": "client_credentials"}, **header)
    assert issued.status_code == 200, issued.content
    token = issued.json()["access_token"]
    resource_server = make_client(scopes=["introspection"], name="resource server")
    [(name, value)] = basic(resource_server.application.client_id, resource_server.client_secret).items()
    introspected = post_form(
        client, "/oauth2/introspect", {"token": token}, **{name: scheme + value.removeprefix("Basic ")}
    )
    assert introspected.json()["active"] is True

    revoked = post_form(client, "/oauth2/revoke", {"token": token}, **header)
    assert revoked.status_code == 200
    assert services.introspect_token(token) == {"active": False}


def test_a_disabled_client_is_invalid_client(client, new_client):
    services.set_client_enabled(application=new_client.application, enabled=False, actor="tests")
    assert_oauth_error(request_token(client, new_client), 401, "invalid_client")


def test_after_rotation_the_old_secret_fails_and_the_new_one_works(client, new_client):
    new_secret = services.rotate_secret(application=new_client.application, actor="tests")
    assert_oauth_error(request_token(client, new_client), 401, "invalid_client")
    assert request_token(client, services.NewClient(new_client.application, new_secret)).status_code == 200


# --- invalid_request -----------------------------------------------------------------------------


def test_missing_grant_type_is_invalid_request(client, new_client):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    assert_oauth_error(post_form(client, "/oauth2/token", {}, **credentials), 400, "invalid_request")


def client_secret_post(new_client) -> list[tuple[str, str]]:
    """A token request's parameters with the credentials in the body (client_secret_post)."""
    return [
        ("grant_type", "client_credentials"),
        ("client_id", new_client.application.client_id),
        ("client_secret", new_client.client_secret),
        ("scope", "products:read"),
    ]


@pytest.mark.parametrize("parameter", ["grant_type", "scope", "client_id", "client_secret"])
def test_repeated_parameters_are_invalid_request(client, new_client, parameter):
    pairs = client_secret_post(new_client)
    pairs.append(next(pair for pair in pairs if pair[0] == parameter))
    assert_oauth_error(post_form(client, "/oauth2/token", pairs), 400, "invalid_request")


@pytest.mark.parametrize(
    "grant_types", [["client_credentials", "password"], ["password", "client_credentials"]]
)
def test_a_grant_type_sent_twice_is_invalid_request_whichever_comes_last(client, new_client, grant_types):
    """oauthlib reads the last value: `client_credentials` then `password` was answered "This server
    offers the client_credentials grant only", to a client that had sent it."""
    pairs = [("grant_type", grant_type) for grant_type in grant_types]
    credentials = basic(new_client.application.client_id, new_client.client_secret)

    response = post_form(client, "/oauth2/token", pairs, **credentials)

    assert_oauth_error(response, 400, "invalid_request")
    assert response.json()["error_description"] == "Duplicate grant_type parameter."


@pytest.mark.parametrize("empty", ["scope", "client_id", "client_secret", "resource", "audience"])
def test_a_parameter_sent_without_a_value_is_treated_as_omitted(client, new_client, empty):
    """RFC 6749 3.2: `scope=` asks for the client's default scopes, `client_secret=` beside Basic is
    no second authentication method, an empty `resource` (RFC 8707) names no resource."""
    response = request_token(client, new_client, **{empty: ""})

    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "orders:read products:read"
    assert AccessToken.objects.get().resource == []


@pytest.mark.parametrize("parameter", ["grant_type", "scope", "client_id", "client_secret"])
def test_a_parameter_repeated_without_a_value_is_not_repeated(client, new_client, parameter):
    response = post_form(client, "/oauth2/token", [*client_secret_post(new_client), (parameter, "")])
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "products:read"


def test_a_grant_type_without_a_value_is_a_missing_grant_type(client, new_client):
    response = request_token(client, new_client, grant_type="")
    assert_oauth_error(response, 400, "invalid_request")
    assert response.json()["error_description"] == "Request is missing grant type."


def test_two_authentication_methods_in_one_request_are_invalid_request(client, new_client):
    application = new_client.application
    params = {"grant_type": "client_credentials", "client_secret": new_client.client_secret}
    response = post_form(
        client, "/oauth2/token", params, **basic(application.client_id, new_client.client_secret)
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_a_body_client_id_that_contradicts_basic_is_invalid_request(client, new_client):
    application = new_client.application
    params = {"grant_type": "client_credentials", "client_id": "someone-else"}
    response = post_form(
        client, "/oauth2/token", params, **basic(application.client_id, new_client.client_secret)
    )
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "authorization", ["Basic", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic Ong="]
)
def test_a_body_client_id_beside_basic_naming_no_client_is_invalid_client(client, new_client, authorization):
    """Basic credentials that name no client (not base64 of id:secret, or an empty user-id) fail
    client authentication (RFC 6749 5.2), with a body client_id as without one; they were a 400
    saying the client_id "does not match the client in the Authorization header"."""
    params = {"grant_type": "client_credentials", "client_id": new_client.application.client_id}

    response = post_form(client, "/oauth2/token", params, HTTP_AUTHORIZATION=authorization)

    assert_oauth_error(response, 401, "invalid_client")
    assert response["WWW-Authenticate"].startswith("Basic realm=")


def test_a_body_client_id_that_agrees_with_basic_is_fine(client, new_client):
    application = new_client.application
    params = {"grant_type": "client_credentials", "client_id": application.client_id}
    response = post_form(
        client, "/oauth2/token", params, **basic(application.client_id, new_client.client_secret)
    )
    assert response.status_code == 200


def test_json_body_is_invalid_request(client, new_client):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    response = client.post(
        "/oauth2/token", {"grant_type": "client_credentials"}, content_type="application/json", **credentials
    )
    assert_oauth_error(response, 400, "invalid_request")
    assert "application/x-www-form-urlencoded" in response.json()["error_description"]


def test_parameters_in_the_query_string_are_invalid_request(client, new_client):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    response = client.post(
        "/oauth2/token?grant_type=client_credentials",
        form({"grant_type": "client_credentials"}),
        content_type=FORM,
        **credentials,
    )
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("query", ["?%zz", "?scope=%g0", "?x=%0z"])
def test_a_query_string_oauthlib_cannot_decode_is_invalid_request(client, new_client, query):
    """oauthlib refuses a query string at the token endpoint (RFC 6749 3.2), but raised on one with a
    malformed percent-escape before it could: a 500."""
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    response = client.post(
        "/oauth2/token" + query, form({"grant_type": "client_credentials"}), content_type=FORM, **credentials
    )
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("charset", ["ISO-8859-1", "latin-1", "windows-1252", "US-ASCII"])
def test_an_ascii_form_body_declared_in_a_charset_extending_ascii_gets_a_token(client, new_client, charset):
    """Apache HttpClient (4 and 5) declares its forms `charset=ISO-8859-1`: a body of printable ASCII
    escaping no byte beyond it means the same in UTF-8 (RFC 6749 Appendix B), at every endpoint."""
    content_type = f"application/x-www-form-urlencoded; charset={charset}"
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    body = "grant_type=client_credentials&scope=products%3Aread+orders%3Aread"

    response = client.post("/oauth2/token", body, content_type=content_type, **credentials)

    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "products:read orders:read"
    revoked = client.post(
        "/oauth2/revoke", f"token={response.json()['access_token']}", content_type=content_type, **credentials
    )
    assert revoked.status_code == 200, revoked.content


@pytest.mark.parametrize(
    ("charset", "body"),
    [
        ("ISO-8859-1", b"grant_type=client_credentials&scope=products%3Aread%E9"),  # an escape beyond ASCII
        ("ISO-8859-1", b"grant_type=client_credentials&scope=products:read\xe9"),  # a byte beyond it
        ("ISO-8859-1", b"grant_type=client_credentials\r\n"),  # no printable ASCII
        ("utf-7", b"grant_type=client_credentials"),  # reads '+' as no UTF-8 does
        ("utf-16-le", "grant_type=client_credentials".encode("utf-16-le")),
    ],
)
def test_a_form_body_that_means_otherwise_in_its_charset_is_refused(client, new_client, charset, body):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    content_type = f"application/x-www-form-urlencoded; charset={charset}"

    response = client.generic("POST", "/oauth2/token", body, content_type=content_type, **credentials)

    assert_oauth_error(response, 400, "invalid_request")
    assert "UTF-8" in response.json()["error_description"]


def test_invalid_utf8_in_the_body_is_a_json_4xx(client, new_client):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    response = client.post(
        "/oauth2/token", b"grant_type=client_credentials&scope=\xff\xfe", content_type=FORM, **credentials
    )
    assert_oauth_error(response, 400, "invalid_scope")  # read as U+FFFD: a malformed scope (RFC 6749 5.2)
    assert not AccessToken.objects.exists()


def test_a_body_over_the_size_cap_is_413(client, new_client, settings):
    body = form({"grant_type": "client_credentials", "scope": "x" * (settings.MAX_REQUEST_BODY_BYTES + 1)})
    response = client.post("/oauth2/token", body, content_type=FORM)
    assert_oauth_error(response, 413, "invalid_request")


@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"])
def test_a_body_of_too_many_parameters_is_400_saying_so(client, new_client, settings, path):
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    pairs = [("grant_type", "client_credentials"), *[(f"p{number}", "1") for number in range(limit)]]
    credentials = basic(new_client.application.client_id, new_client.client_secret)

    response = post_form(client, path, pairs, **credentials)

    assert_oauth_error(response, 400, "invalid_request")
    assert response.json()["error_description"] == f"The request has more than {limit} parameters."


@pytest.mark.parametrize("length", ["abc", "-1", "\u00b2", "1\u0661"])
def test_a_content_length_that_is_no_number_is_400(client, db, length):
    """Behind a server that hands the header over as it came ("²" is a digit to str.isdigit(),
    not to int(): a 500 before); gunicorn itself refuses these (tests/test_live_token_endpoint.py)."""
    response = client.post(
        "/oauth2/token", "grant_type=client_credentials", content_type=FORM, CONTENT_LENGTH=length
    )
    assert_oauth_error(response, 400, "invalid_request")
    assert response.json()["error_description"] == "Content-Length is not a number."


@pytest.mark.parametrize("length", ["9" * 21, "1" * 4301, "0" * 4300 + "1"])
def test_a_content_length_of_more_digits_than_any_body_is_413(client, db, length):
    """int() refuses over 4300 digits (a 500 before), leading zeros counted."""
    response = client.post(
        "/oauth2/token", "grant_type=client_credentials", content_type=FORM, CONTENT_LENGTH=length
    )
    assert_oauth_error(response, 413, "invalid_request")


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_are_405_json(client, db, method):
    response = getattr(client, method)("/oauth2/token")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "method_not_allowed"
    assert "POST" in response["Allow"]


@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/revoke"])
def test_a_wrong_method_is_one_log_line(client, db, caplog, path):
    """Django's View logged "Method Not Allowed (PUT): /oauth2/token" and django.request the 405
    again: two lines for one request, any client's to ask for."""
    caplog.set_level(logging.INFO)

    response = client.put(path)

    assert response.status_code == 405
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert lines == [f"Method Not Allowed: {path}"]


# --- grant and scope errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grant_type", ["password", "authorization_code", "refresh_token", "implicit", "nonsense"]
)
def test_other_grant_types_are_unsupported_grant_type(client, new_client, grant_type):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    response = post_form(client, "/oauth2/token", {"grant_type": grant_type}, **credentials)
    assert_oauth_error(response, 400, "unsupported_grant_type")
    assert response.json()["error_description"] == "This server offers the client_credentials grant only."
    assert not AccessToken.objects.exists()


def test_a_client_registered_for_another_grant_is_unauthorized_client(client, db):
    new_client = make_client()
    Application.objects.filter(pk=new_client.application.pk).update(
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris="https://app.example/callback",
    )
    assert_oauth_error(request_token(client, new_client), 400, "unauthorized_client")


def test_a_scope_the_client_may_not_hold_is_invalid_scope(client, new_client):
    response = request_token(client, new_client, scope="orders:write")
    assert_oauth_error(response, 400, "invalid_scope")
    assert response.json()["error_description"] == "This client may be granted: orders:read products:read."


def test_an_unknown_scope_is_invalid_scope(client, new_client):
    response = request_token(client, new_client, scope="products:read nope")
    assert_oauth_error(response, 400, "invalid_scope")
    assert response.json()["error_description"] == "This client may be granted: orders:read products:read."


@pytest.mark.parametrize(
    "scope",
    [
        "products:read\u00a0",  # a no-break space: not SP, and no scope-token character either
        "\u2003products:read",
        "products:read\torders:read",
        "products:read  orders:read",
        'products:read "orders:read"',
        "products:read\\",
    ],
)
def test_a_scope_outside_rfc_6749s_syntax_is_invalid_scope(client, new_client, scope):
    """RFC 6749 3.3: scope names of %x21 / %x23-5B / %x5D-7E separated by single spaces (spaces
    around them are forgiven); oauthlib would strip any whitespace and grant the rest."""
    response = request_token(client, new_client, scope=scope)
    assert_oauth_error(response, 400, "invalid_scope")
    assert response.json()["error_description"] == "The scope must be scope names separated by single spaces."


def test_spaces_around_the_scope_are_forgiven(client, new_client):
    response = request_token(client, new_client, scope=" products:read orders:read ")
    assert response.status_code == 200
    assert response.json()["scope"] == "products:read orders:read"


def test_a_client_without_any_scope_gets_invalid_scope(client, db):
    response = request_token(client, make_client(scopes=[]))
    assert_oauth_error(response, 400, "invalid_scope")
    assert response.json()["error_description"] == "This client may be granted: no scope."


# --- resource indicators (RFC 8707) ------------------------------------------------------------------

PROTECTED = oauth2_settings.OAUTH2_PROTECTED_RESOURCE_IDENTIFIER  # the Foo API's RFC 9728 `resource`
_HOST = urlsplit(PROTECTED).hostname


def test_a_token_for_a_resource_here_is_restricted_to_it(client, new_client):
    token = issue_token(client, new_client, resource=f"{PROTECTED}/api/v1/products")
    assert stored_token(token).resource == [f"{PROTECTED}/api/v1/products"]

    here = urlsplit(PROTECTED).netloc
    assert client.get("/api/v1/products", HTTP_HOST=here, **bearer(token)).status_code == 200
    elsewhere = client.get("/api/v1/orders", HTTP_HOST=here, **bearer(token))
    assert elsewhere.status_code == 401
    assert elsewhere.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    "resources",
    [
        ["https://elsewhere.example/api"],
        [PROTECTED.replace(_HOST, f"{_HOST}.evil.example", 1) + "/api/v1"],  # a host that starts like ours
        [PROTECTED.replace("https://", "http://", 1)],
        [f"{PROTECTED}/api/v1", "https://elsewhere.example/api"],  # one of two
        ["/api/v1/products"],  # no absolute URI (DOT's own check)
        # URIs urlsplit() refuses with a ValueError (an unclosed or invalid IPv6 literal): a 500.
        ["https://[::1"],
        [f"{PROTECTED}/api/v1", "https://[zz]/api"],
        # Dot-segments (RFC 3986 3.3): a prefix of ours in text, elsewhere once resolved.
        [f"{PROTECTED}/api/v1/../../admin/"],
        [f"{PROTECTED}/api/v1/%2E%2E/products"],
        [f"{PROTECTED}/api/./v1"],
    ],
)
def test_a_resource_this_server_does_not_protect_is_invalid_target(client, new_client, resources):
    response = post_form(
        client,
        "/oauth2/token",
        [("grant_type", "client_credentials"), *(("resource", resource) for resource in resources)],
        **basic(new_client.application.client_id, new_client.client_secret),
    )

    assert_oauth_error(response, 400, "invalid_target")
    assert not AccessToken.objects.exists()


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x7f"])
def test_a_resource_holding_a_control_character_is_invalid_target(client, new_client, character):
    """No URI holds a control character (RFC 3986 2). A NUL was written into the token's resource
    list, which PostgreSQL cannot store in JSON: a 500 there."""
    response = request_token(client, new_client, resource=f"{PROTECTED}/api/v1/products{character}")

    assert_oauth_error(response, 400, "invalid_target")
    assert _ERROR_DESCRIPTION.fullmatch(response.json()["error_description"]), response.json()
    assert not AccessToken.objects.exists()


# RFC 6749 5.2: error_description = *( %x20-21 / %x23-5B / %x5D-7E ): no quote, backslash or
# non-ASCII character, even where it names what the client sent.
_ERROR_DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


@pytest.mark.parametrize("resource", ['urn:x"\u00e9\\', 'https://[::1"\u00e9', "/api\\v1\n"])
def test_a_refused_resource_is_described_in_rfc_6749s_characters(client, new_client, resource):
    response = request_token(client, new_client, resource=resource)

    assert_oauth_error(response, 400, "invalid_target")
    assert _ERROR_DESCRIPTION.fullmatch(response.json()["error_description"]), response.json()


# --- secrets at rest -------------------------------------------------------------------------------


def test_secrets_are_stored_with_the_fast_salted_hash(new_client):
    stored = Application.objects.get(pk=new_client.application.pk).client_secret
    assert new_client.client_secret not in stored
    assert identify_hasher(stored).algorithm == "client_secret_sha256"


def test_a_legacy_pbkdf2_secret_still_works_and_is_rehashed_on_use(client, db, settings):
    new_client = make_client()
    legacy_hash = make_password(new_client.client_secret, hasher="pbkdf2_sha256")
    Application.objects.filter(pk=new_client.application.pk).update(client_secret=legacy_hash)

    assert request_token(client, new_client).status_code == 200
    upgraded = Application.objects.get(pk=new_client.application.pk).client_secret
    assert identify_hasher(upgraded).algorithm == "client_secret_sha256"
    assert request_token(client, new_client).status_code == 200


def test_a_failed_attempt_does_not_rehash_a_legacy_secret(client, db):
    new_client = make_client()
    legacy_hash = make_password(new_client.client_secret, hasher="pbkdf2_sha256")
    Application.objects.filter(pk=new_client.application.pk).update(client_secret=legacy_hash)

    request_token(client, services.NewClient(new_client.application, "wrong"))
    assert Application.objects.get(pk=new_client.application.pk).client_secret == legacy_hash


@pytest.mark.parametrize("client_id", ["nul\x00byte", "\x00", "é" * 300])
def test_odd_client_ids_are_invalid_client_and_audited(client, db, client_id):
    """PostgreSQL cannot store NUL and the column has a length: neither may turn into a 500."""
    params = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "x"}
    assert_oauth_error(post_form(client, "/oauth2/token", params), 401, "invalid_client")
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.AUTH_FAILED).count() == 1


@pytest.mark.parametrize(
    ("params", "credentials", "status", "error"),
    [
        ({"grant_type": "password"}, "basic", 400, "unsupported_grant_type"),
        ({}, "basic", 400, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "orders:write"}, "basic", 400, "invalid_scope"),
        ({"grant_type": "client_credentials"}, "wrong", 401, "invalid_client"),
    ],
)
def test_an_error_answers_with_rfc_6749s_members_only(client, new_client, params, credentials, status, error):
    """RFC 6749 5.2: error, error_description, error_uri. A `state` (an authorization request's,
    4.1.1) has no place at the token endpoint; oauthlib echoed whatever was sent as one."""
    secret = new_client.client_secret if credentials == "basic" else "wrong"
    response = post_form(
        client,
        "/oauth2/token",
        {**params, "state": "xyz"},
        **basic(new_client.application.client_id, secret),
    )

    assert_oauth_error(response, status, error)
    assert set(response.json()) <= {"error", "error_description", "error_uri"}


# --- the view: no CSRF token (RFC 6749 clients have no session), secrets out of error reports ---


def test_token_and_revocation_need_no_csrf_token(new_client):
    browser_like = HttpsClient(enforce_csrf_checks=True)  # CSRF checked as a live server checks it
    token = request_token(browser_like, new_client).json()["access_token"]
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    assert post_form(browser_like, "/oauth2/revoke", {"token": token}, **credentials).status_code == 200


@pytest.mark.parametrize("dot_view", [dot_views.TokenView, dot_views.RevokeTokenView])
def test_the_endpoints_skip_only_dots_dispatch_decorators(dot_view):
    # FormPostEndpointMixin calls View.dispatch itself: DOT's dispatch must be nothing more than
    # View.dispatch under decorators, whose attributes the view keeps.
    assert inspect.unwrap(dot_view.dispatch) is View.dispatch
    view = {dot_views.TokenView: TokenView, dot_views.RevokeTokenView: RevokeView}[dot_view].as_view()
    assert view.csrf_exempt is True and view.login_required is False


def test_an_error_report_of_a_token_request_hides_the_client_secret(new_client, rf):
    request = rf.post(
        "/oauth2/token",
        form({"grant_type": "client_credentials", "client_id": "someone", "client_secret": "s3cret"}),
        content_type=FORM,
        REMOTE_ADDR="127.0.0.1",
    )
    TokenView.as_view()(request)
    shown = SafeExceptionReporterFilter().get_post_parameters(request)
    assert shown["client_secret"] != "s3cret" and shown["client_id"] == "someone"
