"""An operator deactivates a user account in the management console: the clients the user owns (their
portal sandbox client, clients registered for them) stop at once, credentials and tokens, and stay
stopped when the account is active again, until an operator enables each one."""

import html
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone
from oauth2_provider.models import AccessToken

from authserver import services
from authserver.models import Application, AuditEvent
from sdkportal import services as portal_services
from sdkportal.models import SandboxClient
from tests.helpers import HttpsClient, bearer, issue_token, make_client, post_form, request_token

USERS = "/admin/auth/user/"
CLIENTS = "/admin/authserver/application/"
PASSWORD = "correct horse battery staple"
PORTAL_ACTIONS = ["/portal/download", "/portal/app/tokens", "/portal/app/rotate-secret", "/portal/app/delete"]


@pytest.fixture(autouse=True)
def _no_live_catalogue(settings, tmp_path):
    """The portal has no API client of its own here: no page calls another server."""
    settings.PORTAL_CLIENT_ID = settings.PORTAL_CLIENT_SECRET = ""
    settings.PORTAL_CREDENTIALS_FILE = tmp_path / "portal_client.json"


@pytest.fixture
def console(db):
    """A superuser's console: only superusers manage users (the operators group does not)."""
    http = HttpsClient()
    http.force_login(get_user_model().objects.create_superuser("root", password=PASSWORD))
    return http


@pytest.fixture
def developer(db):
    return get_user_model().objects.create_user("dana", "dana@example.com", PASSWORD)


@pytest.fixture
def sandbox(developer) -> portal_services.Delivery:
    """The developer's portal sandbox client, as their first Download SDK made it: secret and token."""
    return portal_services.download_sdk(developer=developer, remote_addr="127.0.0.1")


def user_form(user, **overrides) -> dict:
    """The user's change form as the console shows it; a None override leaves the field out (an
    unchecked checkbox)."""
    joined = timezone.localtime(user.date_joined)
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on" if user.is_active else None,
        "is_staff": "on" if user.is_staff else None,
        "is_superuser": "on" if user.is_superuser else None,
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
    }
    return {key: value for key, value in {**data, **overrides}.items() if value is not None}


def set_active(console, user, active: bool, **changes):
    """The operator ticks or unticks "Active" on the user's page (and changes `changes`), and saves."""
    user.refresh_from_db()
    form = user_form(user, is_active="on" if active else None, **changes)
    response = console.post(f"{USERS}{user.pk}/change/", form, follow=True)
    assert response.status_code == 200, response.content
    assert response.redirect_chain, html.unescape(response.content.decode())[:2000]  # saved, not refused
    return response


def messages_on(response) -> list[str]:
    """The console's messages on the page, as text (links reduced to their text)."""
    listed = re.search(r'<ul class="messagelist">(.*?)</ul>', response.content.decode(), re.S)
    shown = re.findall(r'<li class="\w+">(.*?)</li>', listed.group(1), re.S) if listed else []
    return [html.unescape(re.sub(r"<[^>]+>", "", message)) for message in shown]


def introspect(http, token: str) -> dict:
    resource_server = make_client(scopes=["introspection"], name="resource server")
    response = post_form(
        http, "/oauth2/introspect", {"token": token}, **bearer(issue_token(http, resource_server))
    )
    assert response.status_code == 200, response.content
    return response.json()


def assert_invalid_client(response) -> None:
    """RFC 6749 5.2: 401 and the JSON error, as for a wrong secret."""
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "invalid_client"
    assert response["Cache-Control"] == "no-store"


def sandbox_credentials(delivery: portal_services.Delivery) -> services.NewClient:
    return services.NewClient(Application.objects.get(client_id=delivery.client_id), delivery.client_secret)


def api_status(http, token: str) -> int:
    return http.get("/api/v1/products", **bearer(token)).status_code


