"""An operator manages clients, scopes and tokens in the management console (Django admin, /admin/)."""

import html
import json
import re
import secrets
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from oauth2_provider.models import AccessToken

from authserver import bidi, services, sessions
from authserver import forms as console_forms
from authserver.models import Application, AuditEvent, Scope
from tests.helpers import (
    HttpsClient,
    bearer,
    issue_token,
    make_client,
    post_form,
    request_token,
    stored_token,
)
from tests.servers import LiveServer

CLIENTS = "/admin/authserver/application/"
SCOPES = "/admin/authserver/scope/"
TOKENS = "/admin/oauth2_provider/accesstoken/"
AUDIT = "/admin/authserver/auditevent/"
USERS = "/admin/auth/user/"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def operator(db):
    user = get_user_model().objects.create_user("olivia", password=PASSWORD, is_staff=True)
    user.groups.add(services.ensure_operators_group())
    return user


@pytest.fixture
def console(operator):
    http = HttpsClient()
    http.force_login(operator)
    return http


@pytest.fixture
def superuser_console(db):
    http = HttpsClient()
    http.force_login(get_user_model().objects.create_superuser("root", password=PASSWORD))
    return http


def register_form(**overrides) -> dict:
    data = {
        "form_id": secrets.token_urlsafe(16),  # a new form each time, as the page gives
        "name": "Billing service",
        "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
        "redirect_uris": "",
        "scopes": [Scope.objects.get(name="products:read").pk],
        "access_token_lifetime": "900",
        "user": "",
        "enabled": "on",
    }
    return {**data, **overrides}


def change_form(client: Application, **overrides) -> dict:
    data = {
        "name": client.name,
        "scopes": [scope.pk for scope in client.allowed_scopes.all()],
        "access_token_lifetime": client.access_token_lifetime or "",
        "user": client.user.get_username() if client.user else "",
        "enabled": "on" if client.enabled else "",
    }
    return {key: value for key, value in {**data, **overrides}.items() if value is not None}


def shown_secret(response) -> str:
    match = re.search(r'<code id="client-secret">([^<]+)</code>', response.content.decode())
    assert match, "the page shows no secret"
    return match.group(1)


def form_id_in(response) -> str:
    """The one-time id of the form on the page (registering, rotating a secret)."""
    return re.search(r'<input type="hidden" name="form_id" value="([^"]+)"', response.content.decode()).group(
        1
    )


def introspect(http, token: str) -> dict:
    resource_server = make_client(scopes=["introspection"], name="resource server")
    response = post_form(
        http,
        "/oauth2/introspect",
        {"token": token},
        **bearer(issue_token(http, resource_server)),
    )
    assert response.status_code == 200, response.content
    return response.json()


# --- registering a client ------------------------------------------------------------------------


def test_register_form_preselects_client_credentials_and_hides_the_callback_url(console):
    response = console.get(CLIENTS + "add/")

    assert response.status_code == 200
    html = response.content.decode()
    grants = re.findall(r'<input type="radio" name="authorization_grant_type" value="([^"]+)"([^>]*)>', html)
    assert [(value, "checked" in attributes) for value, attributes in grants] == [
        (Application.GRANT_CLIENT_CREDENTIALS, True)
    ]
    assert "no callback URL" in html  # the help text says why there is none
    # The callback field is there only for grants that need one (console.js shows it for those).
    assert 'data-callback-grants="authorization-code implicit openid-hybrid"' in html
    assert "Read the product catalogue" in html  # scopes come with their descriptions
    sandbox = Scope.objects.filter(sandbox=True).values_list("pk", flat=True)
    checked = {int(pk) for pk in re.findall(r'name="scopes" value="(\d+)"[^>]*checked', html)}
    assert checked == set(sandbox)
    assert "Save and add another" not in html and "Save and continue" not in html


def test_registering_shows_the_secret_once_and_stores_only_its_hash(console, operator):
    response = console.post(CLIENTS + "add/", register_form(user="olivia"))

    client = Application.objects.get(name="Billing service")
    # The answer to the POST shows the secret: it is never stored in plain text, not even in the session.
    assert response.status_code == 200
    secret = shown_secret(response)
    assert client.client_id in response.content.decode()
    assert 'data-copy-from="client-secret"' in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert check_password(secret, client.client_secret)
    assert secret not in client.client_secret
    assert secret not in str(dict(console.session))
    change_page = console.get(f"{CLIENTS}{client.pk}/change/").content.decode()
    assert secret not in change_page and client.client_secret not in change_page

    assert client.authorization_grant_type == Application.GRANT_CLIENT_CREDENTIALS
    assert client.client_type == Application.CLIENT_CONFIDENTIAL
    assert client.allowed_scope_names == ["products:read"]
    assert client.access_token_lifetime == 900
    assert client.user == operator
    assert client.redirect_uris == ""
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CREATED)
    assert (event.application, event.actor, event.remote_addr) == (client, "user:olivia", "127.0.0.1")

    token = request_token(console, services.NewClient(client, secret))
    assert token.status_code == 200
    assert token.json()["expires_in"] == 900


def test_the_register_form_posted_again_registers_no_second_client(console):
    # A reload of the page that showed the secret posts the same form again: it used to register a
    # second client (with a second secret) that nobody asked for.
    page = console.get(CLIENTS + "add/").content.decode()
    form_id = re.search(r'<input type="hidden" name="form_id" value="([^"]+)"', page).group(1)
    assert form_id != re.search(
        r'name="form_id" value="([^"]+)"', console.get(CLIENTS + "add/").content.decode()
    ).group(1)  # one per form shown
    form = register_form(form_id=form_id)
    first = console.post(CLIENTS + "add/", form)
    secret = shown_secret(first)

    again = console.post(CLIENTS + "add/", form, follow=True)

    client = Application.objects.get(name="Billing service")  # one, not two
    assert again.redirect_chain == [(f"{CLIENTS}{client.pk}/change/", 302)]
    page = again.content.decode()
    assert "This form was submitted before" in page and "rotate" in page
    assert '<code id="client-secret">' not in page and secret not in page
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CREATED).count() == 1
    # Another form registers another client; a form the server never gave is refused.
    assert console.post(CLIENTS + "add/", register_form(name="Second")).status_code == 200
    missing = console.post(CLIENTS + "add/", register_form(name="Third", form_id=""))
    assert "form_id" in missing.context["adminform"].form.errors
    assert sorted(Application.objects.values_list("name", flat=True)) == ["Billing service", "Second"]
    # Deleted since: nothing registered again either.
    client.delete()
    gone = console.post(CLIENTS + "add/", form, follow=True)
    assert gone.redirect_chain == [(CLIENTS, 302)]
    assert "deleted since" in gone.content.decode()
    assert not Application.objects.filter(name="Billing service").exists()


# --- names that would reorder the page (bidi controls) --------------------------------------------

RIGHT_TO_LEFT_OVERRIDE = "\u202e"


@pytest.mark.parametrize("control", "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
def test_a_new_name_with_a_bidi_embedding_override_or_isolate_is_refused(control):
    with pytest.raises(ValidationError, match="bidirectional control characters"):
        bidi.validate_name(f"billing{control}service")


@pytest.mark.parametrize("control", ["\t", "\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\x9b"])
def test_a_new_name_with_a_control_character_is_refused(control):
    with pytest.raises(ValidationError, match="control characters"):
        bidi.validate_name(f"billing{control}service")


@pytest.mark.parametrize(
    "name", ["Billing service", "שירות חיוב", "חיוב\u200f (v2)", "خدمة\u061c", "dev \u200e👩‍💻"]
)
def test_names_in_any_script_with_bidi_marks_are_taken(name):
    bidi.validate_name(name)  # the marks reorder nothing beyond an isolated name


@pytest.mark.parametrize(
    "name, shown",
    [
        ("Billing service", "Billing service"),  # as it is: nothing to contain
        ("Evil\u202eecivres", "\u2068Evil\u202eecivres\u2069"),
        # A PDI of its own would end the isolate early and let the override out: it gets its initiator.
        ("\u2069\u202eecivres", "\u2068\u2068\u2069\u202eecivres\u2069"),
        # An isolate left open is ended too.
        ("\u2067ecivres", "\u2068\u2067ecivres\u2069\u2069"),
    ],
)
def test_a_stored_name_is_shown_contained(name, shown):
    assert bidi.contained(name) == shown
    assert bidi.contained(shown) == shown  # contained once: str(client) is, and templates isolate it again
    assert bidi.isolated(name) == f"<bdi>{html.escape(shown)}</bdi>"


def test_registering_a_name_with_a_bidi_override_is_a_field_error(console):
    response = console.post(CLIENTS + "add/", register_form(name=f"Billing{RIGHT_TO_LEFT_OVERRIDE}ecivres"))

    assert response.status_code == 200
    assert "bidirectional control characters" in str(response.context["adminform"].form.errors["name"])
    assert not Application.objects.exists()


def test_registering_a_name_with_a_line_break_is_a_field_error(console):
    response = console.post(CLIENTS + "add/", register_form(name="Billing\nservice"))

    assert response.status_code == 200
    assert "control characters" in str(response.context["adminform"].form.errors["name"])
    assert not Application.objects.exists()


def test_a_client_named_with_a_bidi_override_before_stays_manageable_and_reorders_nothing(console):
    """U+202E (right-to-left override) in a name reversed the console's text after it: breadcrumbs,
    messages, "3 active tokens". A name stored before such names were refused stays as it is, its
    client editable and disableable, and is shown isolated wherever it is shown."""
    new_client = make_client(name="placeholder")
    name = f"Evil{RIGHT_TO_LEFT_OVERRIDE}ecivres"
    Application.objects.filter(pk=new_client.application.pk).update(name=name)
    client = Application.objects.get()
    contained = html.escape(bidi.contained(name))
    isolated = f"<bdi>{contained}</bdi>"

    page = console.get(f"{CLIENTS}{client.pk}/change/").content.decode()
    assert f"&rsaquo; {isolated}\n</div>" in page  # the breadcrumbs
    assert f"<title>{contained} | " in page  # Django's own uses of str(client): the title
    confirm = console.get(f"{CLIENTS}{client.pk}/rotate-secret/").content.decode()
    assert f"<strong>{isolated}</strong>" in confirm  # before "0 active tokens"
    rotated = console.post(
        f"{CLIENTS}{client.pk}/rotate-secret/",
        {"form_id": form_id_in(console.get(f"{CLIENTS}{client.pk}/rotate-secret/"))},
    )
    assert f"The secret of “{isolated}” was rotated" in rotated.content.decode()
    assert f"Credentials of {isolated}" in rotated.content.decode()

    # Saved with its name unchanged (disabled here): no error, the name kept.
    saved = console.post(f"{CLIENTS}{client.pk}/change/", change_form(client, enabled=""), follow=True)
    assert saved.redirect_chain == [(CLIENTS, 302)]
    assert f'“<a href="{CLIENTS}{client.pk}/change/">{contained}</a>”' in saved.content.decode()
    client.refresh_from_db()
    assert (client.name, client.enabled) == (name, False)
    assert console.post(f"{CLIENTS}{client.pk}/enable/").status_code == 302
    client.refresh_from_db()
    assert client.enabled
    # A new name with a control is refused; one without is taken.
    renamed = console.post(f"{CLIENTS}{client.pk}/change/", change_form(client, name=f"{name}2"))
    assert "bidirectional control characters" in str(renamed.context["adminform"].form.errors["name"])
    console.post(f"{CLIENTS}{client.pk}/change/", change_form(client, name="Fixed"))
    client.refresh_from_db()
    assert client.name == "Fixed"
    # The audit trail's details (the name it was registered with) and the client column.
    trail = console.get(AUDIT).content.decode()
    assert "<bdi>placeholder</bdi>" in trail and "<bdi>Fixed</bdi>" in trail


@pytest.mark.parametrize("form_id", ["a\x00b", "x" * 65])
def test_a_register_form_id_the_form_refuses_is_a_field_error(console, form_id):
    """The form id was looked up among the registered forms before the form checked it: a NUL
    character was a 500 on PostgreSQL, which cannot compare one."""
    response = console.post(CLIENTS + "add/", register_form(form_id=form_id))

    assert response.status_code == 200
    assert "form_id" in response.context["adminform"].form.errors
    assert not Application.objects.filter(name="Billing service").exists()


def test_save_as_new_registers_no_client(console):
    """Django honours a posted `_saveasnew` even with save_as off: on a client's page it registered
    a client past the Add page's one-registration-per-form check, the same form each time."""
    form = register_form()
    shown_secret(console.post(CLIENTS + "add/", form))
    client = Application.objects.get(name="Billing service")

    copied = console.post(
        f"{CLIENTS}{client.pk}/change/", {**form, "name": "Copy", "_saveasnew": "1"}, follow=True
    )

    assert copied.redirect_chain == [(f"{CLIENTS}add/", 302)]
    assert "never by saving another as new" in copied.content.decode()
    assert list(Application.objects.values_list("name", flat=True)) == ["Billing service"]
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CREATED).count() == 1


