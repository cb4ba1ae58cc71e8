"""Custom rules run time-bounded: a catastrophic pattern cannot stall a scan."""

from __future__ import annotations

import time

import pytest

from tokenlens.config import parse_settings
from tokenlens.guardrails.engine import RULE_TIMEOUT_S, RuleTimeout, scan_body
from tokenlens.guardrails.patterns import UnsafePattern, check_pattern


def guards(pattern: str) -> object:
    rules = [{"name": "evil", "pattern": pattern, "action": "block"}]
    return parse_settings({"guardrails": {"custom_rules": rules}}).guardrails


def test_a_catastrophic_pattern_in_the_file_times_out_quickly() -> None:
    with pytest.raises(UnsafePattern):
        check_pattern("(a|aa)+$")  # refused at PUT time; here it came in through the file
    body = {"messages": [{"role": "user", "content": "a" * 60 + "!"}]}
    started = time.perf_counter()
    with pytest.raises(RuleTimeout) as error:
        scan_body(guards("(a|aa)+$"), "openai", body, "request")  # type: ignore[arg-type]
    assert time.perf_counter() - started < RULE_TIMEOUT_S + 1.0
    assert error.value.rule == "custom.evil"


def test_the_same_rule_still_matches_where_it_finishes() -> None:
    body = {"messages": [{"role": "user", "content": "aaaa"}]}
    verdict = scan_body(guards("(a|aa)+$"), "openai", body, "request")  # type: ignore[arg-type]
    assert [f.rule for f in verdict.findings] == ["custom.evil"] and verdict.blocking
