"""The audit trail: what happened to each client and its credentials, when, by whom, from where;
recorded by the services and the token endpoint, read-only in the console."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from authserver import services
from authserver.models import Application, AuditEvent, Scope
from tests.helpers import (
    HttpsClient,
    basic,
    issue_token,
    make_client,
    post_form,
    request_token,
    stored_token,
)

AUDIT = "/admin/authserver/auditevent/"
CLIENTS = "/admin/authserver/application/"


def kinds(**filters) -> list[str]:
    return list(AuditEvent.objects.filter(**filters).order_by("created", "pk").values_list("kind", flat=True))


def test_a_token_issued_is_recorded_with_client_scope_and_address(client, new_client):
    issue_token(client, new_client, scope="products:read")

    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_ISSUED)
    assert event.application == new_client.application
    assert event.client_id == new_client.application.client_id
    assert event.actor == f"client:{new_client.application.client_id}"
    assert event.remote_addr == "127.0.0.1"
    assert event.detail == {"scope": "products:read", "expires_in": 3600}


@pytest.mark.parametrize("actor", ["admin:root", "developer:olivia", ""])
def test_a_client_cannot_name_the_actor_of_its_own_token(client, new_client, actor):
    """An unknown form parameter is ignored (RFC 6749 3.2), even one named like the request
    attribute the portal sets for a token asked for by a developer."""
    issue_token(client, new_client, actor=actor)

    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_ISSUED)
    assert event.actor == f"client:{new_client.application.client_id}"


@pytest.mark.parametrize("name", ["user", "client", "unsaved_access_token", "oauth2_error", "scopes"])
def test_other_parameters_named_like_request_attributes_are_ignored(client, new_client, name):
    token = issue_token(client, new_client, **{name: "x"})

    stored = stored_token(token)
    assert (stored.application, stored.user) == (new_client.application, None)
    assert stored.scope == "orders:read products:read"  # the client's scopes, none named "x"
    assert AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_ISSUED).application == new_client.application


def test_a_token_asked_for_by_its_owner_names_the_owner(new_client):
    token = services.issue_token_for_owner(
        application=new_client.application, scopes=["products:read"], actor="developer:olivia"
    )

    assert token["access_token"]
    assert AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_ISSUED).actor == "developer:olivia"


def test_issuing_a_token_writes_one_audit_row_and_nothing_else(client, new_client):
    """The audit trail costs the token endpoint one INSERT, written with the token's own (in one
    statement on PostgreSQL, in one transaction on SQLite)."""
    request_token(client, new_client)  # warm up: caches, lazily loaded settings
    with CaptureQueriesContext(connection) as queries:
        assert request_token(client, new_client).status_code == 200

    statements = [query["sql"] for query in queries.captured_queries]
    inserts = [part for sql in statements for part in sql.split("INSERT INTO ")[1:]]
    assert len(inserts) == 2, statements
    assert sum(part.startswith(f'"{AuditEvent._meta.db_table}"') for part in inserts) == 1
    assert not any(sql.lstrip().upper().startswith(("UPDATE", "DELETE")) for sql in statements)


def test_failed_client_authentication_is_recorded_for_known_and_unknown_client_ids(client, new_client):
    application = new_client.application
    post_form(
        client, "/oauth2/token", {"grant_type": "client_credentials"}, **basic(application.client_id, "wrong")
    )
    post_form(client, "/oauth2/token", {"grant_type": "client_credentials"}, **basic("no-such-client", "x"))

    known, unknown = AuditEvent.objects.filter(kind=AuditEvent.Kind.AUTH_FAILED).order_by("pk")
    assert (known.application, known.client_id, known.remote_addr) == (
        application,
        application.client_id,
        "127.0.0.1",
    )
    assert (unknown.application, unknown.client_id) == (None, "no-such-client")


def test_a_revocation_by_the_client_is_recorded(client, new_client):
    token = issue_token(client, new_client)

    response = post_form(
        client,
        "/oauth2/revoke",
        {"token": token},
        **basic(new_client.application.client_id, new_client.client_secret),
    )

    assert response.status_code == 200
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_REVOKED)
    assert event.actor == f"client:{new_client.application.client_id}"
    assert event.detail["scope"] == "orders:read products:read"


def test_a_client_life_in_the_console_leaves_a_complete_trail(console):
    products = Scope.objects.get(name="products:read")
    registered = console.post(
        CLIENTS + "add/",
        {
            "form_id": "life-form",
            "name": "Life",
            "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
            "scopes": [products.pk],
            "enabled": "on",
        },
    )
    application = Application.objects.get(name="Life")
    secret = registered.content.decode().split('id="client-secret">')[1]
    issue_token(console, services.NewClient(application, secret.split("<")[0]))
    console.post(
        f"{CLIENTS}{application.pk}/change/",
        {"name": "Life, renamed", "scopes": [products.pk], "enabled": "on"},
    )
    console.post(f"{CLIENTS}{application.pk}/rotate-secret/", {"form_id": "rotation"})
    console.post(f"{CLIENTS}{application.pk}/revoke-tokens/")
    console.post(f"{CLIENTS}{application.pk}/disable/")
    console.post(f"{CLIENTS}{application.pk}/delete/", {"post": "yes"})

    trail = AuditEvent.objects.filter(client_id=application.client_id).order_by("created", "pk")
    assert [event.kind for event in trail] == [
        "client_created",
        "token_issued",
        "client_changed",
        "secret_rotated",
        "token_revoked",
        "client_changed",
        "client_deleted",
    ]
    by_operator = [event for event in trail if event.kind != "token_issued"]
    assert {(event.actor, event.remote_addr) for event in by_operator} == {("user:olivia", "127.0.0.1")}
    # The trail outlives the client: the id is kept as text.
    assert {event.application_id for event in trail} == {None}


def test_a_client_registered_in_the_console_is_recorded_with_its_owner_lifetime_grant_and_scopes(console):
    products = Scope.objects.get(name="products:read")

    registered = console.post(
        CLIENTS + "add/",
        {
            "form_id": "owned-form",
            "name": "Owned",
            "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
            "scopes": [products.pk],
            "access_token_lifetime": "900",
            "user": "olivia",
            "enabled": "on",
        },
    )

    assert registered.status_code == 200
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CREATED)
    assert event.detail == {
        "name": "Owned",
        "owner": "olivia",
        "access_token_lifetime": 900,
        "grant_type": Application.GRANT_CLIENT_CREDENTIALS,
        "token_endpoint_auth_method": "client_secret_basic",
        "enabled": True,
        "scope": "products:read",
        "form_id": "owned-form",
    }


def test_a_clients_settings_changed_in_the_console_are_recorded_with_old_and_new_values(console):
    """Which lifetime a client had before, and whose it was: not only that they changed."""
    new_client = make_client(name="Before", scopes=["products:read"], access_token_lifetime=3600)
    client = new_client.application
    get_user_model().objects.create_user("sam", password="x")

    response = console.post(
        f"{CLIENTS}{client.pk}/change/",
        {
            "name": "After",
            "scopes": [Scope.objects.get(name="products:read").pk],
            "access_token_lifetime": "120",
            "user": "sam",
            "enabled": "on",
        },
    )
    console.post(f"{CLIENTS}{client.pk}/change/", {"name": "After", "scopes": [], "user": ""})  # refused

    assert response.status_code == 302
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CHANGED)
    assert event.detail == {
        "changed": ["access_token_lifetime", "name", "user"],
        "enabled": True,
        "from": {"access_token_lifetime": 3600, "name": "Before", "user": None},
        "to": {"access_token_lifetime": 120, "name": "After", "user": "sam"},
    }
    page = console.get(f"{AUDIT}?kind__exact=client_changed").content.decode()
    assert "access token lifetime: 3600" in page and "user: sam" in page
    client.refresh_from_db()
    assert new_client.client_secret not in str(event.detail) and client.client_secret not in str(event.detail)


def test_a_client_disabled_and_given_back_to_no_owner_is_recorded_with_old_and_new_values(console):
    owner = get_user_model().objects.create_user("sam", password="x")
    client = make_client(owner=owner).application

    console.post(
        f"{CLIENTS}{client.pk}/change/",
        {"name": client.name, "scopes": [scope.pk for scope in client.allowed_scopes.all()], "user": ""},
    )

    # "enabled", in every client_changed event, is the new state; with "enabled" changed, the old
    # one is the other.
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CHANGED)
    assert event.detail == {
        "changed": ["enabled", "user"],
        "enabled": False,
        "from": {"user": "sam"},
        "to": {"user": None},
    }


def test_a_scope_life_in_the_console_leaves_a_trail(console):
    # Whether portal test tokens and dynamically registered clients may carry a scope (sandbox) is
    # a grant: who made, changed or deleted which scope is recorded as a client's changes are.
    scopes = "/admin/authserver/scope/"
    console.post(scopes + "add/", {"name": "invoices:read", "description": "Read invoices", "public": "on"})
    scope = Scope.objects.get(name="invoices:read")
    fields = {"description": "Read invoices", "public": "on"}
    console.post(f"{scopes}{scope.pk}/change/", {**fields, "sandbox": "on"})
    console.post(f"{scopes}{scope.pk}/change/", {**fields, "sandbox": "on"})  # nothing changed
    console.post(f"{scopes}{scope.pk}/delete/", {"post": "yes"})

    trail = AuditEvent.objects.filter(detail__scope="invoices:read").order_by("created", "pk")
    invoices = {"scope": "invoices:read", "public": True}
    assert [(event.kind, event.detail) for event in trail] == [
        ("scope_created", {**invoices, "sandbox": False}),
        ("scope_changed", {**invoices, "sandbox": True, "changed": ["sandbox"]}),
        ("scope_deleted", {**invoices, "sandbox": True}),
    ]
    assert {(event.actor, event.remote_addr) for event in trail} == {("user:olivia", "127.0.0.1")}


# --- reading the trail in the console ------------------------------------------------------------


@pytest.fixture
def trail(db):
    alpha, beta = make_client(name="alpha").application, make_client(name="beta").application
    services.record_event(
        kind=AuditEvent.Kind.AUTH_FAILED, application=beta, actor="client:x", remote_addr="203.0.113.9"
    )
    AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CREATED, application=alpha).update(
        created=datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    )
    return alpha, beta


def listed(console, query: str = "") -> list[tuple[str, str]]:
    response = console.get(AUDIT + query)
    assert response.status_code == 200
    return [(event.kind, event.client_id) for event in response.context["cl"].result_list]


def test_the_trail_is_filtered_by_kind_and_client_and_searchable(console, trail):
    alpha, beta = trail

    assert len(listed(console)) == 3
    assert listed(console, "?kind__exact=auth_failed") == [("auth_failed", beta.client_id)]
    assert listed(console, f"?application__id__exact={alpha.pk}") == [("client_created", alpha.client_id)]
    assert listed(console, f"?client_id={beta.client_id}&kind__exact=client_created") == [
        ("client_created", beta.client_id)
    ]
    assert listed(console, "?q=203.0.113.9") == [("auth_failed", beta.client_id)]
    assert listed(console, "?q=alpha") == [("client_created", alpha.client_id)]
    assert listed(console, "?created__year=2025&created__month=6") == [("client_created", alpha.client_id)]
    years = console.get(AUDIT).content.decode().split('<nav class="toplinks">')[1].split("</nav>")[0]
    assert "?created__year=2025" in years  # the date hierarchy offers the years with events


@pytest.mark.parametrize(
    "query",
    [
        "?created__year=9999&created__month=12",  # the next month is past datetime's last year
        "?created__year=9999&created__month=12&created__day=31",
        "?created__year=9999",
        "?created__year=99999999999999999999",
        "?created__year=2025&created__month=99999999999999999999",
        "?created__year=2025&created__month=6&created__day=99999999999999999999",
        "?created__year=2025&created__month=2&created__day=30",
        "?created__year=2025&created__month=13",
        "?created__year=0",
        "?created__year=x",
        "?created__year=2025&created__year=99999999999999999999",  # Django takes the last
    ],
)
def test_a_date_hierarchy_date_that_is_no_date_is_a_400_page(console, trail, query):
    response = console.get(AUDIT + query)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


def test_the_date_hierarchy_reaches_the_last_periods_datetime_can_end(console, trail):
    assert listed(console, "?created__year=9998&created__month=12&created__day=31") == []
    assert listed(console, "?created__year=9998") == []
    assert listed(console, "?created__year=2&created__month=1") == []
    assert listed(console, "?created__year=99999999999999999999&created__year=2025") == [
        ("client_created", trail[0].client_id)
    ]


def test_the_trail_is_read_only(console, trail):
    event = AuditEvent.objects.first()

    assert console.get(AUDIT + "add/").status_code == 403
    detail = console.get(f"{AUDIT}{event.pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert console.post(f"{AUDIT}{event.pk}/change/", {"kind": "token_issued"}).status_code == 403
    assert console.post(f"{AUDIT}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = console.post(AUDIT, {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"})
    assert bulk.status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=event.pk, kind=event.kind).exists()
    assert "delete_selected" not in console.get(AUDIT).content.decode()


def test_the_trail_shows_clients_deleted_since(console, trail):
    alpha, _ = trail
    services.delete_client(application=alpha, actor="tests")

    html = console.get(AUDIT + "?kind__exact=client_deleted").content.decode()

    assert alpha.client_id in html


def test_scopes_granted_to_a_client_are_recorded_beside_those_withdrawn(console):
    client = make_client(scopes=["products:read"]).application
    orders = Scope.objects.filter(name__in=["orders:read", "orders:write"]).order_by("name")

    response = console.post(
        f"{CLIENTS}{client.pk}/change/",
        {"name": client.name, "scopes": [scope.pk for scope in orders], "enabled": "on"},
    )

    assert response.status_code == 302
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CHANGED)
    assert event.detail == {
        "changed": ["allowed_scopes"],
        "enabled": True,
        "granted": ["orders:read", "orders:write"],
        "withdrawn": ["products:read"],
        "tokens_narrowed": 0,
    }


# --- user accounts and the console's own logins --------------------------------------------------

USERS = "/admin/auth/user/"
GROUPS = "/admin/auth/group/"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def superuser_console(db):
    """Only superusers give an account its console powers."""
    http = HttpsClient()
    http.force_login(get_user_model().objects.create_superuser("root", password=PASSWORD))
    return http


def user_form(user, **overrides) -> dict:
    """The user's change form as the console shows it; a None override leaves the field out."""
    joined = timezone.localtime(user.date_joined)
    data = {
        "username": user.username,
        "is_active": "on" if user.is_active else None,
        "is_staff": "on" if user.is_staff else None,
        "is_superuser": "on" if user.is_superuser else None,
        "groups": [group.pk for group in user.groups.all()],
        "user_permissions": [permission.pk for permission in user.user_permissions.all()],
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
    }
    return {key: value for key, value in {**data, **overrides}.items() if value is not None}


def user_events() -> list[tuple[str, str, str, dict]]:
    kinds = [AuditEvent.Kind.USER_CREATED, AuditEvent.Kind.USER_CHANGED]
    trail = AuditEvent.objects.filter(kind__in=kinds).order_by("created", "pk")
    return [(event.kind, event.actor, event.remote_addr, event.detail) for event in trail]


def test_an_accounts_console_powers_given_and_taken_are_recorded(superuser_console):
    """Who made whom staff, superuser, an operator or gave them a permission: a production console's
    first question after an incident."""
    sam = get_user_model().objects.create_user("sam", password=PASSWORD)
    operators = services.ensure_operators_group()
    view_users = Permission.objects.get(content_type__app_label="auth", codename="view_user")
    change = f"{USERS}{sam.pk}/change/"

    made_operator = superuser_console.post(
        change, user_form(sam, is_staff="on", groups=[operators.pk], user_permissions=[view_users.pk])
    )
    sam.refresh_from_db()
    unchanged = superuser_console.post(change, user_form(sam))
    made_superuser = superuser_console.post(
        change, user_form(sam, is_superuser="on", groups=[], user_permissions=[])
    )

    assert made_operator.status_code == unchanged.status_code == made_superuser.status_code == 302
    account = {"user_id": sam.pk, "username": "sam"}
    assert user_events() == [
        (
            "user_changed",
            "user:root",
            "127.0.0.1",
            {
                **account,
                "changed": ["is_staff", "groups", "user_permissions"],
                "is_staff": True,
                "is_superuser": False,
                "groups_added": ["operators"],
                "permissions_added": ["auth.view_user"],
            },
        ),
        (
            "user_changed",
            "user:root",
            "127.0.0.1",
            {
                **account,
                "changed": ["is_superuser", "groups", "user_permissions"],
                "is_staff": True,
                "is_superuser": True,
                "groups_removed": ["operators"],
                "permissions_removed": ["auth.view_user"],
            },
        ),
    ]


