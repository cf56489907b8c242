"""A developer uses the SDK portal: signs up, logs in, downloads the SDK with credentials and a test
token, rotates the secret, gets and revokes tokens, deletes the application; the home page shows the
live catalogue fetched with the portal's own token."""

import base64
import http.server
import io
import json
import re
import stat
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher, check_password
from django.contrib.sessions.models import Session
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import AccessToken

from authserver import services as authserver_services
from authserver import sessions, throttling, validity
from authserver.models import Application, AuditEvent, Scope
from fooapi.services import seed_demo_catalogue
from sdkportal import forms as sdkportal_forms
from sdkportal import services
from sdkportal.models import SandboxClient
from sdkportal.sdk.foo_sdk import __version__
from tests.helpers import HttpsClient, bearer, make_client, request_token
from tests.servers import LiveServer, ensure_certificate

PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def developer(db):
    return get_user_model().objects.create_user("ada", "ada@example.com", PASSWORD)


@pytest.fixture
def signed_in(client, developer):
    client.force_login(developer)
    return client


@pytest.fixture(autouse=True)
def _no_live_catalogue(settings, tmp_path):
    """Unless a test says otherwise, the portal has no API client: no page calls another server."""
    settings.PORTAL_CLIENT_ID = settings.PORTAL_CLIENT_SECRET = ""
    settings.PORTAL_CREDENTIALS_FILE = tmp_path / "portal_client.json"


def download(http):
    return http.post("/portal/download")


def shown(response, element_id: str) -> str:
    """The text of the element with this id on the page."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', response.content.decode(), re.S)
    assert match, f"no #{element_id} on the page"
    return match.group(1).strip()


def rotate_form_id(http) -> str:
    """The one-time id of the Rotate secret form on the developer's page."""
    page = http.get("/portal/app/").content.decode()
    return re.search(r'<input type="hidden" name="form_id" value="([^"]+)"', page).group(1)


def scopes_in(response, element_id: str) -> list[str]:
    """The scope badges inside the element with this id."""
    block = re.search(rf'id="{element_id}"(.*?)</(dd|table)>', response.content.decode(), re.S).group(1)
    return re.findall(r'class="scope">([^<]+)<', block)


def zip_of(response) -> zipfile.ZipFile:
    uri = re.search(r'href="data:application/zip;base64,([^"]+)"', response.content.decode()).group(1)
    return zipfile.ZipFile(io.BytesIO(base64.b64decode(uri)))


def credentials_in(archive: zipfile.ZipFile) -> dict:
    return json.loads(archive.read(f"foo-sdk-{__version__}/foo-credentials.json"))


def api_status(http, token: str) -> int:
    return http.get("/api/v1/products", **bearer(token)).status_code


# --- what the pages promise ---------------------------------------------------------------------


def test_the_pages_name_the_sandbox_scopes_and_the_test_tokens_lifetime_as_granted(client, db, settings):
    """The home and sign-up pages say what a download gets: the scopes and lifetime the server
    grants now, not wording fixed when they were written."""
    settings.SANDBOX_TOKEN_LIFETIME = 900
    Scope.objects.filter(name="orders:read").update(sandbox=False)
    Scope.objects.create(name="invoices:read", description="Read invoices", sandbox=True)

    home = client.get("/portal/").content.decode()
    signup = client.get("/accounts/signup/").content.decode()

    assert re.search(
        r'<span class="scope">invoices:read</span>\s+and\s+<span class="scope">products:read</span>\s+'
        r"scopes, valid for 15 minutes",
        home,
    ), home
    assert "orders:read" not in home
    assert (
        "A test token for the sandbox scopes (invoices:read, products:read), valid for 15 minutes" in signup
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3600, "an hour"), (7200, "2 hours"), (60, "a minute"), (900, "15 minutes"), (90, "90 seconds")],
)
def test_a_lifetime_is_said_in_its_largest_whole_unit(seconds, text):
    assert services.duration_text(seconds) == text


# --- accounts ------------------------------------------------------------------------------------


def test_signing_up_logs_the_developer_in(client, db):
    page = client.get("/accounts/signup/")
    assert page.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()

    response = client.post(
        "/accounts/signup/",
        {"username": "grace", "email": "grace@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.status_code == 302
    assert response["Location"] == "/portal/app/"
    grace = get_user_model().objects.get(username="grace")
    assert grace.email == "grace@example.com"
    assert grace.check_password(PASSWORD)
    assert not grace.is_staff
    assert "Your application" in client.get("/portal/app/").content.decode()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"password1": "password", "password2": "password"}, "This password is too common"),
        ({"password1": "grace-hopper", "password2": "grace-hopper"}, "too similar to the username"),
        ({"password1": "81726354098", "password2": "81726354098"}, "entirely numeric"),
        ({"password2": PASSWORD + "x"}, "The two password fields didn"),
        ({"username": "ADA"}, "A user with that username already exists"),
        ({"email": "ADA@example.com"}, "An account with this email address already exists"),
        ({"email": "not-an-address"}, "Enter a valid email address"),
        # The same mailbox: IDNA reads a fullwidth e (U+FF45) in the domain as "e".
        ({"email": "ada@\uff45xample.com"}, "An account with this email address already exists"),
    ],
)
def test_sign_up_checks_the_form_with_djangos_validators(client, developer, form, message):
    data = {
        "username": "grace-hopper",
        "email": "grace@example.com",
        "password1": PASSWORD,
        "password2": PASSWORD,
    }
    response = client.post("/accounts/signup/", {**data, **form})

    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'")
    assert get_user_model().objects.count() == 1


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"username": "Élodie"}, "A user with that username already exists"),
        ({"username": "ÉLODIE"}, "A user with that username already exists"),
        ({"email": "Elodie@EXÄMPLE.com"}, "An account with this email address already exists"),
    ],
)
def test_sign_up_refuses_what_differs_only_in_the_case_of_letters_beyond_ascii(client, db, form, message):
    """On SQLite as on PostgreSQL: SQLite's case-insensitive comparison (LIKE) folds ASCII alone."""
    get_user_model().objects.create_user("élodie", "elodie@exämple.com", PASSWORD)
    data = {"username": "grace", "email": "grace@example.com", "password1": PASSWORD, "password2": PASSWORD}

    response = client.post("/accounts/signup/", {**data, **form})

    assert response.status_code == 200
    assert message in response.content.decode()
    assert get_user_model().objects.count() == 1


# "ada" and "paypal" with a Cyrillic small a, "Ada" with a Greek capital alpha.
@pytest.mark.parametrize("username", ["ad\u0430", "p\u0430ypal", "\u0391da"])
def test_sign_up_refuses_a_username_that_mixes_scripts_to_pass_for_another(client, developer, username):
    account = {"username": username, "email": "eve@example.com", "password1": PASSWORD, "password2": PASSWORD}

    response = client.post("/accounts/signup/", account)

    assert response.status_code == 200
    assert "Use the letters of one script" in response.content.decode()
    assert get_user_model().objects.count() == 1


