"""What the SDK portal does for a developer, one function per action: their sandbox client, its
secret and test tokens, the SDK zip; and the live catalogue its pages show, fetched from the Foo API
with the portal's own client.

It reaches the authorization server only through authserver.services and DOT's token endpoint
logic; tokens are never written here.
"""

import base64
import io
import json
import logging
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote_plus, urlencode, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, QueryDict
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.oauth2_backends import get_oauthlib_core

from authserver import services as authserver_services
from authserver.backends import users_named
from authserver.scopes import sandbox_scope_names
from config.tls import served_self_signed_certificate_pem
from sdkportal.models import SandboxClient
from sdkportal.sdk.foo_sdk import FooClient, FooError, __version__

log = logging.getLogger(__name__)

SDK_DIR = Path(__file__).resolve().parent / "sdk"
SDK_FILES = ["pyproject.toml", "README.md", "foo_sdk"]
CREDENTIALS_FILE_NAME = "foo-credentials.json"
CERTIFICATE_FILE_NAME = "server-certificate.pem"
PORTAL_CLIENT_NAME = "sdk-portal"
PORTAL_CLIENT_SCOPES = ["products:read"]
# The portal gives an application at most this many test tokens within one token lifetime (so at
# most this many of them are alive at once): a click loop must not fill the token table. Tokens the
# client gets with its secret (the SDK's, the first download's, a rotation's) are not the portal's
# test tokens and do not count: using the SDK never stops the portal from working.
MAX_TEST_TOKENS = 20
CATALOGUE_CACHE_KEY = "sdkportal:catalogue"
# After a failed call the portal waits this long before trying again, so an outage does not make
# every page wait for a timeout.
CATALOGUE_FAILURE_CACHE_SECONDS = 10
# PostgreSQL advisory lock key ("signup" in ASCII) under which sign-ups check and insert one at a time.
SIGN_UP_LOCK_KEY = 0x7369676E7570


class PortalError(Exception):
    """An action the portal cannot do for this developer; the message is written for them."""


class AlreadyRotated(PortalError):
    """The rotation form was posted before (a reload of the page that delivered the new secret)."""


class AlreadyDeleted(PortalError):
    """The deletion was confirmed after the application was deleted (in another tab, say)."""


@dataclass(frozen=True)
class SandboxToken:
    client_id: str  # the client it was issued to
    access_token: str
    scope: str
    expires_at: datetime


@dataclass(frozen=True)
class Delivery:
    """What one Download SDK or Rotate secret hands out. `client_secret` is None when the client
    already existed: the secret went out once, with the download that created or rotated it."""

    client_id: str
    client_secret: str | None
    token: SandboxToken
    zip_name: str
    zip_bytes: bytes


@dataclass(frozen=True)
class Catalogue:
    products: list[dict]
    unavailable: str = ""  # why the products could not be fetched


# --- sign-up ----------------------------------------------------------------------------------


def taken_in_any_case(field: str, value: str) -> bool:
    """Whether an account has `value` as its `field` in any case. iregex, not iexact: SQLite's
    iexact (LIKE) folds ASCII letters only ("Élodie" beside "élodie"); PostgreSQL's folds all."""
    return get_user_model().objects.filter(**{f"{field}__iregex": rf"^{re.escape(value)}$"}).exists()


def sign_up(*, developer) -> str | None:
    """Save a new developer account (built by the sign-up form, its password already hashed) unless
    its username or email, in any case, was signed up since the form checked: then the field taken
    ("username" or "email"), and nothing saved."""
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # Two sign-ups at once would each find the email free: no index holds it (accounts
                # made in the console may share one, or have none). SQLite's writers queue (IMMEDIATE).
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SIGN_UP_LOCK_KEY])
            if users_named(developer.get_username()).exists():
                return "username"
            if taken_in_any_case("email", developer.email):
                return "email"
            developer.save()
    except IntegrityError:
        # The same username made meanwhile by another path (the console): the unique index on the
        # lowercase username (authserver migration 0009) refuses it.
        return "username"
    return None


def record_login(*, presented_username: str, user=None, remote_addr: str | None = None) -> None:
    """A login at the portal's page, or a failed attempt, to a staff account: its session opens the
    console as one signed in there does, so the console's audit trail records it (a developer's
    login is no console event)."""
    account = user if user is not None else authserver_services.account_named(presented_username)
    if account is None or not (account.is_staff or account.is_superuser):
        return
    authserver_services.record_console_login(
        presented_username=presented_username,
        user=user,
        remote_addr=remote_addr,
        via=reverse("sdkportal:login"),
    )


