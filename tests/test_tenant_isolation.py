"""One client cannot reach another's things: its orders, its tokens, its registration, or token
metadata it holds no `introspection` scope for."""

import json

import pytest

from fooapi.models import Order
from fooapi.services import seed_demo_catalogue
from tests.helpers import basic, bearer, issue_token, make_client, post_form

ORDER_SCOPES = ["products:read", "orders:read", "orders:write"]


@pytest.fixture
def tenants(client, db):
    """Two clients, `alice` and `mallory`, each with a token and an order of its own."""
    seed_demo_catalogue()
    tenants = {}
    for name in ("alice", "mallory"):
        new_client = make_client(scopes=ORDER_SCOPES, name=name)
        token = issue_token(client, new_client)
        product = client.get("/api/v1/products", **bearer(token)).json()["results"][0]["id"]
        placed = client.post(
            "/api/v1/orders",
            json.dumps({"lines": [{"product": product, "quantity": 2}]}),
            content_type="application/json",
            **bearer(token),
        )
        assert placed.status_code == 201, placed.content
        tenants[name] = {"client": new_client, "token": token, "order": placed.json()["id"]}
    return tenants


def introspect(http, token: str) -> dict:
    resource_server = make_client(scopes=["introspection"], name="resource server")
    credentials = basic(resource_server.application.client_id, resource_server.client_secret)
    return post_form(http, "/oauth2/introspect", {"token": token}, **credentials).json()


# --- orders ------------------------------------------------------------------------------------------


def test_a_client_lists_only_its_own_orders(client, tenants):
    alice, mallory = tenants["alice"], tenants["mallory"]
    for query in (
        "",
        f"?client={alice['client'].application.pk}",
        f"?client_id={alice['client'].application.client_id}",
    ):
        listed = client.get(f"/api/v1/orders{query}", **bearer(mallory["token"])).json()
        assert [order["id"] for order in listed["results"]] == [mallory["order"]]


def test_another_clients_order_is_not_there(client, tenants):
    alice, mallory = tenants["alice"], tenants["mallory"]
    for path in (f"/api/v1/orders/{alice['order']}", f"/api/v1/orders/{alice['order']}/"):
        response = client.get(path, **bearer(mallory["token"]))
        assert response.status_code == 404  # not 403: whether the order exists is not told
        assert response.json()["error"] == "not_found"
    assert client.get(f"/api/v1/orders/{alice['order']}", **bearer(alice["token"])).status_code == 200


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_another_clients_order_cannot_be_changed(client, tenants, method):
    alice, mallory = tenants["alice"], tenants["mallory"]
    before = Order.objects.get(pk=alice["order"])
    response = getattr(client, method)(
        f"/api/v1/orders/{alice['order']}",
        json.dumps({"status": "cancelled", "lines": []}),
        content_type="application/json",
        **bearer(mallory["token"]),
    )
    assert response.status_code in {404, 405}
    assert response["Content-Type"] == "application/json"
    after = Order.objects.get(pk=alice["order"])
    assert (after.status, after.total, after.client_id) == (before.status, before.total, before.client_id)


def test_an_order_placed_is_the_placing_clients(client, tenants):
    mallory = tenants["mallory"]
    order = Order.objects.get(pk=mallory["order"])
    assert order.client == mallory["client"].application


# --- tokens ------------------------------------------------------------------------------------------


def test_revoking_another_clients_token_is_refused_and_does_nothing(client, tenants):
    alice, mallory = tenants["alice"], tenants["mallory"]
    mallory_credentials = basic(mallory["client"].application.client_id, mallory["client"].client_secret)

    response = post_form(client, "/oauth2/revoke", {"token": alice["token"]}, **mallory_credentials)

    # RFC 7009 2.1: the token was not issued to the client asking, so the request is refused.
    assert (response.status_code, response.json()["error"]) == (400, "unauthorized_client")
    assert introspect(client, alice["token"])["active"] is True
    assert client.get("/api/v1/orders", **bearer(alice["token"])).status_code == 200