@pytest.mark.parametrize("username", ["élodie", "σοφία", "иван", "山田たろう", "kim김민수", "yamada山田"])
def test_sign_up_takes_a_username_in_one_script_or_in_scripts_written_together(client, db, username):
    account = {"username": username, "email": "dev@example.com", "password1": PASSWORD, "password2": PASSWORD}
    assert client.post("/accounts/signup/", account).status_code == 302
    assert get_user_model().objects.get().username == username


@pytest.mark.parametrize("meanwhile", ["grace", "Grace"])
def test_a_username_signed_up_by_another_request_meanwhile_is_a_form_error(
    client, db, monkeypatch, meanwhile
):
    """Two sign-ups at once for one username (in any case): both forms, and the check in the write
    transaction, find it free; the second insert then meets the database's unique index (on the
    lowercase username for "Grace"), which must be a form error, not a 500."""

    def free_then_made_by_the_other_request(username):
        get_user_model().objects.create_user(meanwhile, "grace@example.org", PASSWORD)
        return get_user_model().objects.none()

    monkeypatch.setattr(services, "users_named", free_then_made_by_the_other_request)
    client.raise_request_exception = False
    account = {"username": "grace", "email": "grace@example.com"}

    response = client.post("/accounts/signup/", {**account, "password1": PASSWORD, "password2": PASSWORD})

    assert response.status_code == 200
    assert "A user with that username already exists" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    ("field", "accounts"),
    [
        ("username", [("grace", "dev0@example.com"), ("GRACE", "dev1@example.com")]),
        ("username", [("élodie", "dev0@example.com"), ("Élodie", "dev1@example.com")]),
        ("email", [("dev0", "grace@example.com"), ("dev1", "grace@example.com")]),
        ("email", [("dev0", "grace@example.com"), ("dev1", "GRACE@Example.com")]),
    ],
)
def test_two_sign_ups_at_once_of_one_username_or_email_make_one_account(
    transactional_db, monkeypatch, field, accounts
):
    """Each request, its form checked, waits for the other's check: both found the username (in any
    case) or the address free; the check in the write transaction must then find the one committed
    first."""
    both_checked = threading.Barrier(2, timeout=5)
    clean_field = getattr(sdkportal_forms.SignUpForm, f"clean_{field}")

    def clean_then_wait(form):
        value = clean_field(form)
        with suppress(threading.BrokenBarrierError):
            both_checked.wait()
        return value

    monkeypatch.setattr(sdkportal_forms.SignUpForm, f"clean_{field}", clean_then_wait)

    def sign_up(account: tuple[str, str]) -> int:
        browser = HttpsClient(raise_request_exception=False)
        username, email = account
        try:
            return browser.post(
                "/accounts/signup/",
                {"username": username, "email": email, "password1": PASSWORD, "password2": PASSWORD},
            ).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(sign_up, accounts))

    assert sorted(statuses) == [200, 302]  # one account, one form error (no 500)
    assert get_user_model().objects.count() == 1


def test_the_database_refuses_a_username_differing_only_in_case(db):
    """Whatever the path (a shell, a script): the unique index on the lowercase username."""
    get_user_model().objects.create_user("ada", "ada@example.com", PASSWORD)
    with pytest.raises(IntegrityError), transaction.atomic():
        get_user_model().objects.create_user("ADA", "ada@example.org", PASSWORD)


def test_a_username_or_email_is_compared_as_text_not_as_a_pattern(client, developer):
    account = {"username": "a.a", "email": "a.a@example.com", "password1": PASSWORD, "password2": PASSWORD}
    assert client.post("/accounts/signup/", account).status_code == 302  # beside ada, ada@example.com


