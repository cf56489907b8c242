"""The bodies clients send, parsed by DRF's parsers with a few differences.

FormParser (introspection) takes UTF-8 only, as Django's request.POST does for the token and
revocation endpoints. JSONParser (client registration, the Foo API's orders):

- a name repeated within one object is a parse error (400), as a repeated form parameter is: JSON
  parsers disagree on which value wins (RFC 8259 4), and a check and its use must not read
  different ones;
- nesting deeper than Python's recursion limit (a few kilobytes of `[[[[...`) is a parse error
  too, where DRF lets the RecursionError through as a 500;
- the body is read as UTF-8 whatever charset the Content-Type names (RFC 8259 8.1, and 11: the
  media type has no charset parameter), where DRF decodes it with that charset (a UTF-8 body read
  as latin-1 or UTF-16). A charset that is no text encoding (rot13, bz2: run on the body, a 500 or
  hundreds of megabytes from a few hundred bytes) never gets here: ProtocolErrorMiddleware answers
  415;
- a string holding an unpaired surrogate (`"\\ud800"`, which no UTF-8 can carry) is a parse error
  (I-JSON, RFC 7493 2.1): it reached the answer of an error that quotes the input, whose UTF-8
  encoding then failed (a 500).
"""

import codecs
import json
import re

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils.json import strict_constant

# What Django answers for a form body declared in another charset (request.POST raises BadRequest).
FORM_NOT_UTF8 = (
    "HTTP requests with the 'application/x-www-form-urlencoded' content type must be UTF-8 encoded."
)


class FormParser(parsers.FormParser):
    """DRF's, for a body in UTF-8 only, as Django's request.POST takes it at the token and
    revocation endpoints (RFC 6749 Appendix B: form parameters are UTF-8). A charset Python does
    not know is ignored, as Django ignores it."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        if codecs.lookup(encoding).name != "utf-8":
            raise ParseError(FORM_NOT_UTF8)
        return super().parse(stream, media_type, parser_context)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            text = stream.read().decode("utf-8")
            document = json.loads(
                text,
                object_pairs_hook=_object_without_repeated_names,
                parse_constant=strict_constant if self.strict else None,
            )
            if "\\u" in text:  # only an escape makes an unpaired surrogate (UTF-8 has none)
                _refuse_unpaired_surrogates(document)
            return document
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        except ValueError as exc:  # also UnicodeDecodeError and the repeated name below
            if "integer string conversion" in str(exc):  # not "use sys.set_int_max_str_digits()"
                raise ParseError("JSON parse error - a number of more than 4300 digits.") from None
            raise ParseError(f"JSON parse error - {exc}") from None


def _object_without_repeated_names(pairs: list[tuple[str, object]]) -> dict:
    document = {}
    for name, value in pairs:
        if name in document:
            raise ValueError(f"the name {json.dumps(name)} appears more than once in an object")
        document[name] = value
    return document


_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_unpaired_surrogates(document) -> None:
    """ValueError for a string (a value or a name, at any depth) holding a surrogate code point:
    json.loads joins each escaped pair into one character, so what is left was unpaired."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                raise ValueError("a string holds an unpaired surrogate (RFC 7493 2.1)")
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
