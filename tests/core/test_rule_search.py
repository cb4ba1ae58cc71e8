"""RuleSearch finds every family rule's first match at the offset `re` finds it, on the corpus and odd text."""

from __future__ import annotations

import functools
import json
import random
import re
from pathlib import Path

import pytest

from tokenlens.guardrails import injection_model as im
from tokenlens.guardrails.injection import FAMILY_RULES
from tokenlens.guardrails.rule_search import RuleSearch, split_alternatives, starts_with_word, word_led

CORPUS = Path(__file__).resolve().parents[1] / "data" / "guardrails" / "injection_corpus.jsonl"


def test_alternatives_are_split_only_at_the_top_level() -> None:
    assert split_alternatives("a|b") == ["a", "b"]
    assert split_alternatives("(?:a|b)c|d") == ["(?:a|b)c", "d"]
    assert split_alternatives(r"[|]x|\|y|[]|]z|[^]|]w") == ["[|]x", r"\|y", "[]|]z", "[^]|]w"]
    assert split_alternatives("") == [""]
    with pytest.raises(ValueError):
        split_alternatives("a)|b")


def test_only_branches_that_surely_start_with_a_word_are_word_led() -> None:
    assert starts_with_word("ignore") and starts_with_word(r"\w+") and starts_with_word("(?:a|b(?:c|d))x")
    assert (
        not starts_with_word("a?b") and not starts_with_word("(?:a|b)?c") and not starts_with_word("(?:a|-)")
    )
    assert not starts_with_word(r"\s+a") and not starts_with_word("") and not starts_with_word("[ab]")
    assert word_led(r"\b(?:ignore|forget)\s+all") and not word_led("ignore") and not word_led(r"\b'quoted")


@functools.cache
def _prepared_corpus() -> list[bytes]:
    texts = [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line]
    rnd = random.Random(19)
    odd = []
    for text in rnd.sample(texts, 800):  # the same words glued to punctuation, quotes and word characters
        odd.append(text.replace(" ", rnd.choice(["_", "", "\n", "-", "'", '"', "  "])))
        odd.append(rnd.choice(["_", "x", "(", "9", '"', "\n"]) + text)
    return [im.prepare(text) for text in texts + odd]


@pytest.mark.parametrize("name", sorted(FAMILY_RULES))
def test_each_rule_starts_where_re_finds_it(name: str) -> None:
    rule, search = FAMILY_RULES[name], RuleSearch.of(FAMILY_RULES[name])
    found = 0
    for data in _prepared_corpus():
        for piece in (data, data[1:], data[len(data) // 2 :]):
            m = rule.search(piece)
            assert search.start(piece) == (None if m is None else m.start()), piece[:120]
            found += m is not None
    assert found > 20  # the rule matches in the corpus: its offsets are compared, not only its misses


def test_a_rule_of_mixed_branches_takes_the_earliest() -> None:
    rule = re.compile(rb"\b(?:foo|bar)\d|<x>|\bq\w*|^z", re.MULTILINE)
    search = RuleSearch.of(rule)
    for data in (b"foo1", b"a <x> foo2", b"_foo1 qq", b"afoo1", b"\nz foo3", b"zz", b"<x>", b"", b"quiet"):
        m = rule.search(data)
        assert search.start(data) == (None if m is None else m.start())