def test_sign_ups_from_one_address_are_limited(client, db, monkeypatch):
    monkeypatch.setattr(throttling, "SIGNUPS_PER_ADDRESS", throttling.Limit("signups_per_address", 2, 3600))
    for number in range(2):
        account = {"username": f"dev{number}", "email": f"dev{number}@example.com"}
        HttpsClient().post("/accounts/signup/", {**account, "password1": PASSWORD, "password2": PASSWORD})

    response = client.post(
        "/accounts/signup/",
        {"username": "dev9", "email": "dev9@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Too many attempts" in response.content.decode()
    assert get_user_model().objects.count() == 2


def test_logging_in_and_out(client, developer):
    response = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert (response.status_code, response["Location"]) == (302, "/portal/")
    assert 'action="/accounts/logout/"' in client.get("/portal/").content.decode()

    # Logging out is a POST (CSRF); the address typed in gets a page with the button, not a blank 405.
    page = client.get("/accounts/logout/")
    assert page.status_code == 200
    assert re.search(r'<form method="post" action="/accounts/logout/">', page.content.decode())
    assert "no-store" in page["Cache-Control"]
    assert "_auth_user_id" in client.session
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/accounts/logout/")["Location"] == "/portal/"
    assert client.get("/portal/app/")["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(("username", "typed"), [("ada", "ADA"), ("Ada", "ada"), ("élodie", "ÉLODIE")])
def test_a_developer_logs_in_with_their_username_in_any_case(client, db, username, typed):
    """The username is unique in any case, so any case names the one account."""
    account = get_user_model().objects.create_user(username, "dev@example.com", PASSWORD)

    response = client.post("/accounts/login/", {"username": typed, "password": PASSWORD})

    assert (response.status_code, response["Location"]) == (302, "/portal/")
    assert client.session["_auth_user_id"] == str(account.pk)


def test_a_deactivated_developer_logging_in_in_another_case_is_told_so(client, developer):
    developer.is_active = False
    developer.save()

    response = client.post("/accounts/login/", {"username": "Ada", "password": PASSWORD})

    assert "This account has been deactivated" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("username", ["ada", "gone", "nobody"])
@pytest.mark.parametrize("password", ["wrong", PASSWORD])
def test_a_login_costs_one_password_hash_whatever_the_account(
    client, developer, monkeypatch, username, password
):
    """A deactivated account's attempt took a second hash (the check that tells its owner so): it
    answered twice as slowly as an active account's or a missing one's, telling it apart."""
    get_user_model().objects.create_user("gone", "gone@example.com", PASSWORD, is_active=False)
    hashes = []
    encode = PBKDF2PasswordHasher.encode
    monkeypatch.setattr(PBKDF2PasswordHasher, "encode", lambda *args: hashes.append(1) or encode(*args))

    response = client.post("/accounts/login/", {"username": username, "password": password})

    assert len(hashes) == 1
    if username == "gone" and password == PASSWORD:
        assert "This account has been deactivated" in response.content.decode()
    elif password == "wrong" or username == "nobody":
        assert "deactivated" not in response.content.decode()
        assert "_auth_user_id" not in client.session


def test_logging_in_by_email_address_is_not_offered(client, developer):
    response = client.post("/accounts/login/", {"username": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


@pytest.fixture
def clock(monkeypatch):
    """The time authserver/sessions.py reads, moved on by the test: clock.now += seconds."""
    clock = SimpleNamespace(now=sessions.time.time())
    monkeypatch.setattr(sessions, "time", SimpleNamespace(time=lambda: clock.now))
    return clock


def test_a_developer_session_ends_after_a_day_without_a_request(client, developer, clock, settings):
    client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert client.session.get_expiry_age() == pytest.approx(settings.DEVELOPER_SESSION_IDLE_TIMEOUT, abs=5)
    assert int(client.cookies["sessionid"]["max-age"]) == pytest.approx(24 * 3600, abs=5)

    clock.now += 23 * 3600
    assert client.get("/portal/app/").status_code == 200  # and a day from now again
    clock.now += 23 * 3600
    assert client.get("/portal/app/").status_code == 200
    clock.now += 24 * 3600 + 1
    response = client.get("/portal/app/")

    assert response["Location"] == "/accounts/login/?next=/portal/app/"
    assert "_auth_user_id" not in client.session


def test_a_developer_session_ends_a_week_after_the_login_however_used(client, developer, clock):
    client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    for _ in range(7):
        clock.now += 23 * 3600
        assert client.get("/portal/app/").status_code == 200
    clock.now += 7 * 3600 + 1  # a week and a second after the login

    assert client.get("/portal/app/")["Location"] == "/accounts/login/?next=/portal/app/"
    assert (
        client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})["Location"] == "/portal/"
    )
    assert client.get("/portal/app/").status_code == 200


def test_an_expired_session_is_forgotten_by_the_session_store_itself(client, developer):
    """The expiry is the session's own: Django's store no longer loads it, middleware or not."""
    client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    stored = Session.objects.get(session_key=client.session.session_key)
    assert stored.expire_date == pytest.approx(timezone.now() + timedelta(days=1), abs=timedelta(seconds=5))
    Session.objects.filter(pk=stored.pk).update(expire_date=timezone.now() - timedelta(seconds=1))

    assert client.get("/portal/app/")["Location"] == "/accounts/login/?next=/portal/app/"


def test_a_developer_made_staff_logs_in_again_before_their_session_has_the_new_rights(client, developer):
    """A session signed in as a developer does not become a console session; the new login gets a
    new session id and the console's shorter limits."""
    client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    developer_session = client.session.session_key
    developer.is_staff = True
    developer.save()

    assert client.get("/portal/app/")["Location"] == "/accounts/login/?next=/portal/app/"
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    client.post("/admin/login/", {"username": "ada", "password": PASSWORD})

    assert client.get("/admin/").status_code == 200
    assert client.session.session_key != developer_session
    assert client.session.get_expiry_age() == pytest.approx(30 * 60, abs=5)


def test_a_session_from_before_the_session_limits_ends(client, developer):
    """Signed in under Django's two weeks, with nothing to say when: it is logged out once."""
    client.force_login(developer)
    session = client.session
    del session["_signed_in_at"]
    session.set_expiry(None)
    session.save()

    assert client.get("/portal/app/")["Location"] == "/accounts/login/?next=/portal/app/"


@pytest.mark.parametrize(
    "elsewhere",
    ["https://evil.example/", "//evil.example/", "/\\evil.example/", "http://testserver/portal/app/"],
)
def test_logging_in_or_out_never_leads_to_another_site(client, developer, elsewhere):
    """?next= goes only to this site's pages, over HTTPS: not a login page that sends the developer
    to a look-alike asking for the password again."""
    get_user_model().objects.create_user("olivia", password=PASSWORD, is_staff=True)

    logged_in = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD, "next": elsewhere})
    logged_out = client.post("/accounts/logout/", {"next": elsewhere})
    console = client.post("/admin/login/", {"username": "olivia", "password": PASSWORD, "next": elsewhere})

    assert (logged_in.status_code, logged_in["Location"]) == (302, "/portal/")
    assert (logged_out.status_code, logged_out["Location"]) == (302, "/portal/")
    assert (console.status_code, console["Location"]) == (302, "/portal/")  # LOGIN_REDIRECT_URL


def test_a_signed_in_developer_sent_to_the_login_page_to_come_back_to_it_goes_to_the_portal(signed_in):
    """A link to /accounts/login/?next=/accounts/login/: Django's LoginView raised on it (a 500)."""
    signed_in.raise_request_exception = False

    response = signed_in.get("/accounts/login/?next=/accounts/login/")

    assert (response.status_code, response["Location"]) == (302, "/portal/")


def test_a_wrong_password_is_refused_and_repeated_failures_are_throttled(client, developer):
    response = client.post("/accounts/login/", {"username": "ada", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()

    for _ in range(5):
        client.post("/accounts/login/", {"username": "ada", "password": "wrong"})
    throttled = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert throttled.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_deactivated_developer_is_told_so_once_they_give_their_password(client, developer):
    """Not "enter a correct username and password", which sends them guessing (and into the login
    throttle); the password first, so that the page tells no one else."""
    developer.is_active = False
    developer.save()

    wrong = client.post("/accounts/login/", {"username": "ada", "password": "wrong"}).content.decode()
    right = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD}).content.decode()

    assert "deactivated" not in wrong
    assert "Please enter a correct username and password" in wrong
    assert "This account has been deactivated; please contact the Foo team." in right
    assert "_auth_user_id" not in client.session


def test_every_form_is_csrf_protected(developer):
    browser = Client(enforce_csrf_checks=True, secure=True)
    anonymous = [("/accounts/signup/", {}), ("/accounts/login/", {"username": "ada", "password": PASSWORD})]
    for path, data in anonymous:
        assert browser.post(path, data, secure=True).status_code == 403
    browser.force_login(developer)
    for path in [
        "/portal/download",
        "/portal/app/tokens",
        "/portal/app/tokens/1/revoke",
        "/portal/app/rotate-secret",
        "/portal/app/delete",
        "/accounts/password/",
        "/accounts/logout/",
    ]:
        response = browser.post(path, secure=True)
        assert response.status_code == 403, path
    assert not SandboxClient.objects.exists()
    assert "_auth_user_id" in browser.session  # the logout was refused too


def test_a_form_from_before_a_login_in_another_tab_says_to_reload_the_page(developer):
    browser = Client(enforce_csrf_checks=True, secure=True, headers={"Referer": "https://testserver/portal/"})

    def form_token(path: str) -> str:
        page = browser.get(path, secure=True).content.decode()
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    browser.post(
        "/accounts/login/",
        {"username": "ada", "password": PASSWORD, "csrfmiddlewaretoken": form_token("/accounts/login/")},
        secure=True,
    )
    stale_token = form_token("/portal/app/")  # this tab's page; in another, a log out and in again:
    browser.post("/accounts/logout/", {"csrfmiddlewaretoken": stale_token}, secure=True)
    browser.post(
        "/accounts/login/",
        {"username": "ada", "password": PASSWORD, "csrfmiddlewaretoken": form_token("/accounts/login/")},
        secure=True,
    )

    response = browser.post("/portal/download", {"csrfmiddlewaretoken": stale_token}, secure=True)

    assert response.status_code == 403
    assert "reload the page and try again" in response.content.decode()
    assert "You do not have access" not in response.content.decode()
    assert not SandboxClient.objects.exists()


def test_a_form_sent_without_the_csrf_cookie_says_to_allow_cookies(db):
    """Cookies blocked: "reload the page" alone would fail again, and again."""
    browser = Client(enforce_csrf_checks=True, secure=True, headers={"Origin": "https://testserver"})
    page = browser.get("/accounts/signup/", secure=True).content.decode()
    form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    browser.cookies.clear()  # as a browser that keeps none

    response = browser.post("/accounts/signup/", {"csrfmiddlewaretoken": form_token}, secure=True)

    assert response.status_code == 403
    assert "If cookies are blocked for this site, allow them" in response.content.decode()


def test_portal_actions_need_a_signed_in_developer(client, db):
    for path in ["/portal/app/", "/portal/app/delete"]:
        assert client.get(path)["Location"] == f"/accounts/login/?next={path}"
    response = download(client)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert not Application.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/portal/download/",
        "/portal/app/rotate-secret/",
        "/portal/app/tokens/",
        "/portal/app/tokens/7/revoke/",
    ],
)
def test_after_logging_in_again_an_action_leads_to_its_page(client, developer, path):
    """A button pressed after the session expired: the login page sends the developer back to the
    action's URL with a GET, which shows the page with the button and does nothing."""
    to_login = client.post(path)
    assert to_login["Location"] == f"/accounts/login/?next={path}"
    logged_in = client.post(to_login["Location"], {"username": "ada", "password": PASSWORD})
    assert logged_in["Location"] == path

    response = client.get(path)

    assert (response.status_code, response["Location"]) == (302, "/portal/app/")
    assert client.get(response["Location"]).status_code == 200
    assert not Application.objects.exists()


