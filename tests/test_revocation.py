"""A client revokes one of its tokens at POST /oauth2/revoke (RFC 7009)."""

import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from authserver import services
from authserver.models import AuditEvent
from tests.helpers import (
    EMPTY_VALUES_BESIDE_A_TOKEN,
    FORM,
    HttpsClient,
    basic,
    issue_token,
    make_client,
    post_form,
    stored_token,
)


def revoke(http, new_client, **params):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    return post_form(http, "/oauth2/revoke", params, **credentials)


def test_a_client_revokes_its_own_token(client, new_client):
    token = issue_token(client, new_client)

    response = revoke(client, new_client, token=token, token_type_hint="access_token")

    assert response.status_code == 200
    assert response.content == b""
    assert "Content-Type" not in response  # no JSON to announce
    assert response["Cache-Control"] == "no-store"
    assert services.introspect_token(token) == {"active": False}
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_REVOKED)
    assert event.application == new_client.application
    assert event.actor == f"client:{new_client.application.client_id}"


def test_revoking_with_client_secret_post_works(client, new_client):
    token = issue_token(client, new_client)
    params = {
        "token": token,
        "client_id": new_client.application.client_id,
        "client_secret": new_client.client_secret,
    }
    assert post_form(client, "/oauth2/revoke", params).status_code == 200
    assert services.introspect_token(token) == {"active": False}


def test_an_unknown_token_is_answered_200(client, new_client):
    response = revoke(client, new_client, token="never-issued")
    assert response.status_code == 200
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_REVOKED).exists()


def test_a_client_cannot_revoke_another_clients_token(client, new_client):
    """RFC 7009 2.1: the request is refused and the client is told (an RFC 6749 5.2 error)."""
    victim = make_client(name="victim")
    token = issue_token(client, victim)

    response = revoke(client, new_client, token=token)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.json() == {
        "error": "unauthorized_client",
        "error_description": "This token was not issued to this client.",
    }
    assert services.introspect_token(token)["active"] is True
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_REVOKED).exists()
    # The victim itself still can.
    assert revoke(client, victim, token=token).status_code == 200
    assert services.introspect_token(token) == {"active": False}


def test_a_token_that_is_no_longer_there_is_no_error(client, new_client):
    """RFC 7009 2.2: an invalid token (already revoked, or never issued) is answered 200."""
    token = issue_token(client, new_client)
    assert revoke(client, new_client, token=token).status_code == 200
    assert revoke(client, new_client, token=token).status_code == 200
    assert revoke(client, new_client, token="never-issued").status_code == 200


@pytest.mark.parametrize("whose", ["its own", "another client's"])
def test_an_expired_token_is_an_invalid_token_answered_200(client, new_client, monkeypatch, whose):
    """RFC 7009 2.2: a token that has expired is invalid, whoever it was issued to: 200 with
    nothing revoked (the same answer as once clear_expired_tokens has deleted it), no audit event."""
    owner = new_client if whose == "its own" else make_client(name="other")
    token = issue_token(client, owner)
    expires = stored_token(token).expires
    monkeypatch.setattr(timezone, "now", lambda: expires)

    response = revoke(client, new_client, token=token)

    assert response.status_code == 200
    assert response.content == b""
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_REVOKED).exists()


def test_revocation_needs_client_authentication(client, new_client):
    token = issue_token(client, new_client)
    response = post_form(client, "/oauth2/revoke", {"token": token})

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response["WWW-Authenticate"].startswith("Basic")
    assert services.introspect_token(token)["active"] is True


def test_a_wrong_secret_is_invalid_client(client, new_client):
    token = issue_token(client, new_client)
    wrong = services.NewClient(new_client.application, "wrong")
    response = revoke(client, wrong, token=token)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_a_missing_token_is_invalid_request(client, new_client):
    response = revoke(client, new_client)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("repeated", ["token", "token_type_hint", "client_id", "client_secret"])
def test_a_repeated_parameter_is_invalid_request_and_revokes_nothing(client, new_client, repeated):
    """RFC 6749 3.2, which RFC 7009 2.1 follows: each parameter at most once."""
    first, second = issue_token(client, new_client), issue_token(client, new_client)
    pairs = {
        "token": [("token", first), ("token", second)],
        "token_type_hint": [("token", first)] + [("token_type_hint", "access_token")] * 2,
        # client_secret_post with one of its two credentials sent twice
        "client_id": [("token", first)] + [("client_id", new_client.application.client_id)] * 2,
        "client_secret": [("token", first)] + [("client_secret", new_client.client_secret)] * 2,
    }[repeated]
    if repeated == "client_id":
        pairs.append(("client_secret", new_client.client_secret))
    if repeated == "client_secret":
        pairs.append(("client_id", new_client.application.client_id))
    credentials = (
        {}
        if repeated.startswith("client_")
        else basic(new_client.application.client_id, new_client.client_secret)
    )

    response = post_form(client, "/oauth2/revoke", pairs, **credentials)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response["Cache-Control"] == "no-store"
    assert services.introspect_token(first)["active"] is True
    assert services.introspect_token(second)["active"] is True


@pytest.mark.parametrize("extra", EMPTY_VALUES_BESIDE_A_TOKEN)
def test_a_parameter_sent_without_a_value_is_treated_as_omitted(client, new_client, extra):
    """RFC 6749 3.2 (RFC 7009 2.1): an empty value is no second token, hint or client_secret."""
    token = issue_token(client, new_client)
    credentials = basic(new_client.application.client_id, new_client.client_secret)

    response = post_form(client, "/oauth2/revoke", [("token", token), *extra], **credentials)

    assert response.status_code == 200, response.content
    assert services.introspect_token(token) == {"active": False}


