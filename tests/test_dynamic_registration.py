"""A trusted client registers new clients at /oauth2/register (RFC 7591) and manages them (RFC 7592)."""

import bz2
import json
import re
import zlib

import pytest
from django.core.exceptions import ValidationError

from authserver import services
from authserver.models import Application, AuditEvent
from authserver.serializers import SERVER_ASSIGNED_FIELDS
from tests.helpers import bearer, issue_token, make_client, post_form, request_token


@pytest.fixture
def initial_access_token(client, db) -> str:
    """A token with the `registration` scope, got with the client credentials grant."""
    registrar = make_client(scopes=["registration"], name="registrar")
    return issue_token(client, registrar)


def register(http, token: str, metadata) -> "object":
    body = metadata if isinstance(metadata, str | bytes) else json.dumps(metadata)
    return http.post("/oauth2/register", body, content_type="application/json", **bearer(token))


def manage(http, method: str, registration: dict, body=None):
    return manage_raw(http, method, registration, json.dumps(body) if body is not None else "")


def manage_raw(http, method: str, registration: dict, data: str):
    path = registration["registration_client_uri"].split("://", 1)[1].split("/", 1)[1]
    extra = bearer(registration["registration_access_token"])
    return getattr(http, method)(f"/{path}", data, content_type="application/json", **extra)


def test_registering_a_client(client, initial_access_token, settings):
    response = register(
        client, initial_access_token, {"client_name": "Acme billing", "scope": "products:read"}
    )

    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    registration = response.json()
    assert registration["client_name"] == "Acme billing"
    assert registration["grant_types"] == ["client_credentials"]
    assert registration["scope"] == "products:read"
    assert registration["client_secret_expires_at"] == 0
    assert isinstance(registration["client_id_issued_at"], int)
    assert registration["registration_client_uri"] == (
        f"{settings.ISSUER}/oauth2/register/{registration['client_id']}"
    )
    application = Application.objects.get(client_id=registration["client_id"])
    assert application.registration_source == Application.RegistrationSource.DCR
    assert application.access_token_lifetime == settings.SANDBOX_TOKEN_LIFETIME
    assert registration["client_secret"] not in application.client_secret  # stored hashed
    created = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CREATED, application=application)
    assert created.actor.startswith("client:")
    assert created.detail == {
        "name": application.name,
        "owner": None,
        "access_token_lifetime": settings.SANDBOX_TOKEN_LIFETIME,
        "grant_type": Application.GRANT_CLIENT_CREDENTIALS,
        "token_endpoint_auth_method": "client_secret_basic",
        "enabled": True,
        "scope": "products:read",
    }


def test_the_registered_client_gets_tokens_with_its_secret(client, initial_access_token):
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    new_client = services.NewClient(
        Application.objects.get(client_id=registration["client_id"]), registration["client_secret"]
    )
    response = request_token(client, new_client)
    assert response.status_code == 200
    assert response.json()["scope"] == "orders:read products:read"  # the sandbox scopes


def test_without_scope_the_client_gets_the_sandbox_scopes(client, initial_access_token):
    assert register(client, initial_access_token, {}).json()["scope"] == "orders:read products:read"


def test_spaces_around_the_scope_are_no_part_of_it(client, initial_access_token):
    assert (
        register(client, initial_access_token, {"scope": " products:read "}).json()["scope"]
        == "products:read"
    )


