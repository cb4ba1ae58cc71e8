"""The store's import path (`tokenlens import` and `POST /api/import`), on SQLite and PostgreSQL: a line the
database could not hold is refused on its own, never the whole file (issue 17, finding 5)."""

from __future__ import annotations

import json
from typing import Any

from tokenlens.pricing import Pricer
from tokenlens.store import Store


def line(call_id: str, **fields: Any) -> str:
    values: dict[str, Any] = {
        "id": call_id,
        "ts": "2026-11-02T08:00:00Z",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        "output_tokens": 5,
    }
    values.update(fields)
    return json.dumps(values)


def test_text_no_database_can_hold_is_refused_by_line(store: Store) -> None:
    lines = [
        line("ok1"),
        line("nul", source="agent\u0000x"),  # PostgreSQL refuses NUL in text
        line("surrogate", model="gpt-4o-mini\ud800"),  # no driver encodes a lone surrogate
        line("ok2"),
    ]
    result = store.import_lines(lines, Pricer())
    assert result.imported == 2
    assert [(e["line"], e["field"]) for e in result.errors] == [(2, "source"), (3, "model")]
    assert sorted(r.id for r in store.iter_calls()) == ["ok1", "ok2"]


def test_odd_details_are_stored_and_summed_within_bounds(store: Store) -> None:
    """`details` keep what they hold (a lone surrogate escaped); the rollups read their counts clamped."""
    waste = {"findings": [{"type": "filler", "tokens": 10**30, "cost_usd": 1e300}]}
    lines = [
        line("w", outcome="ok", waste_tokens=5, details={"waste": waste, "note": "x\ud800y"}),
        line("ok"),
    ]
    result = store.import_lines(lines, Pricer())
    assert (result.imported, result.errors) == (2, [])
    stored = store.get_call("w")
    assert stored is not None and stored.details["waste"] == waste and stored.details["note"] == "x\ud800y"


def test_a_line_over_the_limit_is_refused_on_its_own_without_being_kept(store: Store) -> None:
    import io

    from tokenlens.store import bounded_lines

    long = line("long", source="x" * 500)
    data = "\n".join([line("ok1"), long, line("ok2"), long + "  "]).encode()
    read = list(bounded_lines(io.BytesIO(data), limit=300))
    assert len(read) == 4 and all(len(part) <= 301 for part in read if isinstance(part, bytes))
    result = store.import_lines(read, Pricer())
    assert result.imported == 2
    assert result.errors == [
        {"line": 2, "error": "line longer than 128 MiB"},
        {"line": 4, "error": "line longer than 128 MiB"},
    ]
    assert sorted(r.id for r in store.iter_calls()) == ["ok1", "ok2"]
