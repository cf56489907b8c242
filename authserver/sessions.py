"""How long a browser session signs its user in (README, "Sessions").

A staff account's session (the console: every client's secret, every user) ends after
STAFF_SESSION_IDLE_TIMEOUT without a request and STAFF_SESSION_LIFETIME after the login whatever
(NIST SP 800-63B AAL2, OWASP ASVS 3.3.2 level 2: 30 minutes, 12 hours); a developer's (the portal:
their own sandbox client) after DEVELOPER_SESSION_IDLE_TIMEOUT and DEVELOPER_SESSION_LIFETIME. A
session signed in before its user was made staff or superuser does not carry the new rights: it
ends, and the login that follows starts a new session (a new id, as every login does), under the
stricter limits.

The expiry is the session's own (set_expiry), so Django's session store forgets an idle session by
itself and the cookie's Max-Age says the same; SessionPolicyMiddleware pushes it on as requests come
and ends a session past its lifetime or above its privilege.
"""

import time
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import logout

from authserver import errors

# Kept in the session by the login: when (Unix time) and with what privilege (privilege()).
SIGNED_IN_AT = "_signed_in_at"
SIGNED_IN_AS = "_signed_in_as"
# The idle expiry is pushed on at most once a minute: not a session write on every request.
REFRESH_SECONDS = 60


def privilege(user) -> int:
    """0 a developer, 1 staff (the console), 2 a superuser."""
    return 2 if user.is_superuser else 1 if user.is_staff else 0


def limits(user) -> tuple[int, int]:
    """(idle timeout, lifetime) of `user`'s sessions, in seconds."""
    if privilege(user):
        return settings.STAFF_SESSION_IDLE_TIMEOUT, settings.STAFF_SESSION_LIFETIME
    return settings.DEVELOPER_SESSION_IDLE_TIMEOUT, settings.DEVELOPER_SESSION_LIFETIME


def _expiry(user, signed_in_at: int, now: float) -> int:
    idle, lifetime = limits(user)
    return min(int(now) + idle, signed_in_at + lifetime)


def _set_expiry(session, at: int) -> None:
    session.set_expiry(datetime.fromtimestamp(at, tz=UTC))


def session_started(sender, request, user, **kwargs) -> None:
    """On every login (user_logged_in, connected in apps.py): the clock and privilege it starts with."""
    if request is None or not hasattr(request, "session"):
        return
    now = time.time()
    request.session[SIGNED_IN_AT] = int(now)
    request.session[SIGNED_IN_AS] = privilege(user)
    _set_expiry(request.session, _expiry(user, int(now), now))


class SessionPolicyMiddleware:
    """After AuthenticationMiddleware: a signed-in session past its idle timeout or lifetime, or
    whose user gained staff or superuser rights since the login, is logged out before the view
    (which then asks for a login as for anyone signed out)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # Machine clients send no session cookie: nothing to look up for them. A machine path uses
        # no session and sets no cookie, even for a browser that holds one (README, Deployment).
        if settings.SESSION_COOKIE_NAME in request.COOKIES and not errors.is_machine_path(request.path):
            self.apply(request)
        return self.get_response(request)

    def apply(self, request) -> None:
        user = request.user
        if not user.is_authenticated:
            return
        session = request.session
        now = time.time()
        signed_in_at = session.get(SIGNED_IN_AT)
        expires_at = session.get_expiry_date().timestamp()
        if (
            # One from before this policy, with Django's two weeks.
            not isinstance(signed_in_at, int)
            or now >= expires_at
            or now >= signed_in_at + limits(user)[1]
            or privilege(user) > session.get(SIGNED_IN_AS, 0)
        ):
            logout(request)
            return
        pushed_on = _expiry(user, signed_in_at, now)
        if pushed_on - expires_at >= REFRESH_SECONDS:
            _set_expiry(session, pushed_on)
