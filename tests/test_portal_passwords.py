"""A developer changes their password in the portal, or forgets it and sets a new one through a link
sent by email (offered only when the server can send email)."""

import re

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core import mail

from authserver.models import AuditEvent
from tests.browser import chromium_page, screenshot
from tests.helpers import HttpsClient
from tests.servers import LiveServer

PASSWORD = "correct horse battery staple 42"
NEW_PASSWORD = "a new and quite long passphrase 7"


@pytest.fixture
def developer(db):
    return get_user_model().objects.create_user("ada", "ada@example.com", PASSWORD)


@pytest.fixture
def email_configured(settings):
    settings.EMAIL_HOST = "smtp.example.com"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ISSUER = "https://auth.example.com"


def logged_in(username="ada", password=PASSWORD) -> HttpsClient:
    browser = HttpsClient()
    answer = browser.post("/accounts/login/", {"username": username, "password": password})
    assert answer.status_code == 302, answer.content.decode()
    return browser


def change(browser, old=PASSWORD, new=NEW_PASSWORD, again=None):
    return browser.post(
        "/accounts/password/",
        {"old_password": old, "new_password1": new, "new_password2": new if again is None else again},
    )


def signed_in(browser) -> bool:
    return browser.get("/portal/app/").status_code == 200


def reset_link(message) -> str:
    return re.search(r"https?://\S+/accounts/password/reset/\S+/", message.body).group(0)


# --- changing a password ------------------------------------------------------------------------


def test_a_developer_changes_their_password_and_stays_signed_in(developer):
    browser = logged_in()
    page = browser.get("/portal/app/").content.decode()
    assert 'href="/accounts/password/"' in page
    assert browser.get("/accounts/password/").status_code == 200

    answer = change(browser)
    assert answer.status_code == 302 and answer["Location"] == "/accounts/password/done/"
    assert "Password changed" in browser.get(answer["Location"]).content.decode()
    assert signed_in(browser)
    developer.refresh_from_db()
    assert developer.check_password(NEW_PASSWORD)
    logged_in(password=NEW_PASSWORD)

    event = AuditEvent.objects.get(kind=AuditEvent.Kind.USER_CHANGED)
    assert event.actor == "portal:ada" and event.detail["changed"] == ["password"]
    assert event.detail["username"] == "ada"


def test_a_wrong_old_password_or_a_weak_or_mismatched_new_one_changes_nothing(developer):
    browser = logged_in()
    wrong_old = change(browser, old="not my password")
    assert wrong_old.status_code == 200
    assert "Your old password was entered incorrectly" in wrong_old.content.decode()
    weak = change(browser, new="password")
    assert "This password is too common" in weak.content.decode()
    mismatched = change(browser, again=NEW_PASSWORD + "!")
    assert "didn\u2019t match" in mismatched.content.decode()
    developer.refresh_from_db()
    assert developer.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.USER_CHANGED).exists()


def test_the_password_page_needs_a_login():
    answer = HttpsClient().get("/accounts/password/")
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/?next=")


def test_changing_the_password_is_csrf_protected(developer):
    browser = HttpsClient(enforce_csrf_checks=True)
    browser.force_login(developer)
    answer = change(browser)
    assert answer.status_code == 403
    developer.refresh_from_db()
    assert developer.check_password(PASSWORD)


def test_guessing_the_old_password_is_throttled_as_logins_are(developer):
    browser = logged_in()
    for _ in range(5):
        assert change(browser, old="guess").status_code == 200
    throttled = change(browser)  # the right one, too late
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    developer.refresh_from_db()
    assert developer.check_password(PASSWORD)
    # The same count as the login page's, for this username and address.
    assert (
        HttpsClient().post("/accounts/login/", {"username": "ada", "password": PASSWORD}).status_code == 429
    )


# --- resetting a forgotten password -------------------------------------------------------------


