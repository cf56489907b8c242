"""A client calls the Foo API (/api/v1/) with a bearer token: products, orders, RFC 6750 errors,
its OpenAPI schema, its documentation page and its RFC 9728 metadata."""

import json
import re
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
import yaml
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import AccessToken

from authserver import errors, services
from fooapi import services as fooapi_services
from fooapi.models import MAX_QUANTITY, Order, Product
from fooapi.serializers import MAX_ORDER_LINES, ProductSerializer
from fooapi.services import DEMO_CATALOGUE, seed_demo_catalogue
from fooapi.views import OrderDetail, OrderList, ProductDetail, ProductList
from tests.helpers import bearer, issue_token, make_client


@pytest.fixture
def catalogue(db) -> dict[str, Product]:
    seed_demo_catalogue()
    return {product.sku: product for product in Product.objects.all()}


@pytest.fixture
def reader_token(client, catalogue) -> str:
    """A token with the sandbox scopes: products:read orders:read."""
    return issue_token(client, make_client(scopes=["products:read", "orders:read"]))


@pytest.fixture
def shop(client, catalogue):
    """A production client that may place orders, and its token."""
    new_client = make_client(scopes=["products:read", "orders:read", "orders:write"], name="shop")
    return new_client.application, issue_token(client, new_client)


def place(http, token: str, lines, path="/api/v1/orders"):
    return http.post(path, json.dumps({"lines": lines}), content_type="application/json", **bearer(token))


