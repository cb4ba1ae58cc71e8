"""Custom-rule patterns: compiled once, and refused when prone to catastrophic backtracking.

Python's `re` backtracks, so a pattern is refused when its parse tree has a repeat that can match a variable
length inside another unbounded repeat (`(a+)+`, `(\\w*\\s?)*`), or an unbounded repeat over alternatives that
can start with the same character (`(a|ab)*`, `(\\d|\\w)+`). Both are the shapes of exponential blow-up.
"""

from __future__ import annotations

import re
import re._constants as c
import re._parser as p
from typing import Any

MAX_PATTERN_LENGTH = 1000
_UNBOUNDED = c.MAXREPEAT


class UnsafePattern(ValueError):
    pass


_REPEATS = {c.MAX_REPEAT, c.MIN_REPEAT}
_HINT = "; bound it, or make it atomic with (?>...) or a possessive quantifier such as ++"


def _first_chars(items: list[tuple[Any, Any]]) -> set[str] | None:
    """A coarse set of what a branch can start with; None means unknown (anything)."""
    if not items:
        return None
    op, av = items[0]
    if op is c.LITERAL:
        return {chr(av)}
    if op is c.IN:
        out: set[str] = set()
        for kind, value in av:
            if kind is c.LITERAL:
                out.add(chr(value))
            elif kind is c.RANGE and value[1] - value[0] < 256:
                out.update(chr(x) for x in range(value[0], value[1] + 1))
            else:
                return None
        return out
    if op is c.SUBPATTERN:
        return _first_chars(list(av[-1]))
    return None


def _ambiguous_branches(body: Any) -> bool:
    """Alternatives inside a repeat that can match the same text in several ways: (a|aa)*, (x|x?y)+."""
    for op, av in body:
        if op is c.SUBPATTERN and _ambiguous_branches(av[-1]):
            return True
        if op is c.BRANCH:
            seen: set[str] = set()
            for branch in av[1]:
                first = _first_chars(list(branch))
                if not branch or first is None or first & seen:
                    return True
                seen |= first
    return False


def _walk(items: Any, repeated: bool) -> None:
    for op, av in items:
        if op in _REPEATS:
            _low, high, body = av
            unbounded = high == _UNBOUNDED or high > 100
            if repeated and unbounded:
                raise UnsafePattern(
                    "has an unbounded repetition inside a repeated group, such as (a+)+" + _HINT
                )
            if unbounded and _ambiguous_branches(body):
                raise UnsafePattern("repeats alternatives that can match alike, such as (a|aa)*" + _HINT)
            _walk(body, repeated or high > 1)
        elif op is c.SUBPATTERN:
            _walk(av[-1], repeated)
        elif op is c.BRANCH:
            for branch in av[1]:
                _walk(branch, repeated)
        elif op in (c.ASSERT, c.ASSERT_NOT):
            _walk(av[1], repeated)
        elif op is c.GROUPREF_EXISTS:
            _walk(av[1], repeated)
            if av[2] is not None:
                _walk(av[2], repeated)
        # ATOMIC_GROUP and POSSESSIVE_REPEAT never backtrack into their body: safe as they are


def check_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a custom rule's pattern; ValueError (re.error or UnsafePattern) says what is wrong."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafePattern(f"is longer than {MAX_PATTERN_LENGTH} characters")
    compiled = re.compile(pattern)
    if compiled.search("") is not None:
        raise UnsafePattern("matches the empty string")
    if "(?P=" in pattern or re.search(r"\\[1-9]", pattern):
        raise UnsafePattern("backreferences are not allowed (they make matching exponential)")
    _walk(p.parse(pattern), False)
    return compiled
