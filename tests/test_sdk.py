"""A developer's program uses foo_sdk against a real HTTPS server: tokens, retries, errors, TLS, CLI."""

import http.server
import json
import os
import pickle
import re
import select
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from oauth2_provider.models import AccessToken

from authserver import services
from config.tls import ensure_self_signed_certificate
from fooapi.models import Order, Product
from fooapi.services import DEMO_CATALOGUE, seed_demo_catalogue
from sdkportal.sdk.foo_sdk import (
    FooApiError,
    FooAuthError,
    FooClient,
    FooConfigurationError,
    FooConnectionError,
    FooError,
    FooScopeError,
    cli,
)
from sdkportal.sdk.foo_sdk import client as client_module
from sdkportal.services import credentials_document
from tests.helpers import make_client
from tests.servers import LiveServer

pytestmark = pytest.mark.live

SANDBOX_SCOPES = ["products:read", "orders:read"]
SHOP_SCOPES = ["products:read", "orders:read", "orders:write"]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), LiveServer(workers=2) as live:
        yield live


@pytest.fixture
def catalogue(transactional_db):
    seed_demo_catalogue()


def credentials(server, new_client, **changes) -> dict:
    document = {
        "client_id": new_client.application.client_id,
        "client_secret": new_client.client_secret,
        "token_url": f"{server.url}/oauth2/token",
        "api_base_url": f"{server.url}/api/v1",
        "ca_certificate": Path(server.verify).read_text(),
    }
    document.update(changes)
    return {key: value for key, value in document.items() if value is not None}


def write_credentials(tmp_path, document: dict):
    path = tmp_path / "foo-credentials.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def sandbox(server, catalogue, tmp_path):
    """A client with the sandbox scopes, from its credentials file as the portal ships it."""
    new_client = make_client(scopes=SANDBOX_SCOPES, name="sandbox")
    path = write_credentials(tmp_path, credentials(server, new_client))
    return new_client, FooClient.from_credentials_file(path)


@pytest.fixture
def shop(server, catalogue):
    new_client = make_client(scopes=SHOP_SCOPES, name="shop")
    return new_client, FooClient(**credentials(server, new_client))


# --- calls -------------------------------------------------------------------------------------


def test_listing_and_reading_products(sandbox):
    _, foo = sandbox

    products = foo.list_products()

    assert [product["sku"] for product in products] == [sku for sku, *_ in DEMO_CATALOGUE]
    camera = next(product for product in products if product["sku"] == "FOO-CAM-01")
    assert foo.get_product(camera["id"])["name"] == "Foo Camera"
    assert foo.token_scope == "orders:read products:read"


def test_every_page_of_a_long_catalogue_is_listed(sandbox):
    _, foo = sandbox
    Product.objects.bulk_create(
        Product(sku=f"BULK-{number:03}", name=f"Bulk item {number}", price=Decimal("1.00"))
        for number in range(120)
    )
    assert len(foo.list_products()) == len(DEMO_CATALOGUE) + 120


def test_placing_and_reading_orders(shop):
    _, foo = shop
    sensor = next(product for product in foo.list_products() if product["sku"] == "FOO-SENSOR-01")

    order = foo.create_order({sensor["id"]: 2})

    assert order["total"] == "49.80"
    assert foo.list_orders() == [order]
    assert foo.get_order(order["id"]) == order
    as_list = foo.create_order([{"product": sensor["id"], "quantity": 1}])
    as_pairs = foo.create_order([(sensor["id"], 3)])
    assert [as_list["total"], as_pairs["total"]] == ["24.90", "74.70"]


def test_an_order_placed_while_the_orders_are_listed_is_not_listed_twice(shop, monkeypatch):
    new_client, foo = shop
    Order.objects.bulk_create(
        Order(client=new_client.application, currency="EUR", total=Decimal("1.00")) for _ in range(150)
    )
    sensor = Product.objects.get(sku="FOO-SENSOR-01")
    placed = []
    original_request = foo._request

    def place_an_order_after_the_first_page(method, path, **options):
        answer = original_request(method, path, **options)
        if (options.get("params") or {}).get("page") == 1 and not placed:
            placed.append(foo.create_order({sensor.pk: 1}))  # the newest: page 2 shifts by one
        return answer

    monkeypatch.setattr(foo, "_request", place_an_order_after_the_first_page)

    listed = [order["id"] for order in foo.list_orders()]

    assert len(listed) == len(set(listed)) == 150


# --- tokens --------------------------------------------------------------------------------------


def test_one_token_serves_many_calls(sandbox):
    new_client, foo = sandbox
    foo.list_products()
    foo.list_orders()
    foo.get_product(Product.objects.first().pk)
    assert AccessToken.objects.filter(application=new_client.application).count() == 1


def test_a_new_token_shortly_before_the_old_one_expires(sandbox, monkeypatch):
    new_client, foo = sandbox
    # The SDK's clock is the test's: the live server's answers take what they take on a loaded machine.
    clock = SimpleNamespace(now=client_module.time.monotonic())
    monkeypatch.setattr(client_module, "time", SimpleNamespace(monotonic=lambda: clock.now, sleep=time.sleep))
    foo.list_products()
    assert foo._renew_at == clock.now + 3600 - 30  # renewed 30 s before the hour is up

    clock.now = foo._renew_at - 1
    foo.list_products()
    assert AccessToken.objects.filter(application=new_client.application).count() == 1
    clock.now = foo._renew_at
    foo.list_products()
    assert AccessToken.objects.filter(application=new_client.application).count() == 2