def test_a_developer_resets_a_forgotten_password_by_email(developer, email_configured):
    elsewhere = logged_in()  # another browser, signed in with the old password
    browser = HttpsClient()
    assert 'href="/accounts/password/reset/"' in browser.get("/accounts/login/").content.decode()

    answer = browser.post("/accounts/password/reset/", {"email": "ADA@example.com"})
    assert answer.status_code == 302 and answer["Location"] == "/accounts/password/reset/sent/"
    assert "Check your email" in browser.get(answer["Location"]).content.decode()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["ada@example.com"]
    link = reset_link(mail.outbox[0])
    assert link.startswith("https://auth.example.com/accounts/password/reset/")

    # The token leaves the address bar before the form shows (Django moves it into the session).
    opened = browser.get(link.removeprefix("https://auth.example.com"))
    assert opened.status_code == 302 and opened["Location"].endswith("/set-password/")
    form = browser.get(opened["Location"])
    assert "Set a new password" in form.content.decode()
    done = browser.post(opened["Location"], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/accounts/password/reset/done/"
    assert "Password set" in browser.get(done["Location"]).content.decode()

    logged_in(password=NEW_PASSWORD)
    assert (
        HttpsClient().post("/accounts/login/", {"username": "ada", "password": PASSWORD}).status_code == 200
    )
    assert not signed_in(elsewhere)
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.USER_CHANGED)
    assert event.actor == "portal:ada" and event.detail["changed"] == ["password"]

    # The link works once.
    again = HttpsClient().get(link.removeprefix("https://auth.example.com"))
    assert again.status_code == 200 and "This link no longer works" in again.content.decode()


def test_a_reset_request_answers_alike_whether_or_not_the_address_has_an_account(developer, email_configured):
    known = HttpsClient().post("/accounts/password/reset/", {"email": "ada@example.com"})
    unknown = HttpsClient().post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert (known.status_code, known["Location"]) == (unknown.status_code, unknown["Location"])
    assert [message.to for message in mail.outbox] == [["ada@example.com"]]


def test_reset_requests_are_throttled_per_email_address_and_per_client_address(developer, email_configured):
    for _ in range(3):
        assert (
            HttpsClient().post("/accounts/password/reset/", {"email": "ada@example.com"}).status_code == 302
        )
    throttled = HttpsClient().post("/accounts/password/reset/", {"email": " Ada@Example.com"})
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert len(mail.outbox) == 3
    # An address with no account is limited alike: the 429 tells nothing.
    for _ in range(3):
        HttpsClient().post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert HttpsClient().post("/accounts/password/reset/", {"email": "nobody@example.com"}).status_code == 429
    # Ten requests an hour from one client address, whatever addresses they name.
    for number in range(2):
        HttpsClient().post("/accounts/password/reset/", {"email": f"other{number}@example.com"})
    assert HttpsClient().post("/accounts/password/reset/", {"email": "new@example.com"}).status_code == 429


def test_the_reset_link_is_built_on_the_issuer_not_the_host_header(developer, email_configured, settings):
    settings.ALLOWED_HOSTS = ["*"]
    answer = HttpsClient().post(
        "/accounts/password/reset/", {"email": "ada@example.com"}, HTTP_HOST="attacker.example"
    )
    assert answer.status_code == 302
    body = mail.outbox[0].body
    assert "attacker.example" not in body
    assert reset_link(mail.outbox[0]).startswith("https://auth.example.com/accounts/password/reset/")


def test_a_deactivated_developer_gets_no_reset_email(developer, email_configured):
    developer.is_active = False
    developer.save()
    answer = HttpsClient().post("/accounts/password/reset/", {"email": "ada@example.com"})
    assert answer.status_code == 302 and answer["Location"] == "/accounts/password/reset/sent/"
    assert mail.outbox == []


