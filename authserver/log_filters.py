"""A last line of defence: credentials that reach a log line anyway are masked."""

import logging
import re

# Authorization header values, and form/JSON/log fields that carry credentials.
CREDENTIAL_PATTERNS = [
    re.compile(r"(?i)\b(Basic|Bearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        # Not a URL's last segment (`.../oauth2/token: HTTPSConnectionPool(...)`, a warning naming
        # the endpoint).
        r"(?i)(?<!/)([\"']?(?:client_secret|access_token|refresh_token|registration_access_token|token|password)"
        r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]{4,}"
    ),
]
# A password reset link's path (sdkportal/urls.py, Django's PasswordResetConfirmView) holds its
# token; the "set-password" form it redirects to holds none.
RESET_LINK_PREFIX = "/accounts/password/reset/"
RESET_LINK = re.compile(r"(/accounts/password/reset/[^/\s]+/)(?!set-password(?:[/\s]|$))[^/\s]+")


def redact_reset_link(text: str) -> str:
    return RESET_LINK.sub(r"\1[redacted]", text) if RESET_LINK_PREFIX in text else text


def redact(text: str) -> str:
    text = CREDENTIAL_PATTERNS[0].sub(r"\1 [redacted]", text)
    return redact_reset_link(CREDENTIAL_PATTERNS[1].sub(r"\1[redacted]", text))


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class ClientErrorsWithoutTracebacks(logging.Filter):
    """A request the client got wrong (its answer a 4xx: a Host header not in ALLOWED_HOSTS, a form
    body in another charset) is one line at WARNING: Django logs DisallowedHost and its other
    SuspiciousOperations at ERROR, and a BadRequest at WARNING, each with a traceback that points
    at nothing an operator could fix."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        from_django = record.name == "django.request" or record.name.startswith("django.security.")
        if from_django and isinstance(status, int) and 400 <= status < 500:
            record.exc_info = record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


class SilentClientsWithoutTracebacks(logging.Filter):
    """gunicorn logs a socket error while it reads a request or writes its answer with a traceback
    ("Socket error processing request."); one whose client went silent past the worker's client
    timeout (config/workers.py) is the client's failure, logged as one line at WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TimeoutError):
            record.msg, record.args = "Client silent too long; connection closed.", None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True