def test_calls_from_many_threads_at_once_share_one_token(sandbox):
    new_client, foo = sandbox
    with ThreadPoolExecutor(8) as pool:
        listed = list(pool.map(lambda _: foo.list_products(), range(16)))

    assert all(len(products) == len(DEMO_CATALOGUE) for products in listed)
    assert AccessToken.objects.filter(application=new_client.application).count() == 1


def test_threads_that_waited_for_a_token_request_that_failed_share_its_error():
    """A token endpoint that never answers: the threads queued behind the one fetch get its
    FooConnectionError after one timeout, not one timeout after the other."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])  # held open, never answered
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    foo = FooClient(
        client_id="id",
        client_secret="secret",
        token_url=f"{url}/oauth2/token",
        api_base_url=f"{url}/api/v1",
        timeout=1,
    )

    def call(_):
        with pytest.raises(FooConnectionError) as raised:
            foo.list_products()
        return raised.value

    try:
        with ThreadPoolExecutor(4) as pool:
            errors = list(pool.map(call, range(4)))
    finally:
        listener.close()
        for connection in accepted:
            connection.close()

    assert len(accepted) == 2  # one token request, sent once more after its connection timed out
    assert len({str(error) for error in errors}) == 1


def test_a_revoked_token_is_replaced_and_the_call_retried_once(sandbox):
    new_client, foo = sandbox
    foo.list_products()
    first = AccessToken.objects.get(application=new_client.application)
    services.revoke_token(token=first, actor="tests")

    assert len(foo.list_products()) == len(DEMO_CATALOGUE)

    tokens = AccessToken.objects.filter(application=new_client.application)
    assert tokens.count() == 1 and tokens.get().pk != first.pk


def test_a_client_disabled_meanwhile_is_a_foo_auth_error(sandbox):
    new_client, foo = sandbox
    foo.list_products()
    services.set_client_enabled(application=new_client.application, enabled=False, actor="tests")

    with pytest.raises(FooAuthError) as raised:
        foo.list_products()
    assert raised.value.error == "invalid_client"  # the retry's new token was refused


def test_a_wrong_secret_is_a_foo_auth_error(server, catalogue):
    new_client = make_client(scopes=SANDBOX_SCOPES)
    foo = FooClient(**credentials(server, new_client, client_secret="not-the-secret"))
    with pytest.raises(FooAuthError) as raised:
        foo.list_products()
    assert (raised.value.status, raised.value.error) == (401, "invalid_client")


# --- errors --------------------------------------------------------------------------------------


def test_a_missing_scope_is_a_foo_scope_error_naming_it(sandbox):
    _, foo = sandbox
    with pytest.raises(FooScopeError) as raised:
        foo.create_order({Product.objects.first().pk: 1})
    assert raised.value.scope == "orders:write"
    assert raised.value.status == 403
    assert "orders:write" in str(raised.value)


def test_asking_for_a_scope_the_client_may_not_hold_is_a_foo_scope_error(server, catalogue):
    new_client = make_client(scopes=SANDBOX_SCOPES)
    foo = FooClient(**credentials(server, new_client), scope="orders:write")
    with pytest.raises(FooScopeError) as raised:
        foo.list_products()
    assert raised.value.error == "invalid_scope"
    assert raised.value.scope == "orders:write"


def test_what_does_not_exist_is_a_foo_api_error(sandbox):
    _, foo = sandbox
    with pytest.raises(FooApiError) as raised:
        foo.get_product(999999)
    assert (raised.value.status, raised.value.error) == (404, "not_found")


def test_an_invalid_order_is_a_foo_api_error_with_the_reason(shop):
    _, foo = shop
    with pytest.raises(FooApiError) as raised:
        foo.create_order({999999: 1})
    assert (raised.value.status, raised.value.error) == (400, "invalid_request")
    assert "999999" in raised.value.description


class ScriptedServer(requests.adapters.BaseAdapter):
    """A transport that answers each request with the next (status, headers, JSON body) given."""

    def __init__(self, *answers):
        super().__init__()
        self.answers = list(answers)
        self.requests = []

    def send(self, request, **options):
        self.requests.append(request)
        status, headers, body = self.answers.pop(0)
        response = requests.Response()
        response.status_code, response.url, response.request = status, request.url, request
        response.headers.update(headers)
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return response

    def close(self):
        """Nothing to release: no connection was opened."""


TOKEN = (200, {}, {"access_token": "a-token", "expires_in": 3600, "token_type": "Bearer"})
ONE_PAGE = (200, {}, {"count": 1, "next": None, "previous": None, "results": [{"id": 1}]})
THROTTLED = {"error": "too_many_requests", "error_description": "Too many requests."}
UNAVAILABLE = {"error": "temporarily_unavailable", "error_description": "Try again shortly."}


@pytest.fixture
def scripted(monkeypatch):
    """A client of a scripted server; `waits` records the pauses it took."""
    waits = []
    monkeypatch.setattr(client_module.time, "sleep", waits.append)

    def scripted_client(*answers, **options):
        foo = FooClient(
            client_id="id",
            client_secret="secret",
            token_url="https://foo.example/oauth2/token",
            api_base_url="https://foo.example/api/v1",
            **options,
        )
        server = ScriptedServer(*answers)
        for prefix in [*foo._session.adapters, "https://"]:  # the client's own mounts too
            foo._session.mount(prefix, server)
        return foo, server, waits

    return scripted_client


def test_a_429_with_a_short_retry_after_is_waited_out_and_retried_once(scripted):
    foo, server, waits = scripted(
        (429, {"Retry-After": "2"}, THROTTLED), TOKEN, (429, {"Retry-After": "1"}, THROTTLED), ONE_PAGE
    )

    assert foo.list_products() == [{"id": 1}]

    assert waits == [2.0, 1.0]
    assert [request.method for request in server.requests] == ["POST", "POST", "GET", "GET"]


def test_a_429_asking_for_a_long_wait_is_raised_with_it(scripted):
    foo, _, waits = scripted((429, {"Retry-After": "300"}, THROTTLED))
    with pytest.raises(FooApiError) as raised:
        foo.list_products()
    assert (raised.value.error, raised.value.retry_after) == ("too_many_requests", 300)
    assert waits == []


@pytest.mark.parametrize(
    "date",
    ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"],
)
def test_a_retry_after_date_in_any_of_the_three_http_date_formats_is_understood(scripted, date):
    """RFC 9110 5.6.7: a recipient accepts all three; asctime's names no zone, and is GMT too."""
    foo, server, waits = scripted((429, {"Retry-After": date}, THROTTLED), TOKEN, ONE_PAGE)

    assert foo.list_products() == [{"id": 1}]  # a date passed: no wait, sent again at once

    assert waits == [0.0]
    assert [request.method for request in server.requests] == ["POST", "POST", "GET"]