def test_a_link_sent_before_the_developer_was_deactivated_sets_no_password(developer, email_configured):
    browser = HttpsClient()
    browser.post("/accounts/password/reset/", {"email": "ada@example.com"})
    link = reset_link(mail.outbox[0]).removeprefix("https://auth.example.com")
    opened = browser.get(link)  # its token now in the session, the form on its way
    assert opened.status_code == 302
    developer.is_active = False
    developer.save()

    for answer in (
        HttpsClient().get(link),
        browser.get(opened["Location"]),
        browser.post(opened["Location"], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}),
    ):
        assert answer.status_code == 200 and "This link no longer works" in answer.content.decode()
    developer.refresh_from_db()
    assert developer.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.USER_CHANGED).exists()


def test_without_email_the_portal_offers_no_reset_and_says_who_can_help(developer, settings):
    settings.EMAIL_HOST = ""
    browser = HttpsClient()
    assert "/accounts/password/reset/" not in browser.get("/accounts/login/").content.decode()
    for path in [
        "/accounts/password/reset/",
        "/accounts/password/reset/sent/",
        "/accounts/password/reset/MQ/set-password/",
        "/accounts/password/reset/done/",
    ]:
        answer = browser.get(path)
        assert answer.status_code == 404, path
        assert "an operator can set a new password" in answer.content.decode(), path
    assert browser.post("/accounts/password/reset/", {"email": "ada@example.com"}).status_code == 404
    assert mail.outbox == []


def test_the_reset_link_never_reaches_the_logs(developer, email_configured, caplog):
    caplog.set_level("DEBUG")
    HttpsClient().post("/accounts/password/reset/", {"email": "ada@example.com"})
    token = reset_link(mail.outbox[0]).rstrip("/").rsplit("/", 1)[-1]
    assert token not in caplog.text


# --- in a browser -------------------------------------------------------------------------------


@pytest.fixture
def server(transactional_db, django_db_blocker):
    get_user_model().objects.create_user("ada", "ada@example.com", PASSWORD)
    with LiveServer(workers=1) as live:
        yield live


def test_a_developer_changes_their_password_in_a_browser(server):
    with chromium_page() as page:
        problems = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "response",
            lambda response: (
                response.status >= 400 and response.status != 404 and problems.append(response.url)
            ),
        )
        page.goto(f"{server.url}/accounts/login/")
        assert page.locator("#forgot-password").count() == 0  # this server sends no email
        page.fill("#id_username", "ada")
        page.fill("#id_password", PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{server.url}/portal/")

        page.locator("#change-password-link").click()
        page.wait_for_url(f"{server.url}/accounts/password/")
        page.fill("#id_old_password", "not my password")
        page.fill("#id_new_password1", NEW_PASSWORD)
        page.fill("#id_new_password2", NEW_PASSWORD)
        page.locator("#change-password").click()
        assert "entered incorrectly" in page.locator(".field-errors").first.inner_text()
        screenshot(page, "portal-password-change-error")

        page.fill("#id_old_password", PASSWORD)
        page.fill("#id_new_password1", NEW_PASSWORD)
        page.fill("#id_new_password2", NEW_PASSWORD)
        page.locator("#change-password").click()
        page.wait_for_url(f"{server.url}/accounts/password/done/")
        assert "Your new password is set" in page.locator("#password-changed").inner_text()
        screenshot(page, "portal-password-changed")
        # Still signed in.
        page.goto(f"{server.url}/portal/app/")
        assert page.url == f"{server.url}/portal/app/"
        assert problems == [], problems
    assert get_user_model().objects.get(username="ada").check_password(NEW_PASSWORD)


def test_a_reset_links_token_never_reaches_the_access_log(server):
    for path in [
        "/accounts/password/reset/MQ/d3k2-0123456789abcdef/",
        "/accounts/password/reset/MQ/set-password/",
    ]:
        requests.get(f"{server.url}{path}", verify=server.verify, timeout=10)
    output = server.output()
    assert "0123456789abcdef" not in output
    assert "/accounts/password/reset/MQ/[redacted]/" in output
    assert "/accounts/password/reset/MQ/set-password/" in output
