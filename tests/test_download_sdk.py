"""The seed's scenario end to end, in a real browser against a real HTTPS server: a developer signs
up, clicks Download SDK, receives the zip and sees the test token; then installs the SDK from that
zip into a fresh virtualenv and runs it against the server. Screenshots of every portal page go to
test-output/screenshots/."""

import json
import os
import subprocess
import venv
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model

from fooapi.services import seed_demo_catalogue
from sdkportal import services as portal_services
from sdkportal.sdk.foo_sdk import __version__
from tests.browser import chromium_page, screenshot, wait_until
from tests.helpers import make_client
from tests.servers import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.live]

PASSWORD = "a long and unusual passphrase 7"


@pytest.fixture
def server(transactional_db, django_db_blocker):
    seed_demo_catalogue()
    portal = make_client(scopes=["products:read"], name="sdk-portal")
    # The portal's pages call the API over HTTPS with this client: workers to spare, so a page being
    # rendered never waits for itself while the browser holds connections open.
    with LiveServer(
        workers=4, PORTAL_CLIENT_ID=portal.application.client_id, PORTAL_CLIENT_SECRET=portal.client_secret
    ) as live:
        yield live


def run(command: list[str], **options) -> subprocess.CompletedProcess:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))
    }
    environment["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300, **options)


def test_a_developer_downloads_the_sdk_and_calls_the_api_with_it(server, tmp_path):
    with chromium_page() as page:
        problems = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("response", lambda response: response.status >= 400 and problems.append(response.url))

        # The portal home, with the live catalogue the portal fetched with its own token.
        page.goto(f"{server.url}/portal/")
        assert page.locator("#catalogue .product-card").count() == 8, page.content() + server.output()
        assert "Foo Starter Kit" in page.locator("#catalogue").inner_text()
        screenshot(page, "portal-01-home")

        # Sign up: Django's password validators first refuse a weak password.
        page.get_by_role("link", name="Sign up", exact=True).first.click()
        page.fill("#id_username", "ada")
        page.fill("#id_email", "ada@example.com")
        page.fill("#id_password1", "password")
        page.fill("#id_password2", "password")
        page.get_by_role("button", name="Create account").click()
        assert "This password is too common" in page.locator(".field-errors").first.inner_text()
        screenshot(page, "portal-02-signup-errors")
        page.fill("#id_password1", PASSWORD)
        page.fill("#id_password2", PASSWORD)
        page.get_by_role("button", name="Create account").click()
        page.wait_for_url(f"{server.url}/portal/app/")
        assert "You have no application yet" in page.content()
        screenshot(page, "portal-03-application-empty")

        # Download SDK: the zip arrives, and the page shows the client id and the test token.
        with page.expect_download() as download_info:
            page.locator("#download-sdk").first.click()
        download = download_info.value
        assert download.suggested_filename == f"foo-sdk-{__version__}.zip"
        zip_path = tmp_path / download.suggested_filename
        download.save_as(zip_path)
        token = page.locator("#access-token").inner_text().strip()
        client_id = page.locator("#client-id").inner_text().strip()
        assert token and client_id
        assert page.locator("#token-scope").inner_text().split() == ["orders:read", "products:read"]
        assert "Save it now" in page.content()
        screenshot(page, "portal-04-download-delivered")
        curl = page.locator("#curl-command").inner_text()
        assert f"Bearer {token}" in curl and curl.endswith(f"{server.url}/api/v1/products")

        # The token on the page works against the API.
        answer = requests.get(
            f"{server.url}/api/v1/products",
            headers={"Authorization": f"Bearer {token}"},
            verify=server.verify,
            timeout=10,
        )
        assert answer.status_code == 200 and answer.json()["count"] == 8
        product_id = answer.json()["results"][0]["id"]

        # The application page lists the token (not its value) and offers the other actions.
        page.goto(f"{server.url}/portal/app/")
        assert page.locator("#tokens tbody tr").count() == 1
        assert token not in page.content()
        screenshot(page, "portal-05-application")
        page.locator("#new-token").click()
        assert page.locator("#access-token").inner_text().strip() not in ("", token)
        screenshot(page, "portal-06-new-token")
        page.goto(f"{server.url}/portal/app/delete")
        screenshot(page, "portal-07-delete-confirm")

        # The API reference renders from bundled files under the site's policy: scripts from 'self' only.
        docs = page.goto(f"{server.url}/api/v1/docs")
        assert "script-src 'self';" in docs.headers["content-security-policy"]
        page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
        assert page.locator(".swagger-ui .opblock").count() == 5
        screenshot(page, "portal-08-api-reference")

        # Log out, then the log-in page and an error page.
        page.goto(f"{server.url}/portal/")
        page.get_by_role("button", name="Log out").click()
        page.goto(f"{server.url}/accounts/login/")
        screenshot(page, "portal-09-login")
        assert problems == []  # no script errors, no failed requests (CSP included)
        page.goto(f"{server.url}/portal/no-such-page")
        assert "Page not found" in page.content()
        screenshot(page, "portal-10-not-found")

    # The zip: SDK, README, credentials (with the secret, shown once) and the server's certificate.
    root = f"foo-sdk-{__version__}"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path / "unzipped")
    credentials_file = tmp_path / "unzipped" / root / "foo-credentials.json"
    credentials = json.loads(credentials_file.read_text())
    assert credentials["client_id"] == client_id
    assert credentials["client_secret"]
    assert credentials["ca_certificate"] == Path(server.verify).read_text()

    # A fresh virtualenv, the SDK installed from the zip, its command line against the live server.
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = str(environment / "bin" / "python")
    installed = run([python, "-m", "pip", "install", "--quiet", str(zip_path)])
    assert installed.returncode == 0, installed.stderr
    where = run([python, "-c", "import foo_sdk; print(foo_sdk.__file__)"], cwd=tmp_path)
    assert where.stdout.startswith(str(environment)), where.stdout + where.stderr
    assert not list(environment.rglob("foo-credentials.json"))  # the secret stays out of site-packages

    products = run(
        [python, "-m", "foo_sdk", "--credentials", str(credentials_file), "products"], cwd=tmp_path
    )
    assert products.returncode == 0, products.stderr
    assert "Foo Starter Kit" in products.stdout and "FOO-GATEWAY-01" in products.stdout

    order = run(
        [python, "-m", "foo_sdk", "--credentials", str(credentials_file), "create-order", f"{product_id}:1"],
        cwd=tmp_path,
    )
    assert order.returncode == 1
    assert order.stderr.startswith("error: FooScopeError:")
    assert "orders:write" in order.stderr

    program = (
        "import sys\n"
        "from foo_sdk import FooClient, FooScopeError\n"
        "client = FooClient.from_credentials_file(sys.argv[1])\n"
        "product = client.list_products()[0]\n"
        "try:\n"
        "    client.create_order({product['id']: 1})\n"
        "except FooScopeError as error:\n"
        "    print('FooScopeError', error.scope)\n"
    )
    caught = run([python, "-c", program, str(credentials_file)], cwd=tmp_path)
    assert caught.stdout.strip() == "FooScopeError orders:write", caught.stderr


