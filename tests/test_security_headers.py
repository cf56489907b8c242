"""The headers a browser and a client see: HSTS, a Content-Security-Policy on every page (the
console, the portal, the API docs) that allows only the site's own bundled scripts, frame denial,
a strict referrer policy, Secure and HttpOnly cookies, and no cookies at all from the machine
endpoints (token, revocation, introspection, registration, the Foo API, metadata, health)."""

import re
from pathlib import Path
from types import SimpleNamespace

import django.contrib.admin
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from authserver import security, sessions
from authserver.security import PAGE_POLICY_HEADER
from tests.browser import chromium_page, screenshot
from tests.helpers import basic, bearer, issue_token, make_client, post_form
from tests.servers import LiveServer

PASSWORD = "correct horse battery staple 42"


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for part in header.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


@pytest.fixture
def operator(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    return get_user_model().objects.create_superuser(username="operator", email="", password=PASSWORD)


@pytest.fixture
def developer(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    return get_user_model().objects.create_user(username="dev", email="dev@example.com", password=PASSWORD)


ANONYMOUS_PAGES = ["/admin/login/", "/portal/", "/accounts/login/", "/accounts/signup/", "/api/v1/docs"]
OPERATOR_PAGES = [
    "/admin/",
    "/admin/dashboard/",
    "/admin/authserver/application/",
    "/admin/authserver/application/add/",
    "/admin/authserver/scope/",
    "/admin/authserver/auditevent/",
]
DEVELOPER_PAGES = ["/portal/", "/portal/app/"]


def assert_page_headers(response):
    assert response["Content-Type"].startswith("text/html")
    policy = directives(response["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no other origin
    assert "'unsafe-inline'" not in policy["style-src"] and "*" not in policy["default-src"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] in {"same-origin", "no-referrer"}
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.parametrize("path", ANONYMOUS_PAGES)
def test_anonymous_pages_have_a_strict_policy(client, db, path):
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    assert_page_headers(response)


@pytest.mark.parametrize("path", OPERATOR_PAGES)
def test_console_pages_have_a_strict_policy(client, operator, path):
    client.force_login(operator)
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    assert_page_headers(response)


@pytest.mark.parametrize("path", DEVELOPER_PAGES)
def test_portal_pages_have_a_strict_policy(client, developer, path):
    client.force_login(developer)
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    assert_page_headers(response)


@pytest.mark.parametrize(
    ("path", "signed_in"),
    [
        ("/portal/", False),
        ("/accounts/signup/", False),
        ("/accounts/login/", False),
        ("/portal/", True),
        ("/portal/app/", True),
        ("/accounts/logout/", True),
    ],
)
def test_portal_pages_are_stored_by_no_cache(client, developer, path, signed_in):
    """They show who is signed in and hold forms with a CSRF token, which a stored copy would
    carry past the login it belongs to (as Django's login page does)."""
    if signed_in:
        client.force_login(developer)
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
    assert {"private", "no-store", "no-cache"} <= cache_control


def test_error_pages_have_the_policy_too(client, db):
    response = client.get("/portal/no-such-page")
    assert response.status_code == 404
    assert_page_headers(response)


@pytest.mark.parametrize("path", ["/accounts/signup/", "/admin/login/", "/oauth2/token"])
@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"username=" + b"x" * 70_000, "application/x-www-form-urlencoded", 413),
        (b"username=ada", "application/x-www-form-urlencoded; charset=rot13", 415),
    ],
)
def test_errors_answered_around_the_views_carry_the_headers_too(client, db, path, body, content_type, status):
    """A body too large or in a charset that is no text encoding is refused before any view runs,
    with the headers every other answer has."""
    response = client.generic("POST", path, body, content_type=content_type)
    assert response.status_code == status
    assert directives(response["Content-Security-Policy"]) == {
        "default-src": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_pages_carry_no_inline_script(client, operator):
    client.force_login(operator)
    for path in ["/admin/", "/admin/authserver/application/", "/admin/authserver/application/add/"]:
        html = client.get(path).content.decode()
        for tag in html.split("<script")[1:]:
            assert " src=" in tag.split(">")[0], (path, tag[:120])
        assert " onclick=" not in html and " onload=" not in html and "javascript:" not in html


def test_the_policy_allows_exactly_the_inline_styles_the_templates_have():
    """What Django's admin and this project's templates really need: every <script> has a src, no
    style="" attribute, and the one inline <style> block (a list without actions) by its hash."""
    template_roots = [
        Path(django.contrib.admin.__file__).parent / "templates",
        *(
            Path(settings.BASE_DIR, app).resolve()
            for app in ("templates", "authserver", "sdkportal", "fooapi")
        ),
    ]
    style_hashes = []
    for root in template_roots:
        for template in root.rglob("*.html"):
            text = template.read_text()
            for tag in re.findall(r"<script[^>]*>", text):
                assert "src=" in tag, (template, tag)
            assert not re.search(r"\sstyle=", text), template
            assert not re.search(r"\son[a-z]+=", text), template
            style_hashes += security._inline_style_hashes(template)
    assert style_hashes  # Django's change_list.html has one
    assert directives(PAGE_POLICY_HEADER)["style-src"] == ["'self'", *style_hashes]


# --- cookies ---------------------------------------------------------------------------------------


def test_login_sets_secure_httponly_samesite_cookies(client, operator):
    client.get("/admin/login/")
    response = client.post("/admin/login/", {"username": "operator", "password": PASSWORD})
    assert response.status_code == 302
    for name in ("sessionid", "csrftoken"):
        cookie = client.cookies[name]
        assert cookie["secure"] is True, name
        assert cookie["httponly"] is True, name
        assert cookie["samesite"] == "Lax", name


@pytest.mark.parametrize("later", [0, 10 * 60, 13 * 3600], ids=["now", "its expiry due a push", "expired"])
def test_machine_endpoints_set_no_cookies(client, operator, monkeypatch, later):
    """Even for a caller that also holds a console session, nothing on a machine path sets one: nor
    pushes its expiry on, nor ends it (authserver/sessions.py)."""
    client.force_login(operator)
    now = sessions.time.time() + later
    monkeypatch.setattr(sessions, "time", SimpleNamespace(time=lambda: now))
    new_client = make_client(scopes=["products:read", "orders:read", "orders:write"])
    resource_server = make_client(scopes=["introspection"], name="resource server")
    registrar = make_client(scopes=["registration"], name="registrar")
    token = issue_token(client, new_client)
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    machine_requests = [
        lambda: post_form(client, "/oauth2/token", {"grant_type": "client_credentials"}, **credentials),
        lambda: post_form(client, "/oauth2/token", {"grant_type": "client_credentials"}),
        lambda: post_form(
            client,
            "/oauth2/introspect",
            {"token": token},
            **basic(resource_server.application.client_id, resource_server.client_secret),
        ),
        lambda: client.post(
            "/oauth2/register",
            {"client_name": "x"},
            content_type="application/json",
            **bearer(issue_token(client, registrar)),
        ),
        lambda: client.get("/api/v1/products", **bearer(token)),
        lambda: client.get("/api/v1/orders", **bearer(token)),
        lambda: client.get("/api/v1/products"),
        lambda: client.get("/api/v1/schema"),
        lambda: client.get("/.well-known/oauth-authorization-server"),
        lambda: client.get("/.well-known/oauth-protected-resource"),
        lambda: client.get("/healthz"),
        lambda: client.get("/readyz"),
        lambda: client.get("/oauth2/nothing-here"),
        lambda: post_form(client, "/oauth2/revoke", {"token": token}, **credentials),
    ]
    for send in machine_requests:
        response = send()
        assert response.status_code < 500
        assert not response.cookies, (response.request["PATH_INFO"], response.cookies)
        assert "Set-Cookie" not in response.headers
        if response.get("Content-Type", "").startswith("application/json"):  # a revocation has none
            assert directives(response["Content-Security-Policy"]) == {
                "default-src": ["'none'"],
                "frame-ancestors": ["'none'"],
            }


def test_plain_http_is_redirected_to_https(db):
    from django.test import Client

    response = Client().get("/portal/")
    assert response.status_code == 301
    assert response["Location"].startswith("https://")


# --- in a real browser: the policy blocks nothing the pages need ----------------------------------


@pytest.mark.browser
@pytest.mark.live
def test_no_page_breaks_the_policy_in_a_browser(django_db_setup, django_db_blocker, transactional_db):
    """Chromium reports every resource the policy refuses; on these pages there is none."""
    get_user_model().objects.create_superuser(username="operator", email="", password=PASSWORD)
    make_client(name="shown in the console")
    with django_db_blocker.unblock(), LiveServer(workers=2) as server, chromium_page() as page:
        violations: list[str] = []
        page.on(
            "console",
            lambda message: (
                violations.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        page.on("pageerror", lambda error: violations.append(str(error)))

        page.goto(f"{server.url}/admin/login/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{server.url}/admin/")
        for path in [
            "/admin/",
            "/admin/dashboard/",
            "/admin/authserver/application/",
            "/admin/authserver/application/add/",
        ]:
            response = page.goto(f"{server.url}{path}")
            assert response.headers["content-security-policy"] == PAGE_POLICY_HEADER
            page.wait_for_load_state("networkidle")
        screenshot(page, "csp-console-add-client")
        page.goto(f"{server.url}/admin/authserver/application/")
        page.wait_for_load_state("networkidle")
        screenshot(page, "csp-console-clients")
        for path in ["/portal/", "/accounts/signup/", "/api/v1/docs"]:
            page.goto(f"{server.url}{path}")
            page.wait_for_load_state("networkidle")
        page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)  # the docs rendered under the policy
        screenshot(page, "csp-api-docs")

        assert violations == []
