"""A bearer token in the Authorization header goes straight to DOT's validator (OAuthLibCore.
verify_request); every answer is the one DOT's whole path (its parameter extraction and oauthlib's
resource endpoint) gives for the same request, and every other request takes that path."""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.test import RequestFactory
from django.utils import timezone
from oauth2_provider import oauth2_backends
from oauth2_provider.models import AccessToken
from oauth2_provider.settings import oauth2_settings

from authserver import services
from authserver.oauth import OAuthLibCore, oauthlib_core
from tests.helpers import issue_token, make_client, stored_token

PROTECTED = oauth2_settings.OAUTH2_PROTECTED_RESOURCE_IDENTIFIER  # the Foo API's RFC 9728 `resource`
THIS_RESOURCE = f"{PROTECTED}/api/v1/products"
# A request as it reaches the server at the resource's own address (DOT builds the URI on it).
AT_THE_RESOURCE = {"secure": PROTECTED.startswith("https:"), "HTTP_HOST": urlsplit(PROTECTED).netloc}


@pytest.fixture
def tokens(client, db):
    """Tokens in every state the validator tells apart, by name."""
    reader = make_client(scopes=["products:read"], name="reader")
    disabled = make_client(scopes=["products:read"], name="disabled")
    names = ("valid", "expired", "revoked", "here", "elsewhere")
    named = {name: issue_token(client, reader) for name in names}
    named["disabled client"] = issue_token(client, disabled)
    stored = {name: stored_token(token) for name, token in named.items()}
    AccessToken.objects.filter(pk=stored["expired"].pk).update(expires=timezone.now() - timedelta(seconds=1))
    AccessToken.objects.filter(pk=stored["here"].pk).update(resource=[THIS_RESOURCE])
    AccessToken.objects.filter(pk=stored["elsewhere"].pk).update(resource=["https://elsewhere.example/api"])
    services.revoke_token(token=stored["revoked"], actor="tests")
    services.set_client_enabled(application=disabled.application, enabled=False, actor="tests")
    named["unknown"] = "x" * 30
    return named


def _request(authorization: str | None, path="/api/v1/products", method="get", **extra):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    return getattr(RequestFactory(), method)(path, **headers, **{**AT_THE_RESOURCE, **extra})


def _outcome(valid, oauthlib_request) -> tuple:
    """What a caller of verify_request can see: the verdict, the error, the token and client found."""
    if oauthlib_request is None:
        return valid, None
    token = getattr(oauthlib_request, "access_token", None)
    client = getattr(oauthlib_request, "client", None)
    return (
        valid,
        dict(getattr(oauthlib_request, "oauth2_error", {}) or {}),
        getattr(token, "pk", None),
        getattr(client, "pk", None),
        getattr(oauthlib_request, "scopes", None),
        getattr(oauthlib_request, "token_type", None),
    )


def _both_paths(make_request, scopes) -> tuple[tuple, tuple]:
    core = oauthlib_core()
    ours = _outcome(*core.verify_request(make_request(), scopes))
    dots = _outcome(*oauth2_backends.OAuthLibCore.verify_request(core, make_request(), scopes))
    return ours, dots


@pytest.mark.parametrize(
    "name, scopes, accepted",
    [
        ("valid", [], True),
        ("valid", ["products:read"], True),
        ("valid", ["orders:write"], False),  # insufficient_scope
        ("expired", [], False),
        ("revoked", [], False),
        ("disabled client", [], False),
        ("unknown", [], False),
        ("here", [], True),  # RFC 8707: restricted to this resource's URI
        ("elsewhere", [], False),  # restricted to another resource
    ],
)
def test_a_bearer_header_gets_what_dots_whole_path_gives(tokens, name, scopes, accepted, monkeypatch):
    ours, dots = _both_paths(lambda: _request(f"Bearer {tokens[name]}"), scopes)

    assert ours == dots
    assert ours[0] is accepted
    # And it went straight to the validator: DOT's extraction of every header and parameter not run.
    monkeypatch.setattr(OAuthLibCore, "_extract_params", _not_called)
    assert _outcome(*oauthlib_core().verify_request(_request(f"Bearer {tokens[name]}"), scopes)) == ours