@pytest.mark.parametrize(
    "metadata",
    [
        {"scope": "orders:write"},
        {"scope": "introspection"},
        {"scope": "registration"},
        {"scope": "no-such-scope"},
        {"grant_types": ["authorization_code"]},
        {"grant_types": ["client_credentials", "refresh_token"]},
        {"response_types": ["code"]},
        {"token_endpoint_auth_method": "none"},
        {"client_name": 42 * "x" * 10},
        {"grant_types": "client_credentials"},
        {"client_name": 5},  # a number is no string (RFC 7591 2), not the name "5"
        {"client_name": True},
        # Bidi controls would reorder the console around the name (U+202E reverses what follows).
        {"client_name": "Acme\u202eenilno"},
        {"client_name": "\u2067Acme"},
        # A line break or an escape sequence would forge a line or drive a terminal where it is printed.
        {"client_name": "Acme\nbilling"},
        {"client_name": "Acme\x1b[2J"},
        {"client_name": "Acme\x85billing"},
        {"scope": 5},
        {"grant_types": [5]},
        # RFC 7591 2 and RFC 6749 3.3: scope names separated by single spaces.
        {"scope": "orders:read\tproducts:read"},
        {"scope": "orders:read  products:read"},
        {"scope": "orders:read\nproducts:read"},
        {"scope": "products:read\u00a0"},
        # Named in the description, which holds printable ASCII but " and \ (RFC 7591 3.2.2, RFC 6749 5.2).
        {"token_endpoint_auth_method": 'caf\u00e9"\\'},
    ],
)
def test_metadata_beyond_a_sandbox_client_is_invalid_client_metadata(client, initial_access_token, metadata):
    response = register(client, initial_access_token, metadata)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"
    assert re.fullmatch(r"[\x20\x21\x23-\x5b\x5d-\x7e]+", response.json()["error_description"])
    assert not Application.objects.filter(registration_source=Application.RegistrationSource.DCR).exists()


@pytest.mark.parametrize(
    "redirect_uris",
    [["https://app.example/cb"], ["not a uri"], "https://app.example/cb", [5]],
)
def test_redirection_uris_are_invalid_redirect_uri(client, initial_access_token, redirect_uris):
    """RFC 7591 3.2.2 names its own error for redirection URIs the server refuses (a
    client-credentials client has none), at registration and at an update (RFC 7592 2.2)."""
    response = register(client, initial_access_token, {"client_name": "svc", "redirect_uris": redirect_uris})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"
    assert response.json()["error_description"].startswith("redirect_uris")
    assert not Application.objects.filter(registration_source=Application.RegistrationSource.DCR).exists()

    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    body = {"client_id": registration["client_id"], "client_name": "x", "redirect_uris": redirect_uris}
    updated = manage(client, "put", registration, body)
    assert (updated.status_code, updated.json()["error"]) == (400, "invalid_redirect_uri")
    assert Application.objects.get(client_id=registration["client_id"]).name == "svc"


NOT_ONE_JSON_OBJECT = [
    "{not json",
    "[1, 2]",
    b"\xff\xfe",
    '"a string"',
    b"",  # no body: DRF reads it as {}, which would register a client of defaults
    '{"client_name": "a", "client_name": "b"}',  # which one? (RFC 8259 4)
    '{"client_name": "a", "contacts": [{"x": 1, "x": 2}]}',  # in metadata this server ignores, too
    "[" * 5000 + "]" * 5000,  # deeper than Python's recursion limit, 10 kB
    '{"contacts": ' + "[" * 5000 + "]" * 5000 + "}",
    # Unpaired surrogates (RFC 7493 2.1): quoted in an error, no UTF-8 could carry them (a 500).
    '{"client_name": "a", "token_endpoint_auth_method": "\\ud800"}',
    '{"client_name": "a", "contacts": ["\\udfff@x.example"]}',
    '{"\\ud800": "a"}',
]


def test_an_escaped_surrogate_pair_in_metadata_is_one_character(client, initial_access_token):
    response = register(client, initial_access_token, '{"client_name": "\\ud83d\\ude00 svc"}')
    assert response.status_code == 201, response.content
    assert response.json()["client_name"] == "\U0001f600 svc"