def test_a_503_is_retried_for_a_read_but_not_for_an_order(scripted):
    foo, server, waits = scripted(
        TOKEN, (503, {"Retry-After": "5"}, UNAVAILABLE), ONE_PAGE, (503, {"Retry-After": "5"}, UNAVAILABLE)
    )
    assert foo.list_products() == [{"id": 1}]

    with pytest.raises(FooApiError) as raised:
        foo.create_order({1: 1})  # it may have been placed: only the caller knows whether to repeat it
    assert (raised.value.status, raised.value.retry_after) == (503, 5)
    assert waits == [5.0]
    assert server.answers == []


@pytest.mark.parametrize(
    ("answers", "status", "sent"),
    [
        ([(429, {"Retry-After": "5"}, THROTTLED)], 429, ["POST"]),
        ([TOKEN, (503, {"Retry-After": "5"}, UNAVAILABLE)], 503, ["POST", "GET"]),
    ],
)
def test_a_client_told_not_to_wait_raises_a_retry_after_at_once(scripted, answers, status, sent):
    foo, server, waits = scripted(*answers, max_retry_after=0)

    with pytest.raises(FooApiError) as raised:
        foo.list_products()

    assert (raised.value.status, raised.value.retry_after) == (status, 5)
    assert waits == []
    assert [request.method for request in server.requests] == sent


@pytest.mark.parametrize(
    "answer",
    [
        (200, {}, {"access_token": "a-token", "expires_in": "soon", "token_type": "Bearer"}),
        (200, {}, {"token_type": "Bearer"}),
        (200, {}, ["a-token"]),
        (200, {}, {"access_token": None, "expires_in": 3600, "token_type": "Bearer"}),
        (200, {}, {"access_token": "", "expires_in": 3600, "token_type": "Bearer"}),
        (200, {}, {"access_token": "a-token", "expires_in": -60, "token_type": "Bearer"}),
        (200, {}, {"access_token": "a-token", "expires_in": "nan", "token_type": "Bearer"}),
        (200, {}, {"access_token": "a-token", "expires_in": 3600, "token_type": "DPoP"}),
        (200, {}, {"access_token": "a-token", "expires_in": 3600}),
    ],
)
def test_a_token_answer_without_a_token_and_its_lifetime_is_a_foo_api_error(scripted, answer):
    foo, _, _ = scripted(answer)
    with pytest.raises(FooApiError) as raised:
        foo.access_token()
    assert raised.value.error == "invalid_response"


def test_the_token_type_is_bearer_in_any_case(scripted):
    foo, _, _ = scripted((200, {}, {"access_token": "a-token", "expires_in": 3600, "token_type": "bearer"}))
    assert foo.access_token() == "a-token"


def test_a_token_is_renewed_by_its_lifetime_counted_from_when_it_was_asked_for(scripted, monkeypatch):
    """The token expires an hour after the server issued it, which was after the request left: a
    slow answer (here 40 s) must not eat the renewal margin."""
    foo, server, _ = scripted(TOKEN)
    clock = [1000.0]

    class Clock:
        @staticmethod
        def monotonic():
            return clock[0]

    answer = server.send

    def slow_answer(request, **options):
        clock[0] += 40
        return answer(request, **options)

    monkeypatch.setattr(client_module, "time", Clock)
    monkeypatch.setattr(server, "send", slow_answer)

    foo.access_token()

    assert foo._renew_at == 1000 + 3600 - 30


def test_a_token_the_api_keeps_refusing_is_replaced_once_not_in_a_loop(scripted):
    refused = (401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, {"error": "invalid_token"})
    foo, server, _ = scripted(TOKEN, refused, TOKEN, refused)

    with pytest.raises(FooAuthError) as raised:
        foo.list_products()

    assert (raised.value.status, raised.value.error) == (401, "invalid_token")
    assert [request.path_url.split("?")[0] for request in server.requests] == [
        "/oauth2/token",
        "/api/v1/products",
        "/oauth2/token",
        "/api/v1/products",
    ]