# --- the developer's sandbox client -----------------------------------------------------------


@dataclass(frozen=True)
class SandboxOffer:
    """What the portal's pages promise a developer: the scopes a sandbox client gets and how long a
    test token lasts, as the server grants them now (an operator changes the sandbox scopes,
    SANDBOX_TOKEN_LIFETIME the lifetime)."""

    scopes: list[str]
    lifetime: str


def sandbox_offer() -> SandboxOffer:
    return SandboxOffer(
        scopes=sorted(sandbox_scope_names()), lifetime=duration_text(settings.SANDBOX_TOKEN_LIFETIME)
    )


UNITS = [("hour", 3600), ("minute", 60), ("second", 1)]  # the last divides every whole number


def duration_text(seconds: int) -> str:
    """ "an hour", "2 hours", "15 minutes", "90 seconds": the largest unit that divides `seconds`."""
    unit, size = next((unit, size) for unit, size in UNITS if seconds % size == 0)
    count = seconds // size
    if count == 1:
        return "an hour" if unit == "hour" else f"a {unit}"
    return f"{count} {unit}s"


def sandbox_client_of(developer) -> SandboxClient | None:
    return SandboxClient.objects.select_related("application").filter(developer=developer).first()


def active_test_tokens(developer) -> list:
    """The developer's client's unexpired tokens (metadata; the tokens are stored hashed)."""
    sandbox = sandbox_client_of(developer)
    return [] if sandbox is None else authserver_services.active_tokens(application=sandbox.application)


@transaction.atomic
def download_sdk(*, developer, remote_addr: str) -> Delivery:
    """The first time: register the developer's sandbox client, get its test token with a real
    client-credentials request authenticated by the new secret, and hand out both. Later: the same
    client, a fresh test token, and no secret."""
    _lock(developer)
    sandbox = sandbox_client_of(developer)
    actor = _actor(developer)
    if sandbox is None:
        scopes = sandbox_scope_names()
        if not scopes:
            raise PortalError("No scope is open for sandbox use at the moment; please contact the Foo team.")
        new_client = authserver_services.register_client(
            name=f"SDK sandbox of {developer.username}",
            owner=developer,
            scopes=scopes,
            access_token_lifetime=settings.SANDBOX_TOKEN_LIFETIME,
            actor=actor,
            remote_addr=remote_addr,
        )
        sandbox = SandboxClient.objects.create(developer=developer, application=new_client.application)
        client_secret = new_client.client_secret
        token = request_token_with_secret(
            client_id=new_client.application.client_id,
            client_secret=client_secret,
            scope=" ".join(sorted(scopes)),
            remote_addr=remote_addr,
        )
    else:
        client_secret = None
        token = _owner_token(sandbox, actor=actor, remote_addr=remote_addr)
    sandbox.last_download = timezone.now()
    sandbox.save(update_fields=["last_download"])
    return _delivery(sandbox, client_secret, token)


@transaction.atomic
def rotate_secret(*, developer, remote_addr: str, form_id: str) -> Delivery:
    """A new secret (the old one stops working), delivered once in a new SDK zip, with a test token
    obtained with it. Once per `form_id`, the form that asked: that form posted again (a reload of
    the page that delivered the secret) would replace the secret the developer has just saved."""
    _lock(developer)
    if authserver_services.rotated_with_form(actor=_actor(developer), form_id=form_id) is not None:
        raise AlreadyRotated(
            "This form was sent before: your secret was rotated then and delivered once, in that "
            "download; it is not shown again, and nothing was rotated now. Lost it? Rotate it again."
        )
    sandbox = _existing(developer)
    _check_usable(sandbox)
    client_secret = authserver_services.rotate_secret(
        application=sandbox.application, actor=_actor(developer), remote_addr=remote_addr, form_id=form_id
    )
    token = request_token_with_secret(
        client_id=sandbox.application.client_id,
        client_secret=client_secret,
        scope=" ".join(_sandbox_scopes(sandbox)),
        remote_addr=remote_addr,
    )
    return _delivery(sandbox, client_secret, token)


@transaction.atomic
def new_test_token(*, developer, remote_addr: str) -> SandboxToken:
    """A test token for the developer's client; counted and issued under the developer's lock, so
    that two requests at once cannot both find room below MAX_TEST_TOKENS."""
    _lock(developer)
    sandbox = _existing(developer)
    return _owner_token(sandbox, actor=_actor(developer), remote_addr=remote_addr)


