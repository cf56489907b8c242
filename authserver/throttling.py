"""Rate limits and brute-force protection, counted in the shared cache.

With REDIS_URL every app node shares the counters; without it each worker counts on its own (a
looser limit, never a stricter one). When the cache is unreachable the limits fail open: requests
are served and the failure is logged, because an authorization server that stops issuing tokens
when its cache blinks is a worse outage than a few minutes without brute-force counters.
"""

import hashlib
import ipaddress
import logging
import time
from contextlib import suppress
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.shortcuts import render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    """At most `count` events per `seconds`, counted separately for each key (address, client...)."""

    name: str
    count: int
    seconds: int

    @classmethod
    def from_setting(cls, name: str) -> "Limit":
        count, seconds = settings.THROTTLE_LIMITS[name]
        return cls(name, count, seconds)

    def _key(self, parts: tuple[str, ...], window: int) -> str:
        # Hashed: a client id is caller-chosen text (spaces, control characters, any length),
        # which some cache backends reject or warn about.
        digest = hashlib.sha256("\0".join(parts).encode("utf-8", "backslashreplace")).hexdigest()
        return f"throttle:{self.name}:{digest}:{window}"

    def _window(self) -> tuple[int, int]:
        """(current window number, seconds until it ends): fixed windows, cheap and shared."""
        now = time.time()
        window = int(now // self.seconds)
        return window, int((window + 1) * self.seconds - now) + 1

    def retry_after(self, *parts: str) -> int:
        """Seconds to wait when the limit is already used up for `parts`; 0 when it is not."""
        return longest_wait((self, parts))

    def record(self, *parts: str) -> int:
        """Count one event; returns seconds to wait if this event went over the limit, else 0."""
        if not settings.THROTTLE_ENABLED:
            return 0
        window, remaining = self._window()
        key = self._key(parts, window)
        try:
            used = self._count(key)
        except Exception:  # noqa: BLE001 (fail open)
            log.warning("Throttle %s: cache unreachable; not limiting", self.name)
            return 0
        return remaining if used > self.count else 0

    def _count(self, key: str) -> int:
        # The window's counter usually exists: one increment. The first event of a window creates it
        # (add), unless another worker just did, or it expired in between (then start again at 1).
        with suppress(ValueError):
            return cache.incr(key)
        if cache.add(key, 1, timeout=self.seconds + 1):
            return 1
        try:
            return cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=self.seconds + 1)
            return 1

    def reset(self, *parts: str) -> None:
        try:
            cache.delete(self._key(parts, self._window()[0]))
        except Exception:  # noqa: BLE001 (fail open)
            log.warning("Throttle %s: cache unreachable; counter not reset", self.name)


def longest_wait(*checks: tuple[Limit, tuple[str, ...]]) -> int:
    """max(limit.retry_after(*parts) for each (limit, parts)), from one cache read."""
    if not settings.THROTTLE_ENABLED:
        return 0
    windows = [limit._window() for limit, _ in checks]
    keys = [limit._key(parts, window) for (limit, parts), (window, _) in zip(checks, windows, strict=True)]
    try:
        used = cache.get_many(keys)
    except Exception:  # noqa: BLE001 (fail open, see the module docstring)
        log.warning(
            "Throttle %s: cache unreachable; not limiting", ", ".join(limit.name for limit, _ in checks)
        )
        return 0
    return max(
        remaining if used.get(key, 0) >= limit.count else 0
        for (limit, _), (_, remaining), key in zip(checks, windows, keys, strict=True)
    )


def client_address(meta) -> str:
    """The caller's address from a request's META (or oauthlib's copy of it, `request.headers`):
    REMOTE_ADDR, or the address TRUSTED_PROXY_COUNT proxies in front of us saw."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [
            hop.strip() for hop in (meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if hop.strip()
        ]
        if len(forwarded) >= proxies and _is_ip_address(forwarded[-proxies]):
            return forwarded[-proxies]
    return meta.get("REMOTE_ADDR") or ""


def _is_ip_address(text: str) -> bool:
    # Anything else would be a 500 where it is stored (AuditEvent.remote_addr is inet on PostgreSQL).
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return "%" not in text  # a scoped IPv6 address (fe80::1%eth0) is no inet value either


# The limits, from settings.THROTTLE_LIMITS (README, "What the server promises").
TOKEN_REQUESTS_PER_ADDRESS = Limit.from_setting("token_requests_per_address")
CLIENT_AUTH_FAILURES_PER_CLIENT_AND_ADDRESS = Limit.from_setting(
    "client_auth_failures_per_client_and_address"
)
CLIENT_AUTH_FAILURES_PER_ADDRESS = Limit.from_setting("client_auth_failures_per_address")
LOGIN_FAILURES_PER_USER_AND_ADDRESS = Limit.from_setting("login_failures_per_user_and_address")
LOGIN_FAILURES_PER_ADDRESS = Limit.from_setting("login_failures_per_address")
SIGNUPS_PER_ADDRESS = Limit.from_setting("signups_per_address")


def client_auth_retry_after(client_id: str, address: str) -> int:
    """Seconds a client id must wait at this address after too many failed authentications."""
    return longest_wait(
        (CLIENT_AUTH_FAILURES_PER_CLIENT_AND_ADDRESS, (client_id, address)),
        (CLIENT_AUTH_FAILURES_PER_ADDRESS, (address,)),
    )


def record_client_auth_failure(client_id: str, address: str) -> None:
    # Keyed by client *and* address: someone who knows only a client id cannot lock the client
    # out from its own address.
    CLIENT_AUTH_FAILURES_PER_CLIENT_AND_ADDRESS.record(client_id, address)
    CLIENT_AUTH_FAILURES_PER_ADDRESS.record(address)


class LoginThrottleMixin:
    """For LoginView subclasses (admin console and portal): too many failed logins for a username
    from an address, or from an address overall, answer 429 without checking the password."""

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "").strip().lower()
        address = client_address(request.META)
        wait = longest_wait(
            (LOGIN_FAILURES_PER_USER_AND_ADDRESS, (username, address)),
            (LOGIN_FAILURES_PER_ADDRESS, (address,)),
        )
        if wait:
            return too_many_attempts(request, wait)
        response = super().post(request, *args, **kwargs)
        if request.user.is_authenticated:
            LOGIN_FAILURES_PER_USER_AND_ADDRESS.reset(username, address)
        else:
            LOGIN_FAILURES_PER_USER_AND_ADDRESS.record(username, address)
            LOGIN_FAILURES_PER_ADDRESS.record(address)
        return response


def too_many_attempts(request, retry_after: int):
    """The 429 page for people in a browser (machines get errors.too_many_requests)."""
    context = {"status": 429, "description": f"Too many attempts. Try again in {retry_after} seconds."}
    response = render(request, "error.html", context, status=429)
    response["Retry-After"] = str(retry_after)
    return response
