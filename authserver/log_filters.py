"""A last line of defence: credentials that reach a log line anyway are masked."""

import logging
import re

# Authorization header values, and form/JSON/log fields that carry credentials.
CREDENTIAL_PATTERNS = [
    re.compile(r"(?i)\b(Basic|Bearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)([\"']?(?:client_secret|access_token|refresh_token|registration_access_token|token|password)"
        r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]{4,}"
    ),
]


def redact(text: str) -> str:
    text = CREDENTIAL_PATTERNS[0].sub(r"\1 [redacted]", text)
    return CREDENTIAL_PATTERNS[1].sub(r"\1[redacted]", text)


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