def test_deactivating_a_developer_stops_the_clients_they_own_at_once(console, developer, sandbox):
    portal_client = sandbox_credentials(sandbox)
    registered_for_them = make_client(name="Dana's billing", owner=developer)  # create_client --owner
    already_disabled = make_client(name="Dana's old app", owner=developer, enabled=False)
    someone_elses = make_client(name="Someone else's app")
    tokens = {
        "portal": sandbox.token.access_token,
        "registered": issue_token(console, registered_for_them),
        "someone else's": issue_token(console, someone_elses),
    }
    for token in tokens.values():  # each looked up, and remembered by this worker
        assert api_status(console, token) == 200
        assert introspect(console, token)["active"] is True

    response = set_active(console, developer, False, first_name="Dana")

    developer.refresh_from_db()
    assert (developer.is_active, developer.first_name) == (False, "Dana")  # the rest of the form too
    for owned in (portal_client, registered_for_them):
        assert_invalid_client(request_token(console, owned))
    for token in (tokens["portal"], tokens["registered"]):
        assert introspect(console, token) == {"active": False}
        assert api_status(console, token) == 401
    disabled = AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CHANGED).order_by("application_id")
    assert [(event.application, event.actor, event.remote_addr, event.detail) for event in disabled] == [
        (client.application, "user:root", "127.0.0.1", {"changed": ["enabled"], "enabled": False})
        for client in sorted((portal_client, registered_for_them), key=lambda client: client.application.pk)
    ]
    # Someone else's client, and the client that was disabled already, are as they were.
    assert request_token(console, someone_elses).status_code == 200
    assert api_status(console, tokens["someone else's"]) == 200
    assert introspect(console, tokens["someone else's"])["active"] is True
    assert set(Application.objects.filter(enabled=False)) == {
        portal_client.application,
        registered_for_them.application,
        already_disabled.application,
    }
    assert (
        "“dana” is deactivated. Disabled 2 clients they own: the token endpoint refuses them and "
        "their tokens no longer work." in messages_on(response)
    )
    account = AuditEvent.objects.get(kind=AuditEvent.Kind.USER_DEACTIVATED)
    assert (account.application, account.client_id, account.actor, account.remote_addr, account.detail) == (
        None,
        "",
        "user:root",
        "127.0.0.1",
        {"user_id": developer.pk, "username": "dana", "clients_disabled": 2},
    )
    trail = console.get(f"/admin/authserver/auditevent/?kind__exact={account.kind}")
    assert trail.status_code == 200 and "user account deactivated" in trail.content.decode()
    assert console.get(f"/admin/authserver/auditevent/{account.pk}/change/").status_code == 200


def test_a_user_who_owns_no_enabled_client_is_deactivated_with_a_word_saying_so(console, developer):
    make_client(name="Someone else's app")

    response = set_active(console, developer, False)

    assert "“dana” is deactivated. They own no enabled client to disable." in messages_on(response)
    assert not get_user_model().objects.get(pk=developer.pk).is_active
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CHANGED).exists()
    assert Application.objects.get().enabled


def test_activating_the_user_again_leaves_their_clients_disabled(console, developer, sandbox):
    portal_client = sandbox_credentials(sandbox)
    edited = set_active(console, developer, True, email="dana@example.org")  # "Active" untouched
    assert not [message for message in messages_on(edited) if "client" in message]
    set_active(console, developer, False)

    response = set_active(console, developer, True)

    assert get_user_model().objects.get(pk=developer.pk).is_active
    assert not Application.objects.get(pk=portal_client.application.pk).enabled
    assert_invalid_client(request_token(console, portal_client))
    assert introspect(console, sandbox.token.access_token) == {"active": False}
    changes = AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CHANGED)
    assert [event.detail["enabled"] for event in changes] == [False]
    accounts = AuditEvent.objects.filter(kind__startswith="user_").order_by("pk")
    assert [(event.kind, event.actor, event.detail) for event in accounts] == [
        (
            "user_deactivated",
            "user:root",
            {"user_id": developer.pk, "username": "dana", "clients_disabled": 1},
        ),
        ("user_activated", "user:root", {"user_id": developer.pk, "username": "dana"}),
    ]  # not for the save that left "Active" as it was
    assert (
        "“dana” is active again. Their disabled clients stay disabled until an operator enables each "
        "on its page, after review: SDK sandbox of dana." in messages_on(response)
    )
    client_page = (
        f'<a href="{CLIENTS}{portal_client.application.pk}/change/"><bdi>SDK sandbox of dana</bdi></a>'
    )
    assert client_page in response.content.decode()

    # The operator's deliberate way back: the client's own Enable.
    console.post(f"{CLIENTS}{portal_client.application.pk}/enable/")
    assert request_token(console, portal_client).status_code == 200