def assert_api_error(response, status: int, error: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    return body


# --- products ------------------------------------------------------------------------------------


def test_listing_the_catalogue(client, reader_token, catalogue):
    response = client.get("/api/v1/products", **bearer(reader_token))

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == len(DEMO_CATALOGUE)
    assert body["next"] is None
    first = body["results"][0]
    assert set(first) == {"id", "sku", "name", "description", "price", "currency", "available"}
    assert first["sku"] == DEMO_CATALOGUE[0][0]
    assert first["price"] == DEMO_CATALOGUE[0][3]
    assert first["currency"] == "EUR"


def test_the_catalogue_is_paginated(client, reader_token, catalogue):
    page = client.get("/api/v1/products?page_size=3&page=2", **bearer(reader_token)).json()
    assert [item["sku"] for item in page["results"]] == [sku for sku, *_ in DEMO_CATALOGUE[3:6]]
    assert page["next"] and page["previous"]
    padded = client.get("/api/v1/products?page_size=003&page=0002", **bearer(reader_token)).json()
    assert padded["results"] == page["results"]


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=abc",
        "page_size=0",
        "page_size=101",
        "page_size=null",
        "page=1&page=2",
        "page=-1",
        "page=1000000001",
        # digits to str.isdigit(), not to int() ("²", a 500 before) or not ASCII
        "page=%C2%B2",
        "page_size=%C2%B2",
        "page=%D9%A1",
        "page_size=%EF%BC%95",
        # more digits than int() reads (4300, a 500 before), leading zeros included
        "page=" + "1" * 4301,
        "page_size=" + "0" * 4300 + "1",
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/products", "/api/v1/orders"])
def test_pagination_parameters_out_of_range_are_400(client, reader_token, query, path):
    response = client.get(f"{path}?{query}", **bearer(reader_token))
    body = assert_api_error(response, 400, "invalid_request")
    assert query.split("=")[0] in body["error_description"]
    assert "Give one whole number, 1 to " in body["error_description"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8443", "[::1]:9443"])
def test_page_links_are_on_the_issuer_whatever_the_host_header(client, shop, catalogue, settings, host):
    # DRF built them on the Host header: another name of the server (or a proxy's) in every link.
    _, token = shop
    for sku in ("FOO-SENSOR-01", "FOO-GATEWAY-01", "FOO-CAM-01"):
        place(client, token, [{"product": catalogue[sku].pk, "quantity": 1}])

    for path in ("/api/v1/products", "/api/v1/orders"):
        response = client.get(f"{path}?page_size=1&page=2", HTTP_HOST=host, **bearer(token))
        assert response.status_code == 200, response.content
        page = response.json()
        assert page["next"] == f"{settings.ISSUER}{path}?page=3&page_size=1"
        assert page["previous"] == f"{settings.ISSUER}{path}?page_size=1"
        third = client.get(f"{path}?page=3&page_size=1", HTTP_HOST=host, **bearer(token)).json()
        assert third["previous"] == f"{settings.ISSUER}{path}?page=2&page_size=1"


def test_a_page_past_the_last_is_404(client, reader_token, catalogue):
    assert_api_error(client.get("/api/v1/products?page=2", **bearer(reader_token)), 404, "not_found")


def drf_list_view_answer(path: str) -> dict:
    """What DRF's own ListAPIView, paginator and ProductSerializer answer for `path`."""
    from django.test import RequestFactory
    from rest_framework import generics

    from fooapi.serializers import ProductSerializer
    from fooapi.views import Pages

    reference = generics.ListAPIView.as_view(
        queryset=Product.objects.all(),
        serializer_class=ProductSerializer,
        pagination_class=Pages,
        authentication_classes=[],
        permission_classes=[],
    )
    response = reference(RequestFactory().get(path, secure=True))
    response.render()
    return json.loads(response.content) if response.status_code == 200 else {"status": response.status_code}


def test_catalogue_pages_are_what_the_drf_serializer_and_paginator_give(client, reader_token, catalogue):
    # The list is served from one compiled statement and fields built once (fooapi/views.py);
    # every page, and the one past the last, must still be exactly what ListAPIView answers.
    Product.objects.create(sku="ODD-1", name="Ünïcode ✓", price=Decimal("0.5"), available=False)
    count = Product.objects.count()
    for size in (1, 3, 4, 100):
        for number in range(1, -(-count // size) + 2):  # and one past the last page
            path = f"/api/v1/products?page_size={size}&page={number}"
            response = client.get(path, **bearer(reader_token))
            expected = drf_list_view_answer(path)
            if "status" in expected:
                assert expected["status"] == 404 and number > 1
                assert_api_error(response, 404, "not_found")
            else:
                assert response.status_code == 200
                assert response.json() == expected, (size, number)


@pytest.mark.parametrize(
    "price",
    ["24.90", "0.5", "10", "-3.25", "0.00", "-0.00", "1.005", "1.015", "1E+2", "12345678.90", "0.10"],
)
def test_a_price_is_represented_as_drfs_decimal_field_represents_it(price):
    # The catalogue's prices skip DRF's quantize() when already at two places (fooapi/serializers.py).
    product = Product(id=1, sku="P", name="P", description="", price=Decimal(price), available=True)
    row = [getattr(product, name) for name in ProductSerializer.Meta.fields]

    assert ProductSerializer.represent([row]) == [ProductSerializer(product).data]


@pytest.fixture
def represented(monkeypatch) -> list:
    """The rows ProductSerializer.represent() is called with, from now on, with the process's
    remembered catalogue pages forgotten."""
    from fooapi.views import ProductList

    ProductList.answered.clear()
    calls = []
    represent = ProductSerializer.represent.__func__

    def counted(cls, rows):
        calls.append(rows)
        return represent(cls, rows)

    monkeypatch.setattr(ProductSerializer, "represent", classmethod(counted))
    return calls


def test_a_page_answered_again_is_not_represented_again_until_its_rows_change(
    client, reader_token, catalogue, represented
):
    first = client.get("/api/v1/products", **bearer(reader_token))
    again = client.get("/api/v1/products", **bearer(reader_token))

    assert len(represented) == 1  # remembered (fooapi/views.py RememberedPages)
    assert again.content == first.content and again["Content-Type"] == "application/json"
    camera = catalogue["FOO-CAM-01"]
    camera.price = Decimal("79.00")
    camera.save()

    changed = client.get("/api/v1/products", **bearer(reader_token))

    assert len(represented) == 2
    assert {item["sku"]: item["price"] for item in changed.json()["results"]}["FOO-CAM-01"] == "79.00"
    assert changed.json() == drf_list_view_answer("/api/v1/products")


def test_each_media_type_of_a_remembered_page_is_rendered_for_itself(
    client, reader_token, catalogue, represented
):
    compact = client.get("/api/v1/products", **bearer(reader_token))
    indented = client.get(
        "/api/v1/products", HTTP_ACCEPT="application/json; indent=2", **bearer(reader_token)
    )
    compact_again = client.get("/api/v1/products", HTTP_ACCEPT="application/json", **bearer(reader_token))

    assert len(represented) == 1
    assert indented.content.startswith(b'{\n  "count": ') and not compact.content.startswith(b"{\n")
    assert indented.json() == compact.json()
    assert compact_again.content == compact.content
    assert {compact["Content-Type"], indented["Content-Type"]} == {"application/json"}


def test_accept_parameters_that_change_nothing_are_not_rendered_and_kept_anew(
    client, reader_token, catalogue, represented
):
    from fooapi.views import ProductList

    plain = client.get("/api/v1/products", **bearer(reader_token))
    for number in range(50):
        accept = f"application/json; version={number}; indent={number % 3}"
        response = client.get("/api/v1/products", HTTP_ACCEPT=accept, **bearer(reader_token))
        assert response.json() == plain.json()
        assert response.content.startswith(b"{\n" if number % 3 else b'{"count":')

    [(_, bodies)] = ProductList.answered._pages.values()
    assert sorted(bodies, key=str) == [1, 2, None]  # one body per indent, whatever else Accept said


def test_a_worker_remembers_a_bounded_number_of_catalogue_pages(
    client, reader_token, catalogue, represented, monkeypatch
):
    from fooapi.views import ProductList

    monkeypatch.setattr(ProductList.answered, "size", 2)
    for size in (1, 2, 3, 1):
        path = f"/api/v1/products?page_size={size}"
        assert client.get(path, **bearer(reader_token)).json() == drf_list_view_answer(path)
        assert len(ProductList.answered) <= 2

    assert len(represented) == 4  # page_size=1 was forgotten (the oldest) and represented again


def test_rows_are_the_same_page_only_if_they_are_represented_the_same():
    def row(price: str, available=True) -> list:
        return [1, "P", "P", "", Decimal(price), "EUR", available]

    key = ProductSerializer.rows_key
    assert key([row("24.90")]) == key([tuple(row("24.90"))])
    assert key([row("24.90")]) != key([row("24.9")])  # equal Decimals, different text
    assert key([row("0.00")]) != key([row("-0.00")])
    assert key([row("24.90")]) != key([row("24.90", available=False)])
    assert key([row("24.90")]) != key([row("24.90"), row("24.90")])


def test_an_empty_catalogue_has_one_empty_page(client, db):
    token = issue_token(client, make_client(scopes=["products:read"]))

    response = client.get("/api/v1/products", **bearer(token))

    assert response.status_code == 200
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}
    assert_api_error(client.get("/api/v1/products?page=2", **bearer(token)), 404, "not_found")


def test_a_catalogue_change_shows_at_the_next_request(client, reader_token, catalogue):
    client.get("/api/v1/products", **bearer(reader_token))  # compiled and run once already
    camera = catalogue["FOO-CAM-01"]
    camera.price, camera.name = Decimal("79.00"), "Foo Camera 2"
    camera.save()
    catalogue["FOO-CABLE-USB"].delete()

    body = client.get("/api/v1/products", **bearer(reader_token)).json()

    assert body["count"] == len(DEMO_CATALOGUE) - 1
    listed = {item["sku"]: item for item in body["results"]}
    assert "FOO-CABLE-USB" not in listed
    assert (listed["FOO-CAM-01"]["price"], listed["FOO-CAM-01"]["name"]) == ("79.00", "Foo Camera 2")


def test_one_product(client, reader_token, catalogue):
    camera = catalogue["FOO-CAM-01"]
    response = client.get(f"/api/v1/products/{camera.pk}", **bearer(reader_token))
    assert response.status_code == 200
    assert response.json()["name"] == "Foo Camera"


@pytest.mark.parametrize("path", ["/api/v1/products/999999", "/api/v1/products/abc", "/api/v1/nothing"])
def test_what_does_not_exist_is_a_json_404(client, reader_token, path):
    assert_api_error(client.get(path, **bearer(reader_token)), 404, "not_found")


def test_the_other_form_of_the_path_works_without_a_redirect(client, reader_token, shop, catalogue):
    assert client.get("/api/v1/products/", **bearer(reader_token)).status_code == 200
    _, token = shop
    response = place(
        client, token, [{"product": catalogue["FOO-SENSOR-01"].pk, "quantity": 1}], "/api/v1/orders/"
    )
    assert response.status_code == 201


def test_head_works_like_get(client, reader_token, catalogue):
    response = client.head("/api/v1/products", **bearer(reader_token))
    assert response.status_code == 200
    assert response.content == b""
    assert client.head("/api/v1/products").status_code == 401


def test_head_needs_the_scope_get_needs(client, catalogue):
    """HEAD is GET without the body (RFC 9110 9.3.2): a token GET refuses is refused it too."""
    products_only = issue_token(client, make_client(scopes=["products:read"]))
    for path in ("/api/v1/orders", "/api/v1/orders/1"):
        response = client.head(path, **bearer(products_only))
        assert response.status_code == 403, path
        assert 'scope="orders:read"' in response["WWW-Authenticate"]


def test_no_cache_keeps_an_answer_to_a_token(client, shop, catalogue):
    # Like the API's errors: the answers are one client's (its orders), whatever a cache in between does.
    _, token = shop
    sensor = catalogue["FOO-SENSOR-01"]
    placed = place(client, token, [{"product": sensor.pk, "quantity": 1}])
    order_id = placed.json()["id"]
    paths = [
        "/api/v1/products",
        f"/api/v1/products/{sensor.pk}",
        "/api/v1/orders",
        f"/api/v1/orders/{order_id}",
    ]
    answers = [placed, *(client.get(path, **bearer(token)) for path in paths)]
    answers.append(client.head("/api/v1/orders", **bearer(token)))

    for answer in answers:
        assert answer.status_code in (200, 201), answer.content
        assert answer["Cache-Control"] == "no-store"
        assert answer["Pragma"] == "no-cache"


def test_methods_the_resource_does_not_have_are_a_json_405(client, reader_token):
    assert_api_error(client.delete("/api/v1/products", **bearer(reader_token)), 405, "method_not_allowed")


def test_html_is_never_the_answer(client, reader_token):
    response = client.get("/api/v1/products", HTTP_ACCEPT="text/html", **bearer(reader_token))
    assert_api_error(response, 406, "not_acceptable")
    browser_like = client.get("/api/v1/products", HTTP_ACCEPT="text/html,*/*;q=0.8", **bearer(reader_token))
    assert browser_like["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("accept", "query", "status"),
    [
        (None, "", 200),  # what machine clients send: answered without parsing (authserver/negotiation.py)
        ("*/*", "", 200),
        ("application/json", "", 200),
        ("application/json; indent=2", "", 200),  # everything else: DRF's own negotiation
        ("application/*;q=0.5, text/html", "", 200),
        ("text/html", "", 406),
        (None, "format=json", 200),
        (None, "format=xml", 404),  # DRF: no renderer for that format
        ("*/*", "format=xml", 404),
    ],
)
def test_content_negotiation_is_drfs_for_every_accept_header(client, reader_token, accept, query, status):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = client.get(f"/api/v1/products?{query}", **headers, **bearer(reader_token))

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"


# --- RFC 6750: no token, bad token, too few scopes ---------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/products", "/api/v1/products/1", "/api/v1/orders", "/api/v1/orders/1"]
)
def test_no_token_is_401_with_a_bare_bearer_challenge(client, db, path, settings):
    response = client.get(path)

    body = assert_api_error(response, 401, "unauthorized")
    # RFC 6750 3.1: no error code; RFC 9728 5.1: where the resource's metadata is.
    metadata = f"{settings.ISSUER}/.well-known/oauth-protected-resource"
    assert response["WWW-Authenticate"] == f'Bearer realm="foo", resource_metadata="{metadata}"'
    assert "results" not in body


def test_a_challenges_quoted_strings_keep_their_quotes_and_backslashes_inside():
    """RFC 9110 5.6.4: a description holding a quote or a backslash is escaped, not ended early
    (its rest read as parameters of the challenge), and a line break in it is dropped."""
    challenge = errors.bearer_challenge("invalid_token", 'a "quoted" \\ word\r\n, scope="admin"')

    assert challenge == (
        'Bearer realm="foo", error="invalid_token", '
        'error_description="a \\"quoted\\" \\\\ word, scope=\\"admin\\""'
    )


@pytest.mark.parametrize(
    "request_headers",
    [{}, {"HTTP_AUTHORIZATION": "Bearer unknown"}, {"HTTP_AUTHORIZATION": "Bearer"}, "orders only"],
)
def test_the_apis_challenges_lead_to_its_metadata_and_its_authorization_server(
    client, catalogue, settings, request_headers
):
    """RFC 9728 5.1: from any Bearer challenge of the Foo API (401, 400, 403), a client that knows
    nothing else finds the resource metadata, and from it the authorization server's."""
    if request_headers == "orders only":
        request_headers = bearer(issue_token(client, make_client(scopes=["orders:read"])))
    response = client.get("/api/v1/products", **request_headers)
    assert response.status_code in {400, 401, 403}
    parameters = dict(re.findall(r'(\w+)="([^"]*)"', response["WWW-Authenticate"]))

    metadata = client.get(urlsplit(parameters["resource_metadata"]).path).json()
    assert metadata["resource"] == settings.ISSUER
    [issuer] = metadata["authorization_servers"]
    server = client.get(f"{urlsplit(issuer).path}/.well-known/oauth-authorization-server").json()
    assert server["issuer"] == issuer
    assert "products:read" in metadata["scopes_supported"]


@pytest.mark.parametrize(
    "path, body, content_type",
    [
        ("/oauth2/introspect", "token=x", "application/x-www-form-urlencoded"),
        ("/oauth2/register", "{}", "application/json"),
    ],
)
def test_the_authorization_servers_own_challenges_name_no_resource_metadata(
    client, db, path, body, content_type
):
    response = client.post(path, body, content_type=content_type, HTTP_AUTHORIZATION="Bearer x")
    assert response.status_code == 401, response.content
    assert "resource_metadata" not in response["WWW-Authenticate"]


def test_an_unknown_token_is_invalid_token(client, db):
    response = client.get("/api/v1/products", **bearer("not-a-token-we-issued"))

    assert_api_error(response, 401, "invalid_token")
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="foo", error="invalid_token"')


def test_an_expired_token_is_invalid_token(client, reader_token):
    AccessToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/v1/products", **bearer(reader_token))
    assert_api_error(response, 401, "invalid_token")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_a_revoked_token_is_invalid_token(client, reader_token):
    assert client.get("/api/v1/products", **bearer(reader_token)).status_code == 200
    services.revoke_token(token=AccessToken.objects.get(), actor="tests")

    response = client.get("/api/v1/products", **bearer(reader_token))
    assert_api_error(response, 401, "invalid_token")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_the_token_of_a_disabled_client_is_invalid_token(client, reader_token):
    application = AccessToken.objects.get().application
    services.set_client_enabled(application=application, enabled=False, actor="tests")
    assert_api_error(client.get("/api/v1/products", **bearer(reader_token)), 401, "invalid_token")


def test_a_token_in_the_query_string_is_not_accepted(client, reader_token):
    """RFC 9700 4.3.2: access tokens never travel in URLs (they end up in logs and Referers)."""
    response = client.get(f"/api/v1/products?access_token={reader_token}")
    assert_api_error(response, 401, "unauthorized")
    assert "results" not in response.json()
    # Not even next to a valid header: two methods at once are RFC 6750 3.1's invalid_request.
    both = client.get(f"/api/v1/products?access_token={reader_token}", **bearer(reader_token))
    body = assert_api_error(both, 400, "invalid_request")
    assert body["error_description"] == "Send the access token once, in the Authorization header only."
    assert both["WWW-Authenticate"].startswith('Bearer realm="foo", error="invalid_request"')
    assert "results" not in body


@pytest.mark.parametrize("query", ["access_token=", "access_token", "access_token=&access_token="])
def test_an_empty_access_token_parameter_beside_the_header_is_no_second_token(client, reader_token, query):
    """A parameter without a value is as if omitted (RFC 6749 3.2), as in a form body: the header's
    token is checked (it was a 401 saying no credentials had been sent)."""
    response = client.get(f"/api/v1/products?{query}", **bearer(reader_token))
    assert response.status_code == 200, response.content
    assert response.json()["count"] == len(DEMO_CATALOGUE)
    unknown = client.get(f"/api/v1/products?{query}", HTTP_AUTHORIZATION="Bearer not-ours")
    assert_api_error(unknown, 401, "invalid_token")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "bearer {token} {token}",
        "Bearer {token}, Basic Zm9vOmJhcg==",
        "Bearer {token}!",
        "Bearer tok=en",
        'Bearer realm="foo"',
        "BEARER \u00e9t\u00e9",
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/products", "/api/v1/orders", "/oauth2/register"])
def test_bearer_credentials_that_are_no_one_token_are_400_invalid_request(
    client, reader_token, authorization, path
):
    """RFC 6750 3.1: a malformed request is invalid_request, 400, and its challenge says so (they
    were 401 with a bare challenge, as for no credentials at all)."""
    header = authorization.format(token=reader_token)
    if path == "/oauth2/register":  # a method the path serves
        response = client.post(path, "{}", content_type="application/json", HTTP_AUTHORIZATION=header)
    else:
        response = client.get(path, HTTP_AUTHORIZATION=header)
    body = assert_api_error(response, 400, "invalid_request")
    assert body["error_description"] == "The Authorization header must be: Bearer <access token>."
    assert response["WWW-Authenticate"].startswith(
        'Bearer realm="foo", error="invalid_request", '
        'error_description="The Authorization header must be: Bearer <access token>."'
    )
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize("token", ["unknown-but-well-formed", "abc+/~._-==", "a"])
def test_a_well_formed_unknown_token_is_still_401_invalid_token(client, catalogue, token):
    response = client.get("/api/v1/products", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_api_error(response, 401, "invalid_token")


@pytest.mark.parametrize("host", ["localhost:9443", "127.0.0.1:9443", "[::1]:9443"])
def test_a_token_restricted_to_a_resource_works_at_every_name_of_the_server(
    client, catalogue, settings, host
):
    """RFC 8707: the token's resource is a URL under the API's identifier (ISSUER); a request to
    another name of the same server (all in ALLOWED_HOSTS) is a request to that resource (it was a
    401 invalid_token, "not valid for this resource"). Elsewhere the token stays refused."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost", "127.0.0.1", "[::1]"]
    shop_client = make_client(scopes=["products:read", "orders:read"])
    token = issue_token(client, shop_client, resource=f"{settings.ISSUER}/api/v1/products")

    assert client.get("/api/v1/products", HTTP_HOST=host, **bearer(token)).status_code == 200
    elsewhere = client.get("/api/v1/orders", HTTP_HOST=host, **bearer(token))
    assert_api_error(elsewhere, 401, "invalid_token")


# Names oauthlib's Request also answers as attributes (and a token in the query, refused).
ATTRIBUTE_QUERIES = ["oauth2_error=x", "oauth2_error=1&oauth2_error=2", "user=x", "access_token"]


@pytest.mark.parametrize("authorization", [None, "Bearer not-ours", "Basic Zm9vOmJhcg=="])
@pytest.mark.parametrize("query", ATTRIBUTE_QUERIES)
def test_query_parameters_named_like_oauthlibs_attributes_are_only_parameters(
    client, reader_token, authorization, query
):
    """oauthlib's Request answers attribute reads with the URL's parameters too: the validator's
    error must come from the validator, or `?oauth2_error=x` became a 500."""
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get(f"/api/v1/products?{query}", **headers)
    # `access_token` without a value is no token in the query (RFC 6749 3.2): the header's is checked.
    bearer_checked = authorization and authorization.startswith("Bearer")
    expected = "invalid_token" if bearer_checked else "unauthorized"
    assert_api_error(response, 401, expected)
    assert response["WWW-Authenticate"].startswith('Bearer realm="foo"')
    # A valid token is still a valid token next to them.
    assert client.get(f"/api/v1/products?{query}", **bearer(reader_token)).status_code == 200


def test_a_token_without_the_scope_is_403_insufficient_scope_naming_it(client, catalogue):
    orders_only = issue_token(client, make_client(scopes=["orders:read"]))

    response = client.get("/api/v1/products", **bearer(orders_only))

    body = assert_api_error(response, 403, "insufficient_scope")
    assert body["scope"] == "products:read"
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="foo", error="insufficient_scope"')
    assert 'scope="products:read"' in challenge


def test_reading_orders_needs_orders_read(client, catalogue):
    products_only = issue_token(client, make_client(scopes=["products:read"]))
    response = client.get("/api/v1/orders", **bearer(products_only))
    assert assert_api_error(response, 403, "insufficient_scope")["scope"] == "orders:read"
    assert 'scope="orders:read"' in response["WWW-Authenticate"]


def test_placing_an_order_with_a_sandbox_token_is_403_naming_orders_write(client, reader_token, catalogue):
    response = place(client, reader_token, [{"product": catalogue["FOO-SENSOR-01"].pk, "quantity": 1}])

    assert assert_api_error(response, 403, "insufficient_scope")["scope"] == "orders:write"
    assert 'scope="orders:write"' in response["WWW-Authenticate"]
    assert not Order.objects.exists()


def test_a_registration_access_token_cannot_read_the_api(client, catalogue):
    registered = make_client(scopes=["products:read"])
    registration_token = services.issue_registration_token(application=registered.application)
    response = client.get("/api/v1/products", **bearer(registration_token))
    assert assert_api_error(response, 403, "insufficient_scope")["scope"] == "products:read"


# --- orders ------------------------------------------------------------------------------------


def test_placing_an_order(client, shop, catalogue):
    application, token = shop
    sensor, gateway = catalogue["FOO-SENSOR-01"], catalogue["FOO-GATEWAY-01"]

    response = place(
        client, token, [{"product": sensor.pk, "quantity": 3}, {"product": gateway.pk, "quantity": 1}]
    )

    assert response.status_code == 201, response.content
    order = response.json()
    assert response["Location"] == f"/api/v1/orders/{order['id']}"
    assert order["status"] == "placed"
    assert order["currency"] == "EUR"
    assert Decimal(order["total"]) == Decimal("24.90") * 3 + Decimal("149.00")
    assert [(line["sku"], line["quantity"], line["unit_price"]) for line in order["lines"]] == [
        ("FOO-SENSOR-01", 3, "24.90"),
        ("FOO-GATEWAY-01", 1, "149.00"),
    ]
    assert Order.objects.get(pk=order["id"]).client == application


def test_every_order_locks_its_products_in_one_order(client, shop, catalogue):
    """Two orders of the same products, their lines listed in opposite orders, never wait for each
    other's locks in a cycle (a deadlock, which PostgreSQL breaks by failing one): the products are
    locked in the order of their primary keys, whatever the lines' order."""
    _, token = shop
    products = sorted(
        [catalogue["FOO-SENSOR-01"], catalogue["FOO-GATEWAY-01"]],
        key=lambda product: product.pk,
        reverse=True,
    )
    lines = [{"product": product.pk, "quantity": 1} for product in products]

    with CaptureQueriesContext(connection) as captured:
        assert place(client, token, lines).status_code == 201

    [locking] = [
        query["sql"]
        for query in captured
        if 'FROM "fooapi_product"' in query["sql"] and " IN (" in query["sql"]
    ]
    assert locking.rstrip().removesuffix(" FOR UPDATE").endswith('ORDER BY "fooapi_product"."id" ASC')
    if connection.vendor == "postgresql":
        assert locking.rstrip().endswith("FOR UPDATE")


def test_a_client_lists_and_reads_its_orders(client, shop, catalogue):
    _, token = shop
    first = place(client, token, [{"product": catalogue["FOO-SENSOR-01"].pk, "quantity": 1}]).json()
    second = place(client, token, [{"product": catalogue["FOO-CAM-01"].pk, "quantity": 2}]).json()

    listing = client.get("/api/v1/orders", **bearer(token)).json()
    assert [order["id"] for order in listing["results"]] == [second["id"], first["id"]]  # newest first
    detail = client.get(f"/api/v1/orders/{first['id']}", **bearer(token))
    assert detail.status_code == 200
    assert detail.json() == first


def test_a_client_never_sees_another_clients_orders(client, shop, catalogue):
    _, shop_token = shop
    order = place(client, shop_token, [{"product": catalogue["FOO-SENSOR-01"].pk, "quantity": 1}]).json()
    rival = make_client(scopes=["products:read", "orders:read", "orders:write"], name="rival")
    rival_token = issue_token(client, rival)

    assert client.get("/api/v1/orders", **bearer(rival_token)).json()["results"] == []
    assert_api_error(client.get(f"/api/v1/orders/{order['id']}", **bearer(rival_token)), 404, "not_found")
    # Its own order is counted apart.
    place(client, rival_token, [{"product": catalogue["FOO-CAM-01"].pk, "quantity": 1}])
    assert client.get("/api/v1/orders", **bearer(shop_token)).json()["count"] == 1
    assert client.get("/api/v1/orders", **bearer(rival_token)).json()["count"] == 1


def test_an_order_keeps_the_price_it_was_placed_at(client, shop, catalogue):
    _, token = shop
    sensor = catalogue["FOO-SENSOR-01"]
    order = place(client, token, [{"product": sensor.pk, "quantity": 2}]).json()
    Product.objects.filter(pk=sensor.pk).update(price=Decimal("99.00"))

    again = client.get(f"/api/v1/orders/{order['id']}", **bearer(token)).json()
    assert again["total"] == "49.80"
    assert again["lines"][0]["unit_price"] == "24.90"


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        ([], "lines"),
        ([{"product": 999999, "quantity": 1}], "product"),
        ([{"product": "FOO-SENSOR-01", "quantity": 1}], "product"),
        ([{"product": "SENSOR", "quantity": 0}], "quantity"),
        ([{"product": "SENSOR", "quantity": 1001}], "quantity"),
        ([{"product": "SENSOR"}], "quantity"),
        ([{"product": "SENSOR", "quantity": 1}, {"product": "SENSOR", "quantity": 2}], "once"),
        ([{"product": "MOUNT", "quantity": 1}], "FOO-MOUNT-01"),
    ],
)
def test_an_invalid_order_is_400_invalid_request(client, shop, catalogue, lines, field):
    _, token = shop
    ids = {"SENSOR": catalogue["FOO-SENSOR-01"].pk, "MOUNT": catalogue["FOO-MOUNT-01"].pk}
    lines = [{**line, "product": ids.get(line["product"], line["product"])} for line in lines]

    body = assert_api_error(place(client, token, lines), 400, "invalid_request")

    assert field in body["error_description"]
    assert not Order.objects.exists()


def test_an_order_whose_total_the_order_cannot_hold_is_400_and_not_placed(client, shop, catalogue):
    # A price the catalogue allows (10 digits) times 1000 is more than an order's total (12 digits)
    # holds: on SQLite it was stored anyway, answered with a 500 and broke the client's order list.
    _, token = shop
    costly = Product.objects.create(sku="COSTLY-1", name="Costly", price=Decimal("10000000.00"))

    body = assert_api_error(
        place(client, token, [{"product": costly.pk, "quantity": 1000}]), 400, "invalid_request"
    )

    assert "9999999999.99 EUR" in body["error_description"]
    assert not Order.objects.exists()
    assert client.get("/api/v1/orders", **bearer(token)).status_code == 200
    most = place(client, token, [{"product": costly.pk, "quantity": 999}])
    assert most.status_code == 201, most.content
    assert most.json()["total"] == "9990000000.00"


def test_a_product_deleted_while_its_order_is_placed_is_400(client, shop, catalogue, monkeypatch):
    # The order's lines were validated against the catalogue, then the product went (an operator
    # deleted it) before place_order locked the rows: that read found no row, a KeyError and a 500.
    _, token = shop
    doomed = Product.objects.create(sku="DOOMED-1", name="Doomed", price=Decimal("5.00"))
    place_order = fooapi_services.place_order

    def deleted_first(**kwargs):
        Product.objects.filter(pk=doomed.pk).delete()
        return place_order(**kwargs)

    monkeypatch.setattr(fooapi_services, "place_order", deleted_first)
    lines = [{"product": catalogue["FOO-SENSOR-01"].pk, "quantity": 1}, {"product": doomed.pk, "quantity": 2}]

    body = assert_api_error(place(client, token, lines), 400, "invalid_request")

    assert "DOOMED-1" not in body["error_description"]  # gone: named by the id the client sent
    assert str(doomed.pk) in body["error_description"]
    assert not Order.objects.exists()


@pytest.mark.parametrize("number", ["1e400", "-1e400", "%(product)s.5"])
def test_a_product_id_that_is_no_whole_number_is_400_and_not_placed(client, shop, catalogue, number):
    # JSON reads 1e400 as infinity, which int() refuses with an OverflowError: a 500. A fraction
    # was truncated to the id before it: 1.5 ordered product 1.
    _, token = shop
    number %= {"product": catalogue["FOO-SENSOR-01"].pk}
    body = f'{{"lines": [{{"product": {number}, "quantity": 1}}]}}'
    response = client.post("/api/v1/orders", body, content_type="application/json", **bearer(token))

    assert "product" in assert_api_error(response, 400, "invalid_request")["error_description"]
    assert not Order.objects.exists()


def fullwidth(number: int) -> str:
    return "".join(chr(ord("\uff10") + int(digit)) for digit in str(number))


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"product": "FULLWIDTH", "quantity": 1}, "product"),  # int() reads other scripts' digits
        ({"product": "%(product)s_0", "quantity": 1}, "product"),  # int() read it as ten times the id
        ({"product": " %(product)s", "quantity": 1}, "product"),
        ({"product": True, "quantity": 1}, "product"),
        ({"product": "ID", "quantity": "1_0"}, "quantity"),  # int() read it as 10
        ({"product": "ID", "quantity": " 2"}, "quantity"),
        ({"product": "ID", "quantity": "\uff12"}, "quantity"),  # a fullwidth 2
        ({"product": "ID", "quantity": True}, "quantity"),
    ],
)
def test_a_product_id_or_quantity_that_is_no_json_number_is_400_and_not_placed(
    client, shop, catalogue, line, field
):
    # Text was read by int(), which takes what no client means as a number ("1_0" is 10, "\uff11"
    # is 1), as an order of that product or quantity. Digits alone are still read (DRF's way).
    _, token = shop
    pk = catalogue["FOO-SENSOR-01"].pk
    product = {"ID": pk, "FULLWIDTH": fullwidth(pk)}.get(line["product"], line["product"])
    if isinstance(product, str):
        product %= {"product": pk}
    body = json.dumps({"lines": [{**line, "product": product}]})

    response = client.post("/api/v1/orders", body, content_type="application/json", **bearer(token))

    assert field in assert_api_error(response, 400, "invalid_request")["error_description"]
    assert not Order.objects.exists()