def test_the_register_form_posted_twice_at_once_registers_one_client(transactional_db, monkeypatch):
    """A double click posts the form twice before either answer saved anything: one client still."""
    operator = get_user_model().objects.create_user("olivia", password=PASSWORD, is_staff=True)
    operator.groups.add(services.ensure_operators_group())
    first_browser = HttpsClient()
    first_browser.force_login(operator)
    same_session = HttpsClient()
    same_session.cookies = first_browser.cookies  # one browser, two requests
    form = register_form()
    # Each request, once it is about to register, waits for the other: without a lock both have
    # checked the form by then; with one the second checks only after the first has committed.
    both_checked = threading.Barrier(2, timeout=2)
    register_client = services.register_client

    def register_then_wait(**details):
        with suppress(threading.BrokenBarrierError):
            both_checked.wait()
        return register_client(**details)

    monkeypatch.setattr(services, "register_client", register_then_wait)

    def post(browser) -> int:
        try:
            return browser.post(CLIENTS + "add/", form).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(post, [first_browser, same_session]))

    assert sorted(statuses) == [200, 302]  # the secret page, then the first client's page
    assert Application.objects.filter(name="Billing service").count() == 1
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CREATED).count() == 1


@pytest.mark.live
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_try_it_curl_on_the_secret_page_works_against_the_self_signed_server(
    console, transactional_db, settings
):
    """`make run` serves a self-signed certificate: the page's command must trust it, not fail with
    `curl: (60) SSL certificate problem`."""
    with LiveServer(workers=1) as server:
        settings.ISSUER = server.url
        response = console.post(CLIENTS + "add/", register_form())
        match = re.search(
            r'<pre class="console-example" id="curl-example">(.*?)</pre>', response.content.decode(), re.S
        )
        assert match, "the page shows no curl"
        command = html.unescape(match.group(1))
        assert f"--cacert '{settings.TLS_CERT_FILE}' " in command

        result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)  # noqa: S602

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["token_type"] == "Bearer"


def test_a_callback_url_sent_for_client_credentials_is_dropped(console):
    console.post(CLIENTS + "add/", register_form(redirect_uris="https://app.example/callback"))

    assert Application.objects.get(name="Billing service").redirect_uris == ""


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"scopes": []}, "scopes", "Pick at least one scope"),
        ({"name": ""}, "name", "This field is required."),
        ({"user": "nobody"}, "user", "There is no user with this username."),
        ({"access_token_lifetime": "5"}, "access_token_lifetime", "greater than or equal to 60"),
        (
            {"authorization_grant_type": Application.GRANT_PASSWORD},
            "authorization_grant_type",
            "valid choice",
        ),
    ],
)
def test_register_form_errors(console, overrides, field, message):
    response = console.post(CLIENTS + "add/", register_form(**overrides))

    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors[field])
    assert not Application.objects.filter(name="Billing service").exists()
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CREATED).exists()


def test_a_served_grant_that_needs_a_callback_asks_for_one(console, settings):
    provider = {
        **settings.OAUTH2_PROVIDER,
        "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "client_credentials"],
    }
    with override_settings(OAUTH2_PROVIDER=provider):
        html = console.get(CLIENTS + "add/").content.decode()
        missing = console.post(
            CLIENTS + "add/", register_form(authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE)
        )
        given = console.post(
            CLIENTS + "add/",
            register_form(
                authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
                redirect_uris="https://app.example/callback",
            ),
        )

    assert re.findall(r'name="authorization_grant_type" value="([^"]+)"', html) == [
        Application.GRANT_AUTHORIZATION_CODE,
        Application.GRANT_CLIENT_CREDENTIALS,
    ]
    assert missing.status_code == 200
    assert "redirect_uris" in missing.context["adminform"].form.errors
    assert given.status_code == 200
    shown_secret(given)  # registered: the answer is the secret page
    client = Application.objects.get(name="Billing service")
    assert client.authorization_grant_type == Application.GRANT_AUTHORIZATION_CODE
    assert client.redirect_uris == "https://app.example/callback"


# --- editing a client ----------------------------------------------------------------------------


def test_editing_a_client_goes_through_the_service_and_is_audited(console, new_client):
    client = new_client.application
    orders_write = Scope.objects.get(name="orders:write")

    response = console.post(
        f"{CLIENTS}{client.pk}/change/",
        change_form(
            client, name="Renamed", scopes=[orders_write.pk], access_token_lifetime="120", user="olivia"
        ),
    )

    assert response.status_code == 302
    client.refresh_from_db()
    client.__dict__.pop("allowed_scope_names", None)
    assert (client.name, client.access_token_lifetime, client.user.username) == ("Renamed", 120, "olivia")
    assert client.allowed_scope_names == ["orders:write"]
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CHANGED)
    assert sorted(event.detail["changed"]) == ["access_token_lifetime", "allowed_scopes", "name", "user"]
    assert event.actor == "user:olivia"
    assert check_password(new_client.client_secret, client.client_secret)  # the secret is untouched


def test_the_change_page_shows_the_client_but_never_its_secret(console, new_client):
    client = new_client.application
    response = console.get(f"{CLIENTS}{client.pk}/change/")

    html = response.content.decode()
    assert response.status_code == 200
    assert client.client_id in html
    assert "Stored hashed" in html
    assert new_client.client_secret not in html and client.client_secret not in html
    assert 'name="client_secret"' not in html
    assert 'value="orders:read"' not in html  # scopes are checkboxes of scope ids, described
    assert "Read your orders" in html
    for action in ("rotate-secret", "revoke-tokens", "disable"):
        assert f"{CLIENTS}{client.pk}/{action}/" in html
    assert f"{CLIENTS}{client.pk}/enable/" not in html


# --- the client list -----------------------------------------------------------------------------


def test_the_list_shows_owner_grant_scopes_active_tokens_and_last_token(console, operator):
    owned = make_client(name="Owned", scopes=["products:read"], owner=operator)
    idle = make_client(name="Idle", scopes=["orders:read", "orders:write"])
    for _ in range(3):
        issue_token(console, owned)
    expired = AccessToken.objects.filter(application=owned.application).order_by("pk").first()
    expired.expires = timezone.now() - timedelta(seconds=1)
    expired.save()
    last_issued = AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_ISSUED).latest("created").created

    response = console.get(CLIENTS)

    rows = {row.name: row for row in response.context["cl"].result_list}
    assert rows["Owned"].active_token_count == 2  # the expired one is not active
    assert rows["Owned"].last_token_issued_at == last_issued
    assert rows["Idle"].active_token_count == 0
    assert rows["Idle"].last_token_issued_at is None
    html = response.content.decode()
    for text in (owned.application.client_id, idle.application.client_id, "olivia", "Client credentials"):
        assert text in html
    assert '<code class="scope-name">orders:read</code> <code class="scope-name">orders:write</code>' in html
    columns = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', html)
    assert columns == [
        "name", "client_id_column", "owner", "grant_type", "scopes",
        "active_tokens", "last_token_issued", "enabled",
    ]  # fmt: skip


def test_the_list_costs_the_same_queries_for_many_clients(console, django_assert_max_num_queries):
    def clients_with_tokens(count):
        for number in range(count):
            new_client = make_client(name=f"client {number}")
            issue_token(console, new_client)

    clients_with_tokens(3)
    with django_assert_max_num_queries(12) as few:
        assert console.get(CLIENTS).status_code == 200
    queries_for_few = len(few.captured_queries)  # read now: the next request resets the log
    clients_with_tokens(30)
    with django_assert_max_num_queries(queries_for_few):
        response = console.get(CLIENTS)
    assert len(response.context["cl"].result_list) == 33


def test_search_and_filters(console, operator):
    owned = make_client(name="Warehouse sync", scopes=["orders:write"], owner=operator)
    other = make_client(name="Storefront", scopes=["products:read"])
    services.set_client_enabled(application=other.application, enabled=False, actor="tests")

    def names(query: str) -> set[str]:
        return {client.name for client in console.get(CLIENTS + query).context["cl"].result_list}

    assert names("?q=warehouse") == {"Warehouse sync"}
    assert names(f"?q={other.application.client_id}") == {"Storefront"}
    assert names("?q=olivia") == {"Warehouse sync"}
    orders_write = Scope.objects.get(name="orders:write")
    assert names(f"?allowed_scopes__id__exact={orders_write.pk}") == {"Warehouse sync"}
    assert names("?enabled__exact=0") == {"Storefront"}
    assert names("?grant_type=client-credentials") == {"Warehouse sync", "Storefront"}
    assert names("?grant_type=authorization-code") == set()
    assert owned  # registered above


# --- actions: rotate, revoke, disable, enable ----------------------------------------------------


def test_the_client_actions_are_csrf_protected(operator, new_client):
    """An operator's signed-in browser posts nothing another site's page made it post."""
    http = HttpsClient(enforce_csrf_checks=True)
    http.force_login(operator)
    client = new_client.application
    token = issue_token(http, new_client)
    stored = stored_token(token)

    for action in ("rotate-secret", "revoke-tokens", "disable", f"tokens/{stored.pk}/revoke"):
        page = http.get(f"{CLIENTS}{client.pk}/change/").content.decode()  # sets the CSRF cookie
        assert 'name="csrfmiddlewaretoken"' in page
        response = http.post(f"{CLIENTS}{client.pk}/{action}/", {"form_id": "x"})
        assert response.status_code == 403, action
        assert "This form is out of date" in response.content.decode()  # the CSRF failure page

    assert not AuditEvent.objects.exclude(kind__in=["client_created", "token_issued"]).exists()
    assert request_token(http, new_client).status_code == 200  # the secret unchanged, the client enabled
    assert AccessToken.objects.filter(pk=stored.pk).exists()


def test_rotating_the_secret_shows_the_new_one_once_and_the_old_one_stops_working(console, new_client):
    client = new_client.application
    token = issue_token(console, new_client)

    confirm = console.get(f"{CLIENTS}{client.pk}/rotate-secret/")
    assert confirm.status_code == 200
    assert "stops working" in confirm.content.decode()
    rotated = console.post(f"{CLIENTS}{client.pk}/rotate-secret/", {"form_id": form_id_in(confirm)})

    assert rotated.status_code == 200
    assert "no-store" in rotated["Cache-Control"]
    new_secret = shown_secret(rotated)
    assert new_secret != new_client.client_secret
    old = request_token(console, new_client)
    assert old.status_code == 401
    assert old.json()["error"] == "invalid_client"
    assert request_token(console, services.NewClient(client, new_secret)).status_code == 200
    assert introspect(console, token)["active"] is True  # rotation keeps issued tokens
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.SECRET_ROTATED)
    assert (event.application, event.actor, event.remote_addr) == (client, "user:olivia", "127.0.0.1")


def test_the_rotate_form_posted_again_rotates_nothing(console, new_client):
    """Reloading the page that showed the new secret (or Back, then "confirm form resubmission")
    posted the confirmation again: a second rotation, and the secret the operator had copied from
    the first page stopped working."""
    client = new_client.application
    rotate = f"{CLIENTS}{client.pk}/rotate-secret/"
    form_id = form_id_in(console.get(rotate))
    assert form_id != form_id_in(console.get(rotate))  # one per form shown
    secret = shown_secret(console.post(rotate, {"form_id": form_id}))

    again = console.post(rotate, {"form_id": form_id}, follow=True)

    assert again.redirect_chain == [(f"{CLIENTS}{client.pk}/change/", 302)]
    page = html.unescape(again.content.decode())
    assert "This form was submitted before: the secret of" in page
    assert "was rotated then" in page and "it is not shown again" in page
    assert '<code id="client-secret">' not in page and secret not in page
    assert request_token(console, services.NewClient(client, secret)).status_code == 200  # the copied one
    rotations = AuditEvent.objects.filter(kind=AuditEvent.Kind.SECRET_ROTATED)
    assert [event.detail for event in rotations] == [{"form_id": form_id}]
    # A form without an id (or one the form refuses) rotates nothing and asks again; another form rotates.
    for posted in ({}, {"form_id": "a\x00b"}, {"form_id": "x" * 65}):
        stale = console.post(rotate, posted, follow=True)
        assert stale.redirect_chain == [(rotate, 302)]
        assert "nothing was rotated" in stale.content.decode()
        assert 'name="form_id"' in stale.content.decode()
    assert console.post(rotate, {"form_id": form_id_in(console.get(rotate))}).status_code == 200
    assert rotations.all().count() == 2


def test_client_actions_need_post(console, new_client):
    client = new_client.application
    for action in ("rotate-secret", "revoke-tokens", "disable"):
        assert console.get(f"{CLIENTS}{client.pk}/{action}/").status_code == 200
    client.refresh_from_db()
    assert client.enabled
    assert not AuditEvent.objects.exclude(kind=AuditEvent.Kind.CLIENT_CREATED).exists()


def test_disabling_a_client_stops_its_tokens_and_enabling_restores_them(console, new_client):
    client = new_client.application
    token = issue_token(console, new_client)

    console.post(f"{CLIENTS}{client.pk}/disable/")

    assert introspect(console, token) == {"active": False}
    refused = request_token(console, new_client)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
    page = console.get(f"{CLIENTS}{client.pk}/change/").content.decode()
    assert "This client is disabled" in page
    assert f"{CLIENTS}{client.pk}/enable/" in page

    console.post(f"{CLIENTS}{client.pk}/enable/")

    assert introspect(console, token)["active"] is True
    changes = AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CHANGED).order_by("created")
    assert [event.detail["enabled"] for event in changes] == [False, True]
    assert {event.actor for event in changes} == {"user:olivia"}


def test_bulk_actions_ask_first_then_act_on_the_selected_clients(console):
    first, second, untouched = (make_client(name=name) for name in ("first", "second", "untouched"))
    for new_client in (first, second, untouched):
        issue_token(console, new_client)
    selected = [first.application.pk, second.application.pk]

    confirm = console.post(CLIENTS, {"action": "revoke_tokens", "_selected_action": selected})
    assert confirm.status_code == 200
    assert "Revoke all their tokens" in confirm.content.decode()
    assert AccessToken.objects.count() == 3

    done = console.post(CLIENTS, {"action": "revoke_tokens", "_selected_action": selected, "post": "yes"})
    assert done.status_code == 302
    assert list(AccessToken.objects.values_list("application__name", flat=True)) == ["untouched"]
    revocations = AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_REVOKED)
    assert {event.application.name for event in revocations} == {"first", "second"}
    assert {event.detail["count"] for event in revocations} == {1}

    console.post(CLIENTS, {"action": "disable", "_selected_action": selected, "post": "yes"})
    assert set(Application.objects.filter(enabled=False).values_list("name", flat=True)) == {
        "first",
        "second",
    }
    console.post(CLIENTS, {"action": "enable", "_selected_action": selected, "post": "yes"})
    assert not Application.objects.filter(enabled=False).exists()


@pytest.mark.parametrize("action", ["disable", "revoke_tokens"])
def test_a_bulk_action_on_all_the_clients_of_a_long_list_is_confirmed_and_done(console, settings, action):
    """ "Select all N" on the list, then the confirmation: it posted N ids back, which past
    DATA_UPLOAD_MAX_NUMBER_FIELDS (200) or the body limit was a 400 page, and nothing was done."""
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 20
    bulk = [make_client(name=f"bulk {n:02d}") for n in range(30)]
    for new_client in bulk[:2]:
        issue_token(console, new_client)
    make_client(name="not in the search")
    on_the_page = [new_client.application.pk for new_client in bulk[:10]]
    chosen = {"action": action, "select_across": "1", "index": "0", "_selected_action": on_the_page}

    confirm = console.post(f"{CLIENTS}?q=bulk", chosen)
    assert confirm.status_code == 200
    assert confirm.content.decode().count("<li><strong>") == 30  # the search's clients, all
    form = re.search(r'<form method="post">(.*?)</form>', confirm.content.decode(), re.S).group(1)
    posted = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form):
        posted.setdefault(name, []).append(html.unescape(value))
    done = console.post(f"{CLIENTS}?q=bulk", posted)

    assert done.status_code == 302
    if action == "disable":
        assert set(Application.objects.filter(enabled=False).values_list("name", flat=True)) == {
            new_client.application.name for new_client in bulk
        }
    else:
        assert not AccessToken.objects.exists()
        assert Application.objects.filter(enabled=False).count() == 0


def test_the_client_page_lists_active_tokens_and_revokes_one(console, new_client):
    client = new_client.application
    kept, revoked = issue_token(console, new_client), issue_token(console, new_client)
    stored = stored_token(revoked)

    page = console.get(f"{CLIENTS}{client.pk}/change/")
    html = page.content.decode()
    assert "Active tokens (2)" in html
    assert kept not in html and revoked not in html
    assert f"{CLIENTS}{client.pk}/tokens/{stored.pk}/revoke/" in html

    assert console.get(f"{CLIENTS}{client.pk}/tokens/{stored.pk}/revoke/").status_code == 405
    response = console.post(f"{CLIENTS}{client.pk}/tokens/{stored.pk}/revoke/")

    assert response.status_code == 302
    assert introspect(console, revoked) == {"active": False}
    assert introspect(console, kept)["active"] is True
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_REVOKED)
    assert (event.actor, event.detail["token_id"]) == ("user:olivia", stored.pk)