def test_a_token_without_a_value_is_a_missing_token(client, new_client):
    response = revoke(client, new_client, token="")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("hint", ["refresh_token", "access_token", "no_such_type"])
def test_the_token_type_hint_is_only_a_hint(client, new_client, hint):
    """RFC 7009 2.1: a token not found under its hint is searched for under every type: an access
    token sent as a refresh token (which this server does not issue) is revoked all the same."""
    token = issue_token(client, new_client)

    response = revoke(client, new_client, token=token, token_type_hint=hint)

    assert response.status_code == 200, response.content
    assert services.introspect_token(token) == {"active": False}


def test_an_unknown_token_under_any_hint_is_revoked_already(client, new_client):
    """RFC 7009 2.2: an invalid token is no error, whatever type the client thought it was."""
    response = revoke(client, new_client, token="x", token_type_hint="refresh_token")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("params", "secret", "status", "error"),
    [({}, None, 400, "invalid_request"), ({"token": "x"}, "wrong", 401, "invalid_client")],
)
def test_an_error_answers_with_rfc_6749s_members_only(client, new_client, params, secret, status, error):
    """RFC 7009 2.2.1 answers with RFC 6749 5.2's error response, which holds no `state`."""
    credentials = basic(new_client.application.client_id, secret or new_client.client_secret)
    response = post_form(client, "/oauth2/revoke", {**params, "state": "echoed?"}, **credentials)

    assert response.status_code == status
    assert response.json()["error"] == error
    assert set(response.json()) <= {"error", "error_description", "error_uri"}


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_only_post_is_allowed(client, db, method):
    response = getattr(client, method)("/oauth2/revoke?token=abc")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_a_json_body_is_invalid_request(client, new_client):
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    response = client.post("/oauth2/revoke", {"token": "x"}, content_type="application/json", **credentials)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("query", ["?x=1", "?%zz", "?token=%g0"])
def test_a_query_string_is_invalid_request_and_revokes_nothing(client, new_client, query):
    """RFC 6749 3.2, as at the token endpoint; oauthlib raised on a malformed percent-escape (a 500)."""
    token = issue_token(client, new_client)
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    response = client.post("/oauth2/revoke" + query, f"token={token}", content_type=FORM, **credentials)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert services.introspect_token(token)["active"] is True


@pytest.mark.skipif(connection.vendor != "sqlite", reason="PostgreSQL flushes every such commit itself")
def test_on_sqlite_a_revocation_is_on_disk_before_it_is_answered(transactional_db, client, monkeypatch):
    # SQLite's WAL with synchronous=NORMAL leaves a commit in the page cache, where a power loss
    # would undo it. A revocation's WAL is flushed once it has committed, before the answer.
    new_client = make_client(scopes=["products:read"])
    token = issue_token(client, new_client)
    wal = Path(f"{connection.settings_dict['NAME']}-wal").resolve()
    real_fsync, flushed = os.fsync, []

    def fsync(descriptor):
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        if path == wal:
            with sqlite3.connect(connection.settings_dict["NAME"]) as another:  # what is committed
                flushed.append(
                    another.execute("SELECT COUNT(*) FROM oauth2_provider_accesstoken").fetchone()[0]
                )
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    issue_token(client, new_client)
    assert flushed == []  # issuing a token takes no access away: not flushed (a lost token fails closed)

    credentials = basic(new_client.application.client_id, new_client.client_secret)
    response = post_form(client, "/oauth2/revoke", {"token": token}, **credentials)

    assert response.status_code == 200
    assert flushed == [1]  # once, after the revocation committed (one of the two tokens left)

    services.set_client_enabled(application=new_client.application, enabled=False, actor="tests")
    assert flushed == [1, 1]


def test_two_revocations_at_once_write_one_event(transactional_db, monkeypatch):
    """Two revocations of one token at once, each with its own connection (a retried request, an
    operator's beside the client's own): both found the token, and each wrote a token_revoked
    event. Only the one that deleted it records it; the other is still answered 200 (RFC 7009 2.2)."""
    new_client = make_client(scopes=["products:read"])
    token = issue_token(HttpsClient(), new_client)
    # Each revocation, once it has read the token, waits for the other to read it too.
    both_read = threading.Barrier(2, timeout=5)
    revoke_token = services.revoke_token

    def read_then_wait(**what):
        with suppress(threading.BrokenBarrierError):
            both_read.wait()
        return revoke_token(**what)

    monkeypatch.setattr(services, "revoke_token", read_then_wait)

    def revoke_at_once(_) -> int:
        try:
            return revoke(HttpsClient(), new_client, token=token).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(revoke_at_once, range(2)))

    assert statuses == [200, 200]
    assert services.introspect_token(token) == {"active": False}
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_REVOKED).count() == 1


def test_a_revocation_after_another_deleted_the_token_records_nothing(client, new_client, monkeypatch):
    """The token read, then revoked by an operator before this revocation's delete: one event, the
    operator's, and the service says it revoked nothing."""
    token = issue_token(client, new_client)
    token_id = stored_token(token).pk
    revoke_token = services.revoke_token

    def revoked_meanwhile(*, token, **what):
        revoke_token(token=type(token).objects.get(pk=token.pk), actor="user:olivia")
        return revoke_token(token=token, **what)

    monkeypatch.setattr(services, "revoke_token", revoked_meanwhile)
    revoked = services.revoke_presented_token(
        token=token, application=new_client.application, actor="client:x"
    )

    assert revoked is False
    events = AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_REVOKED)
    assert [(event.actor, event.detail["token_id"]) for event in events] == [("user:olivia", token_id)]
