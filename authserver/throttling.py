"""Rate limits and brute-force protection: fixed-window counters.

With REDIS_URL the counters are in the shared cache and every app node shares them. Without it the
cache is each worker's own memory (LocMemCache), and so are the counters, kept in a plain dict
(`ProcessCounters`): each worker counts on its own (a looser limit, never a stricter one), without
the cache's work per call (key checks, pickling), which cost a token request two cache reads and
an increment (docs/benchmarks.md, item 32). When the shared cache is unreachable the limits fail
open: requests are served and the failure is logged, because an authorization server that stops
issuing tokens when its cache blinks is a worse outage than a few minutes without brute-force
counters.
"""

import functools
import hashlib
import ipaddress
import logging
import threading
import time
import unicodedata
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.signals import setting_changed
from django.dispatch import receiver
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
        try:
            used = counters().count(self, parts, window)
        except Exception:  # noqa: BLE001 (fail open)
            log.warning("Throttle %s: cache unreachable; not limiting", self.name)
            return 0
        return remaining if used > self.count else 0

    def reset(self, *parts: str) -> None:
        try:
            counters().reset(self, parts, self._window()[0])
        except Exception:  # noqa: BLE001 (fail open)
            log.warning("Throttle %s: cache unreachable; counter not reset", self.name)


def longest_wait(*checks: tuple[Limit, tuple[str, ...]]) -> int:
    """max(limit.retry_after(*parts) for each (limit, parts)), from one cache read."""
    if not settings.THROTTLE_ENABLED:
        return 0
    windows = [limit._window() for limit, _ in checks]
    try:
        used = counters().used(
            [(limit, parts, window) for (limit, parts), (window, _) in zip(checks, windows, strict=True)]
        )
    except Exception:  # noqa: BLE001 (fail open, see the module docstring)
        log.warning(
            "Throttle %s: cache unreachable; not limiting", ", ".join(limit.name for limit, _ in checks)
        )
        return 0
    return max(
        remaining if count >= limit.count else 0
        for (limit, _), (_, remaining), count in zip(checks, windows, used, strict=True)
    )


Counted = tuple[Limit, tuple[str, ...], int]  # a limit, what it counts (address, client...), a window


class CacheCounters:
    """The counters in a Django cache, one key per limit, parts and window (shared with REDIS_URL)."""

    def __init__(self, counter_cache):
        self.cache = counter_cache

    def count(self, limit: Limit, parts: tuple[str, ...], window: int) -> int:
        """Add one event; the window's count with it."""
        # The window's counter usually exists: one increment. The first event of a window creates it
        # (add), unless another worker just did, or it expired in between (then start again at 1).
        key = limit._key(parts, window)
        with suppress(ValueError):
            return self.cache.incr(key)
        if self.cache.add(key, 1, timeout=limit.seconds + 1):
            return 1
        try:
            return self.cache.incr(key)
        except ValueError:
            self.cache.set(key, 1, timeout=limit.seconds + 1)
            return 1

    def used(self, counted: Sequence[Counted]) -> list[int]:
        """Each window's count so far, from one read."""
        keys = [limit._key(parts, window) for limit, parts, window in counted]
        found = self.cache.get_many(keys)
        return [found.get(key, 0) for key in keys]

    def reset(self, limit: Limit, parts: tuple[str, ...], window: int) -> None:
        self.cache.delete(limit._key(parts, window))


