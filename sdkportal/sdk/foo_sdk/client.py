"""FooClient: the Foo API over HTTPS, authenticated with a client-credentials access token."""

from __future__ import annotations

import copy
import email.utils
import json
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import (
    FooApiError,
    FooAuthError,
    FooConfigurationError,
    FooConnectionError,
    FooError,
    FooScopeError,
)

DEFAULT_TIMEOUT = 10.0
# A token is renewed this long (at most) before it expires, so no request leaves with a dying token.
EXPIRY_MARGIN_SECONDS = 30.0
# Rows asked for per page: the most the API gives.
PAGE_SIZE = 100
# A 429 (or a 503 to a request that may be repeated) asking to wait at most this long is retried
# once after the wait; a longer one is raised at once, with its `retry_after`. The default of
# FooClient's `max_retry_after`.
MAX_RETRY_AFTER_SECONDS = 10.0
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
# The keys of foo-credentials.json the SDK reads; all strings.
_CREDENTIALS_KEYS = ("client_id", "client_secret", "token_url", "api_base_url", "ca_certificate")
_CHALLENGE_PARAMETER = re.compile(r'([A-Za-z_]+)="((?:[^"\\]|\\.)*)"')


class _ServerAdapter(HTTPAdapter):
    """The SDK's transport to the server, mounted on the token URL and the API base URL only (a
    user's adapters keep serving every other URL).

    One new connection when one fails before the answer (a keep-alive connection the server or a
    proxy closed, a server restarting): for any request whose connection could not be made, and for
    `repeatable_methods` when it broke after the request left. Answers are never retried here (the
    client's own 429/503 handling does that).

    Given `ssl_context` (the server's own certificate, loaded from memory), TLS is verified against
    it alone, directly or through a proxy: no CA file is read per request, none added to it
    (REQUESTS_CA_BUNDLE included), and verification is never turned off."""

    def __init__(self, repeatable_methods: frozenset[str], ssl_context: ssl.SSLContext | None = None):
        self._ssl_context = ssl_context
        # Not respecting Retry-After: urllib3 would turn a 429 or 503 that carries one into an error
        # (status=0) before the client's own handling sees the answer.
        retry = Retry(
            total=1,
            connect=1,
            read=1,
            status=0,
            other=0,
            allowed_methods=repeatable_methods,
            respect_retry_after_header=False,
        )
        super().__init__(max_retries=retry)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if urlsplit(request.url).scheme == "http":
            # Plain HTTP is for this machine only (_check_url): an HTTP_PROXY from the environment
            # would carry the secret and tokens, unencrypted, to another one.
            kwargs["proxies"] = {}
        return super().send(request, *args, **kwargs)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
        """The TLS settings of each connection pool, direct or through a proxy: requests' hook for
        a custom SSLContext (2.32.2 and later)."""
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if self._ssl_context is not None:
            pool_kwargs.update(ssl_context=self._ssl_context, cert_reqs="CERT_REQUIRED")
            pool_kwargs.pop("ca_certs", None)
            pool_kwargs.pop("ca_cert_dir", None)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would point the pool at a CA file, loaded into the context on every connection.
        if self._ssl_context is None:
            super().cert_verify(conn, url, verify, cert)
        else:
            conn.cert_reqs, conn.ca_certs, conn.ca_cert_dir = "CERT_REQUIRED", None, None


def _server_context(pem: str) -> ssl.SSLContext:
    """An SSL context that trusts the server's certificate (PEM text) and nothing else, held in
    memory: no file a /tmp cleaner could remove while the program runs."""
    try:
        return ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError, TypeError) as error:
        raise FooConfigurationError(f"ca_certificate is not a PEM certificate: {error}") from error


def _check_url(name: str, url: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return url.rstrip("/")  # a local development server; secrets never leave the machine
    raise FooConfigurationError(f"{name} must be an https:// URL, not {url!r}")


def _whole_number(name: str, value: Any) -> int:
    """`value` as an int; a value int() would truncate (a quantity of 2.9) is refused instead."""
    number = int(value)
    if not isinstance(value, str) and number != value:
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    return number


class _BearerToken(requests.auth.AuthBase):
    """The access token in the Authorization header. Given as `auth`, it is also what keeps requests
    from replacing the header with a login for the host from ~/.netrc."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def _challenge_parameters(header: str) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer ...` challenge (RFC 6750 3)."""
    return {name: value.replace('\\"', '"') for name, value in _CHALLENGE_PARAMETER.findall(header or "")}


class FooClient:
    """A client of the Foo API.

    Gets an access token from the token endpoint with the client credentials grant (HTTP Basic,
    RFC 6749 4.4), reuses it until shortly before it expires, and when the API answers 401 (the
    token was revoked, say) gets a new one and retries once; a 429 (or a 503 to a GET) asking for a
    short pause (`max_retry_after` seconds at most, 10 by default; 0 never waits) is waited out and
    retried once. Threads may share one client (and its token). TLS certificates are always verified:
    against `ca_certificate` (PEM text, e.g. the server's self-signed certificate from
    foo-credentials.json), else `ca_bundle` (a file), else the system's trusted authorities.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        token_url: str,
        api_base_url: str,
        ca_certificate: str | None = None,
        ca_bundle: str | os.PathLike | None = None,
        scope: str | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
    ):
        if not client_id:
            raise FooConfigurationError("client_id is missing")
        if not client_secret:
            raise FooConfigurationError(
                "client_secret is missing: use the foo-credentials.json of the download that showed "
                "it, set FOO_CLIENT_SECRET, or rotate the secret in the portal"
            )
        self.client_id = client_id
        self._client_secret = client_secret
        self.token_url = _check_url("token_url", token_url)
        self.api_base_url = _check_url("api_base_url", api_base_url)
        self.scope = scope
        self.timeout = timeout
        self.max_retry_after = max_retry_after
        # The server's own certificate stays in memory, on the SDK's adapters; otherwise the CA
        # bundle file, else the system's authorities, is passed with every request (a Session's own
        # `verify` loses to REQUESTS_CA_BUNDLE).
        server_context = _server_context(ca_certificate) if ca_certificate else None
        self._verify: str | bool = True
        if not server_context and ca_bundle:
            if not os.path.exists(ca_bundle):
                raise FooConfigurationError(f"ca_bundle {os.fspath(ca_bundle)!r} does not exist")
            self._verify = str(ca_bundle)
        self._session = requests.Session()
        self._session.headers.update({"Accept": "application/json", "User-Agent": _user_agent()})
        # A GET may run twice, and so may a token request (another token is harmless); an order
        # the server may have placed is never sent again.
        api_adapter = _ServerAdapter(frozenset({"GET", "HEAD"}), server_context)
        self._session.mount(self.api_base_url + "/", api_adapter)
        self._session.mount(self.token_url, _ServerAdapter(frozenset({"POST"}), server_context))
        self._lock = threading.Lock()
        self._access_token: str | None = None
        self._renew_at = 0.0
        # Token fetches ended, and the error the last one ended with (None after a success).
        self._fetches_ended = 0
        self._fetch_error: FooError | None = None
        self.token_scope: str = ""

    def __repr__(self) -> str:
        return f"FooClient(client_id={self.client_id!r}, api_base_url={self.api_base_url!r})"

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_credentials_file(cls, path: str | os.PathLike, **options: Any) -> FooClient:
        """From the foo-credentials.json in the SDK download. A file without a secret (later
        downloads carry none) takes it from FOO_CLIENT_SECRET."""
        path = Path(path)
        try:
            credentials = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise FooConfigurationError(f"No credentials file at {path}") from error
        except (OSError, ValueError) as error:
            raise FooConfigurationError(f"Cannot read credentials from {path}: {error}") from error
        if not isinstance(credentials, dict):
            raise FooConfigurationError(f"{path} does not hold a JSON object")
        missing = [key for key in ("client_id", "token_url", "api_base_url") if not credentials.get(key)]
        if missing:
            raise FooConfigurationError(f"{path} lacks {', '.join(missing)}")
        not_text = [key for key in _CREDENTIALS_KEYS if not isinstance(credentials.get(key) or "", str)]
        if not_text:  # a hand-edited file: a configuration error, not a TypeError at the first call
            raise FooConfigurationError(f"{path}: {', '.join(not_text)} must be a JSON string")
        settings = {
            "client_id": credentials["client_id"],
            "client_secret": credentials.get("client_secret") or os.environ.get("FOO_CLIENT_SECRET", ""),
            "token_url": credentials["token_url"],
            "api_base_url": credentials["api_base_url"],
            "ca_certificate": credentials.get("ca_certificate"),
        }
        settings.update(options)
        return cls(**settings)

    @classmethod
    def from_env(cls, **options: Any) -> FooClient:
        """From FOO_CLIENT_ID, FOO_CLIENT_SECRET, FOO_TOKEN_URL, FOO_API_BASE_URL and, for a
        server whose certificate the system does not trust, FOO_CA_BUNDLE (a PEM file); FOO_SCOPE
        asks for fewer scopes than all of the client's."""
        environ = os.environ
        missing = [
            name
            for name in ("FOO_CLIENT_ID", "FOO_CLIENT_SECRET", "FOO_TOKEN_URL", "FOO_API_BASE_URL")
            if not environ.get(name)
        ]
        if missing:
            raise FooConfigurationError(f"Set {', '.join(missing)}")
        settings = {
            "client_id": environ["FOO_CLIENT_ID"],
            "client_secret": environ["FOO_CLIENT_SECRET"],
            "token_url": environ["FOO_TOKEN_URL"],
            "api_base_url": environ["FOO_API_BASE_URL"],
            "ca_bundle": environ.get("FOO_CA_BUNDLE") or None,
            "scope": environ.get("FOO_SCOPE") or None,
        }
        settings.update(options)
        return cls(**settings)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> FooClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the API ----------------------------------------------------------------------------

    def list_products(self) -> list[dict]:
        """The whole catalogue (scope `products:read`)."""
        return self._list("/products")

    def get_product(self, product_id: int) -> dict:
        return self._request("GET", f"/products/{_whole_number('product_id', product_id)}")

    def list_orders(self) -> list[dict]:
        """This client's orders, newest first (scope `orders:read`)."""
        return self._list("/orders")

    def get_order(self, order_id: int) -> dict:
        return self._request("GET", f"/orders/{_whole_number('order_id', order_id)}")

    def create_order(self, lines: Mapping[int, int] | Iterable[Mapping[str, int] | tuple[int, int]]) -> dict:
        """Place an order (scope `orders:write`): `{product_id: quantity}`, or a list of
        `{"product": id, "quantity": n}` or `(id, n)`. Returns the order as the API stored it."""
        items = lines.items() if isinstance(lines, Mapping) else lines
        body = []
        for item in items:
            product, quantity = (item["product"], item["quantity"]) if isinstance(item, Mapping) else item
            product, quantity = _whole_number("product", product), _whole_number("quantity", quantity)
            body.append({"product": product, "quantity": quantity})
        return self._request("POST", "/orders", json_body={"lines": body})

    def access_token(self) -> str:
        """A valid access token (the cached one while it has time left). Threads share one fetch:
        those that waited while it failed get its error rather than each fetching in turn."""
        ended = self._fetches_ended
        with self._lock:
            if self._access_token is not None and time.monotonic() < self._renew_at:
                return self._access_token
            if self._fetch_error is not None and self._fetches_ended != ended:
                # Queued behind a fetch that failed: another, one thread after the other, would make
                # the last of N threads wait N timeouts (or Retry-After pauses), not one. A copy: each
                # thread's traceback its own.
                raise copy.copy(self._fetch_error) from self._fetch_error
            try:
                self._fetch_token()
                self._fetch_error = None
            except FooError as error:
                self._fetch_error = error
                raise
            finally:
                self._fetches_ended += 1
            return self._access_token

    # --- HTTP -------------------------------------------------------------------------------

    def _list(self, path: str) -> list[dict]:
        results: list[dict] = []
        listed: set = set()
        page = 1
        while True:
            body = self._request("GET", path, params={"page": page, "page_size": PAGE_SIZE})
            try:
                rows, more = body["results"], body.get("next")
                # A row added meanwhile shifts the pages (a new order comes first): what a page
                # repeats from the one before is listed once.
                new = [row for row in rows if row["id"] not in listed]
                listed.update(row["id"] for row in rows)
            except (KeyError, TypeError, AttributeError) as error:
                raise FooApiError(200, "invalid_response", f"{path} answered no page of results") from error
            results.extend(new)
            if not more:
                return results
            if not new:  # a server bug must not become an endless loop
                raise FooApiError(200, "invalid_response", f"{path} page {page} listed nothing new")
            page += 1

    def _request(self, method: str, path: str, *, params=None, json_body=None) -> Any:
        url = self.api_base_url + path
        for attempt in (1, 2):
            token = self.access_token()
            response = self._send(
                method,
                url,
                repeatable=method == "GET",
                params=params,
                json=json_body,
                auth=_BearerToken(token),
            )
            if response.status_code == 401 and attempt == 1:
                self._forget_token(token)  # revoked or expired early: one retry with a new token
                continue
            break
        if response.status_code >= 400:
            raise self._api_error(response)
        try:
            return response.json()
        except ValueError as error:
            raise FooApiError(response.status_code, "invalid_response", "The answer is not JSON") from error

    def _send(self, method: str, url: str, *, repeatable: bool, **kwargs: Any) -> requests.Response:
        """The answer, after one wait and retry when the server asks for a short pause: a 429 was
        not acted on; a 503 is retried only for a request that may run twice (`repeatable`)."""
        response = self._send_once(method, url, **kwargs)
        wait = _retry_after(response)
        busy = response.status_code == 429 or (response.status_code == 503 and repeatable)
        if busy and wait is not None and wait <= self.max_retry_after:
            time.sleep(wait)
            response = self._send_once(method, url, **kwargs)
        return response

    def _send_once(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self._session.request(
                method, url, timeout=self.timeout, verify=self._verify, allow_redirects=False, **kwargs
            )
        except requests.exceptions.SSLError as error:
            raise FooConnectionError(f"TLS verification of {url} failed: {error}") from error
        except requests.RequestException as error:
            raise FooConnectionError(f"Cannot reach {url}: {error}") from error
        except OSError as error:  # requests' own: the ca_bundle file gone since, say
            raise FooConnectionError(f"Cannot verify {url}: {error}") from error

    def _fetch_token(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        # RFC 6749 2.3.1: id and secret are form-encoded before they go into the Basic header.
        auth = (quote_plus(self.client_id), quote_plus(self._client_secret))
        # The token expires `expires_in` after the server issued it, which was after this moment:
        # counted from here, a slow answer (or a Retry-After waited out) cannot eat the margin.
        sent_at = time.monotonic()
        response = self._send("POST", self.token_url, repeatable=True, data=form, auth=auth)
        if response.status_code != 200:
            raise self._token_error(response)
        try:
            token = response.json()
            access_token = token["access_token"]
            lifetime = float(token.get("expires_in") or 0)
            # RFC 6749 7.1: a token of a type the client does not know (DPoP, say) is not to be used.
            bearer = str(token.get("token_type", "")).lower() == "bearer"
            if not (isinstance(access_token, str) and access_token and bearer and 0 <= lifetime < math.inf):
                raise ValueError("no usable access_token, token_type or expires_in")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise FooApiError(
                response.status_code,
                "invalid_response",
                "No Bearer access_token and expires_in in the answer",
            ) from error
        self._access_token = access_token
        self._renew_at = sent_at + lifetime - min(EXPIRY_MARGIN_SECONDS, lifetime / 10)
        self.token_scope = token.get("scope", "")

    def _forget_token(self, token: str) -> None:
        with self._lock:
            if self._access_token == token:
                self._access_token = None

    def _token_error(self, response: requests.Response) -> FooApiError:
        error, description = _error_fields(response)
        if error == "invalid_scope":
            return FooScopeError(response.status_code, error, description, scope=self.scope or "")
        if response.status_code in (400, 401) and error in ("invalid_client", "unauthorized_client"):
            return FooAuthError(response.status_code, error, description)
        return FooApiError(response.status_code, error, description, retry_after=_retry_after(response))

    @staticmethod
    def _api_error(response: requests.Response) -> FooApiError:
        error, description = _error_fields(response)
        challenge = _challenge_parameters(response.headers.get("WWW-Authenticate", ""))
        if response.status_code == 401:
            return FooAuthError(401, challenge.get("error") or error, description)
        if response.status_code == 403 and "insufficient_scope" in (error, challenge.get("error")):
            scope = challenge.get("scope") or _json_field(response, "scope")
            return FooScopeError(403, "insufficient_scope", description, scope=scope)
        return FooApiError(response.status_code, error, description, retry_after=_retry_after(response))


def _json_field(response: requests.Response, name: str) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


def _retry_after(response: requests.Response) -> float | None:
    """Retry-After (RFC 9110 10.2.3) in seconds, from a delay or a date; None without one."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # asctime's format names no zone; every HTTP-date is GMT (RFC 9110 5.6.7)
        when = when.replace(tzinfo=timezone.utc)  # noqa: UP017 (3.10 has no UTC)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())  # noqa: UP017


def _error_fields(response: requests.Response) -> tuple[str, str]:
    error = _json_field(response, "error") or f"http_{response.status_code}"
    return error, _json_field(response, "error_description")


def _user_agent() -> str:
    from . import __version__

    return f"foo-sdk/{__version__} python-requests/{requests.__version__}"