def test_a_token_of_another_client_cannot_be_revoked_through_this_one(console, new_client):
    other = make_client(name="other")
    issue_token(console, other)
    token = AccessToken.objects.get(application=other.application)

    response = console.post(f"{CLIENTS}{new_client.application.pk}/tokens/{token.pk}/revoke/")

    assert response.status_code == 404
    assert AccessToken.objects.filter(pk=token.pk).exists()


@pytest.mark.parametrize("listing", [TOKENS, AUDIT])
def test_the_long_lists_filter_by_the_client_a_link_chose_not_by_a_list_of_every_client(console, listing):
    """The token list and the audit trail offered every client in their sidebar: thousands of
    developers' clients on every page. They offer the client chosen (a client's page links there);
    search finds the others."""
    clients = [make_client(name=f"Service {number}") for number in range(3)]
    for each in clients:
        issue_token(console, each)
    chosen = clients[1].application

    unfiltered = console.get(listing).content.decode()
    filtered = console.get(f"{listing}?application__id__exact={chosen.pk}")

    assert not any(f"Service {number}" in sidebar(unfiltered) for number in range(3))
    assert "Service 1" in sidebar(filtered.content.decode())
    assert "Service 0" not in sidebar(filtered.content.decode())
    assert {row.application for row in filtered.context["cl"].result_list} == {chosen}
    searched = console.get(f"{listing}?q={clients[2].application.client_id}").context["cl"].result_list
    assert {row.application for row in searched} == {clients[2].application}


def sidebar(page: str) -> str:
    found = re.search(r'<nav id="changelist-filter".*?</nav>', page, re.S)
    return found.group(0) if found else ""


def test_a_registration_access_token_is_not_among_the_tokens_the_console_shows(console, new_client):
    """A dynamically registered client's RFC 7592 token, stored as an access token, is none: the
    client list, the client page and the token list count and list access tokens only, and it
    cannot be revoked as one of them."""
    client = new_client.application
    issue_token(console, new_client)
    services.issue_registration_token(application=client)
    registration_token = AccessToken.objects.get(application=client, scope="client:configure")

    rows = console.get(CLIENTS).context["cl"].result_list
    page = console.get(f"{CLIENTS}{client.pk}/change/").content.decode()
    listed = console.get(f"{TOKENS}?application__id__exact={client.pk}").context["cl"].result_list
    active = console.get(f"{TOKENS}?status=active").context["cl"].result_list

    assert [row.active_token_count for row in rows] == [1]
    assert "Active tokens (1)" in page
    assert f"/tokens/{registration_token.pk}/revoke/" not in page
    assert "client:configure" not in page
    assert (
        [token.scope for token in listed]
        == [token.scope for token in active]
        == ["orders:read products:read"]
    )
    assert console.get(f"{TOKENS}{registration_token.pk}/change/").status_code == 302  # no such token
    revoked = console.post(f"{CLIENTS}{client.pk}/tokens/{registration_token.pk}/revoke/")
    assert revoked.status_code == 404
    console.post(TOKENS, {"action": "revoke_tokens", "_selected_action": [registration_token.pk]})
    assert AccessToken.objects.filter(pk=registration_token.pk).exists()


def test_deleting_a_client_is_audited_and_takes_its_tokens(console, new_client):
    client = new_client.application
    issue_token(console, new_client)

    confirm = console.get(f"{CLIENTS}{client.pk}/delete/")
    assert confirm.status_code == 200
    assert (
        '<input type="hidden" name="post" value="yes">' in confirm.content.decode()
    )  # tokens do not block it
    console.post(f"{CLIENTS}{client.pk}/delete/", {"post": "yes"})

    assert not Application.objects.filter(pk=client.pk).exists()
    assert not AccessToken.objects.exists()
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_DELETED)
    assert (event.client_id, event.actor) == (client.client_id, "user:olivia")


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_deleting_a_user_deletes_their_clients_through_the_service(superuser_console, bulk):
    """The database would cascade to the clients the user owns without a word in the audit trail."""
    owner = get_user_model().objects.create_user("dana", password=PASSWORD)
    owned = make_client(name="Dana's app", owner=owner)
    kept = make_client(name="Someone else's app")
    token, kept_token = issue_token(superuser_console, owned), issue_token(superuser_console, kept)
    assert superuser_console.get("/api/v1/products", **bearer(token)).status_code == 200  # remembered

    if bulk:
        deleted = superuser_console.post(
            USERS, {"action": "delete_selected", "_selected_action": [owner.pk], "post": "yes"}
        )
    else:
        deleted = superuser_console.post(f"{USERS}{owner.pk}/delete/", {"post": "yes"})

    assert deleted.status_code == 302
    assert not get_user_model().objects.filter(pk=owner.pk).exists()
    assert not Application.objects.filter(pk=owned.application.pk).exists()
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_DELETED)
    assert (event.client_id, event.actor, event.remote_addr) == (
        owned.application.client_id,
        "user:root",
        "127.0.0.1",
    )
    account = AuditEvent.objects.get(kind=AuditEvent.Kind.USER_DELETED)
    assert (account.actor, account.remote_addr, account.detail) == (
        "user:root",
        "127.0.0.1",
        {"user_id": owner.pk, "username": "dana", "clients_deleted": 1},
    )
    assert superuser_console.get("/api/v1/products", **bearer(token)).status_code == 401
    assert introspect(superuser_console, token) == {"active": False}
    assert superuser_console.get("/api/v1/products", **bearer(kept_token)).status_code == 200


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_the_user_delete_page_lists_the_clients_and_tokens_that_go_with_the_user(superuser_console, bulk):
    owner = get_user_model().objects.create_user("dana", password=PASSWORD)
    owned = make_client(name="Dana's app", owner=owner)
    make_client(name="Someone else's app")
    for _ in range(3):
        issue_token(superuser_console, owned)

    if bulk:
        page = superuser_console.post(USERS, {"action": "delete_selected", "_selected_action": [owner.pk]})
    else:
        page = superuser_console.get(f"{USERS}{owner.pk}/delete/")

    html = page.content.decode()
    assert page.status_code == 200
    assert f'Client: <a href="{CLIENTS}{owned.application.pk}/change/">Dana&#x27;s app</a>' in html
    assert "<li>Access tokens: 3</li>" in html
    assert "Someone else" not in html
    assert 'name="post" value="yes"' in html  # a superuser may delete them all


# --- access tokens -------------------------------------------------------------------------------


def test_the_token_list_never_shows_a_token_and_revokes_through_the_service(console, new_client):
    raw = issue_token(console, new_client)
    token = AccessToken.objects.get()

    listing = console.get(TOKENS)
    detail = console.get(f"{TOKENS}{token.pk}/change/")

    assert listing.status_code == detail.status_code == 200
    for page in (listing, detail):
        assert raw not in page.content.decode()
        assert token.token_checksum not in page.content.decode()
    assert 'name="_save"' not in detail.content.decode()  # read-only
    response = console.post(TOKENS, {"action": "revoke_tokens", "_selected_action": [token.pk]})
    assert response.status_code == 302
    assert not AccessToken.objects.exists()
    assert AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_REVOKED).actor == "user:olivia"


def test_the_token_list_says_which_tokens_introspection_would_call_active(console, new_client):
    issue_token(console, new_client)
    other = make_client(name="other")
    issue_token(console, other)
    services.set_client_enabled(application=other.application, enabled=False, actor="tests")

    def listed(query: str) -> set[str]:
        return {token.application.name for token in console.get(TOKENS + query).context["cl"].result_list}

    assert listed("") == {"test client", "other"}
    assert listed("?status=active") == {"test client"}
    assert listed("?status=disabled") == {"other"}
    assert listed("?status=expired") == set()


# --- scopes --------------------------------------------------------------------------------------


def test_scopes_are_listed_and_edited(console):
    listing = console.get(SCOPES)
    assert listing.status_code == 200
    assert "Read the product catalogue" in listing.content.decode()

    added = console.post(
        SCOPES + "add/",
        {"name": "invoices:read", "description": "Read invoices", "sandbox": "on", "public": "on"},
    )
    assert added.status_code == 302
    scope = Scope.objects.get(name="invoices:read")
    assert scope.sandbox and scope.public

    console.post(f"{SCOPES}{scope.pk}/change/", {"name": "renamed", "description": "Read your invoices"})
    scope.refresh_from_db()
    assert (scope.name, scope.description, scope.sandbox) == ("invoices:read", "Read your invoices", False)

    bad = console.post(SCOPES + "add/", {"name": "has space", "description": "x"})
    assert "RFC 6749" in " ".join(bad.context["adminform"].form.errors["name"])


@pytest.mark.parametrize("name", ["invoices:read\n", "invoices:read\r\n", "\ninvoices:read"])
def test_a_scope_name_with_a_line_break_is_refused_by_the_service_too(db, name):
    """The console's form strips a name's line breaks; code calling the service does not, and the
    name's pattern matched before a final one ($), so that `invoices:read\n` was a scope name."""
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match=r"RFC 6749 3\.3"):
        services.save_scope(scope=Scope(name=name, description="Read invoices"), actor="tests")
    assert not Scope.objects.filter(name__startswith="invoices").exists()


def test_the_registration_access_tokens_scope_name_is_reserved(console):
    """A token with only `client:configure` is taken for a registration access token (RFC 7592):
    a scope of that name, granted to a client, would let its tokens manage its registration."""
    refused = console.post(SCOPES + "add/", {"name": "client:configure", "description": "x"})
    assert "reserved for registration access tokens" in " ".join(
        refused.context["adminform"].form.errors["name"]
    )
    assert not Scope.objects.filter(name="client:configure").exists()
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="reserved"):
        services.save_scope(scope=Scope(name="client:configure", description="x"), actor="tests")