def test_a_deactivated_developer_signed_in_to_the_portal_can_do_nothing_more(console, developer):
    portal = HttpsClient()
    portal.force_login(developer)
    delivered = portal.post("/portal/download")
    assert delivered.status_code == 200
    token = re.search(r'<code id="access-token">([^<]+)</code>', delivered.content.decode()).group(1)
    tokens_before = AccessToken.objects.count()

    set_active(console, developer, False)

    # Their session no longer signs them in (ModelBackend.get_user refuses an inactive user).
    for path in ["/portal/app/", *PORTAL_ACTIONS]:
        response = portal.get(path) if path == "/portal/app/" else portal.post(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/accounts/login/"), path
    assert AccessToken.objects.count() == tokens_before
    assert SandboxClient.objects.filter(developer=developer).exists()  # not deleted by the POST
    assert api_status(portal, token) == 401


def test_a_developer_deactivated_while_their_portal_action_waited_gets_nothing(console, developer):
    """Their request read them (active) before the deactivation committed; the portal then locks
    them and finds them deactivated: no client is registered for them, no token handed out."""
    as_their_request_read_them = get_user_model().objects.get(pk=developer.pk)

    set_active(console, developer, False)

    with pytest.raises(portal_services.PortalError, match="deactivated"):
        portal_services.download_sdk(developer=as_their_request_read_them, remote_addr="127.0.0.1")
    assert not Application.objects.filter(user=developer).exists()
    assert not AccessToken.objects.exists()


def test_the_service_deactivates_and_activates_without_enabling_anything(developer, sandbox):
    """What the console does, callable from a shell or a command: it returns how many clients it disabled."""
    assert services.set_user_active(user=developer, active=False, actor="tests") == 1
    assert services.set_user_active(user=developer, active=False, actor="tests") == 0
    assert services.set_user_active(user=developer, active=True, actor="tests") == 0

    assert get_user_model().objects.get(pk=developer.pk).is_active
    assert not Application.objects.get(user=developer).enabled
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CHANGED, actor="tests").count() == 1


def test_a_client_of_a_deactivated_account_is_not_enabled_again_nor_given_to_one(console, developer, sandbox):
    """Its owner's account ended, the client stays disabled: enabling it (console action, client
    form), registering an enabled client for the account, or handing an enabled client to it is
    refused until the account is active again."""
    portal_client = sandbox_credentials(sandbox).application
    set_active(console, developer, False)

    enabling = console.post(f"{CLIENTS}{portal_client.pk}/enable/", {"post": "yes"}, follow=True)
    assert any("The owner's account is deactivated" in message for message in messages_on(enabling))
    assert not Application.objects.get(pk=portal_client.pk).enabled
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CHANGED, detail__enabled=True).exists()

    with pytest.raises(ValidationError, match="deactivated"):
        services.register_client(name="For dana", scopes=["products:read"], actor="tests", owner=developer)
    assert not Application.objects.filter(name="For dana").exists()
    someone_elses = make_client(name="Someone else's app").application
    someone_elses.user = developer
    with pytest.raises(ValidationError, match="deactivated"):
        services.update_client(application=someone_elses, changed_fields=["user"], actor="tests")
    assert Application.objects.get(pk=someone_elses.pk).user is None

    set_active(console, developer, True)
    console.post(f"{CLIENTS}{portal_client.pk}/enable/", {"post": "yes"})
    assert Application.objects.get(pk=portal_client.pk).enabled