def test_an_account_created_renamed_or_given_a_password_in_the_console_is_recorded(superuser_console):
    added = superuser_console.post(
        USERS + "add/",
        {"username": "nina", "usable_password": "true", "password1": PASSWORD, "password2": PASSWORD},
    )
    nina = get_user_model().objects.get(username="nina")
    renamed = superuser_console.post(f"{USERS}{nina.pk}/change/", user_form(nina, username="nina.k"))
    new_password = "another horse battery staple"
    password = superuser_console.post(
        f"{USERS}{nina.pk}/password/",
        {"usable_password": "true", "password1": new_password, "password2": new_password},
    )
    refused = superuser_console.post(
        f"{USERS}{nina.pk}/password/",
        {"usable_password": "true", "password1": new_password, "password2": "a typo"},
    )

    assert (added.status_code, renamed.status_code, password.status_code) == (302, 302, 302)
    assert refused.status_code == 200  # the form again, nothing changed
    flags = {"is_staff": False, "is_superuser": False}
    assert user_events() == [
        ("user_created", "user:root", "127.0.0.1", {"user_id": nina.pk, "username": "nina", **flags}),
        (
            "user_changed",
            "user:root",
            "127.0.0.1",
            {
                "user_id": nina.pk,
                "username": "nina.k",
                "changed": ["username"],
                **flags,
                "renamed_from": "nina",
            },
        ),
        (
            "user_changed",
            "user:root",
            "127.0.0.1",
            {"user_id": nina.pk, "username": "nina.k", "changed": ["password"], **flags},
        ),
    ]
    assert new_password not in str(user_events())