@pytest.mark.parametrize("body", NOT_ONE_JSON_OBJECT)
def test_a_body_that_is_not_a_json_object_is_invalid_client_metadata(client, initial_access_token, body):
    response = register(client, initial_access_token, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"
    assert not Application.objects.filter(registration_source=Application.RegistrationSource.DCR).exists()


def test_a_number_past_python_digits_is_refused_in_the_clients_terms(client, initial_access_token):
    response = register(client, initial_access_token, '{"client_name": "a", "x": ' + "1" * 4301 + "}")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"
    assert "4300 digits" in response.json()["error_description"]
    assert "sys." not in response.json()["error_description"]  # Python's advice, not the client's


@pytest.mark.parametrize(
    "body",
    [
        "",
        '{"client_id": "%(id)s", "client_name": "a", "client_name": "b"}',
        '{"client_id": "%(id)s", "client_name": "a", "contacts": [{"x": 1, "x": 2}]}',
        '{"client_id": "%(id)s", "contacts": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
)
def test_an_update_that_is_not_one_json_object_is_invalid_client_metadata(client, initial_access_token, body):
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    response = manage_raw(client, "put", registration, body % {"id": registration["client_id"]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"
    assert Application.objects.get(client_id=registration["client_id"]).name == "svc"


@pytest.mark.parametrize("charset", ["utf-16", "latin-1", "utf-8"])
def test_a_charset_parameter_does_not_change_how_the_json_is_read(client, initial_access_token, charset):
    """RFC 8259 8.1 and 11: JSON is UTF-8 and application/json has no charset parameter."""
    # generic() sends the bytes as they are; post() would encode them in the charset named.
    response = client.generic(
        "POST",
        "/oauth2/register",
        '{"client_name": "caf\u00e9"}'.encode(),
        content_type=f"application/json; charset={charset}",
        **bearer(initial_access_token),
    )
    assert response.status_code == 201, response.content
    assert response.json()["client_name"] == "caf\u00e9"


@pytest.mark.parametrize(
    ("charset", "body"),
    [
        ("rot13", b'{"client_name": "svc"}'),
        ("base64", b'{"client_name": "svc"}'),
        ("hex", b'{"client_name": "svc"}'),
        # A few hundred bytes of bz2 expanded to 200 MB in the worker (gigabytes within the body limit).
        ("bz2", bz2.compress(b'{"client_name": "svc", "contacts": ["' + b"a" * 1_000_000 + b'"]}')),
        ("zlib", zlib.compress(b'{"client_name": "svc", "contacts": ["' + b"a" * 1_000_000 + b'"]}')),
    ],
)
def test_a_charset_that_is_no_text_encoding_is_refused_unread(client, initial_access_token, charset, body):
    """Codecs Python knows: a JSON parser that took the charset ran them on the body (rot13 and zlib
    on plain JSON were a 500)."""
    response = client.generic(
        "POST",
        "/oauth2/register",
        body,
        content_type=f"application/json; charset={charset}",
        **bearer(initial_access_token),
    )
    assert response.status_code == 415
    assert response.json()["error"] == "invalid_request"
    assert not Application.objects.filter(registration_source=Application.RegistrationSource.DCR).exists()


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
def test_a_body_of_another_media_type_is_415_invalid_request(client, initial_access_token, content_type):
    """No metadata was sent at all: invalid_request, as the 415 for a charset that is no text
    encoding answers, not RFC 7591's invalid_client_metadata (about a metadata field's value)."""
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    management_path = "/" + registration["registration_client_uri"].split("://", 1)[1].split("/", 1)[1]
    for path, method, token in [
        ("/oauth2/register", "post", initial_access_token),
        (management_path, "put", registration["registration_access_token"]),
    ]:
        response = getattr(client, method)(path, "client_name=x", content_type=content_type, **bearer(token))
        assert response.status_code == 415
        assert response.json()["error"] == "invalid_request"
    assert Application.objects.filter(registration_source=Application.RegistrationSource.DCR).count() == 1


def test_unknown_metadata_is_ignored(client, initial_access_token):
    response = register(
        client, initial_access_token, {"client_name": "x", "logo_uri": "https://x.example/logo"}
    )
    assert response.status_code == 201
    assert "logo_uri" not in response.json()


def test_registration_needs_an_initial_access_token(client, db):
    response = client.post("/oauth2/register", "{}", content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="foo"'
    # An empty one is a malformed request (RFC 6750 3.1), whatever the endpoint's own errors.
    empty = register(client, "", {})
    assert (empty.status_code, empty.json()["error"]) == (400, "invalid_request")
    assert empty["WWW-Authenticate"].startswith('Bearer realm="foo", error="invalid_request"')


def test_an_invalid_initial_access_token_is_invalid_token(client, db):
    response = register(client, "forged", {})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_a_token_without_the_registration_scope_is_insufficient_scope(client, new_client):
    response = register(client, issue_token(client, new_client), {})
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert 'scope="registration"' in response["WWW-Authenticate"]


def test_reading_a_registration(client, initial_access_token):
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    response = manage(client, "get", registration)

    assert response.status_code == 200
    current = response.json()
    assert current["client_id"] == registration["client_id"]
    assert current["registration_access_token"] == registration["registration_access_token"]
    assert "client_secret" not in current  # stored hashed; it was shown once


def test_a_registration_answers_head_as_get_without_a_body(client, initial_access_token):
    """RFC 9110 9.1: a resource that answers GET answers HEAD."""
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    path = "/" + registration["registration_client_uri"].split("://", 1)[1].split("/", 1)[1]

    response = client.head(path, **bearer(registration["registration_access_token"]))

    assert response.status_code == 200
    assert response.content == b""
    assert response["Cache-Control"] == "no-store"
    assert response["Allow"] == "GET, HEAD, PUT, DELETE, OPTIONS"


def test_updating_a_registration_replaces_its_metadata(client, initial_access_token):
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    body = {"client_id": registration["client_id"], "client_name": "renamed", "scope": "products:read"}

    response = manage(client, "put", registration, body)

    assert response.status_code == 200
    assert response.json()["client_name"] == "renamed"
    assert response.json()["scope"] == "products:read"
    application = Application.objects.get(client_id=registration["client_id"])
    assert application.name == "renamed"
    changed = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CHANGED, application=application)
    assert set(changed.detail["changed"]) == {"name", "allowed_scopes"}


def test_the_token_endpoint_auth_method_asked_for_is_kept_and_echoed(client, initial_access_token):
    """RFC 7591 2 and 3.2.1: the response holds the registered metadata, and a client checks
    token_endpoint_auth_method there to see whether it can use the registration; one that can
    only send its secret in the body (client_secret_post) was told client_secret_basic and could
    conclude it cannot. Kept through reads (RFC 7592 2.1) and updates (2.2: an omitted field
    is deleted, back to the default); the token endpoint takes either method from every client."""
    registration = register(
        client,
        initial_access_token,
        {"client_name": "svc", "token_endpoint_auth_method": "client_secret_post"},
    ).json()
    assert registration["token_endpoint_auth_method"] == "client_secret_post"
    assert manage(client, "get", registration).json()["token_endpoint_auth_method"] == "client_secret_post"
    new_client = services.NewClient(
        Application.objects.get(client_id=registration["client_id"]), registration["client_secret"]
    )
    in_the_body = post_form(
        client,
        "/oauth2/token",
        {
            "grant_type": "client_credentials",
            "client_id": registration["client_id"],
            "client_secret": registration["client_secret"],
        },
    )
    assert in_the_body.status_code == 200, in_the_body.content
    assert request_token(client, new_client).status_code == 200  # Basic too

    body = {"client_id": registration["client_id"], "client_name": "svc"}
    omitted = manage(client, "put", registration, body)
    assert omitted.json()["token_endpoint_auth_method"] == "client_secret_basic"
    put_back = manage(
        client, "put", registration, {**body, "token_endpoint_auth_method": "client_secret_post"}
    )
    assert put_back.json()["token_endpoint_auth_method"] == "client_secret_post"
    assert manage(client, "get", registration).json()["token_endpoint_auth_method"] == "client_secret_post"
    changes = AuditEvent.objects.filter(
        kind=AuditEvent.Kind.CLIENT_CHANGED, application=new_client.application
    ).order_by("created", "pk")
    assert [(event.detail["changed"], event.detail["from"], event.detail["to"]) for event in changes] == [
        (
            ["token_endpoint_auth_method"],
            {"token_endpoint_auth_method": "client_secret_post"},
            {"token_endpoint_auth_method": "client_secret_basic"},
        ),
        (
            ["token_endpoint_auth_method"],
            {"token_endpoint_auth_method": "client_secret_basic"},
            {"token_endpoint_auth_method": "client_secret_post"},
        ),
    ]
    assert register(client, initial_access_token, {}).json()["token_endpoint_auth_method"] == (
        "client_secret_basic"
    )


def test_every_client_information_response_says_when_the_secret_expires(client, initial_access_token):
    """RFC 7591 3.2.1: client_secret_expires_at is REQUIRED when the client has a secret, and the
    read and update responses are client information responses too (RFC 7592 2.1, 2.2, 3); the
    secret itself, stored hashed, is in the registration response alone."""
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    read = manage(client, "get", registration).json()
    updated = manage(
        client, "put", registration, {"client_id": registration["client_id"], "client_name": "renamed"}
    ).json()

    for response in (registration, read, updated):
        assert response["client_secret_expires_at"] == 0  # never
    assert "client_secret" not in read
    assert "client_secret" not in updated


def test_a_null_value_in_an_update_deletes_the_field_as_omitting_it_does(client, initial_access_token):
    """RFC 7592 2.2: omitted fields are treated as null values, asking to delete them; a client that
    sends the nulls themselves (a serialized object with unset fields) asks the same."""
    registration = register(
        client, initial_access_token, {"client_name": "svc", "scope": "products:read"}
    ).json()
    body = {"client_id": registration["client_id"], "client_name": None, "scope": None, "redirect_uris": None}

    response = manage(client, "put", registration, body)

    assert response.status_code == 200, response.content
    assert response.json()["client_name"] == ""
    assert response.json()["scope"] == "orders:read products:read"  # the default, as when omitted
    registered = register(client, initial_access_token, {"client_name": "new", "grant_types": None})
    assert registered.status_code == 201, registered.content


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "someone-else"},
        {"client_secret": "not-the-secret"},
        {"registration_access_token": "x"},
        {"scope": "orders:write"},
    ],
)
def test_an_update_must_be_consistent(client, initial_access_token, change):
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    body = {"client_id": registration["client_id"], "client_name": "svc", **change}
    response = manage(client, "put", registration, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


def test_a_client_named_with_a_bidi_control_before_keeps_its_name_in_updates(client, initial_access_token):
    """RFC 7592 2.2: a client updates by sending back what it read; a name stored before bidi controls
    were refused is sent back as read, and kept. A new name with one is refused."""
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    name = "Acme\u202eenilno"
    Application.objects.filter(client_id=registration["client_id"]).update(name=name)
    body = {"client_id": registration["client_id"], "client_name": name, "scope": "products:read"}

    kept = manage(client, "put", registration, body)

    assert kept.status_code == 200, kept.content
    assert kept.json()["client_name"] == name  # the metadata as stored, not as the console shows it
    assert Application.objects.get(client_id=registration["client_id"]).allowed_scope_names == [
        "products:read"
    ]
    renamed = manage(client, "put", registration, {**body, "client_name": f"{name}2"})
    assert (renamed.status_code, renamed.json()["error"]) == (400, "invalid_client_metadata")
    assert "client_name" in renamed.json()["error_description"]
    assert Application.objects.get(client_id=registration["client_id"]).name == name


def test_a_registration_the_model_refuses_is_invalid_client_metadata(
    client, initial_access_token, monkeypatch
):
    """The model's checks come after the metadata's (a scope deleted meanwhile): their ValidationError
    was no RFC 7591 error but a 500."""

    def refused(**kwargs):
        raise ValidationError({"allowed_scopes": "Unknown scope: products:read."})

    monkeypatch.setattr(services, "register_client", refused)
    response = register(client, initial_access_token, {"client_name": "svc"})

    assert (response.status_code, response.json()["error"]) == (400, "invalid_client_metadata")
    assert "Unknown scope" in response.json()["error_description"]


def registered_then_granted_orders_write(client, initial_access_token) -> tuple[dict, Application]:
    """A client registered for products:read, then granted orders:write (beyond the sandbox scopes)
    by an operator: its registration response and its client."""
    registration = register(
        client, initial_access_token, {"client_name": "svc", "scope": "products:read"}
    ).json()
    application = Application.objects.get(client_id=registration["client_id"])
    services.update_client(
        application=application,
        changed_fields=[],
        scopes=["products:read", "orders:write"],
        actor="user:olivia",
    )
    return registration, application


def test_a_client_puts_back_the_scope_an_operator_granted_it(client, initial_access_token):
    """RFC 7592 2.2: a client updates by sending back what it read. A scope an operator granted it
    beyond the sandbox ones stays acceptable in its own update; asking for another is still refused."""
    registration, _ = registered_then_granted_orders_write(client, initial_access_token)
    read = manage(client, "get", registration).json()
    assert read["scope"] == "orders:write products:read"

    body = {name: value for name, value in read.items() if name not in SERVER_ASSIGNED_FIELDS}
    put_back = manage(client, "put", registration, {**body, "client_name": "renamed"})

    assert put_back.status_code == 200, put_back.content
    assert put_back.json()["scope"] == "orders:write products:read"
    assert (
        manage(client, "put", registration, {**body, "scope": "orders:write introspection"}).status_code
        == 400
    )
    narrowed = manage(client, "put", registration, {**body, "scope": "products:read"})
    assert narrowed.json()["scope"] == "products:read"
    assert (
        manage(client, "put", registration, {**body, "scope": "orders:write"}).status_code == 400
    )  # given up


@pytest.mark.parametrize("credentials", ["no token", "token without the scope", "initial access token"])
def test_a_method_the_endpoint_does_not_serve_is_405_whoever_asks(client, initial_access_token, credentials):
    """RFC 9110 15.5.6: the method is the error, whatever the credentials: DRF checked the token
    first, and a GET with a token lacking the scope was a 403 insufficient_scope."""
    headers = {
        "no token": {},
        "token without the scope": bearer(issue_token(client, make_client(scopes=["products:read"]))),
        "initial access token": bearer(initial_access_token),
    }[credentials]

    for method in ("get", "put", "delete"):
        response = getattr(client, method)("/oauth2/register", **headers)
        assert response.status_code == 405, (method, response.content)
        assert response.json()["error"] == "method_not_allowed"
        assert response["Allow"] == "POST, OPTIONS"
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    path = "/" + registration["registration_client_uri"].split("://", 1)[1].split("/", 1)[1]
    assert client.post(path, "{}", content_type="application/json", **headers).status_code == 405


def test_deleting_a_registration(client, initial_access_token):
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()

    assert manage(client, "delete", registration).status_code == 204
    assert not Application.objects.filter(client_id=registration["client_id"]).exists()
    assert manage(client, "get", registration).status_code == 401
    assert AuditEvent.objects.filter(
        kind=AuditEvent.Kind.CLIENT_DELETED, client_id=registration["client_id"]
    ).exists()


def test_an_update_racing_a_delete_does_not_bring_the_client_back(client, initial_access_token, monkeypatch):
    """A PUT authenticated just before a DELETE (the client's own, or an operator's) committed
    saved its stale copy: Django's save() INSERTed the client again, with its old secret working and
    no registration access token left to delete it with."""
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    update_client = services.update_client

    def deleted_meanwhile(*, application, **kwargs):
        services.delete_client(application=Application.objects.get(pk=application.pk), actor="operator")
        return update_client(application=application, **kwargs)

    monkeypatch.setattr(services, "update_client", deleted_meanwhile)
    response = manage(
        client, "put", registration, {"client_id": registration["client_id"], "client_name": "x"}
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert not Application.objects.filter(client_id=registration["client_id"]).exists()


def test_a_delete_racing_another_is_invalid_token_and_one_deletion_in_the_trail(
    client, initial_access_token, monkeypatch
):
    """A DELETE authenticated just before another deletion of the client committed (the client's
    own, retried, or an operator's) answered 204 and wrote a second client_deleted event for a
    client it never deleted. RFC 7592 2.3: a client that does not exist is a 401."""
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    delete_client = services.delete_client

    def deleted_meanwhile(*, application, **kwargs):
        delete_client(application=Application.objects.get(pk=application.pk), actor="user:olivia")
        return delete_client(application=application, **kwargs)

    monkeypatch.setattr(services, "delete_client", deleted_meanwhile)
    response = manage(client, "delete", registration)

    deletions = AuditEvent.objects.filter(
        kind=AuditEvent.Kind.CLIENT_DELETED, client_id=registration["client_id"]
    )
    assert [event.actor for event in deletions] == ["user:olivia"]
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response["WWW-Authenticate"].startswith('Bearer realm="foo", error="invalid_token"')


def test_a_delete_racing_a_rename_records_the_name_it_deleted(client, initial_access_token, monkeypatch):
    """The client_deleted event named the client as its token was read, not as it was deleted."""
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    delete_client = services.delete_client

    def renamed_meanwhile(*, application, **kwargs):
        fresh = Application.objects.get(pk=application.pk)
        fresh.name = "renamed"
        services.update_client(application=fresh, changed_fields=["name"], actor="user:olivia")
        return delete_client(application=application, **kwargs)

    monkeypatch.setattr(services, "delete_client", renamed_meanwhile)
    assert manage(client, "delete", registration).status_code == 204

    deleted = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_DELETED, client_id=registration["client_id"])
    assert deleted.detail == {"name": "renamed"}


def test_an_update_racing_an_operators_disable_leaves_the_client_disabled(
    client, initial_access_token, monkeypatch
):
    """A PUT authenticated just before an operator disabled the client saved its whole stale copy:
    enabled again, by the client it was taken from. An update writes only what it changes."""
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    update_client = services.update_client

    def disabled_meanwhile(*, application, **kwargs):
        fresh = Application.objects.get(pk=application.pk)
        fresh.enabled = False  # what set_client_enabled does, through the service itself
        update_client(application=fresh, changed_fields=["enabled"], actor="operator")
        return update_client(application=application, **kwargs)

    monkeypatch.setattr(services, "update_client", disabled_meanwhile)
    body = {"client_id": registration["client_id"], "client_name": "renamed"}
    manage(client, "put", registration, body)

    stored = Application.objects.get(client_id=registration["client_id"])
    assert (stored.name, stored.enabled) == ("renamed", False)


def test_an_update_racing_an_operator_taking_a_scope_does_not_give_it_back(
    client, initial_access_token, monkeypatch
):
    """A PUT checked the scopes it keeps against the client as its token was read: a scope beyond the
    sandbox ones that an operator took away meanwhile was "held", and the update granted it again."""
    registration, application = registered_then_granted_orders_write(client, initial_access_token)
    update_client = services.update_client

    def withdrawn_meanwhile(*, application, **kwargs):
        fresh = Application.objects.get(pk=application.pk)
        update_client(application=fresh, changed_fields=[], scopes=["products:read"], actor="user:olivia")
        return update_client(application=application, **kwargs)

    monkeypatch.setattr(services, "update_client", withdrawn_meanwhile)
    body = {
        "client_id": registration["client_id"],
        "client_name": "svc",
        "scope": "orders:write products:read",
    }
    response = manage(client, "put", registration, body)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_client_metadata")
    assert Application.objects.get(pk=application.pk).allowed_scope_names == ["products:read"]


def test_an_update_racing_an_operator_granting_a_scope_takes_it_from_the_tokens(
    client, initial_access_token, monkeypatch
):
    """An update that leaves out a scope an operator granted meanwhile takes it from the client's
    tokens too: compared with the scopes as its token was read, the scope was never withdrawn."""
    registration, new_client = registered_client(client, initial_access_token)
    update_client = services.update_client

    def granted_meanwhile(*, application, **kwargs):
        fresh = Application.objects.get(pk=application.pk)
        scopes = [*fresh.allowed_scope_names, "orders:write"]
        update_client(application=fresh, changed_fields=[], scopes=scopes, actor="user:olivia")
        granted_meanwhile.token = issue_token(client, new_client, scope="orders:write")
        return update_client(application=application, **kwargs)

    monkeypatch.setattr(services, "update_client", granted_meanwhile)
    body = {"client_id": registration["client_id"], "client_name": "svc", "scope": "products:read"}
    response = manage(client, "put", registration, body)

    assert response.json()["scope"] == "products:read"
    assert not is_active(client, granted_meanwhile.token)
    changed = AuditEvent.objects.filter(
        kind=AuditEvent.Kind.CLIENT_CHANGED, actor=f"client:{new_client.application.client_id}"
    )
    assert changed.get().detail["withdrawn"] == ["orders:read", "orders:write"]


def test_a_registration_token_manages_its_own_client_only(client, initial_access_token):
    first = register(client, initial_access_token, {"client_name": "first"}).json()
    second = register(client, initial_access_token, {"client_name": "second"}).json()
    crossed = {**second, "registration_access_token": first["registration_access_token"]}

    response = manage(client, "get", crossed)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert manage(client, "delete", crossed).status_code == 401
    assert Application.objects.filter(client_id=second["client_id"]).exists()
    # Not revoked (RFC 7592 2.1's SHOULD is for a deleted client's token, which goes with it): a
    # wrong URL would cost the client its only way to manage its registration.
    assert manage(client, "get", first).status_code == 200


def test_the_initial_access_token_cannot_manage_registrations(client, initial_access_token):
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    response = manage(client, "get", {**registration, "registration_access_token": initial_access_token})
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"


def test_a_registration_token_is_no_api_token(client, initial_access_token):
    registration = register(client, initial_access_token, {"client_name": "svc"}).json()
    response = register(client, registration["registration_access_token"], {})
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert Application.objects.count() == 2  # the registrar and svc: nothing registered


def registered_client(http, initial_access_token) -> tuple[dict, services.NewClient]:
    """A client registered at /oauth2/register: its registration response, and it as NewClient."""
    registration = register(http, initial_access_token, {"client_name": "svc"}).json()
    application = Application.objects.get(client_id=registration["client_id"])
    return registration, services.NewClient(application, registration["client_secret"])


def is_active(http, token: str) -> bool:
    resource_server = make_client(scopes=["introspection"], name="resource server")
    credentials = bearer(issue_token(http, resource_server))
    return post_form(http, "/oauth2/introspect", {"token": token}, **credentials).json()["active"]


def listed_token_count(console, application: Application) -> int:
    """The client list's "active tokens" column for `application`."""
    rows = console.get("/admin/authserver/application/").context["cl"].result_list
    return next(row.active_token_count for row in rows if row.pk == application.pk)


@pytest.mark.parametrize("bulk", [False, True], ids=["client page", "client list"])
def test_an_operator_revoking_all_tokens_leaves_the_client_its_registration(
    client, console, initial_access_token, bulk
):
    """The console's "Revoke all tokens" revokes the client's access tokens only: without its
    registration access token the client could no longer read, update or delete its registration."""
    registration, new_client = registered_client(client, initial_access_token)
    application = new_client.application
    access_token = issue_token(client, new_client)
    assert listed_token_count(console, application) == 1

    clients = "/admin/authserver/application/"
    if bulk:
        done = console.post(
            clients, {"action": "revoke_tokens", "_selected_action": [application.pk], "post": "yes"}
        )
    else:
        done = console.post(f"{clients}{application.pk}/revoke-tokens/")

    assert done.status_code == 302
    assert not is_active(client, access_token)
    managed = manage(client, "get", registration)
    assert managed.status_code == 200, managed.content
    assert managed.json()["client_id"] == application.client_id
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_REVOKED, application=application)
    assert (event.actor, event.detail) == ("user:olivia", {"all_tokens": True, "count": 1})
    assert listed_token_count(console, application) == 0
    assert "Active tokens (0)" in console.get(f"{clients}{application.pk}/change/").content.decode()


def test_disabling_or_deleting_the_client_in_the_console_ends_its_registration(
    client, console, initial_access_token
):
    registration, new_client = registered_client(client, initial_access_token)
    clients = f"/admin/authserver/application/{new_client.application.pk}"

    console.post(f"{clients}/disable/")
    refused = manage(client, "get", registration)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_token")
    console.post(f"{clients}/enable/")
    assert manage(client, "get", registration).status_code == 200  # a suspension ends

    console.post(f"{clients}/delete/", {"post": "yes"})
    gone = manage(client, "get", registration)
    assert (gone.status_code, gone.json()["error"]) == (401, "invalid_token")
    assert manage(client, "delete", registration).status_code == 401
