"""Generated hostile requests against the Foo API (Hypothesis, Django's test client).

Whatever the method, path, query, headers, Authorization value, content type or body, every answer
is a 2xx/4xx JSON response with an RFC 6750 error where it is an error, never a 5xx or an HTML
page; data comes back only for a token holding the scope the operation needs, and a client's
orders only to that client.
"""

import base64
import json
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from fooapi.models import Order, Product
from fooapi.services import seed_demo_catalogue
from tests.helpers import bearer, issue_token, make_client

API_ERRORS = {
    "invalid_request",
    "invalid_token",
    "insufficient_scope",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "not_acceptable",
    "too_many_requests",
}
LATIN1 = st.characters(max_codepoint=255, blacklist_categories=["Cs"])
HEADER_TEXT = st.text(LATIN1, max_size=60)
METHODS = ["GET", "GET", "POST", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "text/plain",
    "application/xml",
    "",
]
ACCEPTS = [
    "application/json",
    "*/*",
    "text/html",
    "application/xml",
    "application/yaml",
    "application/json; version=2",
]


@dataclass
class World:
    full_token: str  # products:read orders:read orders:write
    reader_token: str  # products:read only
    other_token: str  # another client, orders:read orders:write
    registration_token: str  # client:configure only
    revoked_token: str
    others_order: int
    product_ids: list[int]


def make_world(http) -> World:
    seed_demo_catalogue()
    full = make_client(scopes=["products:read", "orders:read", "orders:write"], name="fuzzer")
    other = make_client(scopes=["products:read", "orders:read", "orders:write"], name="other")
    other_token = issue_token(http, other)
    product_ids = list(Product.objects.values_list("pk", flat=True))
    placed = http.post(
        "/api/v1/orders",
        json.dumps({"lines": [{"product": product_ids[0], "quantity": 1}]}),
        content_type="application/json",
        **bearer(other_token),
    )
    assert placed.status_code == 201, placed.content
    registrar = make_client(scopes=["registration"], name="registrar")
    registered = http.post(
        "/oauth2/register",
        {"client_name": "dynamic"},
        content_type="application/json",
        **bearer(issue_token(http, registrar)),
    ).json()
    revoked_owner = make_client(scopes=["products:read"], name="revoked")
    revoked_token = issue_token(http, revoked_owner)
    from authserver import services

    services.revoke_client_tokens(application=revoked_owner.application, actor="tests")
    return World(
        full_token=issue_token(http, full),
        reader_token=issue_token(http, make_client(scopes=["products:read"], name="reader")),
        other_token=other_token,
        registration_token=registered["registration_access_token"],
        revoked_token=revoked_token,
        others_order=placed.json()["id"],
        product_ids=product_ids,
    )


# --- strategies ------------------------------------------------------------------------------------


def authorizations(world: World):
    tokens = st.sampled_from(
        [
            world.full_token,
            world.full_token,
            world.reader_token,
            world.registration_token,
            world.revoked_token,
        ]
    )
    return st.one_of(
        st.none(),
        tokens.map(lambda token: f"Bearer {token}"),
        tokens.map(lambda token: f"Bearer {token}"),
        st.builds(
            lambda scheme, token: f"{scheme} {token}",
            st.sampled_from(["bearer", "BEARER", "Basic", "Token"]),
            tokens,
        ),
        st.builds(lambda raw: "Basic " + base64.b64encode(raw).decode(), st.binary(max_size=40)),
        HEADER_TEXT.map(lambda text: f"Bearer {text}"),
        HEADER_TEXT,
    )


def identifiers(world: World):
    return st.one_of(
        st.sampled_from([str(world.others_order), *map(str, world.product_ids[:3])]),
        st.integers(min_value=-(2**63), max_value=2**64).map(str),
        st.text(max_size=12).map(lambda text: quote(text, safe="")),
    )


def paths(world: World):
    resource = st.sampled_from(["products", "orders"])
    item = st.builds(lambda name, identifier: f"{name}/{identifier}", resource, identifiers(world))
    route = st.one_of(resource, resource, item)
    slash = st.sampled_from(["", "", "/"])
    query_pairs = st.lists(
        st.tuples(
            st.sampled_from(["page", "page_size", "format", "ordering", "client", "access_token", "search"])
            | st.text(max_size=8),
            st.sampled_from(
                [
                    "1",
                    "0",
                    "-1",
                    "2",
                    "100",
                    "101",
                    "999999999999999999999",
                    "json",
                    "yaml",
                    "api",
                    "null",
                    "",
                    "\u00b2",  # a digit to str.isdigit(), not to int()
                    "\u0661",  # an Arabic-Indic 1
                ]
            )
            | st.text(max_size=12),
        ),
        max_size=4,
    )
    query = st.one_of(st.just(""), st.just(""), query_pairs.map(lambda pairs: "?" + urlencode(pairs)))
    return st.builds(lambda path, end, q: f"/api/v1/{path}{end}{q}", route, slash, query)


