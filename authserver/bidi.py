"""Names that others chose (a client's name) and the Unicode bidirectional algorithm (UAX #9).

Explicit bidi controls in a name would reorder the page around it wherever it is shown: U+202E
(right-to-left override) reverses the breadcrumbs, messages and counts after it. New names may not
hold them (validate_name); names stored before keep them, and are shown contained (contained,
isolated), so that none of them reaches past the name. Nor may new names hold control characters
(a line break, an escape sequence), which the management commands refuse in any argument too.
"""

import re

from django.core.exceptions import ValidationError
from django.utils.html import format_html
from django.utils.safestring import SafeString

# Embeddings, overrides and their end (U+202A-U+202E), isolates and their end (U+2066-U+2069).
# The marks (U+200E, U+200F, U+061C) reorder nothing beyond the name once it is isolated, and
# right-to-left names need them: they are allowed.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
FIRST_STRONG_ISOLATE = "\u2068"
POP_DIRECTIONAL_ISOLATE = "\u2069"
ISOLATE_INITIATORS = frozenset("\u2066\u2067\u2068")


# C0 controls and DEL, and the C1 controls: a line break or an escape sequence in a name would
# forge a line, or drive the terminal, wherever the name is printed as text.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_bidi_controls(text: str) -> bool:
    return not BIDI_CONTROLS.isdisjoint(text)


def is_refused_name(text: str) -> bool:
    """Whether validate_name would refuse `text`."""
    return has_bidi_controls(text) or _CONTROL_CHARACTER.search(text) is not None


def validate_name(name: str) -> None:
    """The one check of a new name, at every way in (console, create_client, registration)."""
    if _CONTROL_CHARACTER.search(name):
        raise ValidationError(
            "Remove the control characters (a tab, a line break, an escape...): a name is one line of text.",
            code="control_character",
        )
    if has_bidi_controls(name):
        raise ValidationError(
            "Remove the bidirectional control characters (U+202A to U+202E, U+2066 to U+2069): they "
            "would reorder the text shown after the name.",
            code="bidi_control",
        )


def contained(text: str) -> str:
    """`text` as it is, or, when it holds bidi controls, between an isolate and its end (FSI ...
    PDI), where they end: none reorders the text around it, in HTML or in plain text (a page's
    title, a select's option). A PDI in `text` with no initiator before it would end that isolate
    early and let the controls after it out: each gets an initiator of its own first; an isolate
    `text` leaves open gets its end, as the whole does."""
    if not has_bidi_controls(text) or _is_one_isolate(text):
        return text
    open_isolates = stray_ends = 0
    for character in text:
        if character in ISOLATE_INITIATORS:
            open_isolates += 1
        elif character == POP_DIRECTIONAL_ISOLATE:
            if open_isolates:
                open_isolates -= 1
            else:
                stray_ends += 1
    return FIRST_STRONG_ISOLATE * (1 + stray_ends) + text + POP_DIRECTIONAL_ISOLATE * (1 + open_isolates)


def _is_one_isolate(text: str) -> bool:
    """Whether `text` is all inside one isolate, its initiator first and its end last (contained
    already, as an Application's str() is)."""
    depth = 0
    for position, character in enumerate(text):
        if character in ISOLATE_INITIATORS:
            depth += 1
        elif character == POP_DIRECTIONAL_ISOLATE:
            depth -= 1
        if depth <= 0:
            return depth == 0 and position == len(text) - 1 and position > 0
    return False


def isolated(value) -> SafeString:
    """`value` (a client's name, say) for HTML, in <bdi>: a right-to-left name, or one holding bidi
    controls, does not reorder the text around it (a message, the breadcrumbs)."""
    return format_html("<bdi>{}</bdi>", contained(str(value)))
