"""`json_text` (the store's JSON columns) with its encoders built once gives what json.dumps gives."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenlens.records import storable_text
from tokenlens.store.models import json_text


def reference(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if not text.isascii() and storable_text(text) != text:
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    return text


def outcome(f: Any, value: Any) -> str:
    try:
        return f(value)
    except Exception as exc:  # e.g. keys of mixed types cannot be sorted: the same error
        return type(exc).__name__


CASES: list[Any] = [
    {},
    [],
    None,
    {"b": 1, "a": [1.5, float("nan"), float("inf"), -0.0, True, None]},
    {"heatmap": {"query": 16, "scaled": True}, "waste": {"findings": [{"kind": "whitespace"}]}},
    {"k": "caf\u00e9 \u2603 \U0001f600", "lone": "\ud83d", "ctl": '\x00\n"\\'},
    {"\ud800": 1},
    {1: "int key", 2.5: "float key", False: "bool", None: "none"},
    {1: "a", "b": 2},  # mixed key types: TypeError when sorting
    [("tuple", 1)],
    {"n": 10**30},
]


def test_json_text_is_json_dumps() -> None:
    for value in CASES:
        assert outcome(json_text, value) == outcome(reference, value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec=None)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(codec=None), max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(_json)
def test_random_values(value: Any) -> None:
    assert outcome(json_text, value) == outcome(reference, value)