def test_a_scope_in_use_cannot_be_deleted_and_the_page_names_its_clients(console):
    holder = make_client(name="Order importer", scopes=["orders:write"]).application
    scope = Scope.objects.get(name="orders:write")

    page = console.get(f"{SCOPES}{scope.pk}/delete/")
    html = page.content.decode()
    assert "cannot be deleted: these clients hold it" in html
    assert f'<a href="{CLIENTS}{holder.pk}/change/"><bdi>Order importer</bdi></a>' in html
    assert holder.client_id in html
    assert 'name="post" value="yes"' not in html

    console.post(f"{SCOPES}{scope.pk}/delete/", {"post": "yes"})
    assert Scope.objects.filter(pk=scope.pk).exists()

    unused = Scope.objects.get(name="registration")
    bulk = console.post(SCOPES, {"action": "delete_selected", "_selected_action": [scope.pk, unused.pk]})
    bulk_html = bulk.content.decode()
    assert "The selected scopes cannot be deleted: clients hold them" in bulk_html
    assert "Order importer" in bulk_html and 'name="post" value="yes"' not in bulk_html
    console.post(
        SCOPES, {"action": "delete_selected", "_selected_action": [scope.pk, unused.pk], "post": "yes"}
    )
    assert Scope.objects.filter(pk__in=[scope.pk, unused.pk]).count() == 2

    console.post(f"{SCOPES}{unused.pk}/delete/", {"post": "yes"})
    assert not Scope.objects.filter(pk=unused.pk).exists()


def test_the_delete_scope_service_refuses_a_scope_in_use(db):
    make_client(name="Holder", scopes=["orders:read"])
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="held by Holder"):
        services.delete_scope(scope=Scope.objects.get(name="orders:read"), actor="tests")


# --- who may do what ----------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(client, db):
    for path in ("/admin/", CLIENTS, "/admin/dashboard/", AUDIT):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_operators_manage_clients_scopes_tokens_and_read_audit_but_not_users(console):
    for path in (CLIENTS, CLIENTS + "add/", SCOPES, SCOPES + "add/", TOKENS, AUDIT, "/admin/dashboard/"):
        assert console.get(path).status_code == 200, path
    for path in ("/admin/auth/user/", "/admin/auth/group/", "/admin/auth/user/add/"):
        assert console.get(path).status_code == 403, path
    index = console.get("/admin/").content.decode()
    assert "Clients" in index and "Audit events" in index
    assert "/admin/auth/user/" not in index


def test_staff_without_the_operators_group_see_nothing(db):
    http = HttpsClient()
    http.force_login(get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True))

    assert http.get(CLIENTS).status_code == 403
    assert http.get("/admin/dashboard/").status_code == 403
    assert "permission to view or edit anything" in http.get("/admin/").content.decode()


def test_staff_who_may_only_view_clients_read_a_client_page_and_change_nothing(db):
    auditor = get_user_model().objects.create_user("ivy", password=PASSWORD, is_staff=True)
    auditor.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="authserver", codename="view_application")
    )
    http = HttpsClient()
    http.force_login(auditor)
    new_client = make_client(name="Read me", scopes=["products:read"])
    page = f"{CLIENTS}{new_client.application.pk}/change/"

    response = http.get(page)

    assert response.status_code == 200
    assert new_client.application.client_id in response.content.decode()
    assert http.post(page, {"name": "Renamed", "scopes": [], "enabled": "on"}).status_code == 403
    assert http.post(f"{CLIENTS}{new_client.application.pk}/disable/").status_code == 403
    assert Application.objects.get().name == "Read me"


def test_staff_who_may_not_view_tokens_do_not_see_them_on_the_client_page(db):
    """The token list refuses them; the client page lists no token either (as no audit events to
    those who may not read the trail)."""
    auditor = get_user_model().objects.create_user("ivy", password=PASSWORD, is_staff=True)
    auditor.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="authserver", codename="view_application")
    )
    http = HttpsClient()
    http.force_login(auditor)
    new_client = make_client(name="Read me", scopes=["products:read"])
    issue_token(http, new_client)
    token = AccessToken.objects.get()

    page = http.get(f"{CLIENTS}{new_client.application.pk}/change/").content.decode()

    assert http.get(TOKENS).status_code == 403
    assert 'id="active-tokens"' not in page
    assert f"#{token.pk}" not in page
    auditor.user_permissions.add(Permission.objects.get(codename="view_accesstoken"))
    page = http.get(f"{CLIENTS}{new_client.application.pk}/change/").content.decode()
    assert f"<td>#{token.pk}</td>" in page
    assert "/revoke/" not in page  # viewing, not revoking


def test_staff_who_may_change_clients_but_not_revoke_tokens_cannot_revoke_them(db):
    """Revoking deletes tokens: a client's "Revoke all tokens", on its page or in bulk, takes the
    permission revoking one token takes, not only the permission to change clients."""
    editor = get_user_model().objects.create_user("eve", password=PASSWORD, is_staff=True)
    editor.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="authserver", codename__in=["view_application", "change_application"]
        )
    )
    http = HttpsClient()
    http.force_login(editor)
    new_client = make_client(name="Keep my tokens", scopes=["products:read"])
    issue_token(http, new_client)
    client = new_client.application
    revoke_all = f"{CLIENTS}{client.pk}/revoke-tokens/"

    assert revoke_all not in http.get(f"{CLIENTS}{client.pk}/change/").content.decode()
    assert http.get(revoke_all).status_code == 403
    assert http.post(revoke_all).status_code == 403
    assert "revoke_tokens" not in http.get(CLIENTS).content.decode()
    http.post(CLIENTS, {"action": "revoke_tokens", "_selected_action": [client.pk], "post": "yes"})

    assert AccessToken.objects.filter(application=client).count() == 1
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_REVOKED).exists()
    assert http.post(f"{CLIENTS}{client.pk}/disable/").status_code == 302  # changing the client: allowed


# Each kind of staff: what they may do is what the console shows them, and nothing more answers them.
STAFF = {
    "superuser": None,
    "operators": "group",
    "view-only": ["view_application", "view_scope", "view_auditevent", "view_accesstoken"],
    "view and revoke tokens, not change clients": [
        "view_application",
        "view_accesstoken",
        "delete_accesstoken",
    ],
    "no authserver permission": [],
}


def staff_console(kind: str) -> HttpsClient:
    if STAFF[kind] is None:
        member = get_user_model().objects.create_superuser("root", password=PASSWORD)
    else:
        member = get_user_model().objects.create_user("staff", password=PASSWORD, is_staff=True)
        if STAFF[kind] == "group":
            member.groups.add(services.ensure_operators_group())
        else:
            member.user_permissions.add(*Permission.objects.filter(codename__in=STAFF[kind]))
    http = HttpsClient()
    http.force_login(member)
    return http


@pytest.mark.parametrize("kind", STAFF)
def test_each_staff_member_sees_the_client_actions_they_may_perform_and_no_other(db, kind):
    """The client page's links and buttons (object tools, the secret's "Rotate the secret", token
    and registration-token revoke buttons, Delete) each lead somewhere for whom they are shown; the
    hidden ones, posted anyway, are refused and change nothing."""
    owner = get_user_model().objects.create_user("dana", password=PASSWORD)
    new_client = make_client(name="Managed", owner=owner)
    client = new_client.application
    token = issue_token(HttpsClient(), new_client)
    services.issue_registration_token(application=client)
    http = staff_console(kind)
    page_url = f"{CLIENTS}{client.pk}/change/"
    token_revoke = f"{CLIENTS}{client.pk}/tokens/{stored_token(token).pk}/revoke/"
    actions = {
        # shown on the page as: what posting it takes
        f"{CLIENTS}{client.pk}/rotate-secret/": {},
        f"{CLIENTS}{client.pk}/revoke-tokens/": {},
        f"{CLIENTS}{client.pk}/disable/": {},
        f"{CLIENTS}{client.pk}/delete/": {"post": "yes"},
        token_revoke: {},
        f"{CLIENTS}{client.pk}/registration-token/revoke/": {},
    }
    may_change = kind in ("superuser", "operators")

    response = http.get(page_url)

    if kind == "no authserver permission":
        assert response.status_code == 403
    else:
        assert response.status_code == 200
        page = response.content.decode()
        for url in actions:
            assert (url in page) == may_change, url
        assert ("Rotate the secret" in page) == may_change
        assert "Stored hashed" in page
        # Read-only, the owner is no link to the user's page, which these staff may not open.
        assert f"/admin/auth/user/{owner.pk}/" not in page
    for url, form in actions.items():
        if not may_change:
            assert http.post(url, form).status_code == 403, url
    # The list's bulk actions: offered only to those who may perform them, refused otherwise.
    offered = http.get(CLIENTS)
    for bulk in ("disable", "revoke_tokens", "delete_selected"):
        assert (f'value="{bulk}"' in offered.content.decode()) == may_change, bulk
        if not may_change:
            http.post(CLIENTS, {"action": bulk, "_selected_action": [client.pk], "post": "yes"})
    if not may_change:
        client.refresh_from_db()
        assert client.enabled
        assert check_password(new_client.client_secret, client.client_secret)
        assert AccessToken.objects.filter(application=client).count() == 2  # and its registration token
        assert not AuditEvent.objects.exclude(kind__in=["client_created", "token_issued"]).exists()
    else:
        # Each shown action does what it says for whom it is shown.
        assert http.post(token_revoke).status_code == 302
        assert http.post(f"{CLIENTS}{client.pk}/registration-token/revoke/").status_code == 302
        assert http.post(f"{CLIENTS}{client.pk}/rotate-secret/", {"form_id": "once"}).status_code == 200
        assert http.post(f"{CLIENTS}{client.pk}/disable/").status_code == 302
        assert not AccessToken.objects.filter(application=client).exists()