@pytest.mark.parametrize(
    "path", ["/accounts/logout/", "/portal/app/delete", "/portal/download", "/portal/app/tokens/7/revoke"]
)
def test_a_page_that_answers_get_answers_head_and_does_nothing(signed_in, path):
    """RFC 9110 9.1: HEAD wherever GET is answered (a link checker, a monitor), not a 405."""
    download(signed_in)
    get = signed_in.get(path)

    head = signed_in.head(path)

    assert (head.status_code, head.get("Location")) == (get.status_code, get.get("Location"))
    assert head.status_code in (200, 302) and head.content == b""
    assert signed_in.get("/portal/app/").status_code == 200  # still signed in
    assert Application.objects.count() == 1 and AccessToken.objects.count() == 1


# --- Download SDK --------------------------------------------------------------------------------


def test_the_first_download_registers_a_client_and_delivers_secret_token_and_sdk(
    signed_in, developer, settings
):
    ensure_certificate()
    response = download(signed_in)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    application = Application.objects.get()
    # The client: server-generated id, owned by the developer, sandbox scopes and lifetime only.
    assert application.client_id != developer.username
    assert application.user == developer
    assert application.authorization_grant_type == Application.GRANT_CLIENT_CREDENTIALS
    assert application.allowed_scope_names == ["orders:read", "products:read"]
    assert application.access_token_lifetime == settings.SANDBOX_TOKEN_LIFETIME
    assert shown(response, "client-id") == application.client_id

    # The test token: shown, limited, and got with a real client-credentials request.
    token = shown(response, "access-token")
    assert api_status(signed_in, token) == 200
    assert scopes_in(response, "token-scope") == ["orders:read", "products:read"]
    assert AccessToken.objects.get().scope == "orders:read products:read"
    issued = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_ISSUED)
    assert issued.actor == f"client:{application.client_id}"  # authenticated with the new secret
    created = AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CREATED)
    assert created.actor == "portal:ada"

    # The zip: the SDK, its README, the credentials (with the secret) and the certificate.
    archive = zip_of(response)
    root = f"foo-sdk-{__version__}"
    names = set(archive.namelist())
    assert {f"{root}/pyproject.toml", f"{root}/README.md", f"{root}/foo_sdk/__init__.py"} <= names
    assert {f"{root}/foo_sdk/client.py", f"{root}/foo_sdk/cli.py", f"{root}/foo_sdk/__main__.py"} <= names
    assert not any("__pycache__" in name for name in names)
    assert f'download="foo-sdk-{__version__}.zip"' in response.content.decode()
    credentials = credentials_in(archive)
    assert credentials["client_id"] == application.client_id
    assert credentials["token_url"] == f"{settings.ISSUER}/oauth2/token"
    assert credentials["api_base_url"] == f"{settings.ISSUER}/api/v1"
    assert credentials["ca_certificate"] == Path(settings.TLS_CERT_FILE).read_text()
    assert archive.read(f"{root}/server-certificate.pem").decode() == credentials["ca_certificate"]
    mode = archive.getinfo(f"{root}/foo-credentials.json").external_attr >> 16
    assert stat.S_IMODE(mode) == 0o600
    # The secret in the file is the client's, and shown on the page once.
    assert shown(response, "client-secret") == credentials["client_secret"]
    new_client = authserver_services.NewClient(application, credentials["client_secret"])
    assert request_token(signed_in, new_client).status_code == 200


@pytest.mark.parametrize("action", ["download", "rotate-secret"])
def test_a_refused_token_request_keeps_nothing_and_says_so(signed_in, action):
    """The token the portal asks for with the new secret is refused (here: too many failed client
    authentications from the developer's address): no client or secret half made, and the developer
    told that nothing changed and when to try again."""
    if action == "rotate-secret":
        first = download(signed_in)
        old_secret = shown(first, "client-secret")
    for _ in range(throttling.CLIENT_AUTH_FAILURES_PER_ADDRESS.count):
        throttling.record_client_auth_failure("a mistyped client id", "127.0.0.1")

    if action == "download":
        response = download(signed_in)
    else:
        response = signed_in.post("/portal/app/rotate-secret", {"form_id": rotate_form_id(signed_in)})

    assert (response.status_code, response["Location"]) == (302, "/portal/app/")
    page = signed_in.get("/portal/app/").content.decode()
    assert "nothing was changed" in page
    assert re.search(r"try again in \d+ seconds", page)
    if action == "download":
        assert not Application.objects.exists()
        assert not SandboxClient.objects.exists()
    else:
        assert check_password(old_secret, Application.objects.get().client_secret)
        assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.SECRET_ROTATED).exists()


def test_later_downloads_reuse_the_client_and_carry_no_secret(signed_in):
    first = credentials_in(zip_of(download(signed_in)))

    again = download(signed_in)

    assert again.status_code == 200
    assert Application.objects.count() == 1
    credentials = credentials_in(zip_of(again))
    assert credentials["client_id"] == first["client_id"]
    assert "client_secret" not in credentials
    assert "FOO_CLIENT_SECRET" in credentials["client_secret_note"]
    assert first["client_secret"] not in again.content.decode()
    assert "Not in this download" in shown(again, "no-secret")
    assert api_status(signed_in, shown(again, "access-token")) == 200
    # The first secret still works: nothing was rotated.
    application = Application.objects.get()
    assert (
        request_token(
            signed_in, authserver_services.NewClient(application, first["client_secret"])
        ).status_code
        == 200
    )


