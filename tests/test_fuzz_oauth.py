"""Generated hostile requests against the OAuth endpoints (Hypothesis, Django's test client).

Whatever the method, headers, Authorization value, content type or body (repeated or missing
parameters, bytes that are not UTF-8), every answer is a 2xx/4xx JSON response shaped as the
endpoint's RFC says, never a 5xx or an HTML page, and no request gets a token, an active
introspection answer, a registration or a revocation it should not get.
"""

import base64
import contextlib
import hashlib
import json
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus, urlencode

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from oauth2_provider.models import AccessToken

from authserver.models import Application
from tests.helpers import FORM, basic, bearer, issue_token, make_client, post_form

# Error codes each endpoint's RFC defines, plus the server-wide ones (404, 405, 406, 413, 415, 429).
SERVER_WIDE_ERRORS = {
    "not_found",
    "method_not_allowed",
    "not_acceptable",
    "too_many_requests",
    "invalid_request",
}
ENDPOINT_ERRORS = {
    # RFC 6749 5.2
    "token": {
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    },
    # RFC 7009 2.2.1 (RFC 6749 5.2's codes; unauthorized_client for another client's token, 2.1)
    "revoke": {"invalid_client", "unauthorized_client", "unsupported_token_type"},
    # RFC 7662 2.3 (client or bearer authentication, RFC 6750 errors for the latter)
    "introspect": {"invalid_client", "invalid_token", "insufficient_scope"},
    # RFC 7591 3.2.2 and RFC 7592 (bearer authentication)
    "register": {
        "invalid_client_metadata",
        "invalid_redirect_uri",
        "invalid_token",
        "insufficient_scope",
        "unauthorized",
    },
}

