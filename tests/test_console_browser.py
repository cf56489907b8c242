"""The seed's first step in a real browser: an operator registers a client in the management console,
uses the secret shown once, rotates it and disables the client; screenshots of the main pages go to
test-output/screenshots/."""

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command

from authserver import services
from authserver.models import Application, AuditEvent
from tests.browser import chromium_page, require_chromium, screenshot, wait_until
from tests.helpers import make_client
from tests.servers import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.live]

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    require_chromium()
    with django_db_blocker.unblock():
        # gunicorn serves static files from STATIC_ROOT (whitenoise): the console's CSS and JS.
        call_command("collectstatic", interactive=False, verbosity=0)
        with LiveServer(workers=2) as live:
            yield live


@pytest.fixture
def operator(transactional_db):
    user = get_user_model().objects.create_user("olivia", password=PASSWORD, is_staff=True)
    user.groups.add(services.ensure_operators_group())
    return user


def token_response(server, client_id: str, client_secret: str) -> requests.Response:
    return requests.post(
        f"{server.url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, client_secret),
        verify=server.verify,
        timeout=30,
    )


def log_in_to_the_console(page, base_url: str) -> None:
    """As the operator fixture's account, through the console's own login page."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/admin/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#console-summary")).to_be_visible()


def test_an_operator_registers_a_client_and_manages_its_credentials(server, operator):
    from playwright.sync_api import expect

    resource_server = make_client(scopes=["introspection"], name="Foo API (resource server)")

    def introspect(token: str) -> dict:
        return requests.post(
            f"{server.url}/oauth2/introspect",
            data={"token": token},
            auth=(resource_server.application.client_id, resource_server.client_secret),
            verify=server.verify,
            timeout=30,
        ).json()

    with chromium_page() as page:
        problems = []  # script errors and failed loads (a /favicon.ico probe too: the pages name their icon)

        def note_console_error(message):
            if message.type == "error":
                problems.append(f"{message.text} {message.location}")

        page.on("console", note_console_error)
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)

        # Log in.
        log_in_to_the_console(page, server.url)
        screenshot(page, "console-01-index")

        # Register a client-credentials application.
        page.get_by_role("link", name="Clients", exact=True).first.click()
        page.get_by_role("link", name="Add client").click()
        expect(page.locator("h1")).to_have_text("Register a client")
        expect(page.locator("#id_authorization_grant_type_0")).to_be_checked()
        expect(page.locator("#id_redirect_uris")).to_be_hidden()  # client credentials needs no callback
        page.fill("#id_name", "Billing service")
        page.locator("label", has_text="orders:read").locator("input").uncheck()
        page.locator("label", has_text="orders:write").locator("input").check()
        page.fill("#id_access_token_lifetime", "900")
        screenshot(page, "console-02-register-client")
        # Save clicked twice: the second click is not sent while the first is on its way (its
        # answer would replace the page showing the secret once).
        held = []
        page.route(
            "**/admin/authserver/application/add/",
            lambda route: held.append(route) if route.request.method == "POST" else route.continue_(),
        )
        save = page.locator("input[name=_save]").bounding_box()
        page.mouse.click(save["x"] + 5, save["y"] + 5)
        page.mouse.click(save["x"] + 5, save["y"] + 5)
        wait_until(page, lambda: held)  # the first POST, however slow the browser is to send it
        page.wait_for_timeout(300)  # time for a second one to arrive, were it sent
        assert len(held) == 1
        held[0].continue_()

        # The secret, shown once (in the answer to the form: it is stored nowhere), copied with the button.
        page.wait_for_selector("#client-secret")
        client_id = page.inner_text("#client-id")
        secret = page.inner_text("#client-secret")
        copy = page.locator("button[data-copy-from=client-secret]")
        copy.click()
        expect(copy).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == secret
        screenshot(page, "console-03-secret-once")

        # The secret works at the token endpoint.
        issued = token_response(server, client_id, secret)
        assert issued.status_code == 200, issued.text
        token = issued.json()
        assert (token["scope"], token["expires_in"]) == ("orders:write products:read", 900)

        # The token shows on the client's page (never the token itself); the secret does not.
        page.get_by_role("link", name="Done: to the client").click()
        tokens = page.locator("#active-tokens")
        expect(tokens).to_contain_text("Active tokens (1)")
        expect(tokens).to_contain_text("orders:write")
        content = page.content()
        assert token["access_token"] not in content and secret not in content
        screenshot(page, "console-04-client-with-tokens")
        change_url = page.url

        # Rotate the secret: the new one is shown once, the old one stops working.
        page.goto(change_url)
        page.get_by_role("link", name="Rotate secret").click()
        screenshot(page, "console-09-confirm-rotation")
        page.get_by_role("button", name="Rotate the secret").click()
        page.wait_for_selector("#client-secret")
        new_secret = page.inner_text("#client-secret")
        assert new_secret != secret
        refused = token_response(server, client_id, secret)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
        assert token_response(server, client_id, new_secret).status_code == 200
        assert introspect(token["access_token"])["active"] is True

        # Disable the client: its tokens stop working at once.
        page.goto(change_url)
        page.locator("a.console-action-disable").click()
        page.get_by_role("button", name="Disable").click()
        expect(page.locator(".messagelist")).to_contain_text("Disabled 1 client")
        expect(page.locator(".console-disabled-note")).to_be_visible()
        assert introspect(token["access_token"]) == {"active": False}
        assert token_response(server, client_id, new_secret).json()["error"] == "invalid_client"

        # The other main pages.
        page.goto(f"{server.url}/admin/authserver/application/")
        expect(page.locator("#result_list")).to_contain_text("Billing service")
        screenshot(page, "console-05-client-list")
        page.goto(f"{server.url}/admin/authserver/scope/")
        expect(page.locator("#result_list")).to_contain_text("products:read")
        screenshot(page, "console-06-scope-list")
        page.get_by_role("link", name="orders:write").click()
        page.get_by_role("link", name="Delete").click()
        expect(page.locator("#content")).to_contain_text("cannot be deleted: these clients hold it")
        expect(page.locator(".console-holders")).to_contain_text("Billing service")
        screenshot(page, "console-10-scope-in-use")
        page.goto(f"{server.url}/admin/oauth2_provider/accesstoken/")
        expect(page.locator("#result_list")).to_contain_text("Billing service")
        screenshot(page, "console-11-token-list")
        page.goto(f"{server.url}/admin/authserver/auditevent/")
        expect(page.locator("#result_list")).to_contain_text("secret rotated")
        screenshot(page, "console-07-audit-list")
        page.goto(f"{server.url}/admin/dashboard/?client={client_id}")
        expect(page.locator("#tokens-per-hour svg rect.bar")).to_have_count(24)
        screenshot(page, "console-08-dashboard")

        assert problems == []

    trail = AuditEvent.objects.filter(client_id=client_id).order_by("created", "pk")
    assert [event.kind for event in trail] == [
        "client_created",
        "token_issued",
        "secret_rotated",
        "auth_failed",  # the old secret
        "token_issued",
        "client_changed",
        "auth_failed",  # a disabled client
    ]
    operator_events = [event for event in trail if event.kind not in ("token_issued", "auth_failed")]
    assert {event.actor for event in operator_events} == {"user:olivia"}


def test_the_console_takes_long_names_and_the_keyboard(server, operator):
    """A client name of 255 letters without a space (a dynamically registered client picks its own)
    wraps rather than widening the page or pushing a list's columns out of the window; the
    dashboard's client is chosen with the arrow keys (each of which changes the choice), then Enter
    shows it."""
    from playwright.sync_api import expect

    long_name = "W" * 255
    long_client = make_client(name=long_name)
    issue = token_response(server, long_client.application.client_id, long_client.client_secret)
    assert issue.status_code == 200, issue.text
    make_client(name="Zeta service")

    with chromium_page() as page:
        log_in_to_the_console(page, server.url)

        # The long name wraps: every page keeps to the window's width, the lists show every column.
        client = long_client.application
        for path in (
            "/admin/authserver/application/",
            f"/admin/authserver/application/{client.pk}/change/",
            f"/admin/authserver/application/{client.pk}/rotate-secret/",
            "/admin/oauth2_provider/accesstoken/",
            "/admin/authserver/auditevent/",
            f"/admin/dashboard/?client={client.client_id}",
        ):
            page.goto(f"{server.url}{path}")
            widths = page.evaluate(
                "[document.documentElement.scrollWidth, window.innerWidth,"
                " ...Array.from(document.querySelectorAll('.results'), e => e.scrollWidth - e.clientWidth)]"
            )
            assert widths[0] <= widths[1] and not any(widths[2:]), (path, widths)

        # The dashboard's client, chosen with the keyboard: the arrow keys move, Enter shows.
        page.goto(f"{server.url}/admin/dashboard/")
        picker = page.locator("#dashboard-client")
        picker.focus()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        page.wait_for_timeout(300)
        assert "client=" not in page.url
        chosen = picker.input_value()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url.endswith(f"?client={chosen}")
        expect(page.locator("#dashboard-client")).to_have_value(chosen)


@pytest.fixture
def own_server(server):
    """A server of this test's own (the module's serves the static files it collected): the module's
    workers keep the content type ids of the first test's database, which a later test's flush
    renews, and the admin's deletion log would name one no longer stored."""
    with LiveServer(workers=1) as live:
        yield live


def test_an_operator_deletes_every_client_of_a_long_list(own_server, operator):
    """ "Select all 250 clients", "Delete selected clients", "Yes, I'm sure": the confirmation posted
    250 ids back, past DATA_UPLOAD_MAX_NUMBER_FIELDS (200), and the operator got a 400 page with
    nothing deleted. Each is deleted through the service, audited."""
    from playwright.sync_api import expect

    Application.objects.bulk_create(
        Application(
            name=name,
            client_id=name,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        )
        for name in [f"bulk{n:03d}" for n in range(250)] + ["kept"]
    )

    with chromium_page() as page:
        log_in_to_the_console(page, own_server.url)

        page.goto(f"{own_server.url}/admin/authserver/application/?q=bulk")
        page.check("#action-toggle")
        page.get_by_role("button", name="Select all 250 clients").click()
        page.select_option("select[name=action]", "delete_selected")
        page.click("button[name=index]")
        expect(page.locator("h1")).to_have_text("Delete multiple objects")
        page.click("form input[type=submit]")  # "Yes, I'm sure"

        expect(page.locator(".messagelist")).to_contain_text("Successfully deleted 250 clients.")
    assert list(Application.objects.values_list("name", flat=True)) == ["kept"]
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_DELETED).count() == 250