def test_a_later_download_unzipped_as_the_page_says_keeps_the_file_that_holds_the_secret(signed_in):
    """Its foo-credentials.json has no secret: a plain unzip where the first download was unzipped
    asks to overwrite the one that has it, and the secret, shown once, would be gone."""
    zip_name = f"foo-sdk-{__version__}.zip"
    first = shown(download(signed_in), "sdk-commands").splitlines()[0]
    again = download(signed_in)

    assert first == f"unzip {zip_name}"  # a new secret: its file goes in
    assert shown(again, "sdk-commands").splitlines()[0] == f"unzip -n {zip_name}"
    assert "foo-credentials.json" in again.content.decode().split('id="keep-credentials"')[1]


def test_without_tls_the_credentials_carry_no_certificate(signed_in, settings):
    settings.TLS = False
    credentials = credentials_in(zip_of(download(signed_in)))
    assert "ca_certificate" not in credentials


def test_a_certificate_file_that_also_holds_the_servers_key_hands_out_the_certificate_alone(
    signed_in, settings, tmp_path
):
    """An operator's own self-signed certificate, its key in the same PEM file (one file for both, as
    `openssl req -x509 -keyout cert.pem -out cert.pem` writes it): every developer gets the
    certificate, never the server's private key."""
    certificate_file = ensure_certificate()
    combined = tmp_path / "cert.pem"
    combined.write_text(Path(settings.TLS_KEY_FILE).read_text() + certificate_file.read_text())
    settings.TLS_CERT_FILE = combined

    response = download(signed_in)

    archive = zip_of(response)
    credentials = credentials_in(archive)
    assert credentials["ca_certificate"] == certificate_file.read_text()
    certificate = archive.read(f"foo-sdk-{__version__}/server-certificate.pem").decode()
    assert certificate == certificate_file.read_text()
    assert "PRIVATE KEY" not in response.content.decode()


def test_the_delivered_token_is_described_by_the_scopes_it_carries(signed_in):
    """The page that shows a test token says what it may do from its scopes, not from wording fixed
    when the sandbox scopes were products:read and orders:read."""
    Scope.objects.filter(name="orders:read").update(sandbox=False)

    response = download(signed_in)

    assert scopes_in(response, "token-scope") == ["products:read"]
    page = response.content.decode()
    assert "your orders" not in page
    assert re.search(r"placing orders, for one, needs\s*<span class=\"scope\">orders:write</span>", page)


def test_test_tokens_stay_limited_to_the_sandbox_scopes(signed_in):
    download(signed_in)
    application = Application.objects.get()
    # An operator gave the client orders:write: the portal's test tokens still do not carry it.
    authserver_services.update_client(
        application=application,
        actor="tests",
        changed_fields=[],
        scopes=["products:read", "orders:read", "orders:write"],
    )
    response = signed_in.post("/portal/app/tokens")
    token = shown(response, "access-token")
    assert authserver_services.introspect_token(token)["scope"] == "orders:read products:read"


def test_no_sandbox_scope_means_no_client(signed_in):
    Scope.objects.update(sandbox=False)
    response = download(signed_in)
    assert response.status_code == 302
    assert not Application.objects.exists()
    assert "No scope is open for sandbox use" in signed_in.get("/portal/app/").content.decode()


def test_a_disabled_client_gets_no_new_token(signed_in):
    download(signed_in)
    authserver_services.set_client_enabled(
        application=Application.objects.get(), enabled=False, actor="operator"
    )
    tokens_before = AccessToken.objects.count()

    for path in ["/portal/download", "/portal/app/tokens", "/portal/app/rotate-secret"]:
        response = signed_in.post(path, {"form_id": "once"})
        assert response.status_code == 302, path
        assert "disabled by the Foo team" in signed_in.get("/portal/app/").content.decode()
    assert AccessToken.objects.count() == tokens_before


def test_a_disabled_client_cannot_be_deleted_and_downloaded_anew(signed_in):
    """Disabling is the operators' way to stop a developer's client; deleting it from the portal
    and downloading again would hand the developer a new, enabled one."""
    download(signed_in)
    disabled = Application.objects.get()
    authserver_services.set_client_enabled(application=disabled, enabled=False, actor="operator")

    response = signed_in.post("/portal/app/delete")

    assert response.status_code == 302
    assert "disabled by the Foo team" in signed_in.get("/portal/app/").content.decode()
    assert Application.objects.get() == disabled
    assert download(signed_in).status_code == 302
    assert list(Application.objects.all()) == [disabled]
    assert not Application.objects.filter(enabled=True).exists()


# --- the developer's application -----------------------------------------------------------------


def test_rotating_the_secret_delivers_a_new_one_once_and_the_old_one_stops_working(signed_in):
    old = credentials_in(zip_of(download(signed_in)))
    application = Application.objects.get()

    response = signed_in.post("/portal/app/rotate-secret", {"form_id": rotate_form_id(signed_in)})

    assert response.status_code == 200
    new = credentials_in(zip_of(response))
    assert new["client_id"] == old["client_id"]
    assert new["client_secret"] != old["client_secret"]
    assert shown(response, "client-secret") == new["client_secret"]
    assert (
        request_token(signed_in, authserver_services.NewClient(application, old["client_secret"])).status_code
        == 401
    )
    assert (
        request_token(signed_in, authserver_services.NewClient(application, new["client_secret"])).status_code
        == 200
    )
    assert api_status(signed_in, shown(response, "access-token")) == 200
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SECRET_ROTATED, actor="portal:ada").exists()


def test_the_rotate_form_posted_again_rotates_nothing(signed_in):
    """Reloading the page that delivered the new secret posted the form again: a second rotation,
    and the secret in the zip the developer had just saved stopped working."""
    download(signed_in)
    application = Application.objects.get()
    form_id = rotate_form_id(signed_in)
    assert form_id != rotate_form_id(signed_in)  # one per page shown
    secret = shown(signed_in.post("/portal/app/rotate-secret", {"form_id": form_id}), "client-secret")

    again = signed_in.post("/portal/app/rotate-secret", {"form_id": form_id}, follow=True)

    assert again.redirect_chain == [("/portal/app/", 302)]
    page = again.content.decode()
    assert "your secret was rotated then" in page and "it is not shown again" in page
    assert secret not in page and "data:application/zip" not in page
    assert request_token(signed_in, authserver_services.NewClient(application, secret)).status_code == 200
    rotations = AuditEvent.objects.filter(kind=AuditEvent.Kind.SECRET_ROTATED)
    assert [event.detail for event in rotations] == [{"form_id": form_id}]
    # A form without an id (a page from before) rotates nothing; another form rotates.
    stale = signed_in.post("/portal/app/rotate-secret", follow=True)
    assert "nothing was rotated" in stale.content.decode()
    assert (
        signed_in.post("/portal/app/rotate-secret", {"form_id": rotate_form_id(signed_in)}).status_code == 200
    )
    assert rotations.all().count() == 2