def test_an_operator_changing_their_own_password_in_the_console_is_recorded(db):
    olivia = get_user_model().objects.create_user("olivia", password=PASSWORD, is_staff=True)
    http = HttpsClient()
    http.force_login(olivia)
    new_password = "another horse battery staple"

    refused = http.post(
        "/admin/password_change/",
        {"old_password": "wrong", "new_password1": new_password, "new_password2": new_password},
    )
    changed = http.post(
        "/admin/password_change/",
        {"old_password": PASSWORD, "new_password1": new_password, "new_password2": new_password},
    )

    assert (refused.status_code, changed.status_code) == (200, 302)
    flags = {"is_staff": True, "is_superuser": False}
    assert user_events() == [
        (
            "user_changed",
            "user:olivia",
            "127.0.0.1",
            {"user_id": olivia.pk, "username": "olivia", "changed": ["password"], **flags},
        )
    ]
    assert new_password not in str(user_events())


def test_a_refused_change_of_an_account_records_nothing(superuser_console):
    sam = get_user_model().objects.create_user("sam", password=PASSWORD)

    response = superuser_console.post(
        f"{USERS}{sam.pk}/change/", user_form(sam, is_staff="on", date_joined_0="not a date")
    )

    assert response.status_code == 200  # the form again, with its error
    sam.refresh_from_db()
    assert not sam.is_staff
    assert user_events() == []