class ProcessCounters:
    """The counters in this process's memory: for a cache that is (LocMemCache) no more shared than
    a dict, the same fixed windows without its work per call (validating and hashing keys, pickling
    values, expiry bookkeeping). A window's counts are forgotten when the limit's next window
    starts; at most `size` keys are counted per limit and window, the oldest third forgotten when
    more come (as LocMemCache culls, at a much larger size)."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._lock = threading.Lock()
        self._windows: dict[Limit, tuple[int, dict[tuple[str, ...], int]]] = {}

    def count(self, limit: Limit, parts: tuple[str, ...], window: int) -> int:
        key = _bounded(parts)
        with self._lock:
            current = self._windows.get(limit)
            if current is None or current[0] != window:
                current = self._windows[limit] = (window, {})
            counts = current[1]
            used = counts[key] = counts.get(key, 0) + 1
            if len(counts) > self.size:
                for oldest in list(counts)[: self.size // 3]:
                    del counts[oldest]
            return used

    def used(self, counted: Sequence[Counted]) -> list[int]:
        return [self._counts(limit, window).get(_bounded(parts), 0) for limit, parts, window in counted]

    def reset(self, limit: Limit, parts: tuple[str, ...], window: int) -> None:
        with self._lock:
            self._counts(limit, window).pop(_bounded(parts), None)

    def _counts(self, limit: Limit, window: int) -> dict[tuple[str, ...], int]:
        current = self._windows.get(limit)
        return current[1] if current is not None and current[0] == window else {}


def _bounded(parts: tuple[str, ...]) -> tuple:
    """`parts` as a key of bounded size: long caller-chosen text (a client id of kilobytes, from
    ever new addresses) by its digest, after None, which no parts hold."""
    if sum(map(len, parts)) <= 256:
        return parts
    return (None, hashlib.sha256("\0".join(parts).encode("utf-8", "backslashreplace")).digest())


@functools.cache
def counters() -> CacheCounters | ProcessCounters:
    """Where this process counts: in its own memory when the cache is too, else in the cache."""
    if isinstance(caches["default"], LocMemCache):
        return ProcessCounters()
    return CacheCounters(cache)


@receiver(setting_changed)
def _recount_where_the_cache_is(setting, **kwargs) -> None:
    if setting == "CACHES":
        counters.cache_clear()


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


@functools.lru_cache(maxsize=4096)
def counted_address(address: str) -> str:
    """What a limit per address counts for `address`: an IPv4 address itself; for IPv6, its /64
    network, which one subscriber (a home, a virtual machine) is usually given whole and can take
    any of 2**64 addresses from, so that a limit per IPv6 address would be no limit. An
    IPv4-mapped IPv6 address (::ffff:192.0.2.1, a dual-stack socket's) is its IPv4 address. The
    audit trail records the address itself."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:  # not an IPv6 address (client_address() gives what the socket gave)
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


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
PASSWORD_RESETS_PER_ADDRESS = Limit.from_setting("password_resets_per_address")
PASSWORD_RESETS_PER_EMAIL = Limit.from_setting("password_resets_per_email")
REGISTRATIONS_PER_REGISTRAR_PER_HOUR = Limit.from_setting("registrations_per_registrar_per_hour")
REGISTRATIONS_PER_REGISTRAR_PER_DAY = Limit.from_setting("registrations_per_registrar_per_day")


def client_auth_retry_after(client_id: str, address: str) -> int:
    """Seconds a client id must wait at this address after too many failed authentications."""
    address = counted_address(address)
    return longest_wait(
        (CLIENT_AUTH_FAILURES_PER_CLIENT_AND_ADDRESS, (client_id, address)),
        (CLIENT_AUTH_FAILURES_PER_ADDRESS, (address,)),
    )


def record_client_auth_failure(client_id: str, address: str) -> None:
    # Keyed by client *and* address: someone who knows only a client id cannot lock the client
    # out from its own address.
    address = counted_address(address)
    CLIENT_AUTH_FAILURES_PER_CLIENT_AND_ADDRESS.record(client_id, address)
    CLIENT_AUTH_FAILURES_PER_ADDRESS.record(address)


def record_registration(registrar_client_id: str) -> int:
    """Count a client about to be registered by `registrar_client_id`; seconds to wait, with nothing
    counted, when it has registered as many as it may this hour or day, else 0."""
    # Keyed by the registrar, not by its token or address: it gets a new initial access token
    # whenever it likes, from anywhere, and all of them draw on one count.
    checks = (
        (REGISTRATIONS_PER_REGISTRAR_PER_HOUR, (registrar_client_id,)),
        (REGISTRATIONS_PER_REGISTRAR_PER_DAY, (registrar_client_id,)),
    )
    wait = longest_wait(*checks)
    if wait:  # refused registrations are not counted: retrying does not use up the day's
        return wait
    # Counted before the check is final: of two registrations at once, the one over the limit waits.
    return max([limit.record(*parts) for limit, parts in checks])


# Set on a request by the login it made (user_logged_in); LoginThrottleMixin judges attempts by it.
_LOGGED_IN_BY_THIS_REQUEST = "_logged_in_by_this_request"


@receiver(user_logged_in, dispatch_uid="authserver.throttling.note_login")
def _note_login(sender, request, user, **kwargs) -> None:
    if request is not None:
        setattr(request, _LOGGED_IN_BY_THIS_REQUEST, True)


def logged_in_by(request) -> bool:
    """Whether this request logged someone in itself (not a session signed in already)."""
    return getattr(request, _LOGGED_IN_BY_THIS_REQUEST, False)


class LoginThrottleMixin:
    """For LoginView subclasses (admin console and portal): too many failed logins for a username
    from an address, or from an address overall, answer 429 without checking the password.

    An attempt succeeds only when it logs someone in itself (Django's user_logged_in for this
    request), never because its session was signed in already: anyone can sign up to the portal,
    and from their session failed guesses at an operator's password must count as failures."""

    def post(self, request, *args, **kwargs):
        limits = login_failure_limits(request, request.POST.get("username", ""))
        if wait := longest_wait(*limits):
            return too_many_attempts(request, wait)
        response = super().post(request, *args, **kwargs)
        if logged_in_by(request):
            per_user, parts = limits[0]
            per_user.reset(*parts)
        else:
            record_failure(limits)
        return response


def login_failure_limits(request, username: str) -> tuple[tuple[Limit, tuple[str, ...]], ...]:
    """The limits a failed login of `username` from this request's address counts against, with
    their keys: at the login pages, and where a signed-in session's wrong current password counts as
    a failed login (the console's and the portal's password change), so that guesses add up. The
    username as the login form reads it (Django's UsernameField: NFKC), in any case: one written in
    fullwidth or other compatibility characters logs in as the same account."""
    username = unicodedata.normalize("NFKC", username).strip().lower()
    address = counted_address(client_address(request.META))
    return (
        (LOGIN_FAILURES_PER_USER_AND_ADDRESS, (username, address)),
        (LOGIN_FAILURES_PER_ADDRESS, (address,)),
    )


def record_failure(limits) -> None:
    for limit, parts in limits:
        limit.record(*parts)


def too_many_attempts(request, retry_after: int):
    """The 429 page for people in a browser (machines get errors.too_many_requests)."""
    context = {"status": 429, "description": f"Too many attempts. Try again in {retry_after} seconds."}
    response = render(request, "error.html", context, status=429)
    response["Retry-After"] = str(retry_after)
    return response