def revoke_test_token(*, developer, token_id: int, remote_addr: str) -> None:
    """Revoke one of the developer's client's tokens; any other token id is refused alike."""
    token = next((token for token in active_test_tokens(developer) if token.pk == token_id), None)
    if token is None:
        raise PortalError("That token has already expired or been revoked.")
    authserver_services.revoke_token(token=token, actor=_actor(developer), remote_addr=remote_addr)


@transaction.atomic
def delete_application(*, developer, remote_addr: str, client_id: str | None = None) -> None:
    """Delete the developer's client: its secret and tokens stop working at once. A client the Foo
    team disabled stays: deleting it would let the next download register a new, enabled one.
    `client_id`, the client the confirmation page named: another one (created since, in another
    tab) is not deleted in its place."""
    _lock(developer)
    sandbox = sandbox_client_of(developer)
    if sandbox is None:
        deleted = "Your application" + (f" {client_id}" if client_id else "")
        raise AlreadyDeleted(
            f"{deleted} was already deleted, so there was nothing left to delete. "
            "Download the SDK to create a new one."
        )
    if client_id is not None and client_id != sandbox.application.client_id:
        raise PortalError(
            f"The application {client_id} was already deleted; your current one was kept. "
            "To delete it, use its Delete button."
        )
    _check_usable(sandbox)
    authserver_services.delete_client(
        application=sandbox.application, actor=_actor(developer), remote_addr=remote_addr
    )


def request_token_with_secret(
    *, client_id: str, client_secret: str, scope: str, remote_addr: str
) -> SandboxToken:
    """POST /oauth2/token with the client credentials grant, run in-process through DOT's token
    endpoint logic (client authentication with the secret, scope policy, storage, audit)."""
    request = HttpRequest()
    request.method = "POST"
    request.path = reverse("oauth2_provider:token")
    issuer = urlsplit(settings.ISSUER)
    credentials = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    request.META = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(credentials).decode(),
        "HTTP_HOST": issuer.netloc,
        "SERVER_NAME": issuer.hostname or "localhost",
        "SERVER_PORT": str(issuer.port or (443 if issuer.scheme == "https" else 80)),
        "REMOTE_ADDR": remote_addr,
        "wsgi.url_scheme": issuer.scheme,
    }
    request.POST = QueryDict(urlencode({"grant_type": "client_credentials", "scope": scope}))
    _, headers, body, status = get_oauthlib_core().create_token_response(request)
    answer = json.loads(body)
    if status != 200:
        log.error("Portal token request for %s refused: %s", client_id, answer)
        # Raised inside the caller's transaction: the new client or secret goes with it, and the
        # developer must know that nothing was kept, and when to try again.
        retry_after = headers.get("Retry-After")
        when = f"in {retry_after} seconds" if retry_after else "in a moment"
        raise PortalError(
            f"The authorization server refused the test token ({answer.get('error', status)}), so "
            f"nothing was changed: no new client, no new secret. Please try again {when}, or "
            "contact the Foo team."
        )
    return SandboxToken(
        client_id=client_id,
        access_token=answer["access_token"],
        scope=answer.get("scope", scope),
        expires_at=timezone.now() + timedelta(seconds=int(answer["expires_in"])),
    )


def _owner_token(sandbox: SandboxClient, *, actor: str, remote_addr: str) -> SandboxToken:
    _check_usable(sandbox)
    lifetime = timedelta(seconds=sandbox.application.token_lifetime)
    issued = authserver_services.token_issue_times(
        application=sandbox.application, actor=actor, since=timezone.now() - lifetime
    )
    if len(issued) >= MAX_TEST_TOKENS:
        room_at = issued[-MAX_TEST_TOKENS] + lifetime  # when one fewer is within a lifetime
        raise PortalError(
            f"The portal has given your application {MAX_TEST_TOKENS} test tokens within one token "
            f"lifetime; it gives the next from {room_at:%H:%M} UTC. Your application can get tokens "
            "with its secret at any time, as the SDK does."
        )
    try:
        answer = authserver_services.issue_token_for_owner(
            application=sandbox.application,
            scopes=_sandbox_scopes(sandbox),
            actor=actor,
            remote_addr=remote_addr,
        )
    except ValidationError as error:
        raise PortalError(" ".join(error.messages)) from error
    return SandboxToken(
        client_id=sandbox.application.client_id,
        access_token=answer["access_token"],
        scope=answer["scope"],
        expires_at=timezone.now() + timedelta(seconds=int(answer["expires_in"])),
    )


def _sandbox_scopes(sandbox: SandboxClient) -> list[str]:
    """Test tokens stay limited: the sandbox scopes the client holds, even if an operator gave it more."""
    scopes = sorted(set(sandbox.application.allowed_scope_names) & set(sandbox_scope_names()))
    if not scopes:
        raise PortalError("Your application holds no sandbox scope; please contact the Foo team.")
    return scopes