def test_introspection_needs_the_introspection_scope(client, tenants):
    alice, mallory = tenants["alice"], tenants["mallory"]
    as_client = post_form(
        client,
        "/oauth2/introspect",
        {"token": alice["token"]},
        **basic(mallory["client"].application.client_id, mallory["client"].client_secret),
    )
    with_token = post_form(
        client, "/oauth2/introspect", {"token": alice["token"]}, **bearer(mallory["token"])
    )

    # RFC 7662 2.3: 401 for a bearer token without the privileges; 403 for a client with its secret.
    for response, status in ((as_client, 403), (with_token, 401)):
        assert response.status_code == status, response.content
        body = response.json()
        assert body["error"] == "insufficient_scope"
        assert "active" not in body and alice["client"].application.client_id not in response.content.decode()


def test_a_token_with_too_few_scopes_reaches_nothing_more(client, tenants):
    reader = make_client(scopes=["products:read"], name="reader")
    token = issue_token(client, reader)
    response = client.get("/api/v1/orders", **bearer(token))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert "orders:read" in response["WWW-Authenticate"]


# --- registrations (RFC 7592) ----------------------------------------------------------------------


@pytest.fixture
def registrations(client, db):
    """Two dynamically registered clients, each with its registration access token."""
    registrar = make_client(scopes=["registration"], name="registrar")
    initial_access_token = issue_token(client, registrar)
    registered = {}
    for name in ("alice", "mallory"):
        response = client.post(
            "/oauth2/register",
            {"client_name": name, "scope": "products:read"},
            content_type="application/json",
            **bearer(initial_access_token),
        )
        assert response.status_code == 201
        registered[name] = response.json()
    registered["initial_access_token"] = initial_access_token
    return registered


def test_a_registration_token_reaches_only_its_own_client(client, registrations):
    alice, mallory = registrations["alice"], registrations["mallory"]
    path = f"/oauth2/register/{alice['client_id']}"
    mallory_token = bearer(mallory["registration_access_token"])
    change = {
        "client_id": alice["client_id"],
        "client_name": "taken over",
        "scope": "products:read orders:read",
    }

    reads = client.get(path, **mallory_token)
    changes = client.put(path, json.dumps(change), content_type="application/json", **mallory_token)
    deletes = client.delete(path, **mallory_token)

    for response in (reads, changes, deletes):
        assert response.status_code == 401, response.content
        assert response.json()["error"] == "invalid_token"
        assert alice["client_secret"] not in response.content.decode()
    own = client.get(path, **bearer(alice["registration_access_token"]))
    assert own.status_code == 200
    assert own.json()["client_name"] == "alice"
    assert own.json()["scope"] == "products:read"


@pytest.mark.parametrize("credential", ["access token", "initial access token"])
def test_other_tokens_cannot_manage_a_registration(client, registrations, credential):
    """RFC 6750 3.1: neither holds the registration access token's scope (RFC 7592 2)."""
    alice = registrations["alice"]
    if credential == "access token":
        token = post_form(
            client,
            "/oauth2/token",
            {"grant_type": "client_credentials"},
            **basic(alice["client_id"], alice["client_secret"]),
        ).json()["access_token"]
    else:
        token = registrations["initial_access_token"]

    response = client.get(f"/oauth2/register/{alice['client_id']}", **bearer(token))

    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert alice["client_secret"] not in response.content.decode()


def test_a_registration_token_is_no_access_token(client, registrations):
    alice = registrations["alice"]
    response = client.get("/api/v1/products", **bearer(alice["registration_access_token"]))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    as_secret = post_form(
        client,
        "/oauth2/token",
        {"grant_type": "client_credentials"},
        **basic(alice["client_id"], alice["registration_access_token"]),
    )
    assert as_secret.status_code == 401