LATIN1 = st.characters(max_codepoint=255, blacklist_categories=["Cs"])
ANY_TEXT = st.text(max_size=40)
HEADER_TEXT = st.text(LATIN1, max_size=60)
PARAMETER_NAMES = [
    "grant_type",
    "scope",
    "client_id",
    "client_secret",
    "token",
    "token_type_hint",
    "client_name",
    "grant_types",
    "redirect_uri",
    "code",
    "",
]
CONTENT_TYPES = [
    FORM,
    FORM + "; charset=utf-8",
    FORM + "; charset=latin-1",
    FORM + "; charset=utf-16",
    FORM + "; charset=no-such-charset",
    "application/json",
    "application/json; charset=utf-8",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "text/plain",
    "text/html",
    "application/xml",
    "",
]
METHODS = ["POST", "POST", "POST", "GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]


@dataclass
class World:
    """The credentials a fuzzed request may (or may not) carry; replaced when a request legitimately
    uses them up (a revocation by the owner, a registration deleted by its own token)."""

    client_id: str
    client_secret: str
    access_token: str
    introspector_id: str
    introspector_secret: str
    introspection_token: str
    initial_access_token: str
    registered_client_id: str
    registration_token: str


def make_world(http) -> World:
    owner = make_client(scopes=["products:read", "orders:read"], name="fuzzed client")
    introspector = make_client(scopes=["introspection"], name="resource server")
    registrar = make_client(scopes=["registration"], name="registrar")
    world = World(
        client_id=owner.application.client_id,
        client_secret=owner.client_secret,
        access_token=issue_token(http, owner),
        introspector_id=introspector.application.client_id,
        introspector_secret=introspector.client_secret,
        introspection_token=issue_token(http, introspector),
        initial_access_token=issue_token(http, registrar),
        registered_client_id="",
        registration_token="",
    )
    register_dynamic_client(http, world)
    return world


def register_dynamic_client(http, world: World) -> None:
    response = http.post(
        "/oauth2/register",
        {"client_name": "dynamic", "scope": "products:read"},
        content_type="application/json",
        **bearer(world.initial_access_token),
    )
    assert response.status_code == 201, response.content
    world.registered_client_id = response.json()["client_id"]
    world.registration_token = response.json()["registration_access_token"]


def is_stored(raw_token: str) -> bool:
    return AccessToken.objects.filter(token_checksum=hashlib.sha256(raw_token.encode()).hexdigest()).exists()


# --- strategies ------------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def authorization_values(world: World):
    secrets = st.sampled_from([world.client_secret, world.introspector_secret, "wrong", ""])
    ids = st.sampled_from([world.client_id, world.introspector_id, world.registered_client_id, "nobody"])
    tokens = st.sampled_from(
        [world.access_token, world.introspection_token, world.initial_access_token, world.registration_token]
    )
    valid = st.sampled_from(
        [
            basic(world.client_id, world.client_secret)["HTTP_AUTHORIZATION"],
            basic(world.introspector_id, world.introspector_secret)["HTTP_AUTHORIZATION"],
        ]
    )
    return st.one_of(
        st.none(),
        valid,
        valid,
        st.builds(lambda token: f"Bearer {token}", tokens),
        st.builds(lambda i, s: basic(i, s)["HTTP_AUTHORIZATION"], ids, secrets),
        st.builds(lambda i, s: basic(i, s)["HTTP_AUTHORIZATION"], ids | ANY_TEXT, ANY_TEXT),
        st.builds(lambda raw: "Basic " + b64(raw), st.binary(max_size=60)),
        st.builds(
            lambda scheme, rest: f"{scheme} {rest}", st.sampled_from(["Basic", "basic", "BASIC"]), HEADER_TEXT
        ),
        st.builds(lambda token: f"Bearer {token}", tokens),
        st.builds(
            lambda scheme, token: f"{scheme} {token}",
            st.sampled_from(["Bearer", "bearer", "MAC"]),
            HEADER_TEXT,
        ),
        HEADER_TEXT,
    )


def parameter_values(world: World):
    known = st.sampled_from(
        [
            "client_credentials",
            "password",
            "authorization_code",
            "products:read",
            "orders:read orders:write",
            "introspection registration client:configure",
            "access_token",
            "refresh_token",
            world.client_id,
            world.client_secret,
            world.introspector_id,
            world.access_token,
            world.introspection_token,
            world.registration_token,
            "",
        ]
    )
    return known | ANY_TEXT


def form_bodies(world: World, endpoint: str = ""):
    """Generated form parameters, often appended to the ones the endpoint expects."""
    expected = {
        "token": [("grant_type", "client_credentials")],
        "revoke": [("token", world.access_token)],
        "introspect": [("token", world.access_token)],
    }.get(endpoint, [])
    names = st.sampled_from(PARAMETER_NAMES) | ANY_TEXT
    generated = st.lists(st.tuples(names, parameter_values(world)), max_size=8)
    pairs = st.one_of(generated, generated.map(lambda items: expected + items), st.just(expected))
    return st.one_of(
        pairs.map(lambda items: urlencode(items).encode()),
        # Percent-escapes of bytes that are not UTF-8, and raw bytes that are not either.
        st.builds(
            lambda items, junk: (urlencode(items) + "&" + "".join(f"%{b:02X}" for b in junk)).encode(),
            pairs,
            st.binary(min_size=1, max_size=12),
        ),
    )


# Unpaired surrogates, which st.text() never draws and json.dumps escapes (RFC 7493 2.1 refuses them).
SURROGATES = st.sampled_from(["\ud800", "x\udfff", "\udc00\ud800"])


def json_bodies(world: World):
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | parameter_values(world)
        | SURROGATES
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
        max_leaves=10,
    )
    keys = (
        st.sampled_from(
            [
                "client_name",
                "scope",
                "grant_types",
                "response_types",
                "redirect_uris",
                "token_endpoint_auth_method",
                "client_id",
                "client_secret",
                "registration_access_token",
                "client_id_issued_at",
            ]
        )
        | ANY_TEXT
        | SURROGATES
    )
    documents = st.dictionaries(keys, values, max_size=6) | values
    return documents.map(lambda document: json.dumps(document).encode())


def bodies(world: World, endpoint: str):
    """Mostly what the endpoint parses (form or JSON), sometimes anything at all."""
    natural = json_bodies(world) if endpoint == "register" else form_bodies(world, endpoint)
    return st.one_of(
        natural,
        natural,
        natural,
        st.just(b""),
        form_bodies(world) | json_bodies(world),
        st.binary(max_size=200),
    )


def paths(world: World):
    management = st.builds(
        lambda client_id: f"/oauth2/register/{quote(client_id, safe='')}",
        st.sampled_from([world.registered_client_id, world.registered_client_id, world.client_id, "nobody"])
        | st.text(min_size=1, max_size=20),
    )
    fixed = st.sampled_from(
        ["/oauth2/token", "/oauth2/token/", "/oauth2/revoke", "/oauth2/introspect", "/oauth2/register"]
    )
    query = st.one_of(st.none(), st.none(), st.none(), form_bodies(world))
    return st.tuples(fixed | management, query).map(
        lambda parts: parts[0] + ("" if parts[1] is None else "?" + parts[1].decode())
    )