@pytest.mark.parametrize("written", ['{pk}.0, "quantity": 2.0', '"{pk}", "quantity": "2"'])
def test_a_whole_number_written_as_a_json_fraction_or_as_digits_is_that_number(
    client, shop, catalogue, written
):
    _, token = shop
    pk = catalogue["FOO-SENSOR-01"].pk
    body = '{"lines": [{"product": ' + written.format(pk=pk) + "}]}"
    response = client.post("/api/v1/orders", body, content_type="application/json", **bearer(token))
    assert response.status_code == 201, response.content
    assert response.json()["lines"][0]["quantity"] == 2
    assert response.json()["lines"][0]["product"] == pk


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ('["lines"]', "application/json", 400),
        # Which "lines"? (RFC 8259 4) Read as the last one, this would place an order.
        ('{"lines": [], "lines": [{"product": %(product)s, "quantity": 1}]}', "application/json", 400),
        ('{"lines": ' + "[" * 5000 + "]" * 5000 + "}", "application/json", 400),  # RecursionError
        ("lines=1", "application/x-www-form-urlencoded", 415),
        # Unpaired surrogates (RFC 7493 2.1), which no UTF-8 answer can quote: a value, a name.
        ('{"lines": [{"product": %(product)s, "quantity": 1}], "note": "\\ud800"}', "application/json", 400),
        ('{"lines": [{"product": %(product)s, "quantity": 1}], "\\udc00x": 1}', "application/json", 400),
        ('{"lines": [{"product": "\\ud800", "quantity": 1}]}', "application/json", 400),
    ],
)
def test_a_body_that_is_not_an_order_object_is_a_json_error(
    client, shop, catalogue, body, content_type, status
):
    _, token = shop
    body %= {"product": catalogue["FOO-SENSOR-01"].pk}
    response = client.post("/api/v1/orders", body, content_type=content_type, **bearer(token))
    assert_api_error(response, status, "invalid_request")
    assert not Order.objects.exists()