def open_application_page(page, server, username: str) -> None:
    """Log `username` in through the portal's login page, then open their application page."""
    page.goto(f"{server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/portal/")
    page.goto(f"{server.url}/portal/app/")


def test_a_second_click_while_the_download_is_on_its_way_keeps_the_secret_on_the_page(server):
    """An impatient second click on Download SDK: sent, its page (a later download's, without the
    secret) replaces the first download's, the only one that held the new secret."""
    from playwright.sync_api import Error

    get_user_model().objects.create_user("ada", "ada@example.com", PASSWORD)
    with chromium_page() as page:
        open_application_page(page, server, "ada")
        # Every download reaches the server at once; its answer reaches the page after both clicks.
        sent = []

        def post(url: str, body: bytes, headers: dict) -> requests.Response:
            return requests.post(
                url, data=body, headers=headers, verify=server.verify, allow_redirects=False, timeout=30
            )

        with ThreadPoolExecutor() as pool:

            def forward(route) -> None:
                request = route.request
                headers = request.all_headers()
                sent.append((route, pool.submit(post, request.url, request.post_data_buffer, headers)))

            page.route("**/portal/download**", forward)
            button = page.locator("#download-sdk").bounding_box()
            page.mouse.click(button["x"] + 5, button["y"] + 5)
            wait_until(page, lambda: sent)  # the first download, however slow the browser is to send it
            page.mouse.click(button["x"] + 5, button["y"] + 5)
            page.wait_for_timeout(200)  # time for a second one to arrive, were it sent
            for route, pending in sent:
                answer = pending.result()
                with suppress(Error):  # a navigation the browser gave up for a later one
                    route.fulfill(status=answer.status_code, headers=answer.headers, body=answer.content)
        page.wait_for_selector("#access-token")

        assert page.locator("#client-secret").count() == 1, page.locator("#no-secret").inner_text()
        assert len(sent) == 1


def test_a_portal_action_stopped_on_its_way_leaves_the_page_working(server):
    """The browser's Stop button (or Escape) while a portal action is on its way: nothing is on its
    way any more, so the page's buttons work again without a reload."""
    developer = get_user_model().objects.create_user("ada", "ada@example.com", PASSWORD)
    portal_services.download_sdk(developer=developer, remote_addr="127.0.0.1")
    with chromium_page() as page:
        open_application_page(page, server, "ada")
        held = []

        def hold_the_first(route) -> None:
            if held:
                route.continue_()
            else:
                held.append(route)  # never answered: the first request stays on its way

        page.route("**/portal/app/tokens**", hold_the_first)
        page.click("#new-token", no_wait_after=True)
        wait_until(page, lambda: held)
        page.context.new_cdp_session(page).send("Page.stopLoading")  # what the Stop button does

        page.click("#new-token")

        page.wait_for_selector("#access-token")
        assert page.locator("h1").inner_text() == "A new test token"