def test_a_token_request_that_failed_is_made_again_by_the_next_call(scripted):
    foo, server, _ = scripted((503, {}, UNAVAILABLE), TOKEN, ONE_PAGE)

    with pytest.raises(FooApiError):
        foo.list_products()
    assert foo.list_products() == [{"id": 1}]

    assert [request.method for request in server.requests] == ["POST", "POST", "GET"]


@pytest.mark.parametrize(
    ("answer", "kind", "status", "error"),
    [
        (
            (400, {}, {"error": "invalid_request", "error_description": "Bad page."}),
            FooApiError,
            400,
            "invalid_request",
        ),
        (
            (403, {"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="orders:write"'}, {}),
            FooScopeError,
            403,
            "insufficient_scope",
        ),
        ((429, {"Retry-After": "60"}, THROTTLED), FooApiError, 429, "too_many_requests"),
        ((500, {}, {"detail": "boom"}), FooApiError, 500, "http_500"),
        (
            (502, {"Content-Type": "text/html"}, b"<html><h1>Bad Gateway</h1></html>"),
            FooApiError,
            502,
            "http_502",
        ),
        ((503, {"Retry-After": "120"}, UNAVAILABLE), FooApiError, 503, "temporarily_unavailable"),
    ],
)
def test_an_error_answer_from_the_api_is_a_foo_error_with_its_code(scripted, answer, kind, status, error):
    foo, _, _ = scripted(TOKEN, answer)
    with pytest.raises(kind) as raised:
        foo.list_products()
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.error) == (status, error)


@pytest.mark.parametrize(
    ("answer", "kind", "error"),
    [
        ((400, {}, {"error": "invalid_scope"}), FooScopeError, "invalid_scope"),
        ((401, {"WWW-Authenticate": "Basic"}, {"error": "invalid_client"}), FooAuthError, "invalid_client"),
        ((429, {"Retry-After": "60"}, THROTTLED), FooApiError, "too_many_requests"),
        ((502, {}, b"<html>Bad Gateway</html>"), FooApiError, "http_502"),
    ],
)
def test_an_error_answer_from_the_token_endpoint_is_a_foo_error_with_its_code(scripted, answer, kind, error):
    foo, _, _ = scripted(answer)
    with pytest.raises(kind) as raised:
        foo.access_token()
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.error) == (answer[0], error)


@pytest.mark.parametrize(
    "page", [{"count": 1}, {"results": None}, {"results": [{"name": "no id"}]}, ["a list"]]
)
def test_a_page_without_results_is_a_foo_api_error(scripted, page):
    foo, _, _ = scripted(TOKEN, (200, {}, page))
    with pytest.raises(FooApiError) as raised:
        foo.list_products()
    assert raised.value.error == "invalid_response"


def test_a_list_longer_than_a_thousand_pages_is_listed_whole(scripted):
    pages = [
        (200, {}, {"count": 1001, "next": number < 1001, "results": [{"id": number}]})
        for number in range(1, 1002)
    ]
    foo, server, _ = scripted(TOKEN, *pages)

    assert [order["id"] for order in foo.list_orders()] == list(range(1, 1002))
    assert server.requests[1].url.endswith("/orders?page=1&page_size=100")  # the API's largest page


def test_a_page_that_lists_nothing_new_ends_the_listing(scripted):
    again = (200, {}, {"count": 2, "next": "?page=2", "results": [{"id": 1}]})
    foo, _, _ = scripted(TOKEN, again, again)
    with pytest.raises(FooApiError) as raised:
        foo.list_products()
    assert raised.value.error == "invalid_response"