def test_a_new_test_token_is_shown_once_and_listed_without_its_value(signed_in):
    download(signed_in)

    response = signed_in.post("/portal/app/tokens")

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    token = shown(response, "access-token")
    assert api_status(signed_in, token) == 200
    assert 'href="data:' not in response.content.decode()  # no SDK zip with a token-only page
    issued = AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_ISSUED).first()
    assert issued.actor == "portal:ada"  # asked for by the owner, not by the client with its secret

    page = signed_in.get("/portal/app/")
    listing = page.content.decode()
    assert token not in listing
    assert listing.count("/revoke") == 2  # the download's token and this one
    assert scopes_in(page, "tokens") == ["orders:read", "products:read"] * 2


def test_a_new_test_token_whose_application_is_deleted_in_another_tab_meanwhile_is_no_error(
    signed_in, monkeypatch
):
    """The application deleted (Delete confirmed in another tab) between the token's issue and its
    page: the page names the client the token was issued to, rather than a 500."""
    download(signed_in)
    client_id = Application.objects.get().client_id
    issue = services.new_test_token

    def then_deleted_in_another_tab(**kwargs):
        token = issue(**kwargs)
        services.delete_application(developer=kwargs["developer"], remote_addr="127.0.0.1")
        return token

    monkeypatch.setattr(services, "new_test_token", then_deleted_in_another_tab)

    response = signed_in.post("/portal/app/tokens")

    assert response.status_code == 200
    assert shown(response, "client-id") == client_id


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
@pytest.mark.parametrize("charset", ["rot13", "bz2", "base64", "idna"])
def test_a_form_declared_in_a_charset_that_is_no_text_encoding_is_refused(db, path, charset):
    """Codecs Python knows, which Django took as the form's encoding: decoding the fields with one
    was a 500 (a TypeError or LookupError), for anyone holding a CSRF cookie."""
    browser = HttpsClient(enforce_csrf_checks=True)
    page = browser.get(path).content.decode()
    csrf_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    fields = {"csrfmiddlewaretoken": csrf_token, "username": "ada", "password": PASSWORD}
    body = "".join(
        f'--XX\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    )
    response = browser.generic(
        "POST",
        path,
        f"{body}--XX--\r\n".encode(),
        content_type=f"multipart/form-data; boundary=XX; charset={charset}",
        HTTP_REFERER=f"https://testserver{path}",
    )

    assert response.status_code == 415
    assert response.json()["error"] == "invalid_request"


def test_the_portal_gives_a_bounded_number_of_test_tokens_within_a_token_lifetime(signed_in, monkeypatch):
    monkeypatch.setattr(services, "MAX_TEST_TOKENS", 2)
    download(signed_in)  # the first download's token is got with the new secret: not the portal's own
    assert signed_in.post("/portal/app/tokens").status_code == 200
    assert signed_in.post("/portal/app/tokens").status_code == 200

    refused = signed_in.post("/portal/app/tokens")
    refused_download = download(signed_in)  # a repeat download brings a test token too

    assert (refused.status_code, refused_download.status_code) == (302, 302)
    assert AccessToken.objects.count() == 3
    page = signed_in.get("/portal/app/").content.decode()
    assert "has given your application 2 test tokens within one token lifetime" in page

    # A token lifetime later the first of them has expired: room for one more.
    first = AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_ISSUED, actor="portal:ada").earliest(
        "created"
    )
    AuditEvent.objects.filter(pk=first.pk).update(created=first.created - timedelta(hours=1))
    assert signed_in.post("/portal/app/tokens").status_code == 200
    assert signed_in.post("/portal/app/tokens").status_code == 302


def test_tokens_the_application_gets_with_its_secret_leave_the_portal_working(signed_in, monkeypatch):
    """Every run of the SDK's CLI gets a token with the secret: they are the application's own."""
    monkeypatch.setattr(services, "MAX_TEST_TOKENS", 2)
    delivered = download(signed_in)
    sdk = SimpleNamespace(
        application=Application.objects.get(), client_secret=shown(delivered, "client-secret")
    )
    for _ in range(5):
        assert request_token(signed_in, sdk).status_code == 200

    assert signed_in.post("/portal/app/tokens").status_code == 200
    assert download(signed_in).status_code == 200


def test_new_tokens_asked_for_at_once_stay_within_the_bound(transactional_db, monkeypatch):
    """Two requests at once, each with its own connection: they count and issue one after the other,
    so only one finds room for the last token."""
    developer = get_user_model().objects.create_user("ada", "ada@example.com", PASSWORD)
    browsers = [HttpsClient(), HttpsClient()]
    for browser in browsers:
        browser.force_login(developer)
    download(browsers[0])  # the client, with a token got with its secret
    monkeypatch.setattr(services, "MAX_TEST_TOKENS", 1)
    # Each request, once it has counted, waits for the other to count as well: without the lock both
    # count no test token and issue; with it the second counts only after the first has committed.
    both_counted = threading.Barrier(2, timeout=2)
    count_test_tokens = authserver_services.token_issue_times

    def count_then_wait(**query):
        times = count_test_tokens(**query)
        with suppress(threading.BrokenBarrierError):
            both_counted.wait()
        return times

    monkeypatch.setattr(authserver_services, "token_issue_times", count_then_wait)

    def new_token(browser) -> int:
        try:
            return browser.post("/portal/app/tokens").status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(new_token, browsers))

    assert sorted(statuses) == [200, 302]  # one token, one refusal
    assert AccessToken.objects.count() == 2
    refused = browsers[statuses.index(302)]
    assert "has given your application 1 test tokens" in refused.get("/portal/app/").content.decode()


def test_revoking_a_token_stops_it_at_once(signed_in):
    first_token = shown(download(signed_in), "access-token")
    other_token = shown(signed_in.post("/portal/app/tokens"), "access-token")
    stored = AccessToken.objects.get(
        pk=authserver_services.active_tokens(application=Application.objects.get())[-1].pk
    )

    response = signed_in.post(f"/portal/app/tokens/{stored.pk}/revoke")

    assert response.status_code == 302
    assert api_status(signed_in, first_token) == 401
    assert api_status(signed_in, other_token) == 200
    assert "The token was revoked" in signed_in.get("/portal/app/").content.decode()


def test_a_developer_cannot_revoke_someone_elses_token(signed_in, db):
    outsider = make_client(scopes=["products:read"])
    token = request_token(signed_in, outsider).json()["access_token"]
    download(signed_in)
    stored = AccessToken.objects.get(application=outsider.application)

    response = signed_in.post(f"/portal/app/tokens/{stored.pk}/revoke")

    assert response.status_code == 302
    assert api_status(signed_in, token) == 200
    assert "already expired or been revoked" in signed_in.get("/portal/app/").content.decode()