def test_an_escaped_surrogate_pair_is_one_character(client, shop, catalogue):
    _, token = shop
    body = '{"lines": [{"product": %s, "quantity": 1}], "note": "\\ud83d\\ude00"}'
    body %= catalogue["FOO-SENSOR-01"].pk
    response = client.post("/api/v1/orders", body, content_type="application/json", **bearer(token))
    assert response.status_code == 201, response.content


# --- schema, documentation, metadata ---------------------------------------------------------


def test_the_openapi_schema_describes_the_api_and_its_scopes(client, db, settings):
    response = client.get("/api/v1/schema")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == {
        "/api/v1/products",
        "/api/v1/products/{id}",
        "/api/v1/orders",
        "/api/v1/orders/{id}",
    }
    orders = schema["paths"]["/api/v1/orders"]
    assert orders["get"]["security"] == [{"oauth2": ["orders:read"]}]
    assert orders["post"]["security"] == [{"oauth2": ["orders:write"]}]
    assert schema["paths"]["/api/v1/products"]["get"]["security"] == [{"oauth2": ["products:read"]}]
    assert {"401", "403"} <= set(orders["post"]["responses"])
    flow = schema["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == f"{settings.ISSUER}/oauth2/token"
    assert set(flow["scopes"]) == {"products:read", "orders:read", "orders:write"}


def test_the_schema_gives_an_orders_bounds_as_the_api_applies_them(client, shop, catalogue):
    # The schema said any array of lines; the API refuses an empty one and more than 50.
    schemas = client.get("/api/v1/schema").json()["components"]["schemas"]
    lines = schemas["NewOrder"]["properties"]["lines"]
    assert (lines["minItems"], lines["maxItems"]) == (1, MAX_ORDER_LINES)
    quantity = schemas["NewOrderLine"]["properties"]["quantity"]
    assert (quantity["minimum"], quantity["maximum"]) == (1, MAX_QUANTITY)

    _, token = shop
    line = {"product": catalogue["FOO-SENSOR-01"].pk, "quantity": 1}
    assert "lines" in assert_api_error(place(client, token, []), 400, "invalid_request")["error_description"]
    too_many = assert_api_error(place(client, token, [line] * (MAX_ORDER_LINES + 1)), 400, "invalid_request")
    assert f"no more than {MAX_ORDER_LINES}" in too_many["error_description"]
    assert not Order.objects.exists()


def test_the_schema_describes_what_placing_an_order_answers(client, shop, catalogue):
    # The Location of a new order, and the 415 for a body not sent as JSON (a form, as the token
    # endpoint takes), were answered but not in the schema.
    post = client.get("/api/v1/schema").json()["paths"]["/api/v1/orders"]["post"]
    assert post["responses"]["201"]["headers"]["Location"]["required"] is True
    assert post["responses"]["415"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }

    _, token = shop
    placed = place(client, token, [{"product": catalogue["FOO-SENSOR-01"].pk, "quantity": 1}])
    assert placed.status_code == 201 and placed["Location"]
    form = client.post(
        "/api/v1/orders", "lines=1", content_type="application/x-www-form-urlencoded", **bearer(token)
    )
    assert_api_error(form, 415, "invalid_request")


class SilentClient:
    """A request body that never arrives: the read times out (config.workers.CLIENT_TIMEOUT)."""

    def read(self, *args):
        raise TimeoutError("timed out")

    readline = read


def database_unreachable(monkeypatch):
    """Every statement fails as with the database down: Django's OperationalError."""

    def unreachable(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", unreachable)
    monkeypatch.setattr(connection, "kept_cursor", unreachable, raising=False)  # config.postgresql's


def answers_to_everything_a_client_can_get_wrong(client, settings, monkeypatch, method, path, tokens, order):
    """The answers to `method` `path` of each request below, right or wrong in one way, by status."""
    body = {"lines": [{"product": order.lines.first().product_id, "quantity": 1}]} if method == "POST" else {}
    valid = {"data": json.dumps(body), "content_type": "application/json", **bearer(tokens["all"])}
    too_large = str(settings.MAX_REQUEST_BODY_BYTES + 1)
    variants = [
        ("", valid),
        ("", {**valid, "HTTP_AUTHORIZATION": "Bearer two words"}),  # 400 malformed credentials
        ("", {**valid, "HTTP_AUTHORIZATION": ""}),  # 401
        ("", {**valid, **bearer(tokens["none"])}),  # 403
        ("", {**valid, **bearer("unknown")}),  # 401 invalid_token
        ("page=0", valid),  # 400 on a list
        ("page=999", valid),  # 404 on a list
        ("format=xml", valid),  # 404
        ("", {**valid, "data": '{"lines": []}'}),  # 400 for an order
        ("", {**valid, "data": "lines=1", "content_type": "application/x-www-form-urlencoded"}),  # 415
        ("", {**valid, "HTTP_CONTENT_ENCODING": "gzip"}),  # 415
        ("", {**valid, "content_type": "application/json; charset=rot13"}),  # 415
        ("", {**valid, "HTTP_ACCEPT": "text/html"}),  # 406
        ("", {**valid, "CONTENT_LENGTH": too_large}),  # 413
        ("", {**valid, "HTTP_TRANSFER_ENCODING": "gzip"}),  # 501
        ("", {**valid, "wsgi.input": SilentClient()}),  # 408 where the body is read
    ]
    answers = {}
    for query, request in variants:
        response = client.generic(method, f"{path}?{query}" if query else path, **request)
        answers.setdefault(response.status_code, []).append(response)
    with monkeypatch.context() as patched:
        database_unreachable(patched)
        response = client.generic(method, path, **valid)
    answers.setdefault(response.status_code, []).append(response)
    return answers


def test_the_schema_documents_every_status_each_operation_answers_and_no_other(
    client, shop, catalogue, settings, monkeypatch
):
    # 406, 413, 415 (but for placing an order), 503 and the Bearer challenges' headers were answered
    # but not in the schema; the details' 400 and placing an order's 404 neither.
    application, token = shop
    order = fooapi_services.place_order(
        client=application,
        lines=[fooapi_services.LineRequest(product=catalogue["FOO-SENSOR-01"], quantity=1)],
    )
    tokens = {
        "all": token,  # of the client that placed the order
        "none": issue_token(client, make_client(scopes=["introspection"])),
    }
    schema = client.get("/api/v1/schema").json()
    error = schema["components"]["schemas"]["Error"]
    ids = {"/api/v1/products/{id}": catalogue["FOO-SENSOR-01"].pk, "/api/v1/orders/{id}": order.pk}
    client.raise_request_exception = False

    for template, operations in schema["paths"].items():
        path = template.replace("{id}", str(ids.get(template, "")))
        for method, operation in operations.items():
            documented = operation["responses"]
            answers = answers_to_everything_a_client_can_get_wrong(
                client, settings, monkeypatch, method.upper(), path, tokens, order
            )
            assert set(answers) == {int(status) for status in documented}, (method, template)
            for status, responses in answers.items():
                headers = documented[str(status)].get("headers", {})
                for response in responses:
                    assert response["Content-Type"] == "application/json", (method, template, status)
                    if status >= 400:
                        assert set(response.json()) <= set(error["properties"]), response.content
                        assert response.json()["error"]
                    required = {name for name, header in headers.items() if header.get("required")}
                    assert required <= set(response.headers), (method, template, status)
                    described = {"WWW-Authenticate", "Retry-After", "Accept-Encoding"} & set(response.headers)
                    assert described <= set(headers), (method, template, status)
            # A method the path does not have is a 405 naming those it has: no operation's answer.
            refused = client.generic("PATCH", path, **bearer(tokens["all"]))
            assert_api_error(refused, 405, "method_not_allowed")
            allowed = {name.strip() for name in refused["Allow"].split(",")}
            assert allowed == {each.upper() for each in operations} | {"HEAD", "OPTIONS"}
    # The Foo API is not rate limited: a 429 is no answer of it, and not in its schema.
    for view in (ProductList, ProductDetail, OrderList, OrderDetail):
        assert not view().get_throttles(), view


def test_the_schema_requires_every_member_the_answers_always_hold(client, shop, catalogue):
    # Members with a model default (a product's currency and availability, its description, an
    # order's status) were optional in the schema: typed clients generated from it made them so.
    _, token = shop
    sensor = catalogue["FOO-SENSOR-01"]
    order = place(client, token, [{"product": sensor.pk, "quantity": 1}]).json()
    product = client.get(f"/api/v1/products/{sensor.pk}", **bearer(token)).json()
    # A page's `next` and `previous` (null on a single page) were optional too.
    products = client.get("/api/v1/products", **bearer(token)).json()
    orders = client.get("/api/v1/orders", **bearer(token)).json()
    schemas = client.get("/api/v1/schema").json()["components"]["schemas"]

    answers = [
        ("Product", product),
        ("Order", order),
        ("OrderLine", order["lines"][0]),
        ("PaginatedProductList", products),
        ("PaginatedOrderList", orders),
    ]
    for name, answer in answers:
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]) == set(answer), name