@pytest.mark.parametrize(
    "name, accepted, built",
    [("valid", True, False), ("unknown", False, False), ("here", True, True), ("elsewhere", False, True)],
)
def test_the_absolute_uri_is_built_only_for_a_token_restricted_to_resources(
    tokens, name, accepted, built, monkeypatch
):
    """RFC 8707's audience check is the only reader of the request's URI; it is DOT's URI when read
    (at the resource's own address)."""
    built_for = []
    escaped_full_path = OAuthLibCore._get_escaped_full_path

    def counted(core, request):
        built_for.append(request.path)
        return escaped_full_path(core, request)

    monkeypatch.setattr(OAuthLibCore, "_get_escaped_full_path", counted)
    request = _request(f"Bearer {tokens[name]}", path="/api/v1/products?page=1&q=a|b")
    valid, oauthlib_request = oauthlib_core().verify_request(request, [])

    assert (valid, bool(built_for)) == (accepted, built)
    assert oauthlib_request.uri == f"{PROTECTED}/api/v1/products?page=1&q=a%7Cb"
    assert oauthlib_request.uri == request.build_absolute_uri(escaped_full_path(oauthlib_core(), request))
    assert built_for == ["/api/v1/products"]  # once, however often it is read


def _not_called(*arguments):
    raise AssertionError("DOT's whole path was taken")


@pytest.mark.parametrize(
    "authorization",
    ["bearer {token}", "BEARER {token}", "Bearer  {token}", "Bearer\t{token}", " Bearer {token} "],
)
def test_the_header_is_read_as_oauthlib_reads_it(tokens, authorization, monkeypatch):
    header = authorization.format(token=tokens["valid"])
    ours, dots = _both_paths(lambda: _request(header), [])

    assert ours == dots
    assert ours[0] is True
    monkeypatch.setattr(OAuthLibCore, "_extract_params", _not_called)
    assert oauthlib_core().verify_request(_request(header), [])[0] is True


@pytest.mark.parametrize(
    "authorization, path, method, extra",
    [
        (None, "/api/v1/products", "get", {}),  # no credential
        ("Basic Zm9vOmJhcg==", "/api/v1/products", "get", {}),  # another scheme
        ("Bearer {token} more", "/api/v1/products", "get", {}),  # three parts: not a bearer header
        ("Bearer", "/api/v1/products", "get", {}),
        (None, "/api/v1/products?access_token={token}", "get", {}),  # RFC 9700 4.3.2: refused
        ("Bearer {token}", "/api/v1/products?access_token={token}", "get", {}),
        (
            None,
            "/api/v1/orders",
            "post",
            {"data": "access_token={token}", "content_type": "application/x-www-form-urlencoded"},
        ),  # RFC 6750 2.2's form body, which oauthlib reads
    ],
)
def test_any_other_request_takes_dots_whole_path(tokens, authorization, path, method, extra, monkeypatch):
    token = tokens["valid"]

    def make_request():
        header = None if authorization is None else authorization.format(token=token)
        arguments = {**extra, **({"data": extra["data"].format(token=token)} if "data" in extra else {})}
        return _request(header, path.format(token=token), method, **arguments)

    taken = []
    original = oauth2_backends.OAuthLibCore._extract_params

    def spy(core, request):
        taken.append(request)
        return original(core, request)

    monkeypatch.setattr(OAuthLibCore, "_extract_params", spy)
    ours, dots = _both_paths(make_request, [])
    assert ours == dots
    assert len(taken) == 2  # ours and DOT's own


def test_the_uri_the_validator_sees_is_dots(tokens):
    """RFC 8707's audience check compares the token's resources with the request's absolute URI,
    its query string escaped as DOT escapes it."""
    core = oauthlib_core()
    path = "/api/v1/products?page=1&name=a b|c"
    header = f"Bearer {tokens['valid']}"
    _, ours = core.verify_request(_request(header, path), [])
    _, dots = oauth2_backends.OAuthLibCore.verify_request(core, _request(header, path), [])
    assert ours.uri == dots.uri
    assert ours.uri.startswith(THIS_RESOURCE + "?")


@pytest.mark.parametrize(
    "host",
    [
        {"secure": True, "HTTP_HOST": "127.0.0.1:9443"},  # another name of the server
        {"secure": True, "HTTP_HOST": "localhost"},  # another port (a proxy's)
        {"secure": False, "HTTP_HOST": "127.0.0.1:8000"},  # a proxy passing its upstream's address
    ],
)
@pytest.mark.parametrize("name, accepted", [("here", True), ("elsewhere", False), ("valid", True)])
def test_a_restricted_token_is_checked_against_the_resources_identifier_whatever_the_host(
    tokens, host, name, accepted
):
    """RFC 8707: a token restricted to resources under the Foo API's identifier (RFC 9728
    `resource`, the only ones the token endpoint takes) is for the resource, not for the Host header
    a request came with: on it, every restricted token was refused at any other name or behind a
    proxy that passes its upstream's address."""
    request = _request(f"Bearer {tokens[name]}", path="/api/v1/products?page=1", **host)
    valid, oauthlib_request = oauthlib_core().verify_request(request, [])

    assert valid is accepted
    assert oauthlib_request.uri == f"{PROTECTED}/api/v1/products?page=1"