def test_deleting_the_application(signed_in):
    delivered = zip_of(download(signed_in))
    token = AccessToken.objects.get()
    first_id = credentials_in(delivered)["client_id"]
    confirm = signed_in.get("/portal/app/delete")
    assert confirm.status_code == 200
    assert first_id in confirm.content.decode()

    response = signed_in.post("/portal/app/delete")

    assert response.status_code == 302
    assert not Application.objects.exists()
    assert not SandboxClient.objects.exists()
    assert not AccessToken.objects.filter(pk=token.pk).exists()
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_DELETED, client_id=first_id).exists()
    # A new download starts afresh with a new client.
    assert credentials_in(zip_of(download(signed_in)))["client_id"] != first_id


def test_a_delete_confirmed_in_another_tab_deletes_only_the_client_it_named(signed_in):
    download(signed_in)
    confirm = signed_in.get("/portal/app/delete").content.decode()
    confirmed = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', confirm))
    # Meanwhile, in another tab: deleted, and a new client downloaded.
    signed_in.post("/portal/app/delete")
    second_id = credentials_in(zip_of(download(signed_in)))["client_id"]

    response = signed_in.post("/portal/app/delete", confirmed)

    assert response.status_code == 302
    assert list(Application.objects.values_list("client_id", flat=True)) == [second_id]
    assert "was already deleted; your current one was kept" in signed_in.get("/portal/app/").content.decode()


def test_a_delete_confirmed_again_in_another_tab_says_the_application_was_already_deleted(signed_in):
    download(signed_in)
    client_id = Application.objects.get().client_id
    confirm = signed_in.get("/portal/app/delete").content.decode()
    confirmed = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', confirm))
    signed_in.get(signed_in.post("/portal/app/delete", confirmed)["Location"])  # the first tab

    response = signed_in.post("/portal/app/delete", confirmed)

    assert response.status_code == 302 and response["Location"] == "/portal/app/"
    html = signed_in.get(response["Location"]).content.decode()
    messages = re.findall(r'<p class="message (\w+)">([^<]*)</p>', html)
    assert [level for level, _ in messages] == ["info"]
    assert f"Your application {client_id} was already deleted" in messages[0][1]
    assert 'action="/portal/download/"' in html


def test_the_application_page_before_the_first_download(signed_in):
    page = signed_in.get("/portal/app/")
    assert page.status_code == 200
    assert "You have no application yet" in page.content.decode()
    assert signed_in.post("/portal/app/tokens").status_code == 302
    assert "download the SDK to create one" in signed_in.get("/portal/app/").content.decode()


def test_the_application_page_shows_the_client(signed_in, developer):
    download(signed_in)
    application = Application.objects.get()
    page = signed_in.get("/portal/app/")
    assert page["Cache-Control"].startswith("max-age=0")
    assert shown(page, "client-id") == application.client_id
    assert "cannot show it again" in page.content.decode()


def test_the_application_page_of_a_disabled_client_says_so_and_offers_only_what_works(signed_in):
    """A client the Foo team disabled gets no download, test token, secret or deletion from the
    portal until they enable it: its page says why its secret and tokens are refused, and offers no
    button that can only be refused; revoking its tokens still works."""
    download(signed_in)
    application = Application.objects.get()
    authserver_services.set_client_enabled(application=application, enabled=False, actor="operator")

    page = signed_in.get("/portal/app/")

    html = page.content.decode()
    assert "refuses its secret and its tokens" in shown(page, "disabled-notice")
    for action in ["/portal/download/", "/portal/app/tokens/", "/portal/app/rotate-secret/"]:
        assert f'action="{action}"' not in html, action
    assert 'href="/portal/app/delete/"' not in html
    assert 'href="/portal/app/"' in html  # the navigation, not an action
    assert f'action="/portal/app/tokens/{AccessToken.objects.get().pk}/revoke/"' in html
    assert 'action="/portal/download/"' not in signed_in.get("/portal/").content.decode()

    authserver_services.set_client_enabled(application=application, enabled=True, actor="operator")
    html = signed_in.get("/portal/app/").content.decode()
    assert 'id="disabled-notice"' not in html
    for action in ["/portal/download/", "/portal/app/tokens/", "/portal/app/rotate-secret/"]:
        assert f'action="{action}"' in html, action
    assert 'href="/portal/app/delete/"' in html
    assert 'action="/portal/download/"' in signed_in.get("/portal/").content.decode()


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "90 seconds"), (150, "150 seconds"), (5400, "90 minutes")]
)
def test_the_application_page_says_the_clients_token_lifetime_unrounded(signed_in, seconds, text):
    """The lifetime the client's tokens get, in its largest whole unit: not rounded to minutes (90 s
    is no "2 minutes")."""
    download(signed_in)
    Application.objects.update(access_token_lifetime=seconds)
    page = signed_in.get("/portal/app/")
    assert shown(page, "token-lifetime") == f"{text} per token"


# --- the live catalogue --------------------------------------------------------------------------


def test_the_home_page_says_when_the_catalogue_is_unavailable(client, db, settings):
    portal = make_client(scopes=["products:read"], name="sdk-portal")
    settings.PORTAL_CLIENT_ID = portal.application.client_id
    settings.PORTAL_CLIENT_SECRET = portal.client_secret
    settings.PORTAL_API_BASE_URL = "https://localhost:9/api/v1"  # nothing listens there
    settings.PORTAL_TOKEN_URL = "https://localhost:9/oauth2/token"

    response = client.get("/portal/")

    assert response.status_code == 200
    assert "The catalogue is unavailable right now." in shown(response, "catalogue-unavailable")


@pytest.fixture
def busy_api():
    """An HTTP server on loopback whose token endpoint or API (`busy`, a path) answers every request
    503 with `Retry-After: 10`; the other answers as the real one would."""
    busy = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?")[0]
            if path == busy["path"]:
                status, headers = 503, {"Retry-After": "10"}
                body = {"error": "temporarily_unavailable", "error_description": "Try again later."}
            elif path == "/oauth2/token":
                status, headers = 200, {}
                body = {"access_token": "t", "token_type": "Bearer", "expires_in": 3600}
            else:
                status, headers = 200, {}
                body = {"count": 0, "next": None, "previous": None, "results": []}
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            """Quiet."""

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def serve(path: str) -> str:
        busy["path"] = path
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("busy_path", ["/oauth2/token", "/api/v1/products"])
def test_a_busy_api_makes_the_catalogue_unavailable_without_waiting(
    client, db, settings, busy_api, busy_path
):
    """The SDK waits out a Retry-After of up to 10 s; a page must not hold its worker that long."""
    url = busy_api(busy_path)
    settings.PORTAL_CLIENT_ID, settings.PORTAL_CLIENT_SECRET = "portal", "secret"
    settings.PORTAL_API_BASE_URL = f"{url}/api/v1"
    settings.PORTAL_TOKEN_URL = f"{url}/oauth2/token"

    started = time.monotonic()
    response = client.get("/portal/")

    assert time.monotonic() - started < 8  # not the 10 s Retry-After waited out, even on a busy machine
    assert response.status_code == 200
    assert "The catalogue is unavailable right now." in shown(response, "catalogue-unavailable")