@pytest.mark.parametrize(
    ("query", "accept", "status", "error"),
    [("", "text/html", 406, "not_acceptable"), ("format=xml", None, 404, "not_found")],
)
def test_the_schemas_errors_are_json_errors_not_openapi_documents(client, db, query, accept, status, error):
    # DRF rendered them with the schema's renderer: an error labelled application/vnd.oai.openapi+json.
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = client.get(f"/api/v1/schema?{query}", **headers)
    assert_api_error(response, status, error)
    assert response["Cache-Control"] == "no-store"
    assert "Content-Disposition" not in response


def test_the_schema_in_yaml(client, db):
    for response in (
        client.get("/api/v1/schema?format=yaml"),
        client.get("/api/v1/schema", HTTP_ACCEPT="application/yaml"),
    ):
        assert response.status_code == 200
        assert yaml.safe_load(response.content)["info"]["title"] == "Foo API"


def test_the_documentation_page_renders_the_schema_from_bundled_files(client, db):
    response = client.get("/api/v1/docs")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-schema-url="/api/v1/schema"' in page
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts, "the page loads its scripts"
    assert all("src=" in attributes and not body.strip() for attributes, body in scripts)  # CSP: no inline
    assert all('src="/static/' in attributes for attributes, _ in scripts)  # no CDN
    assert "swagger-ui-bundle" in page