def test_staff_who_may_view_the_trail_but_not_clients_get_no_links_to_client_pages(db):
    """The audit trail's client column and event page, the dashboard, the token page and the scope
    list linked to client pages (or the client list) that answered them 403."""
    new_client = make_client(name="Linked")
    client = new_client.application
    token = stored_token(issue_token(HttpsClient(), new_client))
    services.record_event(kind=AuditEvent.Kind.AUTH_FAILED, application=client, actor="tests")
    reader = get_user_model().objects.create_user("ivy", password=PASSWORD, is_staff=True)
    reader.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_auditevent", "view_accesstoken", "view_scope"])
    )
    http = HttpsClient()
    http.force_login(reader)
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.AUTH_FAILED)

    pages = {
        "audit trail": http.get(AUDIT),
        "audit event": http.get(f"{AUDIT}{event.pk}/change/"),
        "dashboard": http.get(f"/admin/dashboard/?client={client.client_id}"),
        "token": http.get(f"{TOKENS}{token.pk}/change/"),
        "scopes": http.get(SCOPES),
    }

    assert http.get(f"{CLIENTS}{client.pk}/change/").status_code == 403
    assert http.get(CLIENTS).status_code == 403
    for name, response in pages.items():
        assert response.status_code == 200, name
        page = response.content.decode()
        assert CLIENTS not in page, name
        assert "Linked" in page or name == "scopes", name
    # Who may view clients gets the links.
    reader.user_permissions.add(Permission.objects.get(codename="view_application"))
    for path in (AUDIT, f"{AUDIT}{event.pk}/change/", f"/admin/dashboard/?client={client.client_id}"):
        assert f"{CLIENTS}{client.pk}/change/" in http.get(path).content.decode(), path
    assert f"{CLIENTS}?allowed_scopes__id__exact=" in http.get(SCOPES).content.decode()


def test_staff_who_may_delete_scopes_but_not_view_clients_get_no_links_to_the_clients_holding_one(db):
    """The page refusing to delete a scope in use names its clients, linked to pages that answered
    these staff 403."""
    holder = make_client(name="Order importer", scopes=["orders:write"]).application
    scope = Scope.objects.get(name="orders:write")
    editor = get_user_model().objects.create_user("sid", password=PASSWORD, is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(codename__in=["view_scope", "delete_scope"]))
    http = HttpsClient()
    http.force_login(editor)
    pages = {
        "delete": http.get(f"{SCOPES}{scope.pk}/delete/"),
        "bulk delete": http.post(SCOPES, {"action": "delete_selected", "_selected_action": [scope.pk]}),
    }

    assert http.get(f"{CLIENTS}{holder.pk}/change/").status_code == 403
    for name, response in pages.items():
        page = response.content.decode()
        assert "Order importer" in page and holder.client_id in page, name
        assert CLIENTS not in page, name


def test_an_operator_revokes_a_clients_registration_access_token_alone(console, new_client):
    """RFC 7592: a leaked registration access token is ended without ending the client, audited."""
    client = new_client.application
    token = issue_token(console, new_client)
    registration_token = services.issue_registration_token(application=client)
    management = f"/oauth2/register/{client.client_id}"
    assert console.get(management, **bearer(registration_token)).status_code == 200
    page = console.get(f"{CLIENTS}{client.pk}/change/").content.decode()
    assert 'id="registration-token"' in page
    revoke = f"{CLIENTS}{client.pk}/registration-token/revoke/"
    assert console.get(revoke).status_code == 405

    response = console.post(revoke)

    assert response.status_code == 302
    refused = console.get(management, **bearer(registration_token))
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_token"
    assert introspect(console, token)["active"] is True
    assert request_token(console, new_client).status_code == 200
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_REVOKED)
    assert (event.application, event.actor, event.detail["scope"]) == (
        client,
        "user:olivia",
        "client:configure",
    )
    assert 'id="registration-token"' not in console.get(f"{CLIENTS}{client.pk}/change/").content.decode()
    assert console.post(revoke).status_code == 404  # none left
    assert console.post(f"{CLIENTS}999999/registration-token/revoke/").status_code == 404


@pytest.mark.parametrize("listing", [TOKENS, AUDIT])
def test_a_client_filter_naming_no_client_lists_nothing(console, new_client, listing):
    """A client filter naming no client (deleted since the link was made) listed every client's
    rows: Django applies only the filters it shows."""
    issue_token(console, new_client)

    response = console.get(f"{listing}?application__id__exact=999999")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


@pytest.mark.parametrize("listing", [TOKENS, AUDIT])
@pytest.mark.parametrize("chosen", ["99999999999999999999", str(2**63)])
def test_a_client_filter_beyond_the_integer_range_is_a_400_page(console, new_client, listing, chosen):
    """The long lists' client filter looked an id beyond the integer range up to name it:
    OverflowError on SQLite (a 500)."""
    issue_token(console, new_client)

    response = console.get(f"{listing}?application__id__exact={chosen}")

    assert response.status_code == 400
    assert "text/html" in response["Content-Type"]


def test_non_staff_users_cannot_log_in(client, db):
    get_user_model().objects.create_user("dev", password=PASSWORD)

    response = client.post("/admin/login/?next=/admin/", {"username": "dev", "password": PASSWORD})

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_superusers_see_users_and_not_the_grants_this_server_does_not_serve(superuser_console):
    assert superuser_console.get("/admin/auth/user/").status_code == 200
    for model in ("grant", "refreshtoken", "idtoken"):
        assert superuser_console.get(f"/admin/oauth2_provider/{model}/").status_code == 403
    index = superuser_console.get("/admin/").content.decode()
    assert "/admin/oauth2_provider/grant/" not in index
    assert index.index("/admin/authserver/application/") < index.index("/admin/auth/user/")


@pytest.fixture
def user_manager(db):
    """Staff given the user permissions alone, to deactivate developers (README: Users)."""
    member = get_user_model().objects.create_user("uma", password=PASSWORD, is_staff=True)
    member.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="auth", codename__in=["view_user", "change_user"])
    )
    http = HttpsClient()
    http.force_login(member)
    return member, http


def staff_user_form(user, **overrides) -> dict:
    """A user's change form as posted, with every permission field a superuser's form has."""
    data = {
        "username": user.username,
        "is_active": "on" if user.is_active else None,
        "is_staff": "on" if user.is_staff else None,
        "is_superuser": "on" if user.is_superuser else None,
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    return {key: value for key, value in {**data, **overrides}.items() if value is not None}


def test_staff_who_manage_users_cannot_give_anyone_more_power(user_manager):
    """Changing users is not changing what users may do: a posted form's superuser status, staff
    status, groups and permissions are a superuser's to set, or the user permissions would be all."""
    member, http = user_manager
    developer = get_user_model().objects.create_user("dana", password=PASSWORD)
    operators = services.ensure_operators_group()
    every_permission = list(Permission.objects.values_list("pk", flat=True))
    escalations = {
        "is_staff": "on",
        "is_superuser": "on",
        "groups": [operators.pk],
        "user_permissions": every_permission,
    }

    for user in (member, developer):
        response = http.post(f"{USERS}{user.pk}/change/", staff_user_form(user, **escalations))
        assert response.status_code in (302, 403), response.status_code
        user.refresh_from_db()
        assert not user.is_superuser
        assert not user.groups.exists()
        assert set(user.user_permissions.values_list("codename", flat=True)) <= {"view_user", "change_user"}
    developer.refresh_from_db()
    assert not developer.is_staff
    assert not member.has_perm("auth.add_user")


def test_staff_who_manage_groups_cannot_give_a_group_more_permissions(db):
    """A group's permissions are its members' rights: staff given the group permissions could give
    their own group every permission (a superuser's but for the flag)."""
    managers = Group.objects.create(name="group managers")
    managers.permissions.add(
        *Permission.objects.filter(
            content_type__app_label="auth", codename__in=["view_group", "add_group", "change_group"]
        )
    )
    member = get_user_model().objects.create_user("gus", password=PASSWORD, is_staff=True)
    member.groups.add(managers)
    http = HttpsClient()
    http.force_login(member)
    every_permission = list(Permission.objects.values_list("pk", flat=True))

    page = http.get(f"/admin/auth/group/{managers.pk}/change/").content.decode()
    changed = http.post(
        f"/admin/auth/group/{managers.pk}/change/", {"name": "managers", "permissions": every_permission}
    )
    added = http.post("/admin/auth/group/add/", {"name": "new", "permissions": every_permission})

    assert 'name="permissions"' not in page
    assert (changed.status_code, added.status_code) == (302, 302)
    managers.refresh_from_db()
    assert managers.name == "managers"  # what they may change still saved
    assert managers.permissions.count() == 3
    assert not Group.objects.get(name="new").permissions.exists()
    member = get_user_model().objects.get(pk=member.pk)
    assert not member.has_perm("auth.change_user")


def test_a_superuser_sets_a_groups_permissions(superuser_console):
    change_user = Permission.objects.get(content_type__app_label="auth", codename="change_user")

    response = superuser_console.post(
        "/admin/auth/group/add/", {"name": "g", "permissions": [change_user.pk]}
    )

    assert response.status_code == 302
    assert list(Group.objects.get(name="g").permissions.all()) == [change_user]


def test_staff_who_manage_users_may_still_deactivate_a_developer(user_manager):
    _, http = user_manager
    developer = get_user_model().objects.create_user("dana", password=PASSWORD)
    page = http.get(f"{USERS}{developer.pk}/change/").content.decode()

    response = http.post(f"{USERS}{developer.pk}/change/", staff_user_form(developer, is_active=None))

    assert 'name="is_superuser"' not in page and 'name="groups"' not in page
    assert response.status_code == 302
    developer.refresh_from_db()
    assert not developer.is_active


def test_staff_who_manage_users_cannot_take_over_a_staff_account(user_manager):
    """A new password for the superuser, or an operator, would be their account: only a superuser
    changes staff accounts."""
    member, http = user_manager
    root = get_user_model().objects.create_superuser("root", password=PASSWORD)
    operator = get_user_model().objects.create_user("olivia", password=PASSWORD, is_staff=True)
    operator.groups.add(services.ensure_operators_group())
    new_password = {"password1": "a new one, chosen by uma", "password2": "a new one, chosen by uma"}

    for account in (root, operator):
        assert http.post(f"{USERS}{account.pk}/password/", new_password).status_code == 403
        changed = http.post(f"{USERS}{account.pk}/change/", staff_user_form(account, is_active=None))
        assert changed.status_code == 403
        account.refresh_from_db()
        assert account.check_password(PASSWORD)
        assert account.is_active
        assert http.get(f"{USERS}{account.pk}/change/").status_code == 200  # still seen
    delete_user = Permission.objects.get(content_type__app_label="auth", codename="delete_user")
    member.user_permissions.add(delete_user)
    for account in (root, operator):
        assert http.post(f"{USERS}{account.pk}/delete/", {"post": "yes"}).status_code == 403
        http.post(USERS, {"action": "delete_selected", "_selected_action": [account.pk], "post": "yes"})
    assert get_user_model().objects.filter(pk__in=[root.pk, operator.pk]).count() == 2


def test_the_consoles_shortcut_to_a_client_leads_to_its_page(console, new_client):
    """Django's /admin/r/<content type>/<id>/ ("view on site") follows get_absolute_url, which named
    a view of DOT's this server does not serve: a 500."""
    client = new_client.application
    content_type = ContentType.objects.get_for_model(Application)

    response = console.get(f"/admin/r/{content_type.pk}/{client.pk}/")

    assert response.status_code == 302
    assert response["Location"].endswith(f"{CLIENTS}{client.pk}/change/")
    assert console.get(response["Location"]).status_code == 200


def test_the_operators_group_is_idempotent_and_has_no_user_permissions(db):
    first = services.ensure_operators_group()
    second = services.ensure_operators_group()

    assert first == second
    codenames = set(second.permissions.values_list("content_type__app_label", "codename"))
    assert codenames == set(services.OPERATOR_PERMISSIONS)
    assert not {label for label, _ in codenames} & {"auth", "admin", "sessions"}


def test_the_admin_login_is_throttled(client, operator):
    for _ in range(5):
        failed = client.post("/admin/login/", {"username": "olivia", "password": "wrong"})
        assert failed.status_code == 200

    blocked = client.post("/admin/login/", {"username": "olivia", "password": PASSWORD})

    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session


def test_wrong_current_passwords_on_the_consoles_password_change_count_as_failed_logins(console):
    # A console session left open is no way to guess its password without limit.
    new_password = "another horse battery staple"
    for _ in range(5):
        failed = console.post(
            "/admin/password_change/",
            {"old_password": "wrong", "new_password1": new_password, "new_password2": new_password},
        )
        assert failed.status_code == 200

    blocked = console.post(
        "/admin/password_change/",
        {"old_password": PASSWORD, "new_password1": new_password, "new_password2": new_password},
    )

    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) > 0
    assert HttpsClient().login(username="olivia", password=PASSWORD)  # unchanged
    login = HttpsClient().post("/admin/login/", {"username": "olivia", "password": PASSWORD})
    assert login.status_code == 429