# Text, and now and then an unpaired surrogate (escaped by json.dumps), which st.text() never draws.
JSON_TEXT = st.text(max_size=8) | st.sampled_from(["\ud800", "x\udfff", "\udc00\ud800"])


def order_bodies(world: World):
    product = st.one_of(st.sampled_from(world.product_ids), st.integers(), JSON_TEXT, st.none(), st.floats())
    quantity = st.one_of(st.integers(min_value=-5, max_value=10**6), JSON_TEXT, st.none(), st.booleans())
    line = st.fixed_dictionaries({"product": product, "quantity": quantity}) | st.dictionaries(
        JSON_TEXT, product, max_size=3
    )
    lines = st.lists(line, max_size=60) | st.none() | JSON_TEXT | st.integers()
    documents = st.fixed_dictionaries({"lines": lines}) | st.dictionaries(JSON_TEXT, lines, max_size=3)
    return documents.map(lambda document: json.dumps(document).encode())


def bodies(world: World):
    return st.one_of(order_bodies(world), order_bodies(world), st.just(b""), st.binary(max_size=200))


@st.composite
def api_requests(draw, world: World) -> dict:
    headers = {}
    authorization = draw(authorizations(world))
    if authorization is not None:
        headers["HTTP_AUTHORIZATION"] = authorization
    if draw(st.sampled_from([False, False, False, True])):
        headers["HTTP_ACCEPT"] = draw(
            st.one_of(st.sampled_from(ACCEPTS), st.sampled_from(ACCEPTS), HEADER_TEXT)
        )
    return {
        "method": draw(st.one_of(st.sampled_from(["GET", "POST"]), st.sampled_from(METHODS))),
        "path": draw(paths(world)),
        "data": draw(bodies(world)),
        "content_type": draw(
            st.one_of(st.just("application/json"), st.sampled_from(CONTENT_TYPES), HEADER_TEXT)
        ),
        **headers,
    }


# --- the properties ----------------------------------------------------------------------------------


def presented_token(request: dict) -> str:
    scheme, _, token = (request.get("HTTP_AUTHORIZATION") or "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def assert_rfc_answer(response, request: dict) -> None:
    assert response.status_code < 500, response.content
    if request["method"] == "HEAD" or not response.content:
        return
    content_type = response["Content-Type"]
    assert content_type.startswith("application/json"), (content_type, response.content[:200])
    body = json.loads(response.content)
    if response.status_code >= 400:
        assert body["error"] in API_ERRORS, body
        assert "no-store" in response["Cache-Control"]
    if response.status_code == 401:
        assert response["WWW-Authenticate"].startswith("Bearer realm=")
    if response.status_code == 403 and body["error"] == "insufficient_scope":
        assert body["scope"] and f'scope="{body["scope"]}"' in response["WWW-Authenticate"]


def assert_nothing_unearned(response, request: dict, world: World, orders_before: int) -> None:
    token = presented_token(request)
    path = request["path"].split("?")[0]
    if response.status_code < 300 and request["method"] in {"GET", "HEAD", "POST"}:
        needs = "orders" if "/orders" in path else "products"
        if needs == "products":
            assert token in {world.full_token, world.reader_token}, (response.status_code, request)
        else:
            assert token in {world.full_token}, (response.status_code, request)
    if Order.objects.count() > orders_before:
        assert response.status_code == 201 and token == world.full_token
    if response.status_code < 300 and response.content and "/orders" in path:
        body = json.loads(response.content)
        returned = [order["id"] for order in body.get("results", [])] + ([body["id"]] if "id" in body else [])
        assert world.others_order not in returned


@pytest.fixture
def world(client, db, settings):
    settings.THROTTLE_ENABLED = False
    return make_world(client)


@hypothesis_settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_generated_api_requests_get_rfc_answers_and_nothing_unearned(client, world, data):
    request = data.draw(api_requests(world))
    orders_before = Order.objects.count()

    response = client.generic(secure=True, **request)

    event(f"{request['method']} {response.status_code}")  # --hypothesis-show-statistics
    assert_rfc_answer(response, request)
    assert_nothing_unearned(response, request, world, orders_before)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_orders_are_placed_only_when_valid(client, world, data):
    """Well-authorised POSTs with generated bodies: 201 with the order as stored, or 400 and no order."""
    body = data.draw(order_bodies(world))
    before = Order.objects.count()

    response = client.post(
        "/api/v1/orders", body, content_type="application/json", **bearer(world.full_token)
    )

    assert response.status_code in {201, 400}, response.content
    if response.status_code == 201:
        document = json.loads(body)
        lines = document["lines"]
        assert isinstance(lines, list) and 0 < len(lines) <= 50
        assert all(isinstance(line["quantity"], int) and line["quantity"] >= 1 for line in lines)
        assert Order.objects.count() == before + 1
        stored = Order.objects.get(pk=response.json()["id"])
        assert stored.client.name == "fuzzer"
        assert str(stored.total) == response.json()["total"]
    else:
        assert Order.objects.count() == before
        assert response.json()["error"] == "invalid_request"
