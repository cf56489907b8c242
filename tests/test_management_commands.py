"""Operators manage clients from the command line: create_client, rotate_secret, cleartokens."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.utils import timezone
from oauth2_provider.models import AccessToken

from authserver import services
from authserver.models import Application, AuditEvent
from tests.helpers import issue_token, request_token


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_client_prints_the_credentials_once(client, db):
    output = run("create_client", "--name", "billing")

    application = Application.objects.get(name="billing")
    assert f"client_id:     {application.client_id}" in output
    secret = output.split("client_secret:", 1)[1].split()[0]
    assert secret not in application.client_secret
    assert request_token(client, services.NewClient(application, secret)).status_code == 200
    assert "will not be shown again" in output


def test_create_client_json_with_scope_ttl_and_owner(client, db):
    User.objects.create_user("carol")
    output = run(
        "create_client", "--name", "reports", "--scope", "products:read orders:write", "--token-ttl", "600",
        "--owner", "carol", "--json",
    )  # fmt: skip

    created = json.loads(output)
    assert {"client_id", "client_secret", "scope"} <= set(created)
    assert created["scope"] == "orders:write products:read"
    application = Application.objects.get(client_id=created["client_id"])
    assert application.user.username == "carol"
    assert application.authorization_grant_type == Application.GRANT_CLIENT_CREDENTIALS
    token = request_token(client, services.NewClient(application, created["client_secret"])).json()
    assert token["expires_in"] == 600
    assert AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CREATED).actor == "manage.py create_client"


def test_create_client_defaults_to_the_sandbox_scopes(db):
    created = json.loads(run("create_client", "--name", "x", "--json"))
    assert created["scope"] == "orders:read products:read"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scope", "products:read nope"], "Unknown scope: nope"),
        (["--owner", "ghost"], "No user named 'ghost'"),
        (["--token-ttl", "5"], "greater than or equal to 60"),
    ],
)
def test_create_client_refuses_bad_input(db, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_client", "--name", "x", *args)
    assert not Application.objects.exists()


@pytest.mark.parametrize("name", ["", "   "])
def test_create_client_refuses_a_blank_name(db, name):
    with pytest.raises(CommandError, match="--name must not be blank"):
        run("create_client", "--name", name)
    assert not Application.objects.exists()


def test_rotate_secret_replaces_the_secret(client, new_client):
    output = json.loads(run("rotate_secret", new_client.application.client_id, "--json"))

    assert output["client_id"] == new_client.application.client_id
    assert request_token(client, new_client).status_code == 401
    rotated = services.NewClient(new_client.application, output["client_secret"])
    assert request_token(client, rotated).status_code == 200
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SECRET_ROTATED).count() == 1


def test_rotate_secret_of_an_unknown_client_fails(db):
    with pytest.raises(CommandError, match="No client"):
        run("rotate_secret", "nobody")


def test_cleartokens_removes_expired_tokens(client, new_client):
    issue_token(client, new_client)
    issue_token(client, new_client)
    AccessToken.objects.filter(pk=AccessToken.objects.first().pk).update(
        expires=timezone.now() - timedelta(days=1)
    )
    call_command("cleartokens")
    assert AccessToken.objects.count() == 1


def test_create_client_refuses_an_empty_scope(db):
    # As the console does: a client without scopes gets no token.
    with pytest.raises(CommandError, match="--scope must name at least one scope"):
        run("create_client", "--name", "x", "--scope", " ")
    assert not Application.objects.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size must be 1 or more"),
        (["--batch-size", "-5"], "--batch-size must be 1 or more"),
        (["--pause", "-1"], "--pause must be a number of seconds, 0 or more"),
        (["--pause", "nan"], "--pause must be a number of seconds, 0 or more"),
        (["--pause", "inf"], "--pause must be a number of seconds, 0 or more"),
    ],
)
def test_clear_expired_tokens_refuses_bad_input_before_deleting_anything(new_client, args, message):
    expired = timezone.now() - timedelta(days=1)
    AccessToken.objects.create(application=new_client.application, token="a", expires=expired)
    AccessToken.objects.create(application=new_client.application, token="b", expires=expired)
    with pytest.raises(CommandError, match=message):
        call_command("clear_expired_tokens", "--no-progress", *args, stdout=StringIO())
    assert AccessToken.objects.count() == 2


def test_clear_expired_tokens_interrupted_says_what_it_deleted(new_client, monkeypatch, capsys):
    expired = timezone.now() - timedelta(days=1)
    for token in "abc":
        AccessToken.objects.create(application=new_client.application, token=token, expires=expired)

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("authserver.services.time.sleep", interrupt)
    with pytest.raises(CommandError, match="Interrupted after deleting 2 expired access tokens") as raised:
        call_command("clear_expired_tokens", "--batch-size", "2", "--pause", "1")
    assert raised.value.returncode == 130
    assert AccessToken.objects.count() == 1  # the batch that committed stays deleted


@pytest.mark.parametrize(
    "args, service",
    [
        (["create_client", "--name", "x"], "register_client"),
        (["rotate_secret", "abc"], "find_client"),
        (["clear_expired_tokens"], "clear_expired_tokens"),
        (["bench_load_tokens", "--count", "1"], "register_client"),
    ],
)
def test_an_unreachable_database_is_a_clear_error(db, monkeypatch, args, service):
    def unreachable(*args, **kwargs):
        raise OperationalError('connection to server at "db.example", port 5432 failed: Connection refused')

    monkeypatch.setattr(f"authserver.services.{service}", unreachable)
    with pytest.raises(CommandError, match=r"Database error: connection to server .* Connection refused"):
        run(*args)