def test_the_admin_login_works(client, operator):
    response = client.post("/admin/login/?next=/admin/", {"username": "olivia", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_console_session_ends_after_30_minutes_without_a_request(client, operator, monkeypatch):
    clock = SimpleNamespace(now=sessions.time.time())
    monkeypatch.setattr(sessions, "time", SimpleNamespace(time=lambda: clock.now))
    client.post("/admin/login/", {"username": "olivia", "password": PASSWORD})
    assert client.session.get_expiry_age() == pytest.approx(30 * 60, abs=5)

    clock.now += 29 * 60
    assert client.get(CLIENTS).status_code == 200  # and 30 minutes from now again
    clock.now += 29 * 60
    assert client.get(CLIENTS).status_code == 200
    clock.now += 30 * 60 + 1

    assert client.get(CLIENTS)["Location"].startswith("/admin/login/")
    assert "_auth_user_id" not in client.session


def test_a_console_session_ends_12_hours_after_the_login_however_used(client, operator, monkeypatch):
    clock = SimpleNamespace(now=sessions.time.time())
    monkeypatch.setattr(sessions, "time", SimpleNamespace(time=lambda: clock.now))
    client.post("/admin/login/", {"username": "olivia", "password": PASSWORD})
    for _ in range(12 * 3 - 1):  # every 20 minutes, to 11 hours 40
        clock.now += 20 * 60
        assert client.get("/admin/").status_code == 200
    clock.now += 20 * 60

    assert client.get("/admin/")["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("typed", ["OLIVIA", "Olivia"])
def test_an_operator_logs_in_with_their_username_in_any_case(client, operator, typed):
    response = client.post("/admin/login/?next=/admin/", {"username": typed, "password": PASSWORD})

    assert (response.status_code, response["Location"]) == (302, "/admin/")
    assert client.session["_auth_user_id"] == str(operator.pk)


@pytest.mark.parametrize("username", ["OLIVIA", "Élodie"])
def test_the_console_refuses_a_new_user_whose_name_another_has_in_any_case(
    superuser_console, operator, username
):
    """Django's own check (iexact) folds ASCII letters alone on SQLite; the database's index would
    then refuse "Élodie" beside "élodie" with a 500."""
    get_user_model().objects.create_user("élodie")
    superuser_console.raise_request_exception = False
    form = {"username": username, "usable_password": "false", "password1": "", "password2": ""}

    response = superuser_console.post(f"{USERS}add/", form)

    assert response.status_code == 200
    assert "A user with that username already exists" in response.content.decode()
    assert get_user_model().objects.count() == 3


def test_the_console_refuses_renaming_a_user_to_a_name_another_has_in_any_case(superuser_console, operator):
    superuser_console.raise_request_exception = False
    user = get_user_model().objects.get(username="root")
    changed = {
        "username": "Olivia",
        "is_active": "on",
        "is_staff": "on",
        "is_superuser": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }

    response = superuser_console.post(f"{USERS}{user.pk}/change/", changed)
    renamed_in_its_own_case = superuser_console.post(
        f"{USERS}{user.pk}/change/", {**changed, "username": "ROOT"}
    )

    assert response.status_code == 200
    assert "A user with that username already exists" in response.content.decode()
    assert renamed_in_its_own_case.status_code == 302
    assert set(get_user_model().objects.values_list("username", flat=True)) == {"ROOT", "olivia"}


@pytest.mark.parametrize(
    ("usernames", "renamed"),
    [(("grace", "GRACE"), False), (("élodie", "Élodie"), False), (("ada", "ADA"), True)],
)
def test_two_operators_saving_usernames_differing_only_in_case_at_once_get_a_form_error(
    transactional_db, monkeypatch, usernames, renamed
):
    """Each operator's form, checked, waits for the other's check: both found the name free, and
    the second save met the unique index on the lowercase username (a 500 on PostgreSQL). One adds
    a user; the other adds one too, or renames and deactivates an existing user, which a refused
    save leaves as it was, and says nothing about."""
    existing = get_user_model().objects.create_user("someone-else")
    both_checked = threading.Barrier(2, timeout=2)  # SQLite's writers queue: one never waits here

    def clean_then_wait(form):
        username = console_forms.UsernameInAnyCaseMixin.clean_username(form)
        with suppress(threading.BrokenBarrierError):
            both_checked.wait()
        return username

    for form in (console_forms.ConsoleUserCreationForm, console_forms.ConsoleUserChangeForm):
        monkeypatch.setattr(form, "clean_username", clean_then_wait)
    operators = [get_user_model().objects.create_superuser(f"root{n}", password=PASSWORD) for n in (1, 2)]

    def save(index: int):
        browser = HttpsClient(raise_request_exception=False)
        browser.force_login(operators[index])
        try:
            if renamed and index == 1:  # is_active left out: deactivated
                changed = {
                    "username": usernames[index],
                    "date_joined_0": "2026-01-01",
                    "date_joined_1": "0:0",
                }
                return browser.post(f"{USERS}{existing.pk}/change/", changed)
            form = {
                "username": usernames[index],
                "usable_password": "false",
                "password1": "",
                "password2": "",
            }
            return browser.post(f"{USERS}add/", form)
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(save, range(2)))

    assert sorted(response.status_code for response in responses) == [200, 302]  # no 500
    refused = next(response for response in responses if response.status_code == 200).content.decode()
    assert "A user with that username already exists" in refused
    assert "is deactivated" not in refused
    names = set(get_user_model().objects.values_list("username", flat=True))
    assert len(names & set(usernames)) == 1
    existing.refresh_from_db()
    assert existing.is_active == (existing.username == "someone-else")


@pytest.mark.parametrize(
    "path",
    [
        AUDIT + "?kind__exact=%00",  # was a 500 on PostgreSQL, which cannot compare a NUL
        AUDIT + "?client_id=a%00b",
        CLIENTS + "?enabled__exact=%00",
        CLIENTS + "?q=%00",
        TOKENS + "?application__id__exact=1&scope=%00",
        SCOPES + "?%00=1",
        "/admin/dashboard/?client=%00",
    ],
)
def test_a_nul_character_in_a_console_query_string_is_a_400_page(console, path):
    response = console.get(path)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert console.get(path.partition("?")[0]).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        # Django's list applies any lookup on the model's own fields: these failed in the database.
        CLIENTS + "?created__year=99999999",  # year_lookup_bounds: ValueError, a 500
        CLIENTS + "?created__year__gt=0",
        TOKENS + "?expires__iso_year=10000",
        SCOPES + "?name__regex=%5B",  # an invalid regex: a 503 on SQLite, a 500 on PostgreSQL
        CLIENTS + "?name__range=x",  # a range of one value: a 500
        TOKENS + "?id__in=1,99999999999999999999",  # OverflowError on SQLite
        CLIENTS + "?user__exact=99999999999999999999",
        AUDIT + "?application__id__exact=99999999999999999999",  # the client filter's choices overflowed
        AUDIT + "?remote_addr__exact=x",  # no inet: a 500 on PostgreSQL
        AUDIT + "?detail__contains=x",  # JSON containment: no JSON, and none on SQLite
    ],
)
def test_a_list_lookup_the_database_cannot_take_is_a_400_page(console, new_client, path):
    issue_token(HttpsClient(), new_client)

    response = console.get(path)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "query",
    [
        "?client_secret__startswith={secret_hash_start}",
        "?client_secret__exact=x",
        "?user__password__startswith=pbkdf2",
    ],
)
def test_a_list_lookup_on_a_hashed_secret_is_a_400_page(console, new_client, query):
    """client_secret__startswith=... would read a client's stored secret hash one character at a time
    (as Django's UserAdmin refuses for password): refused on every list, through relations too."""
    stored = new_client.application.client_secret
    query = query.format(secret_hash_start=stored[:12])
    assert console.get(f"{CLIENTS}?client_id={new_client.application.client_id}").status_code == 200

    assert console.get(CLIENTS + query).status_code == 400
    assert console.get(f"{TOKENS}?application__client_secret__startswith={stored[:12]}").status_code == 400
    assert console.get(f"{TOKENS}?token_checksum__startswith=a").status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        f"{CLIENTS}?grant_type=client-credentials&enabled__exact=1&allowed_scopes__isnull=False",
        f"{CLIENTS}?allowed_scopes__id__exact={{scope}}&q=billing&o=2",
        f"{CLIENTS}?name__icontains=bill&client_id={{client_id}}&user__isnull=True",
        f"{TOKENS}?status=active&application__id__exact={{client}}&scope=products%3Aread",
        f"{AUDIT}?kind__exact=token_issued&application__id__exact={{client}}&client_id={{client_id}}",
        f"{AUDIT}?created__year=2026&created__month=1&created__day=2",
        f"{AUDIT}?created__gte=2026-01-01+00%3A00%3A00%2B00%3A00&created__lt=2026-02-01+00%3A00%3A00%2B00%3A00&id__in=1,2",
        f"{SCOPES}?sandbox__exact=0&public__exact=1&pk__gt=0",
    ],
)
def test_the_lists_own_filters_and_comparisons_still_answer(console, new_client, query):
    client = new_client.application
    scope = Scope.objects.get(name="products:read").pk
    path = query.format(client=client.pk, client_id=client.client_id, scope=scope)

    response = console.get(path)

    assert response.status_code == 200, path
    assert "?e=1" not in response.get("Location", "")


