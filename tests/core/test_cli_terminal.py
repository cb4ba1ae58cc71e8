"""`printable`: call data shown on a terminal carries no character the terminal would act on."""

from __future__ import annotations

import pytest

from tokenlens.cli.terminal import printable

ESC = "\x1b"
BEL = "\x07"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("[/]", "[/]"),  # markup is not this function's business: the Rich views use Text
        ("café 東京 🚀", "café 東京 🚀"),
        (f"{ESC}]0;pwned{BEL}", "\\x1b]0;pwned\\x07"),
        (f"{ESC}[2J", "\\x1b[2J"),
        ("\x9b31m", "\\x9b31m"),
        ("a\u202eevil", "a\\u202eevil"),
        ("tab\there\nnew\rline", "tab\\x09here\\x0anew\\x0dline"),
        ("zero\u200bwidth\u2066iso\u2069", "zero\\u200bwidth\\u2066iso\\u2069"),
        ("line\u2028sep", "line\\u2028sep"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
        ("del\x7f", "del\\x7f"),
        (42, "42"),
    ],
)
def test_controls_become_visible_escapes(raw: object, shown: str) -> None:
    assert printable(raw) == shown


def test_length_is_bounded() -> None:
    assert printable("x" * 10_000) == "x" * 119 + "…"
    assert printable("y" * 30, limit=10) == "y" * 9 + "…"
    assert printable("z" * 500, limit=None) == "z" * 500
