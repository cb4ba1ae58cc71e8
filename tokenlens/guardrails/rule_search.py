"""Where a regular expression first matches, found faster than `pattern.search` and always at the same offset.

The injection detector's family rules are alternations whose branches mostly start with `\\b` and a word
(`\\b(?:ignore|disregard...)...`). Python's `re` cannot skip ahead in such a pattern: it tries every branch at
every byte. `RuleSearch` searches those branches together one byte early, `[^\\w](?:...)`, which starts with a
set of bytes that `re` skips to at C speed (a byte that can precede a word), and adds one; the other branches are
searched as written; the earliest start wins. A branch counts as word-led only when every match of it starts with
a word character right after the `\\b` (then "a boundary here" and "a non-word byte just before" are the same
thing); when unsure, it stays with the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_QUANTIFIERS = ("?", "*", "{")


def _scan(pattern: str, i: int, stop_at_bar: bool) -> int:
    """From `i`, the index of the first `|` outside groups and sets (when `stop_at_bar`), or of the `)` that
    closes the group `i` is inside; len(pattern) when there is none."""
    depth, in_set = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_set:
            in_set = ch != "]"
        elif ch == "[":
            in_set = True
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":  # a `]` first in a set is a member
                i += 1
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                return i
            depth -= 1
        elif ch == "|" and depth == 0 and stop_at_bar:
            return i
        i += 1
    return i


def split_alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a pattern (split at each `|` outside any group or set)."""
    parts, start = [], 0
    while True:
        bar = _scan(pattern, start, stop_at_bar=True)
        if bar < len(pattern) and pattern[bar] == ")":
            raise ValueError(f"unbalanced pattern: {pattern!r}")
        parts.append(pattern[start:bar])
        if bar >= len(pattern):
            return parts
        start = bar + 1


def starts_with_word(pattern: str) -> bool:
    """Whether every match of `pattern` starts with a word character: a letter, digit or `_`, `\\w` or `\\d`, or a
    `(?:...)` group whose alternatives all do, none of them optional. False when unsure."""
    if not pattern:
        return False
    first = pattern[0]
    if first.isascii() and (first.isalnum() or first == "_"):
        return pattern[1:2] not in _QUANTIFIERS
    if pattern[:2] in ("\\w", "\\d"):
        return pattern[2:3] not in _QUANTIFIERS
    if pattern.startswith("(?:"):
        close = _scan(pattern, 3, stop_at_bar=False)
        if close >= len(pattern) or pattern[close + 1 : close + 2] in _QUANTIFIERS:
            return False
        return all(starts_with_word(a) for a in split_alternatives(pattern[3:close]))
    return False


def word_led(alternative: str) -> bool:
    """`\\b` followed by something every match of which starts with a word character."""
    return alternative.startswith("\\b") and starts_with_word(alternative[2:])


@dataclass(frozen=True)
class RuleSearch:
    """`start(data)` is `rule.search(data).start()` (None when it does not match), for a bytes rule."""

    at_start: re.Pattern[bytes] | None  # the word-led alternatives, tried at offset 0
    after_non_word: re.Pattern[bytes] | None  # `[^\w](?:...)` of the same: a match starts one byte later
    others: re.Pattern[bytes] | None  # the remaining alternatives, as written

    @classmethod
    def of(cls, rule: re.Pattern[bytes]) -> RuleSearch:
        alternatives = split_alternatives(rule.pattern.decode())
        led = "|".join(a for a in alternatives if word_led(a))
        rest = "|".join(a for a in alternatives if not word_led(a))
        flags = rule.flags
        return cls(
            re.compile(f"(?:{led})".encode(), flags) if led else None,
            re.compile(f"[^\\w](?:{led})".encode(), flags) if led else None,
            re.compile(rest.encode(), flags) if rest else None,
        )

    def start(self, data: bytes) -> int | None:
        best = None
        if self.at_start is not None and self.after_non_word is not None:
            if self.at_start.match(data) is not None:
                return 0
            m = self.after_non_word.search(data)
            if m is not None:
                best = m.start() + 1
        if self.others is not None:
            m = self.others.search(data)
            if m is not None and (best is None or m.start() < best):
                best = m.start()
        return best