def test_without_a_portal_client_the_catalogue_is_unavailable(client, db):
    response = client.get("/portal/")
    assert response.status_code == 200
    assert "no API client configured" in response.content.decode()


@pytest.mark.live
def test_the_home_page_shows_the_catalogue_fetched_with_the_portals_own_token(
    client, transactional_db, settings, django_db_blocker
):
    seed_demo_catalogue()
    portal = make_client(scopes=["products:read"], name="sdk-portal")
    settings.PORTAL_CLIENT_ID = portal.application.client_id
    settings.PORTAL_CLIENT_SECRET = portal.client_secret
    with LiveServer(workers=2) as server:
        settings.PORTAL_API_BASE_URL = f"{server.url}/api/v1"
        settings.PORTAL_TOKEN_URL = f"{server.url}/oauth2/token"

        response = client.get("/portal/")

    assert response.status_code == 200
    page = response.content.decode()
    catalogue = page[page.index('id="catalogue"') :]
    assert "Foo Starter Kit" in catalogue and "229.00" in catalogue
    assert 'id="catalogue-unavailable"' not in page
    # One token for the portal's own client, with the one scope it holds.
    assert AccessToken.objects.get(application=portal.application).scope == "products:read"
    # Cached: the next page does not call the API again (the server is gone now).
    assert "Foo Starter Kit" in client.get("/portal/").content.decode()


# --- the portal's own client (bootstrap) ---------------------------------------------------------


def test_bootstrap_registers_the_portals_client_once(db, settings):
    assert services.ensure_portal_client() is True
    stored = json.loads(Path(settings.PORTAL_CREDENTIALS_FILE).read_text())
    assert stat.S_IMODE(Path(settings.PORTAL_CREDENTIALS_FILE).stat().st_mode) == 0o600
    application = Application.objects.get(client_id=stored["client_id"])
    assert application.allowed_scope_names == ["products:read"]
    assert services.portal_credentials() == (stored["client_id"], stored["client_secret"])

    assert services.ensure_portal_client() is False
    assert Application.objects.count() == 1

    # The database was reset: a new client, a new file.
    application.delete()
    assert services.ensure_portal_client() is True
    assert json.loads(Path(settings.PORTAL_CREDENTIALS_FILE).read_text())["client_id"] != stored["client_id"]


def test_a_portal_client_from_the_environment_is_used_as_given(db, settings):
    settings.PORTAL_CLIENT_ID, settings.PORTAL_CLIENT_SECRET = "given-id", "given-secret"
    assert services.ensure_portal_client() is False
    assert not Path(settings.PORTAL_CREDENTIALS_FILE).exists()
    assert services.portal_credentials() == ("given-id", "given-secret")


def delete_developer(developer) -> None:
    authserver_services.delete_user(user=developer, actor="tests")


def deactivate_developer(developer) -> None:
    assert authserver_services.set_user_active(user=developer, active=False, actor="tests") == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL's")
@pytest.mark.parametrize("operator_action", [delete_developer, deactivate_developer])
def test_a_developer_deleted_or_deactivated_during_their_portal_action_is_no_deadlock(
    transactional_db, monkeypatch, operator_action
):
    # The portal locks the developer's row, then the validity epoch (a new secret); deleting or
    # deactivating the developer must take them in the same order.
    authserver_services.ensure_default_scopes()
    developer = get_user_model().objects.create_user("dana", password="x")
    services.download_sdk(developer=developer, remote_addr="127.0.0.1")
    locked, lock = threading.Event(), services._lock

    def lock_then_linger(someone):
        lock(someone)
        locked.set()
        threading.Event().wait(1)  # the developer's row locked, the epoch not yet taken

    monkeypatch.setattr(services, "_lock", lock_then_linger)

    def in_its_own_connection(work):
        try:
            return work()
        finally:
            connection.close()

    def act_on_developer():
        assert locked.wait(10)
        operator_action(get_user_model().objects.get(pk=developer.pk))

    def rotate():
        return services.rotate_secret(developer=developer, remote_addr="127.0.0.1", form_id="once")

    with ThreadPoolExecutor(2) as workers:
        rotating = workers.submit(in_its_own_connection, rotate)
        acting = workers.submit(in_its_own_connection, act_on_developer)
        rotating.result(), acting.result()  # neither aborted as a deadlock's victim

    assert not Application.objects.filter(user_id=developer.pk, enabled=True).exists()
    assert not get_user_model().objects.filter(pk=developer.pk, is_active=True).exists()


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite: the portal's transaction holds the write lock from its start",
)
def test_a_scope_withdrawn_while_a_test_token_is_issued_is_not_left_in_it(transactional_db, monkeypatch):
    """The portal reads the client's scopes, then an operator withdraws one (not committed yet):
    the test token is decided on the client as it is once that commits, never written with the
    scope the withdrawal already took from the client's other tokens."""
    authserver_services.ensure_default_scopes()
    validity.current()  # the epoch's row, made again after the last test emptied the tables
    developer = get_user_model().objects.create_user("tess", password="x")
    services.download_sdk(developer=developer, remote_addr="127.0.0.1")
    application = SandboxClient.objects.get(developer=developer).application
    withdrawn, withdraw = threading.Event(), authserver_services._withdraw

    def withdraw_then_linger(client, scopes):
        narrowed = withdraw(client, scopes)
        withdrawn.set()
        threading.Event().wait(1)  # the scope withdrawn, the tokens narrowed: not committed yet
        return narrowed

    monkeypatch.setattr(authserver_services, "_withdraw", withdraw_then_linger)
    sandbox_scopes, taking = services._sandbox_scopes, []

    def scopes_then_a_withdrawal(sandbox):
        scopes = sandbox_scopes(sandbox)  # read: the client holds both
        taking.append(ThreadPoolExecutor(1).submit(in_its_own_connection, withdraw_orders_read))
        assert withdrawn.wait(10)
        return scopes

    def withdraw_orders_read():
        authserver_services.update_client(
            application=Application.objects.get(pk=application.pk),
            actor="tests",
            changed_fields=[],
            scopes=["products:read"],
        )

    monkeypatch.setattr(services, "_sandbox_scopes", scopes_then_a_withdrawal)
    try:
        with pytest.raises(services.PortalError, match="may be granted: products:read"):
            services.new_test_token(developer=developer, remote_addr="127.0.0.1")
    finally:
        taking[0].result(timeout=30)  # committed before the tables are emptied

    assert not AccessToken.objects.filter(application=application, scope__contains="orders:read").exists()


def in_its_own_connection(work):
    try:
        return work()
    finally:
        connection.close()