def test_resource_metadata_names_the_scopes_and_the_documentation(client, db, settings):
    response = client.get("/.well-known/oauth-protected-resource")

    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource_documentation"] == f"{settings.ISSUER}/api/v1/docs"
    assert {"products:read", "orders:read", "orders:write"} <= set(metadata["scopes_supported"])
    assert metadata["bearer_methods_supported"] == ["header"]
    assert metadata["authorization_servers"] == [settings.ISSUER]


# --- the demo catalogue --------------------------------------------------------------------------


def test_seeding_the_catalogue_is_idempotent_and_keeps_operator_edits(db):
    assert seed_demo_catalogue() == len(DEMO_CATALOGUE)
    Product.objects.filter(sku="FOO-CAM-01").update(price=Decimal("79.00"))

    assert seed_demo_catalogue() == 0
    assert Product.objects.count() == len(DEMO_CATALOGUE)
    assert Product.objects.get(sku="FOO-CAM-01").price == Decimal("79.00")


def test_a_token_in_a_form_body_is_not_accepted(client, reader_token):
    """RFC 6750 2.2's form body is not a method this API takes (its metadata: header only); beside a
    header it is a token sent twice (3.1)."""
    form = {"data": f"access_token={reader_token}", "content_type": "application/x-www-form-urlencoded"}
    alone = client.post("/api/v1/orders", **form)
    assert_api_error(alone, 401, "unauthorized")
    both = client.post("/api/v1/orders", **form, **bearer(reader_token))
    body = assert_api_error(both, 400, "invalid_request")
    assert body["error_description"] == "Send the access token once, in the Authorization header only."