def group_events() -> list[tuple[str, str, str, dict]]:
    kinds = [AuditEvent.Kind.GROUP_CREATED, AuditEvent.Kind.GROUP_CHANGED, AuditEvent.Kind.GROUP_DELETED]
    trail = AuditEvent.objects.filter(kind__in=kinds).order_by("created", "pk")
    return [(event.kind, event.actor, event.remote_addr, event.detail) for event in trail]


def test_a_groups_life_in_the_console_leaves_a_trail(superuser_console):
    """A group's permissions are every member's console rights: who gave or took which, and when,
    is recorded as for one account's own permissions."""
    sam = get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True)
    view_events, view_clients = (
        Permission.objects.get(content_type__app_label="authserver", codename=codename)
        for codename in ("view_auditevent", "view_application")
    )

    added = superuser_console.post(GROUPS + "add/", {"name": "auditors", "permissions": [view_events.pk]})
    group = Group.objects.get(name="auditors")
    sam.groups.add(group)
    change = f"{GROUPS}{group.pk}/change/"
    changed = superuser_console.post(change, {"name": "readers", "permissions": [view_clients.pk]})
    unchanged = superuser_console.post(change, {"name": "readers", "permissions": [view_clients.pk]})
    deleted = superuser_console.post(f"{GROUPS}{group.pk}/delete/", {"post": "yes"})

    assert (added.status_code, changed.status_code, unchanged.status_code, deleted.status_code) == (
        302,
        302,
        302,
        302,
    )
    auditors, readers = ({"group_id": group.pk, "group": name} for name in ("auditors", "readers"))
    assert group_events() == [
        (
            "group_created",
            "user:root",
            "127.0.0.1",
            {**auditors, "members": 0, "permissions": ["authserver.view_auditevent"]},
        ),
        (
            "group_changed",
            "user:root",
            "127.0.0.1",
            {
                **readers,
                "changed": ["name", "permissions"],
                "members": 1,
                "permissions_added": ["authserver.view_application"],
                "permissions_removed": ["authserver.view_auditevent"],
                "renamed_from": "auditors",
            },
        ),
        (
            "group_deleted",
            "user:root",
            "127.0.0.1",
            {**readers, "members": 1, "permissions": ["authserver.view_application"]},
        ),
    ]