@st.composite
def hostile_requests(draw, world: World) -> dict:
    path = draw(paths(world))
    endpoint = endpoint_of(path)
    natural_type = "application/json" if endpoint == "register" else FORM
    natural_method = "GET" if endpoint == "register" and path.count("/") > 2 else "POST"
    body = draw(bodies(world, endpoint))
    headers = {}
    authorization = draw(authorization_values(world))
    if authorization is not None:
        headers["HTTP_AUTHORIZATION"] = authorization
    extra_headers = ["HTTP_ACCEPT", "HTTP_X_FORWARDED_FOR", "HTTP_ORIGIN", "HTTP_COOKIE"]
    for name in draw(st.lists(st.sampled_from(extra_headers), unique=True, max_size=3)):
        values = ["application/json", "text/html", "*/*", "1.2.3.4, ::1", "sessionid=x; csrftoken=y"]
        headers[name] = draw(st.sampled_from(values) | HEADER_TEXT)
    if body and draw(st.sampled_from([False] * 9 + [True])):
        headers["CONTENT_LENGTH"] = draw(
            st.sampled_from(["abc", "-1", "1e3", " 5", "0", "\u00b2", str(len(body) // 2)])
        )
    return {
        "method": draw(st.one_of(st.just(natural_method), st.sampled_from(METHODS))),
        "path": path,
        "data": body,
        "content_type": draw(st.one_of(st.just(natural_type), st.sampled_from(CONTENT_TYPES), HEADER_TEXT)),
        **headers,
    }


# --- what every answer must be --------------------------------------------------------------------


def endpoint_of(path: str) -> str:
    return path.split("?")[0].strip("/").split("/")[1]


def presented(request: dict) -> str:
    """Everything the request said, decoded the ways the server decodes it, to look for credentials."""
    texts = [unquote_plus(request["path"]), unquote_plus(request["data"].decode("utf-8", "replace"))]
    authorization = request.get("HTTP_AUTHORIZATION") or ""
    texts.append(authorization)
    with contextlib.suppress(ValueError):  # not base64: nothing more to find
        texts.append(
            unquote_plus(base64.b64decode(authorization.partition(" ")[2]).decode("utf-8", "replace"))
        )
    return "\n".join(texts)


def assert_well_formed(response, request: dict) -> None:
    method, endpoint = request["method"], endpoint_of(request["path"])
    assert response.status_code < 500, response.content
    if method == "HEAD" or not response.content:
        # No body: HEAD, an RFC 7592 DELETE (204) or the bare answer to OPTIONS.
        assert response.status_code in {200, 204, 401, 405} or method == "HEAD", response.status_code
        return
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    if response.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
        assert body["error"] in ENDPOINT_ERRORS[endpoint] | SERVER_WIDE_ERRORS, (endpoint, body)
        assert "no-store" in response["Cache-Control"]
    if response.status_code == 401:
        assert response["WWW-Authenticate"].split()[0] in {"Basic", "Bearer"}
    if response.status_code == 429:
        assert int(response["Retry-After"]) > 0
    if response.status_code == 405:
        assert response["Allow"]


def assert_nothing_granted_unduly(response, request: dict, world: World, before: dict) -> None:
    """Compare what the request got with what it presented."""
    said = presented(request)
    body = json.loads(response.content) if response.content and response.status_code < 300 else {}
    body = body if isinstance(body, dict) else {}
    endpoint = endpoint_of(request["path"])

    new_tokens = AccessToken.objects.count() - before["tokens"]
    registered = endpoint == "register" and request["method"] == "POST" and response.status_code == 201
    if registered:
        # RFC 7592: a registration stores one token, the new client's registration access token.
        assert new_tokens == 1 and "access_token" not in body and "registration_access_token" in body
        new_tokens = 0
    if new_tokens > 0 or "access_token" in body:
        assert endpoint == "token" and request["method"] == "POST" and response.status_code == 200
        assert "client_credentials" in said
        assert world.client_secret in said or world.introspector_secret in said, said
        granted = set(body["scope"].split())
        assert granted <= {"products:read", "orders:read"} or granted <= {"introspection"}, granted

    if body.get("active") is True:
        assert endpoint == "introspect"
        assert world.introspector_secret in said or world.introspection_token in said, said

    if Application.objects.count() > before["clients"]:
        assert endpoint == "register" and response.status_code == 201
        assert world.initial_access_token in said

    if endpoint == "register" and response.status_code in {200, 204} and request["method"] != "OPTIONS":
        assert world.registration_token in said, said
    if not Application.objects.filter(client_id=world.registered_client_id).exists():
        assert world.registration_token in said, said
        register_dynamic_client(before["http"], world)

    if not is_stored(world.access_token):
        assert endpoint == "revoke" and world.client_secret in said, said
        world.access_token = issue_token(before["http"], _owner(world))


def _owner(world: World):
    from authserver import services

    return services.NewClient(Application.objects.get(client_id=world.client_id), world.client_secret)


FUZZ_SETTINGS = hypothesis_settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture
def world(client, db, settings):
    settings.THROTTLE_ENABLED = False  # thousands of failed authentications from one address
    return make_world(client)


@FUZZ_SETTINGS
@given(data=st.data())
def test_generated_requests_get_rfc_answers_and_nothing_unearned(client, world, data):
    request = data.draw(hostile_requests(world))
    before = {"tokens": AccessToken.objects.count(), "clients": Application.objects.count(), "http": client}

    response = client.generic(secure=True, **request)

    event(f"{endpoint_of(request['path'])} {response.status_code}")  # --hypothesis-show-statistics
    assert_well_formed(response, request)
    assert_nothing_granted_unduly(response, request, world, before)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_token_requests_with_generated_parameters(client, world, data):
    """Well-formed POSTs whose credentials and parameters are generated: a token only for the
    right secret and grant, with no more scope than the client holds; otherwise an RFC 6749 5.2
    error and no token row."""
    secret = data.draw(st.sampled_from([world.client_secret, world.client_secret[:-1], "", "x"]))
    method = data.draw(st.sampled_from(["basic", "body", "none"]))
    credentials = basic(world.client_id, secret) if method == "basic" else {}
    credential_pairs = [("client_id", world.client_id), ("client_secret", secret)] if method == "body" else []
    names = st.sampled_from(["grant_type", "scope", "client_id", "client_secret", "audience", "code"])
    extra = data.draw(st.lists(st.tuples(names, parameter_values(world)), max_size=4))
    grant = data.draw(st.sampled_from([[("grant_type", "client_credentials")], []]))
    pairs = data.draw(st.permutations(grant + credential_pairs + extra))
    before = AccessToken.objects.count()

    response = post_form(client, "/oauth2/token", pairs, **credentials)

    body = response.json()
    # A parameter sent without a value is treated as omitted (RFC 6749 3.2).
    sent = [(name, value) for name, value in pairs if value]
    if response.status_code == 200:
        assert [value for name, value in sent if name == "grant_type"] == ["client_credentials"]
        assert method != "none" and secret == world.client_secret
        assert [value for name, value in sent if name == "client_secret"] == (
            [secret] if method == "body" else []
        )
        assert set(body["scope"].split()) <= {"products:read", "orders:read"}
        assert AccessToken.objects.count() == before + 1
    else:
        assert AccessToken.objects.count() == before
        assert response.status_code in {400, 401}, body
        assert body["error"] in ENDPOINT_ERRORS["token"] | {"invalid_request"}


@hypothesis_settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(forwarded_for=HEADER_TEXT, authorization=st.none() | HEADER_TEXT)
def test_generated_forwarded_addresses_behind_a_proxy(client, world, settings, forwarded_for, authorization):
    """With a trusted proxy the caller's address comes from X-Forwarded-For; garbage there is
    neither a 500 (it is stored in audit events) nor a way around the limits."""
    settings.TRUSTED_PROXY_COUNT = 1
    settings.THROTTLE_ENABLED = True
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for}
    if authorization is not None:
        headers["HTTP_AUTHORIZATION"] = authorization
    response = post_form(client, "/oauth2/token", {"grant_type": "client_credentials"}, **headers)
    assert response.status_code in {400, 401, 429}, response.content
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("query", ["?&", "?x", "?&%00", "?client_secret", "?token=a&token"])
def test_malformed_query_strings_on_introspection_are_not_a_500(client, world, query):
    """Found by the generated requests above: oauthlib raised on a query field without '='. A query
    string is refused as at the token endpoint (RFC 6749 3.2), whatever it holds."""
    response = post_form(
        client,
        "/oauth2/introspect" + query,
        {"token": world.access_token},
        **basic(world.introspector_id, world.introspector_secret),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "pairs",
    [
        [("client_secret", "a"), ("client_secret", "b")],
        [("client_id", "a"), ("client_id", "b"), ("client_secret", "c")],
    ],
)
def test_ambiguous_client_credentials_on_introspection_are_invalid_request(client, world, pairs):
    """Found by the generated requests above: oauthlib's invalid_request escaped as a 500."""
    response = post_form(client, "/oauth2/introspect", [("token", world.access_token), *pairs])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_basic_and_a_body_secret_on_introspection_are_invalid_request(client, world):
    credentials = basic(world.introspector_id, world.introspector_secret)
    pairs = {"token": world.access_token, "client_secret": world.introspector_secret}
    response = post_form(client, "/oauth2/introspect", pairs, **credentials)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