def test_a_login_for_the_host_in_netrc_does_not_replace_the_token(scripted, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine foo.example login deploy password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    foo, server, _ = scripted(TOKEN, ONE_PAGE)

    foo.list_products()

    assert server.requests[1].headers["Authorization"] == "Bearer a-token"


@pytest.mark.parametrize("order", [{1: 2.9}, [(3.7, 1)], [{"product": 1, "quantity": 1.5}]])
def test_a_product_or_quantity_that_is_no_whole_number_is_refused_not_truncated(scripted, order):
    foo, server, _ = scripted(TOKEN)
    with pytest.raises(ValueError, match="whole number"):
        foo.create_order(order)
    with pytest.raises(ValueError, match="whole number"):
        foo.get_product(2.5)
    assert server.requests == []


def test_sdk_errors_survive_pickling():
    """Raised in a worker process (multiprocessing, a task queue), they reach the parent whole."""
    errors = [
        FooApiError(429, "too_many_requests", "Too many requests.", retry_after=5),
        FooAuthError(401, "invalid_client"),
        FooScopeError(403, "insufficient_scope", "Needs orders:write.", scope="orders:write"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (its own bytes)
        assert type(copy) is type(error) and vars(copy) == vars(error) and str(copy) == str(error)


# --- TLS and configuration -----------------------------------------------------------------------


def test_tls_is_verified_against_the_system_authorities_by_default(server, catalogue):
    new_client = make_client(scopes=SANDBOX_SCOPES)
    foo = FooClient(**credentials(server, new_client, ca_certificate=None))
    with pytest.raises(FooConnectionError, match="TLS verification"):
        foo.list_products()


def test_a_certificate_other_than_the_servers_is_not_trusted(server, catalogue, tmp_path):
    ensure_self_signed_certificate(tmp_path / "other.pem", tmp_path / "other.key", ["localhost"])
    new_client = make_client(scopes=SANDBOX_SCOPES)
    foo = FooClient(**credentials(server, new_client, ca_certificate=(tmp_path / "other.pem").read_text()))
    with pytest.raises(FooConnectionError):
        foo.list_products()


def test_the_servers_certificate_is_held_in_memory_so_a_tmp_cleaner_cannot_break_the_client(
    server, catalogue, tmp_path, monkeypatch
):
    """A long-running program (the portal's own workers among them) outlives what a /tmp cleaner
    (systemd-tmpfiles, tmpreaper) leaves in place: the SDK writes no file for the certificate."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    foo = FooClient(**credentials(server, make_client(scopes=SANDBOX_SCOPES)))

    assert len(foo.list_products()) == len(DEMO_CATALOGUE)
    assert list(temporary.iterdir()) == []

    foo.close()  # the pooled connections go: the next call verifies the certificate again
    assert len(foo.list_products()) == len(DEMO_CATALOGUE)


def test_requests_ca_bundle_does_not_widen_what_the_client_trusts(server, catalogue, tmp_path, monkeypatch):
    """ca_certificate is the only certificate trusted for the server, whatever the environment
    says: REQUESTS_CA_BUNDLE (here the server's own certificate) is not added to it."""
    # Another name: OpenSSL looks an issuer up by name, and would try only one of two "localhost"s.
    ensure_self_signed_certificate(tmp_path / "other.pem", tmp_path / "other.key", ["other.example"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.verify)
    new_client = make_client(scopes=SANDBOX_SCOPES)
    foo = FooClient(**credentials(server, new_client, ca_certificate=(tmp_path / "other.pem").read_text()))
    with pytest.raises(FooConnectionError, match="TLS verification"):
        foo.list_products()


class ConnectProxy:
    """An HTTP proxy on loopback that tunnels CONNECT requests, as HTTPS_PROXY names one; `tunnels`
    lists the host:port each went to."""

    def __init__(self):
        self.tunnels = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_CONNECT(self):
                outer.tunnels.append(self.path)
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)), timeout=10)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                ends = [self.connection, upstream]
                try:
                    while True:
                        readable, _, _ = select.select(ends, [], [], 10)
                        if not readable:
                            return
                        for source in readable:
                            data = source.recv(65536)
                            if not data:
                                return
                            (upstream if source is self.connection else self.connection).sendall(data)
                finally:
                    upstream.close()

            def log_message(self, *args):
                """Quiet: the tests read `tunnels`."""

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_servers_certificate_is_verified_through_an_https_proxy(server, catalogue, tmp_path, monkeypatch):
    proxy = ConnectProxy()
    try:
        for name in ("NO_PROXY", "no_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        foo = FooClient(**credentials(server, make_client(scopes=SANDBOX_SCOPES)))
        assert len(foo.list_products()) == len(DEMO_CATALOGUE)
        assert f"localhost:{server.port}" in proxy.tunnels

        ensure_self_signed_certificate(tmp_path / "other.pem", tmp_path / "other.key", ["localhost"])
        other = FooClient(
            **credentials(
                server,
                make_client(scopes=SANDBOX_SCOPES),
                ca_certificate=(tmp_path / "other.pem").read_text(),
            )
        )
        with pytest.raises(FooConnectionError, match="TLS verification"):
            other.list_products()
    finally:
        proxy.close()


def test_the_sdks_own_transport_serves_only_its_servers_urls(server, catalogue):
    """An adapter the program mounts for https:// (retries, a proxy) keeps serving every other URL,
    the server's other paths included; the SDK's, verifying the server's certificate, wins only on
    the token URL and under the API base URL (requests picks the longest prefix)."""
    foo = FooClient(**credentials(server, make_client(scopes=SANDBOX_SCOPES)))
    theirs = requests.adapters.HTTPAdapter()
    foo._session.mount("https://", theirs)

    for elsewhere in (
        "https://elsewhere.example/api/v1/products",
        f"{server.url}/healthz",
        f"{server.url}/api/v10",
    ):
        assert foo._session.get_adapter(elsewhere) is theirs
    for own in (f"{server.url}/oauth2/token", f"{server.url}/api/v1/products?page=2"):
        assert foo._session.get_adapter(own) is not theirs
    assert len(foo.list_products()) == len(DEMO_CATALOGUE)


def test_the_secret_is_in_no_repr_error_or_log_line(server, catalogue, caplog):
    caplog.set_level("DEBUG")
    new_client = make_client(scopes=SANDBOX_SCOPES)
    foo = FooClient(**credentials(server, new_client))
    foo.list_products()
    seen = [repr(foo), str(foo), str(vars(foo.__class__))]
    wrong = FooClient(**credentials(server, new_client, client_secret=new_client.client_secret[::-1]))
    unreachable = FooClient(**credentials(server, new_client, token_url="https://127.0.0.1:9/oauth2/token"))
    for failing in (wrong, unreachable):
        with pytest.raises(FooError) as raised:
            failing.list_products()
        seen += [str(raised.value), repr(raised.value), repr(raised.value.__cause__)]

    for secret in (new_client.client_secret, new_client.client_secret[::-1]):
        assert not [text for text in [*seen, caplog.text] if secret in text]


def test_from_env_with_a_ca_bundle(server, catalogue, monkeypatch):
    new_client = make_client(scopes=SANDBOX_SCOPES)
    monkeypatch.setenv("FOO_CLIENT_ID", new_client.application.client_id)
    monkeypatch.setenv("FOO_CLIENT_SECRET", new_client.client_secret)
    monkeypatch.setenv("FOO_TOKEN_URL", f"{server.url}/oauth2/token")
    monkeypatch.setenv("FOO_API_BASE_URL", f"{server.url}/api/v1")
    monkeypatch.setenv("FOO_CA_BUNDLE", server.verify)

    assert len(FooClient.from_env().list_products()) == len(DEMO_CATALOGUE)


def test_a_ca_bundle_removed_while_the_client_runs_is_a_foo_connection_error(server, catalogue, tmp_path):
    bundle = tmp_path / "server-certificate.pem"
    bundle.write_text(Path(server.verify).read_text())
    foo = FooClient(
        **credentials(server, make_client(scopes=SANDBOX_SCOPES), ca_certificate=None), ca_bundle=bundle
    )
    assert foo.list_products()
    bundle.unlink()

    with pytest.raises(FooConnectionError, match=r"server-certificate\.pem"):
        foo.list_products()


def test_a_ca_bundle_that_is_not_there_is_a_configuration_error(monkeypatch, tmp_path):
    monkeypatch.setenv("FOO_CLIENT_ID", "id")
    monkeypatch.setenv("FOO_CLIENT_SECRET", "secret")
    monkeypatch.setenv("FOO_TOKEN_URL", "https://foo.example/oauth2/token")
    monkeypatch.setenv("FOO_API_BASE_URL", "https://foo.example/api/v1")
    monkeypatch.setenv("FOO_CA_BUNDLE", str(tmp_path / "server-certificate.pem"))
    with pytest.raises(FooConfigurationError, match=r"server-certificate\.pem"):
        FooClient.from_env()


def test_from_env_names_what_is_missing(monkeypatch):
    for name in ("FOO_CLIENT_ID", "FOO_CLIENT_SECRET", "FOO_TOKEN_URL", "FOO_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FOO_CLIENT_ID", "abc")
    with pytest.raises(FooConfigurationError, match="FOO_CLIENT_SECRET, FOO_TOKEN_URL, FOO_API_BASE_URL"):
        FooClient.from_env()


def test_a_credentials_file_without_secret_takes_it_from_the_environment(
    server, catalogue, tmp_path, monkeypatch
):
    new_client = make_client(scopes=SANDBOX_SCOPES)
    path = write_credentials(tmp_path, credentials(server, new_client, client_secret=None))
    monkeypatch.delenv("FOO_CLIENT_SECRET", raising=False)
    with pytest.raises(FooConfigurationError, match="FOO_CLIENT_SECRET"):
        FooClient.from_credentials_file(path)

    monkeypatch.setenv("FOO_CLIENT_SECRET", new_client.client_secret)
    assert FooClient.from_credentials_file(path).list_products()


@pytest.mark.parametrize(
    "url", ["http://api.foo.example/api/v1", "ftp://localhost/api", "https://", "not a url"]
)
def test_secrets_never_go_over_plain_http_to_another_machine(url):
    with pytest.raises(FooConfigurationError, match="https"):
        FooClient(client_id="a", client_secret="b", token_url=url, api_base_url="https://foo.example/api/v1")


def test_plain_http_to_this_machine_is_allowed_for_local_development():
    foo = FooClient(
        client_id="a",
        client_secret="b",
        token_url="http://127.0.0.1:9000/oauth2/token",
        api_base_url="http://localhost:9000/api/v1/",
    )
    assert foo.api_base_url == "http://localhost:9000/api/v1"


def test_an_unreadable_credentials_file_is_a_configuration_error(tmp_path):
    with pytest.raises(FooConfigurationError, match="No credentials file"):
        FooClient.from_credentials_file(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(FooConfigurationError, match="Cannot read"):
        FooClient.from_credentials_file(tmp_path / "broken.json")
    (tmp_path / "partial.json").write_text('{"client_id": "x"}')
    with pytest.raises(FooConfigurationError, match="token_url, api_base_url"):
        FooClient.from_credentials_file(tmp_path / "partial.json")


@pytest.mark.parametrize("key", ["client_id", "client_secret", "token_url", "api_base_url"])
def test_a_credentials_file_value_that_is_no_string_is_a_configuration_error(tmp_path, capsys, key):
    document = {
        "client_id": "id",
        "client_secret": "secret",
        "token_url": "https://foo.example/oauth2/token",
        "api_base_url": "https://foo.example/api/v1",
    }
    path = write_credentials(tmp_path, {**document, key: 12345})
    with pytest.raises(FooConfigurationError, match=f"{key} must be a JSON string"):
        FooClient.from_credentials_file(path)

    assert cli.main(["--credentials", str(path), "token"]) == 1  # one line, no traceback
    assert capsys.readouterr().err == f"error: FooConfigurationError: {path}: {key} must be a JSON string\n"


# --- a connection that breaks --------------------------------------------------------------------


class BreakingServer:
    """An HTTP server on loopback that answers the token endpoint and the API like the real one,
    but closes the connection unanswered for the first request to each path in `break_first`: a
    keep-alive connection a proxy closed, a server restarting. The first request to a path in
    `busy_first` gets its (status, Retry-After) instead. `seen` lists every request."""

    def __init__(self, break_first: set[str], busy_first: dict[str, tuple[int, str]] | None = None):
        self.break_first, self.busy_first, self.seen = set(break_first), dict(busy_first or {}), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                path = self.path.split("?")[0]
                outer.seen.append((self.command, path))
                if path in outer.break_first:
                    outer.break_first.discard(path)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status = 201 if self.command == "POST" and path != "/oauth2/token" else 200
                if path in outer.busy_first:
                    status, retry_after = outer.busy_first.pop(path)
                    body = THROTTLED if status == 429 else UNAVAILABLE
                elif path == "/oauth2/token":
                    body = {"access_token": "t", "token_type": "Bearer", "expires_in": 3600, "scope": "x"}
                elif path == "/api/v1/orders":
                    body = {"id": 1, "status": "placed", "lines": [], "total": "1.00", "currency": "EUR"}
                else:
                    body = {"count": 1, "next": None, "previous": None, "results": [{"id": 1, "name": "Kit"}]}
                data = json.dumps(body).encode()
                self.send_response(status)
                if status in (429, 503):
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                """Quiet: the tests read `seen`, not the server's log."""

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def client(self) -> FooClient:
        return FooClient(
            client_id="id",
            client_secret="secret",
            token_url=f"{self.url}/oauth2/token",
            api_base_url=f"{self.url}/api/v1",
        )

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def breaking_server():
    servers = []

    def start(*break_first: str, busy_first: dict[str, tuple[int, str]] | None = None) -> BreakingServer:
        servers.append(BreakingServer(set(break_first), busy_first))
        return servers[-1]

    yield start
    for each in servers:
        each.close()


def test_a_get_and_a_token_request_are_sent_again_once_when_the_connection_breaks(breaking_server):
    stub = breaking_server("/oauth2/token", "/api/v1/products")

    assert stub.client().list_products() == [{"id": 1, "name": "Kit"}]

    assert stub.seen == [
        ("POST", "/oauth2/token"),
        ("POST", "/oauth2/token"),
        ("GET", "/api/v1/products"),
        ("GET", "/api/v1/products"),
    ]


def test_an_order_is_never_sent_twice(breaking_server):
    """The connection broke after the order left: the server may have placed it. Sending it again
    could place it twice; the caller is told instead."""
    stub = breaking_server("/api/v1/orders")

    with pytest.raises(FooConnectionError):
        stub.client().create_order({1: 1})

    assert stub.seen.count(("POST", "/api/v1/orders")) == 1


def test_plain_http_to_this_machine_never_goes_through_a_proxy(breaking_server, monkeypatch):
    """An HTTP_PROXY set for the rest of the machine's traffic must not receive the secret in
    clear (nor can a proxy reach this machine's localhost)."""
    proxy = socket.create_server(("127.0.0.1", 0))
    received = []

    def record():
        while True:
            try:
                connection = proxy.accept()[0]
            except OSError:
                return
            with connection:
                received.append(connection.recv(65536))

    threading.Thread(target=record, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    stub = breaking_server()

    try:
        assert stub.client().list_products() == [{"id": 1, "name": "Kit"}]
    finally:
        proxy.close()

    assert received == []
    assert stub.seen == [("POST", "/oauth2/token"), ("GET", "/api/v1/products")]


def test_a_connection_refused_is_tried_once_more_then_reported(breaking_server):
    stub = breaking_server()
    foo = stub.client()
    stub.close()  # nothing listens there any more

    with pytest.raises(FooConnectionError, match="Cannot reach"):
        foo.list_products()


def test_a_short_retry_after_from_the_server_is_waited_out_over_the_sdks_own_transport(
    breaking_server, monkeypatch
):
    """What the server answers reaches the client's own 429/503 handling: the transport does not
    turn it into a connection error."""
    waits = []
    monkeypatch.setattr(client_module.time, "sleep", waits.append)
    stub = breaking_server(busy_first={"/oauth2/token": (429, "1"), "/api/v1/products": (503, "2")})

    assert stub.client().list_products() == [{"id": 1, "name": "Kit"}]

    assert waits == [1.0, 2.0]
    assert [method for method, _ in stub.seen] == ["POST", "POST", "GET", "GET"]


@pytest.mark.parametrize("status", [429, 503])
def test_a_long_retry_after_from_the_server_is_a_foo_api_error_with_it(breaking_server, status):
    stub = breaking_server(busy_first={"/api/v1/products": (status, "300")})

    with pytest.raises(FooApiError) as raised:
        stub.client().list_products()

    assert (raised.value.status, raised.value.retry_after) == (status, 300)


# --- the command line ----------------------------------------------------------------------------


def test_cli_lists_products_as_a_table_and_as_json(server, catalogue, tmp_path, capsys):
    new_client = make_client(scopes=SANDBOX_SCOPES)
    path = write_credentials(tmp_path, credentials(server, new_client))

    assert cli.main(["--credentials", str(path), "products"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ID", "SKU", "NAME", "PRICE", "AVAILABLE"]
    assert any("Foo Starter Kit" in line and "229.00" in line for line in table)

    kit = Product.objects.get(sku="FOO-KIT-START")
    assert cli.main(["--credentials", str(path), "--json", "product", str(kit.pk)]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "Foo Starter Kit"


def test_cli_reads_the_credentials_file_in_the_current_folder(
    server, catalogue, tmp_path, capsys, monkeypatch
):
    new_client = make_client(scopes=SANDBOX_SCOPES)
    write_credentials(tmp_path, credentials(server, new_client))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FOO_CLIENT_ID", raising=False)

    assert cli.main(["orders"]) == 0
    assert capsys.readouterr().out.strip() == "No orders yet."


def test_cli_says_that_the_environment_comes_before_the_credentials_file(tmp_path, capsys, monkeypatch):
    """FOO_* variables set for another server win over ./foo-credentials.json: the help and the
    README say so, not just "reads ./foo-credentials.json"."""
    write_credentials(
        tmp_path, {"client_id": "id", "client_secret": "s", "token_url": "x", "api_base_url": "x"}
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FOO_CLIENT_ID", "from-the-environment")
    for name in ("FOO_CLIENT_SECRET", "FOO_TOKEN_URL", "FOO_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)

    assert cli.main(["products"]) == 1
    assert capsys.readouterr().err.startswith("error: FooConfigurationError: Set FOO_CLIENT_SECRET")

    readme = (Path(client_module.__file__).parent.parent / "README.md").read_text()
    for text in (" ".join(cli._parser().format_help().split()), " ".join(readme.split())):
        assert "FOO_CLIENT_ID is set, else ./foo-credentials.json" in text.replace("`", "")


@pytest.mark.parametrize(
    "command, said",
    [
        (["products"], "error: interrupted\n"),
        (["create-order", "1:1"], "error: interrupted (the order may have been placed: see `orders`)\n"),
    ],
)
def test_cli_interrupted_says_so_in_one_line(tmp_path, capsys, monkeypatch, command, said):
    write_credentials(
        tmp_path,
        {
            "client_id": "id",
            "client_secret": "s",
            "token_url": "http://127.0.0.1:9/oauth2/token",
            "api_base_url": "http://127.0.0.1:9/api/v1",
        },
    )

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(client_module.FooClient, "list_products", interrupted)
    monkeypatch.setattr(client_module.FooClient, "create_order", interrupted)

    assert cli.main(["--credentials", str(tmp_path / "foo-credentials.json"), *command]) == 130
    assert capsys.readouterr().err == said


def test_cli_create_order_reports_the_missing_scope(server, catalogue, tmp_path, capsys):
    new_client = make_client(scopes=SANDBOX_SCOPES)
    path = write_credentials(tmp_path, credentials(server, new_client))

    assert cli.main(["--credentials", str(path), "create-order", f"{Product.objects.first().pk}:2"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: FooScopeError:")
    assert "orders:write" in error


def test_cli_places_an_order(server, catalogue, tmp_path, capsys):
    new_client = make_client(scopes=SHOP_SCOPES)
    path = write_credentials(tmp_path, credentials(server, new_client))

    sensor, gateway = Product.objects.get(sku="FOO-SENSOR-01"), Product.objects.get(sku="FOO-GATEWAY-01")
    assert cli.main(["--credentials", str(path), "create-order", f"{sensor.pk}:2", str(gateway.pk)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Order ")
    assert "FOO-SENSOR-01" in out and "FOO-GATEWAY-01" in out


def test_cli_token_prints_a_token_the_api_accepts(server, catalogue, tmp_path, capsys):
    new_client = make_client(scopes=SANDBOX_SCOPES)
    path = write_credentials(tmp_path, credentials(server, new_client))
    assert cli.main(["--credentials", str(path), "token"]) == 0
    token = capsys.readouterr().out.strip()
    assert services.introspect_token(token)["client_id"] == new_client.application.client_id


def test_cli_output_to_a_closed_pipe_ends_quietly(server, catalogue, tmp_path, monkeypatch):
    """`python -m foo_sdk products | head -1`: the reader closes the pipe, and the CLI ends with
    status 1 and no traceback, with stdout pointed at /dev/null so that Python's own flush at exit
    writes nothing more to the closed pipe."""
    path = write_credentials(tmp_path, credentials(server, make_client(scopes=SANDBOX_SCOPES)))
    read_end, write_end = os.pipe()
    os.close(read_end)
    closed_pipe = open(write_end, "w")  # noqa: SIM115 (closed below, after the CLI is done with it)
    monkeypatch.setattr(sys, "stdout", closed_pipe)
    try:
        assert cli.main(["--credentials", str(path), "products"]) == 1
        closed_pipe.write("written at exit\n")
        closed_pipe.flush()  # into /dev/null: no BrokenPipeError
        assert os.path.samestat(os.fstat(write_end), os.stat(os.devnull))
    finally:
        closed_pipe.close()


# --- the README shipped in the zip ---------------------------------------------------------------


def test_the_readme_describes_every_key_of_the_credentials_file_and_every_variable():
    readme = (Path(client_module.__file__).parent.parent / "README.md").read_text()
    documents = [
        credentials_document(client_id="id", client_secret=secret, scope="products:read")
        for secret in ("a secret", None)
    ]
    for key in {key for document in documents for key in document} | {"ca_certificate"}:
        assert f"| `{key}` |" in readme, key
    variables = set(re.findall(r"FOO_[A-Z_]+", Path(client_module.__file__).read_text()))
    assert variables >= {"FOO_CLIENT_SECRET", "FOO_SCOPE", "FOO_CA_BUNDLE"}
    for variable in variables:
        assert f"{variable}=" in readme, variable


@pytest.mark.parametrize("readme", ["README.md", "sdkportal/sdk/README.md"])
def test_the_readmes_name_the_folder_of_the_sdk_version_the_zip_holds(readme):
    """The zip unpacks to foo-sdk-<version>/: a README naming another version's folder fails as typed."""
    from sdkportal.sdk.foo_sdk import __version__

    text = (Path(__file__).resolve().parent.parent / readme).read_text()
    named = set(re.findall(r"foo-sdk-(\d+(?:\.\d+)+)", text))
    assert named == {__version__}