def test_a_portal_sandbox_client_is_not_given_to_another_owner(console, developer, sandbox):
    """The portal manages a sandbox client for its developer (their secret, their test tokens), and
    their account's deactivation or deletion stops it with them: given to another owner, or to none,
    in the console, it kept working for the developer after their account was deactivated."""
    portal_client = sandbox_credentials(sandbox)
    client = portal_client.application
    someone = get_user_model().objects.create_user("sam", password=PASSWORD)
    form = {
        "name": client.name,
        "scopes": [scope.pk for scope in client.allowed_scopes.all()],
        "access_token_lifetime": client.access_token_lifetime or "",
        "enabled": "on",
    }

    for owner in ("sam", ""):
        refused = console.post(f"{CLIENTS}{client.pk}/change/", {**form, "user": owner})
        assert refused.status_code == 200
        assert "portal sandbox client of “dana”" in str(refused.context["adminform"].form.errors["user"])
        assert Application.objects.get(pk=client.pk).user == developer
    renamed = console.post(
        f"{CLIENTS}{client.pk}/change/", {**form, "user": "dana", "name": "Dana's sandbox"}
    )
    assert renamed.status_code == 302  # the rest of the form is saved as before

    set_active(console, developer, False)
    assert_invalid_client(request_token(console, portal_client))
    assert not Application.objects.filter(user=someone).exists()


def test_a_user_deactivated_outside_the_console_takes_their_clients_with_them(developer, sandbox):
    """`user.is_active = False; user.save()` in a shell, or any form but the console's: the token
    endpoint, which does not look at owners, went on serving their clients."""
    portal_client = sandbox_credentials(sandbox)
    http = HttpsClient()
    assert api_status(http, sandbox.token.access_token) == 200  # looked up, and remembered
    user = get_user_model().objects.get(pk=developer.pk)

    user.is_active = False
    user.save()

    assert_invalid_client(request_token(http, portal_client))
    assert api_status(http, sandbox.token.access_token) == 401
    assert introspect(http, sandbox.token.access_token) == {"active": False}
    account = {"user_id": developer.pk, "username": "dana"}
    disabled = [
        ("client_changed", services.UNATTRIBUTED, {"changed": ["enabled"], "enabled": False}),
        ("user_deactivated", services.UNATTRIBUTED, {**account, "clients_disabled": 1}),
    ]
    trail = AuditEvent.objects.filter(kind__in=["client_changed", "user_deactivated", "user_activated"])
    assert [(event.kind, event.actor, event.detail) for event in trail.order_by("pk")] == disabled

    user.first_name = "Dana"
    user.save()  # "Active" as it was: nothing follows
    user.is_active = True
    user.save()

    assert not Application.objects.get(pk=portal_client.application.pk).enabled
    assert [(event.kind, event.actor, event.detail) for event in trail.order_by("pk")] == [
        *disabled,
        ("user_activated", services.UNATTRIBUTED, account),
    ]


def test_the_service_and_the_console_deactivate_once_not_again_through_the_save(console, developer, sandbox):
    """set_user_active writes the account itself: the receivers that follow any other save do not
    disable the clients or record the account's event a second time."""
    services.set_user_active(user=developer, active=False, actor="tests")
    services.set_user_active(user=developer, active=True, actor="tests")
    set_active(console, developer, False)

    assert [
        (event.kind, event.actor)
        for event in AuditEvent.objects.filter(kind__startswith="user_").order_by("pk")
    ] == [("user_deactivated", "tests"), ("user_activated", "tests"), ("user_deactivated", "user:root")]
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CHANGED).count() == 1


def test_a_sign_in_saves_the_user_with_no_query_more(developer, django_assert_num_queries):
    with django_assert_num_queries(1):
        developer.save(update_fields=["last_login"])
