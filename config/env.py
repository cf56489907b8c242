"""Reading the process environment into settings values (see the README's environment table)."""

import os
import re
import secrets
import tempfile
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_BIND = "0.0.0.0:9443"  # README: `make run` serves every interface by default
# Where http:// may be used (ISSUER, the portal's URLs): the SDK's own list (foo_sdk LOOPBACK_HOSTS),
# so that no URL accepted here is one the SDK the portal runs and hands out then refuses.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# gunicorn's TCP addresses: HOST:PORT or [IPv6]:PORT (its optional tcp:// prefix taken off first).
_TCP_BIND = re.compile(r"(?:\[[^\[\]]+\]|[^:\[\]]*):([0-9]{1,5})")
# [scheme://]user[:password]@: an "@" before the authority ends ("/", "?" or "#").
_USER_INFO = re.compile(r"(?:[^:/?#]*://)?[^/?#]*@")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}
# The range the console and create_client accept for a client's own token lifetime (models.py).
TOKEN_LIFETIME_RANGE = {"minimum": 60, "maximum": 7 * 24 * 3600}


class ConfigurationError(ValueError):
    """A setting from the environment that cannot work: manage.py and gunicorn say so in one line
    on stderr and exit 1, instead of starting with it or showing a traceback."""


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigurationError(f"{name}={raw!r}: expected one of on/off, true/false, yes/no, 1/0")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r}: expected a whole number") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"{minimum} to {maximum}" if maximum is not None else f"{minimum} or more"
        raise ConfigurationError(f"{name}={raw!r}: expected {bounds}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def persistent_secret_key(path: Path) -> str:
    """The key stored at `path`, created once (atomically: concurrent workers agree on one key)."""
    try:
        return _persistent_secret_key(path)
    except OSError as error:  # VAR_DIR read-only, a file, on a full disk: a traceback from settings
        raise ConfigurationError(
            f"{path}: {error.strerror or error} (VAR_DIR must be a writable directory; or set SECRET_KEY)"
        ) from None


def _persistent_secret_key(path: Path) -> str:
    with suppress(FileNotFoundError):
        if key := path.read_text().strip():
            return key
        # Every request would be a 500 (Django refuses an empty SECRET_KEY). Not replaced here:
        # two processes starting at once could each write their own.
        raise ConfigurationError(f"{path} is empty: delete it (a new key is made) or set SECRET_KEY")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as draft:
        draft.write(secrets.token_urlsafe(50))
    os.chmod(draft.name, 0o600)
    try:
        with suppress(FileExistsError):  # another process created the key first: use theirs
            os.link(draft.name, path)
    finally:
        os.unlink(draft.name)
    return path.read_text().strip()


def env_bind(name: str) -> str:
    """gunicorn's bind address: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; empty counts as unset.
    gunicorn took a HOST alone for port 8000 while the issuer said 9443, and a port over 65535 was
    its traceback."""
    raw = os.environ.get(name, "") or DEFAULT_BIND
    bind = raw.removeprefix("tcp://")
    if raw.startswith("unix:") or re.fullmatch(r"fd://[0-9]+", raw):
        return raw
    if (match := _TCP_BIND.fullmatch(bind)) and int(match[1]) <= 65535:
        return bind
    raise ConfigurationError(
        f"{name}={raw!r}: expected HOST:PORT such as 127.0.0.1:8443 ([IPv6]:PORT, unix:PATH or fd://N)"
    )


def env_origins(name: str, default: list[str]) -> list[str]:
    """Origins for the browser's forms (CSRF_TRUSTED_ORIGINS): scheme://host[:port]. Without a
    scheme Django's system check stopped manage.py with a report while gunicorn served regardless;
    with a path (a trailing "/" too) it never equals a browser's Origin: every form post a 403."""
    origins = []
    for origin in env_list(name, default):
        if has_user_info(origin):  # not quoted: it may hold a password
            raise ConfigurationError(f"{name}: expected origins with no user name or password")
        try:
            parts = urlsplit(origin)
            parts.port  # noqa: B018 (raises ValueError for a port that is no number or out of range)
        except ValueError:
            parts = None
        # Its own scheme://netloc: nothing after the host and port, not even a "/".
        if (
            not parts
            or parts.scheme not in ("https", "http")
            or origin.lower() != f"{parts.scheme}://{parts.netloc}".lower()
        ):
            raise ConfigurationError(
                f"{name}: {origin!r} is not an origin: expected scheme://host[:port] such as "
                "https://auth.example.com, with no path"
            )
        # Django compares it as it is with the browser's Origin, which is in lowercase.
        origins.append(origin.lower())
    return origins


def env_service_url(name: str, default: str) -> str:
    """A URL the portal calls with its client's secret (PORTAL_TOKEN_URL, PORTAL_API_BASE_URL):
    https://, or http:// on a loopback host, as the SDK requires (else every portal page was a 500);
    empty counts as unset."""
    raw = os.environ.get(name, "") or default
    try:
        url = urlsplit(raw)
        url.port  # noqa: B018 (raises ValueError for a port that is no number or out of range)
    except ValueError:
        url = None
    if has_user_info(raw):  # not quoted: it may hold a password
        raise ConfigurationError(f"{name}: expected no user name or password in the URL")
    allowed = url and (url.scheme == "https" or (url.scheme == "http" and is_loopback(url.hostname)))
    if not allowed or not url.hostname or any(map(str.isspace, raw)):
        raise ConfigurationError(
            f"{name}={raw!r}: expected an https:// URL (http:// only on a loopback host: localhost, "
            "127.0.0.1, ::1)"
        )
    return raw.rstrip("/")


def default_issuer(bind: str) -> str:
    """The issuer when ISSUER is unset: https://localhost on the port gunicorn binds (BIND), so that
    `BIND=127.0.0.1:8443 make run` publishes, prints and hands out URLs that reach this server."""
    port = bind.rsplit(":", 1)[-1] if ":" in bind and not bind.startswith(("unix:", "fd://")) else ""
    if not port.isdigit():
        port = DEFAULT_BIND.rsplit(":", 1)[-1]
    return "https://localhost" if port == "443" else f"https://localhost:{port}"


def bind_host(bind: str) -> str | None:
    """The address gunicorn binds (BIND), when it is one clients can use: not a wildcard (0.0.0.0,
    ::), a unix socket or a file descriptor."""
    if bind.startswith(("unix:", "fd://")):
        return None
    if bind.startswith("["):  # [IPv6]:port
        host = bind[1:].partition("]")[0]
    else:  # host:port, host, or a bare IPv6 address
        host = bind.rsplit(":", 1)[0] if bind.count(":") == 1 else bind
    return host if host not in ("", "0.0.0.0", "::") else None  # noqa: S104 (compared, not bound)


def env_issuer(name: str, bind: str) -> str:
    """The issuer identifier (RFC 8414 2): an https URL with no query or fragment, and here no path
    either, as the metadata is served at the root (RFC 8414 3.1); a trailing "/" is dropped. http
    is for a loopback host alone (the benchmark and tests serve TLS=off on 127.0.0.1/localhost):
    elsewhere it would send client secrets and tokens over the network in the clear."""
    raw = os.environ.get(name, "")
    if not raw:
        return default_issuer(bind)
    if has_user_info(raw):  # not quoted: it may hold a password
        raise ConfigurationError(f"{name}: expected no user name or password in the URL")
    not_a_url = ConfigurationError(
        f"{name}={raw!r}: expected an https:// URL such as https://auth.example.com"
    )
    try:
        issuer = urlsplit(raw)
        issuer.port  # noqa: B018 (raises ValueError for a port that is no number or out of range)
    except ValueError:
        raise not_a_url from None
    if issuer.scheme not in ("https", "http") or not issuer.hostname or any(map(str.isspace, raw)):
        raise not_a_url
    if "?" in raw or "#" in raw:
        raise ConfigurationError(f"{name}={raw!r}: expected no query or fragment (RFC 8414 2)")
    if issuer.path not in ("", "/"):
        raise ConfigurationError(
            f"{name}={raw!r}: expected no path (the metadata is served at the root, RFC 8414 3.1)"
        )
    if issuer.scheme == "http" and not is_loopback(issuer.hostname):
        raise ConfigurationError(
            f"{name}={raw!r}: expected https:// (http:// only on a loopback host: localhost, 127.0.0.1, ::1)"
        )
    return raw.removesuffix("/")


def has_user_info(url: str) -> bool:
    """Whether a URL holds a user name or password before its host: then it is never quoted in a
    message, whatever else is wrong with it (a port that is no number)."""
    return bool(_USER_INFO.match(url))


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS
