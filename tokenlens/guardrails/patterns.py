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


def _repeat_ops() -> set[Any]:
    return {c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)}


def _width_varies(items: Any) -> bool:
    low, high = p.SubPattern(p.State(), list(items)).getwidth() if isinstance(items, list) else items.getwidth()
    return bool(low != high)


def _first_chars(items: list[tuple[Any, Any]]) -> set[str] | None:
    """A coarse set of what a branch can start with; None means "anything" (unknown)."""
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


def _walk(items: Any, inside_unbounded: bool) -> None:
    for op, av in items:
        if op in _repeat_ops():
            low, high, body = av
            unbounded = high == _UNBOUNDED or high > 100
            if inside_unbounded and unbounded and body.getwidth()[0] != body.getwidth()[1] or (
                inside_unbounded and unbounded
            ):
                raise UnsafePattern("nested repetition (such as (a+)+) can backtrack catastrophically")
            if unbounded and inside_unbounded is False and _variable_inner_repeat(body):
                raise UnsafePattern("nested repetition (such as (a+)+) can backtrack catastrophically")
            if unbounded:
                _check_branches(body)
            _walk(body, inside_unbounded or unbounded)
        elif op is c.SUBPATTERN:
            _walk(av[-1], inside_unbounded)
        elif op is c.BRANCH:
            for branch in av[1]:
                _walk(branch, inside_unbounded)
        elif op in (c.ASSERT, c.ASSERT_NOT):
            _walk(av[1], inside_unbounded)
        elif op is c.GROUPREF_EXISTS:
            _walk(av[1], inside_unbounded)
            if av[2] is not None:
                _walk(av[2], inside_unbounded)


def _variable_inner_repeat(body: Any) -> bool:
    for op, av in body:
        if op in _repeat_ops():
            low, high, _inner = av
            if low != high:
                return True
        elif op is c.SUBPATTERN and _variable_inner_repeat(av[-1]):
            return True
        elif op is c.BRANCH and any(_variable_inner_repeat(b) for b in av[1]):
            return True
    return False


def _check_branches(body: Any) -> None:
    items = list(body)
    while len(items) == 1 and items[0][0] is c.SUBPATTERN:
        items = list(items[0][1][-1])
    if len(items) == 1 and items[0][0] is c.BRANCH:
        seen: set[str] = set()
        for branch in items[0][1][1]:
            first = _first_chars(list(branch))
            if first is None or first & seen:
                raise UnsafePattern(
                    "a repeated group of alternatives that can start alike (such as (a|ab)*) can backtrack "
                    "catastrophically"
                )
            seen |= first


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