def test_the_operators_group_given_a_permission_is_recorded(superuser_console):
    operators = services.ensure_operators_group()
    view_users = Permission.objects.get(content_type__app_label="auth", codename="view_user")
    held = list(operators.permissions.values_list("pk", flat=True))

    response = superuser_console.post(
        f"{GROUPS}{operators.pk}/change/", {"name": "operators", "permissions": [*held, view_users.pk]}
    )

    assert response.status_code == 302
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.GROUP_CHANGED)
    assert event.detail["changed"] == ["permissions"]
    assert event.detail["permissions_added"] == ["auth.view_user"]
    assert "permissions_removed" not in event.detail and "renamed_from" not in event.detail
    page = superuser_console.get(f"{AUDIT}?kind__exact=group_changed").content.decode()
    assert "group changed" in page and "auth.view user" in page


def test_groups_deleted_in_bulk_are_each_recorded(superuser_console):
    groups = [Group.objects.create(name=name) for name in ("first", "second")]

    confirm = {"action": "delete_selected", "_selected_action": [group.pk for group in groups], "post": "yes"}
    response = superuser_console.post(GROUPS, confirm)

    assert response.status_code == 302
    assert not Group.objects.exists()
    assert [(kind, detail["group"]) for kind, _, _, detail in group_events()] == [
        ("group_deleted", "first"),
        ("group_deleted", "second"),
    ]


def test_a_refused_group_form_records_nothing(superuser_console):
    Group.objects.create(name="taken")
    group = Group.objects.create(name="mine")
    view_events = Permission.objects.get(content_type__app_label="authserver", codename="view_auditevent")

    refused_add = superuser_console.post(GROUPS + "add/", {"name": "taken", "permissions": [view_events.pk]})
    refused_change = superuser_console.post(
        f"{GROUPS}{group.pk}/change/", {"name": "taken", "permissions": [view_events.pk]}
    )

    assert refused_add.status_code == refused_change.status_code == 200  # the form again, with its error
    assert not group.permissions.exists()
    assert group_events() == []