@pytest.mark.parametrize(
    ("path", "action"),
    [
        (CLIENTS, "disable"),
        (CLIENTS, "delete_selected"),
        (TOKENS, "revoke_tokens"),
        (SCOPES, "delete_selected"),
    ],
)
@pytest.mark.parametrize(
    "tampered", ["x", "\x00", "1.5", str(2**63), "99999999999999999999", str(-(2**63) - 1)]
)
def test_an_action_on_selected_ids_that_are_no_ids_is_a_400_page(console, new_client, path, action, tampered):
    """A tampered form: Django's queryset.filter(pk__in=...) raised ValueError, or OverflowError for
    an id beyond 64 bits (a 500)."""
    token = issue_token(HttpsClient(), new_client)

    response = console.post(path, {"action": action, "_selected_action": [tampered], "index": "0"})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    new_client.application.refresh_from_db()
    assert new_client.application.enabled
    assert stored_token(token) is not None
    assert Scope.objects.filter(name="products:read").exists()


@pytest.mark.parametrize("tampered", ["99999999999999999999", str(2**63)])
def test_a_user_action_on_an_id_beyond_the_integer_range_is_a_400_page(superuser_console, tampered):
    response = superuser_console.post(USERS, {"action": "delete_selected", "_selected_action": [tampered]})

    assert response.status_code == 400
    assert get_user_model().objects.filter(username="root").exists()


@pytest.mark.parametrize("tampered", ["99999999999999999999", str(2**63)])
def test_a_group_or_permission_id_beyond_the_integer_range_is_a_field_error(superuser_console, tampered):
    """Django's group and user forms looked the ids up together, where one beyond the database's
    integer range overflowed (OverflowError on SQLite: a 500)."""
    permission = Permission.objects.get(codename="view_scope").pk
    added = superuser_console.post(
        "/admin/auth/group/add/", {"name": "auditors", "permissions": [permission, tampered]}
    )
    user = get_user_model().objects.get(username="root")
    changed = superuser_console.post(
        f"{USERS}{user.pk}/change/",
        {
            "username": "root",
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "groups": [tampered],
            "user_permissions": [permission, tampered],
        },
    )

    assert added.status_code == 200
    assert "permissions" in added.context["adminform"].form.errors
    assert changed.status_code == 200
    assert {"groups", "user_permissions"} <= set(changed.context["adminform"].form.errors)
    assert not Group.objects.filter(name="auditors").exists()


@pytest.mark.parametrize("tampered", ["99999999999999999999", str(2**63), "x", ""])
@pytest.mark.parametrize("registering", [True, False], ids=["add", "change"])
def test_a_scope_id_that_is_no_scope_id_is_a_field_error(console, new_client, registering, tampered):
    """A tampered client form: an id beyond the database's integer range overflowed (a 500)."""
    products = Scope.objects.get(name="products:read").pk
    if registering:
        response = console.post(CLIENTS + "add/", register_form(scopes=[products, tampered]))
    else:
        client = new_client.application
        response = console.post(
            f"{CLIENTS}{client.pk}/change/", change_form(client, scopes=[products, tampered])
        )

    assert response.status_code == 200
    assert "is not a valid value" in " ".join(response.context["adminform"].form.errors["scopes"])
    assert list(AuditEvent.objects.values_list("kind", flat=True)) == [AuditEvent.Kind.CLIENT_CREATED]
    assert list(new_client.application.allowed_scopes.values_list("name", flat=True).order_by("name")) == [
        "orders:read",
        "products:read",
    ]


def many(model, count: int) -> list:
    """`count` objects of a console list whose search "bulk" finds, and one, "kept", it does not."""
    user_model = get_user_model()
    names = [f"bulk{n:03d}" for n in range(count)] + ["kept"]
    if model is Application:
        made = [
            Application(
                name=name,
                client_id=name,
                client_type=Application.CLIENT_CONFIDENTIAL,
                authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            )
            for name in names
        ]
    elif model is user_model:
        made = [user_model(username=name, password="!") for name in names]
    else:
        made = [model(name=name) for name in names]
    model.objects.bulk_create(made)
    field = "username" if model is user_model else "name"
    return list(model.objects.filter(**{f"{field}__startswith": "bulk"}).order_by("pk"))


def hidden_inputs(page) -> dict:
    form = re.search(r'<form method="post">(.*?)</form>', page.content.decode(), re.S).group(1)
    posted = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form):
        posted.setdefault(name, []).append(html.unescape(value))
    return posted


DELETIONS = [
    (Application, CLIENTS, AuditEvent.Kind.CLIENT_DELETED),
    (Scope, SCOPES, AuditEvent.Kind.SCOPE_DELETED),
    (get_user_model(), USERS, AuditEvent.Kind.USER_DELETED),
    (Group, "/admin/auth/group/", AuditEvent.Kind.GROUP_DELETED),
]


@pytest.mark.parametrize(("model", "listing", "kind"), DELETIONS)
def test_delete_selected_on_all_of_a_long_list_is_confirmed_and_done(superuser_console, model, listing, kind):
    """ "Select all 250" then "Delete selected": the confirmation posted 250 ids back, past
    DATA_UPLOAD_MAX_NUMBER_FIELDS (200): a 400 page, and nothing was deleted. Each deleted through
    its service, audited."""
    bulk = many(model, 250)
    on_the_page = [each.pk for each in bulk[:100]]
    chosen = {"action": "delete_selected", "select_across": "1", "index": "0"}
    chosen["_selected_action"] = on_the_page

    confirm = superuser_console.post(f"{listing}?q=bulk", chosen)
    assert confirm.status_code == 200
    posted = hidden_inputs(confirm)
    assert len(posted["_selected_action"]) == 1
    done = superuser_console.post(f"{listing}?q=bulk", posted)

    assert done.status_code == 302
    assert not model.objects.filter(pk__in=[each.pk for each in bulk]).exists()
    field = "username" if model is get_user_model() else "name"
    assert model.objects.filter(**{field: "kept"}).exists()  # not in the search
    assert AuditEvent.objects.filter(kind=kind).count() == 250
    assert "Successfully deleted 250" in superuser_console.get(listing).content.decode()


def test_delete_selected_on_all_of_a_list_that_changed_since_deletes_nothing(superuser_console):
    """The confirmation showed the list's clients; one the search finds was registered before it was
    posted: it would have been deleted unseen. Nothing is, and the operator is told."""
    bulk = many(Application, 3)
    chosen = {"action": "delete_selected", "select_across": "1", "index": "0", "_selected_action": bulk[0].pk}
    posted = hidden_inputs(superuser_console.post(f"{CLIENTS}?q=bulk", chosen))
    make_client(name="bulk, registered since")

    done = superuser_console.post(f"{CLIENTS}?q=bulk", posted)

    assert done.status_code == 302
    assert Application.objects.filter(name__startswith="bulk").count() == 4
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_DELETED).exists()
    assert "The list changed since" in superuser_console.get(CLIENTS).content.decode()


@pytest.mark.parametrize("action", ["disable", "revoke_tokens"])
def test_a_bulk_action_on_all_of_a_list_that_changed_since_does_nothing(console, action):
    """The confirmation listed the search's clients; one it finds was registered before it was
    posted: it would have been disabled, or its tokens revoked, unseen. Nothing is done, and the
    operator is told."""
    bulk = [make_client(name=f"bulk {n}") for n in range(3)]
    chosen = {"action": action, "select_across": "1", "index": "0"}
    chosen["_selected_action"] = bulk[0].application.pk
    posted = hidden_inputs(console.post(f"{CLIENTS}?q=bulk", chosen))
    since = make_client(name="bulk, registered since")
    issue_token(console, since)

    done = console.post(f"{CLIENTS}?q=bulk", posted)

    assert done.status_code == 302
    assert not Application.objects.filter(enabled=False).exists()
    assert AccessToken.objects.filter(application=since.application).exists()
    assert "The list changed since" in console.get(CLIENTS).content.decode()
