"""Call data made safe to print on a terminal.

Sources, models, tags and error texts come from requests, so any page or client can choose them. Printed as
they are, escape sequences in them would drive the user's terminal (set its title, clear the screen, move the
cursor, hide text) and bidi overrides would reorder what is shown. `printable` replaces every control, format
and line-separator character with a visible escape (`\\x1b`, `\\u202e`) and bounds the length; the Rich views
also wrap the result in `Text`, so Rich markup such as `[/]` or `[link=...]` is shown, never interpreted.
"""

from __future__ import annotations

import unicodedata

MAX_SHOWN = 120  # characters of one value shown in a terminal line or cell
UNSAFE_CATEGORIES = frozenset(
    {"Cc", "Cf", "Cs", "Zl", "Zp"}
)  # controls, format (bidi), surrogates, separators


def _visible(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object, limit: int | None = MAX_SHOWN) -> str:
    """`value` as text with no character a terminal would act on, cut to `limit` characters (then "…")."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = "".join(
            _visible(char) if unicodedata.category(char) in UNSAFE_CATEGORIES else char for char in text
        )
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