def login(http, username: str, password: str):
    return http.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_console_logins_and_failed_attempts_are_recorded(db, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    olivia = get_user_model().objects.create_user("olivia", password=PASSWORD, is_staff=True)
    dana = get_user_model().objects.create_user("dana", password=PASSWORD)  # a developer: no console
    http = HttpsClient(HTTP_X_FORWARDED_FOR="198.51.100.7")

    assert login(http, "olivia", "wrong").status_code == 200
    assert login(http, "dana", PASSWORD).status_code == 200
    assert login(http, PASSWORD, "typed in the wrong box").status_code == 200
    assert login(http, "Olivia", PASSWORD).status_code == 302

    trail = AuditEvent.objects.filter(kind__startswith="console_login").order_by("created", "pk")
    assert [(event.kind, event.actor, event.remote_addr, event.detail) for event in trail] == [
        ("console_login_failed", "user:olivia", "198.51.100.7", {"user_id": olivia.pk, "username": "olivia"}),
        (
            "console_login_failed",
            "user:dana",
            "198.51.100.7",
            {"user_id": dana.pk, "username": "dana"},
        ),
        ("console_login_failed", "user:(no such account)", "198.51.100.7", {}),
        ("console_login", "user:olivia", "198.51.100.7", {"user_id": olivia.pk, "username": "olivia"}),
    ]
    assert PASSWORD not in str(list(trail.values()))


def test_a_staff_login_at_the_portal_is_recorded_as_a_console_login(db, settings):
    """The portal's login page signs a staff account in to a session that opens the console: it
    must not be a way into the console that the audit trail misses. A developer's is no console event."""
    settings.TRUSTED_PROXY_COUNT = 1
    olivia = get_user_model().objects.create_user("olivia", password=PASSWORD, is_staff=True)
    get_user_model().objects.create_user("dana", password=PASSWORD)  # a developer: no console
    http = HttpsClient(HTTP_X_FORWARDED_FOR="198.51.100.7")

    def portal_login(username: str, password: str):
        return http.post("/accounts/login/", {"username": username, "password": password})

    assert portal_login("olivia", "wrong").status_code == 200
    assert portal_login("dana", "wrong").status_code == 200
    assert portal_login("nobody", "wrong").status_code == 200
    assert portal_login("dana", PASSWORD).status_code == 302
    http.post("/accounts/logout/")
    assert portal_login("Olivia", PASSWORD).status_code == 302
    assert http.get("/admin/").status_code == 200  # the session opens the console

    trail = AuditEvent.objects.filter(kind__startswith="console_login").order_by("created", "pk")
    account = {"user_id": olivia.pk, "username": "olivia", "via": "/accounts/login/"}
    assert [(event.kind, event.actor, event.remote_addr, event.detail) for event in trail] == [
        ("console_login_failed", "user:olivia", "198.51.100.7", account),
        ("console_login", "user:olivia", "198.51.100.7", account),
    ]


@pytest.mark.parametrize("username", ["\x00", "x" * 10_000, ""])
def test_a_failed_login_with_no_possible_username_is_recorded_without_a_lookup(db, username):
    response = login(HttpsClient(), username, "x")

    assert response.status_code == 200
    assert AuditEvent.objects.get().kind == AuditEvent.Kind.CONSOLE_LOGIN_FAILED


def test_a_clients_page_lists_its_latest_events_newest_first_also_within_one_moment(console):
    """Events written in one instant (a bulk action, a clock of coarse resolution) keep the order
    they were written in, newest first, as the trail's own list shows them."""
    application = make_client(name="alpha").application
    for count in range(12):
        services.record_event(
            kind=AuditEvent.Kind.TOKEN_REVOKED, application=application, actor="tests", detail={"n": count}
        )
    AuditEvent.objects.filter(application=application).update(created=datetime(2026, 1, 1, tzinfo=UTC))

    shown = console.get(f"{CLIENTS}{application.pk}/change/").context["recent_events"]
    listed = console.get(f"{AUDIT}?application__id__exact={application.pk}").context["cl"].result_list

    newest_first = list(AuditEvent.objects.filter(application=application).order_by("-pk")[:10])
    assert list(shown) == list(listed)[:10] == newest_first