def _check_usable(sandbox: SandboxClient) -> None:
    if not sandbox.application.enabled:
        raise PortalError("Your application has been disabled by the Foo team; please contact them.")


def password_changed(*, developer, remote_addr: str) -> None:
    """Record in the audit trail that the developer set a new password (changed it, or after a reset
    by email), with them as actor: call it in the transaction that saved it."""
    authserver_services.user_saved(
        user=developer,
        before=authserver_services.account_powers(developer),
        password_changed=True,
        actor=_actor(developer),
        remote_addr=remote_addr,
    )


def password_reset_offered() -> bool:
    """Whether the portal can send a reset link: only with a mail server to send it through."""
    return bool(settings.EMAIL_HOST)


def _existing(developer) -> SandboxClient:
    sandbox = sandbox_client_of(developer)
    if sandbox is None:
        raise PortalError("You have no application yet: download the SDK to create one.")
    return sandbox


def _lock(developer) -> None:
    """One portal action at a time per developer: a double click must not register two clients,
    nor two requests at once both find room for the last test token. A developer deactivated (or
    deleted) since their request signed them in gets nothing: not even a client of their own."""
    if not authserver_services.lock_user(developer):
        raise PortalError("Your account has been deactivated; please contact the Foo team.")


def _actor(developer) -> str:
    return f"portal:{developer.username}"


# --- the SDK zip --------------------------------------------------------------------------------


def sdk_zip_name() -> str:
    return f"foo-sdk-{__version__}.zip"


def self_signed_certificate() -> str | None:
    """The server's certificate (PEM) when it serves TLS itself with a self-signed one: clients
    must be told to trust it. None for a certificate from an authority, or without TLS."""
    return served_self_signed_certificate_pem(settings.TLS_CERT_FILE) if settings.TLS else None


def credentials_document(*, client_id: str, client_secret: str | None, scope: str) -> dict:
    document = {
        "client_id": client_id,
        "token_url": f"{settings.ISSUER}{reverse('oauth2_provider:token')}",
        "api_base_url": f"{settings.ISSUER}/api/v1",
        "scope": scope,
    }
    if client_secret:
        document["client_secret"] = client_secret
    else:
        document["client_secret_note"] = (
            "The secret was in the download that created or last rotated this client; "
            "set FOO_CLIENT_SECRET, or rotate it in the portal for a new file."
        )
    certificate = self_signed_certificate()
    if certificate:
        document["ca_certificate"] = certificate
    return document


def build_sdk_zip(credentials: dict) -> bytes:
    """foo-sdk-<version>/: the installable SDK, its README, foo-credentials.json and, for a
    self-signed server, its certificate (for curl; the SDK reads it from the credentials)."""
    root = f"foo-sdk-{__version__}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in _sdk_source_files():
            _add(archive, f"{root}/{path.relative_to(SDK_DIR).as_posix()}", path.read_bytes(), 0o644)
        _add(
            archive,
            f"{root}/{CREDENTIALS_FILE_NAME}",
            json.dumps(credentials, indent=2).encode() + b"\n",
            0o600,
        )
        if credentials.get("ca_certificate"):
            _add(archive, f"{root}/{CERTIFICATE_FILE_NAME}", credentials["ca_certificate"].encode(), 0o644)
    return buffer.getvalue()


def _sdk_source_files() -> list[Path]:
    files = []
    for name in SDK_FILES:
        path = SDK_DIR / name
        if path.is_dir():
            files += [
                item
                for item in sorted(path.rglob("*"))
                if item.is_file() and "__pycache__" not in item.parts and item.suffix in {".py", ".typed"}
            ]
        else:
            files.append(path)
    return files


def _add(archive: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    entry = zipfile.ZipInfo(name, date_time=timezone.now().timetuple()[:6])
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = (0o100000 | mode) << 16
    archive.writestr(entry, data)


def _delivery(sandbox: SandboxClient, client_secret: str | None, token: SandboxToken) -> Delivery:
    client_id = sandbox.application.client_id
    credentials = credentials_document(client_id=client_id, client_secret=client_secret, scope=token.scope)
    return Delivery(
        client_id=client_id,
        client_secret=client_secret,
        token=token,
        zip_name=sdk_zip_name(),
        zip_bytes=build_sdk_zip(credentials),
    )


# --- the portal's own client and the live catalogue ---------------------------------------------


def portal_credentials() -> tuple[str, str] | None:
    """(client_id, client_secret) of the portal's own client: PORTAL_CLIENT_ID/PORTAL_CLIENT_SECRET,
    else the file bootstrap wrote; None when neither is there."""
    if settings.PORTAL_CLIENT_ID and settings.PORTAL_CLIENT_SECRET:
        return settings.PORTAL_CLIENT_ID, settings.PORTAL_CLIENT_SECRET
    try:
        stored = json.loads(Path(settings.PORTAL_CREDENTIALS_FILE).read_text())
        return stored["client_id"], stored["client_secret"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_portal_client() -> bool:
    """Register the portal's own client (products:read) and keep its secret in a 0600 file, unless
    the environment names one or the stored one still exists. True when one was registered now."""
    if settings.PORTAL_CLIENT_ID and settings.PORTAL_CLIENT_SECRET:
        return False
    stored = portal_credentials()
    if stored and authserver_services.find_client(stored[0]) is not None:
        return False
    with transaction.atomic():
        new_client = authserver_services.register_client(
            name=PORTAL_CLIENT_NAME, scopes=PORTAL_CLIENT_SCOPES, actor="manage.py bootstrap"
        )
        # Written before the client commits: a file that cannot be written (OSError) leaves no
        # client behind whose secret no one has.
        _write_private_file(
            Path(settings.PORTAL_CREDENTIALS_FILE),
            json.dumps(
                {"client_id": new_client.application.client_id, "client_secret": new_client.client_secret}
            ),
        )
    return True


def renew_stale_portal_secret() -> bool:
    """A new secret for the portal's own client when the file's no longer works (an operator
    rotated it: the console, manage.py rotate_secret), written to the file, which the portal reads
    on its next fetch. True when it was renewed now."""
    if settings.PORTAL_CLIENT_ID and settings.PORTAL_CLIENT_SECRET:
        return False
    stored = portal_credentials()
    application = authserver_services.find_client(stored[0]) if stored else None
    if application is None or check_password(stored[1], application.client_secret):
        return False
    with transaction.atomic():  # the file written before it commits, as at registration
        client_secret = authserver_services.rotate_secret(
            application=application, actor="manage.py bootstrap"
        )
        _write_private_file(
            Path(settings.PORTAL_CREDENTIALS_FILE),
            json.dumps({"client_id": application.client_id, "client_secret": client_secret}),
        )
    return True


def _write_private_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as draft:
        draft.write(text)
    os.chmod(draft.name, 0o600)
    os.replace(draft.name, path)


@lru_cache(maxsize=4)
def _api_client(
    client_id: str, client_secret: str, token_url: str, api_base_url: str, certificate: str | None
):
    # One client per process and configuration: its access token is reused until it nears expiry.
    return FooClient(
        client_id=client_id,
        client_secret=client_secret,
        token_url=token_url,
        api_base_url=api_base_url,
        ca_certificate=certificate,
        timeout=(2, settings.PORTAL_API_TIMEOUT),
        # A page must not hold its worker through the SDK's Retry-After waits (up to 10 s each, for
        # the token and for the API): a busy API makes the catalogue unavailable at once.
        max_retry_after=0,
    )


def live_catalogue() -> Catalogue:
    """The catalogue from the Foo API, called over HTTP with the portal's own token; cached briefly."""
    try:
        cached = cache.get(CATALOGUE_CACHE_KEY)
    except Exception:  # noqa: BLE001 (Redis down: fetch it as on a miss; README "What the server promises")
        log.warning("Catalogue: cache unreachable; fetching it")
        cached = None
    if cached is not None:
        return Catalogue(**cached)
    credentials = portal_credentials()
    if credentials is None:
        catalogue = Catalogue(products=[], unavailable="The portal has no API client configured.")
    else:
        client = _api_client(
            *credentials, settings.PORTAL_TOKEN_URL, settings.PORTAL_API_BASE_URL, self_signed_certificate()
        )
        try:
            catalogue = Catalogue(products=client.list_products())
        except FooError as error:
            log.warning("Catalogue unavailable: %s: %s", type(error).__name__, error)
            catalogue = Catalogue(products=[], unavailable="The Foo API could not be reached just now.")
    seconds = (
        CATALOGUE_FAILURE_CACHE_SECONDS if catalogue.unavailable else settings.PORTAL_CATALOGUE_CACHE_SECONDS
    )
    try:
        cache.set(
            CATALOGUE_CACHE_KEY,
            {"products": catalogue.products, "unavailable": catalogue.unavailable},
            seconds,
        )
    except Exception:  # noqa: BLE001
        log.warning("Catalogue: cache unreachable; not cached")
    return catalogue
