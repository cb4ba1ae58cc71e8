"""The demo history (`tokenlens.demo`): deterministic, varied, and importable through the store."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from tokenlens import demo
from tokenlens.pricing import Pricer
from tokenlens.records import parse_iso
from tokenlens.store import open_store
from tokenlens.waste import WASTE_TYPES

NOW = datetime(2026, 3, 18, 15, 30, tzinfo=UTC).timestamp()


def test_same_seed_same_history_and_another_seed_differs() -> None:
    first = demo.generate(days=10, seed=3, now=NOW)
    assert first == demo.generate(days=10, seed=3, now=NOW)
    assert first != demo.generate(days=10, seed=4, now=NOW)


def test_history_covers_what_the_dashboard_shows() -> None:
    records = demo.generate(days=30, seed=7, now=NOW)
    times = [parse_iso(r["ts"]) for r in records]
    assert times == sorted(times)
    assert NOW - 30 * 86400 <= min(times) and max(times) < NOW
    assert len({r["id"] for r in records}) == len(records)
    assert {r["provider"] for r in records} == {"anthropic", "openai", "google"}
    assert len({r["source"] for r in records}) >= 5
    outcomes = Counter(r["outcome"] for r in records)
    assert all(outcomes[o] > 0 for o in ("ok", "error", "blocked", "cached"))
    assert any(r["stream"] for r in records) and any(r["cache_read_tokens"] for r in records)
    assert any(r["fallback_from"] and r["details"].get("attempts") for r in records if "fallback_from" in r)
    assert any(r.get("guardrail_flags") for r in records)
    assert any("request_body" in r for r in records)
    for r in records:
        heat = r["details"]["heatmap"]
        sections = sum(heat[k] for k in ("system", "tools", "context", "history", "query"))
        assert sections == heat["estimated_total"]


def test_the_spike_is_four_times_the_usual_traffic() -> None:
    records = demo.generate(days=30, seed=7, now=NOW)
    per_day = Counter(
        datetime.fromtimestamp(parse_iso(r["ts"]), UTC).date()
        for r in records
        if r["source"] == demo.SPIKE_SOURCE
    )
    spike_day = datetime.fromtimestamp(NOW - demo.SPIKE_DAYS_AGO * 86400, UTC).date()
    others = [count for day, count in per_day.items() if day != spike_day]
    assert per_day.most_common(1)[0][0] == spike_day
    assert per_day[spike_day] > 2.5 * (sum(others) / len(others))


def test_lines_import_priced_with_rollups(tmp_path: Path) -> None:
    records = demo.generate(days=5, seed=1, now=NOW)
    pricer = Pricer({})
    lines = list(demo.lines(records, pricer))
    cached = [json.loads(line) for line in lines if json.loads(line)["outcome"] == "cached"]
    assert cached and all(c["saved_usd"] and c["input_tokens"] == 0 and "_repeats" not in c for c in cached)
    assert not any("_waste" in line for line in lines)
    store = open_store(None, tmp_path)
    try:
        result = store.import_lines(lines, pricer)
        assert (result.imported, result.skipped, result.errors) == (len(records), 0, [])
        calls, _ = store.list_calls(limit=1000)
        ok = [c for c in calls if c.outcome == "ok" and c.model == "gpt-4o-mini" and c.cache_read_tokens == 0]
        assert ok
        call = ok[0]  # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens
        expected = call.input_tokens * 0.15 / 1e6 + call.output_tokens * 0.60 / 1e6
        assert call.cost_usd is not None and abs(call.cost_usd - expected) < 1e-9
        wasteful = [c for c in calls if c.model == "gpt-4o-mini" and "waste" in c.details]
        assert wasteful
        for (
            c
        ) in wasteful:  # the pipeline's shape: every waste type, findings priced at $0.15 per million input
            waste = c.details["waste"]
            assert set(waste["by_type"]) == set(WASTE_TYPES) and waste["tokens"] == c.waste_tokens
            assert all(abs(f["cost_usd"] - f["tokens"] * 0.15 / 1e6) < 1e-12 for f in waste["findings"])
        again = store.import_lines(demo.lines(records, pricer), pricer)
        assert (again.imported, again.skipped) == (0, len(records))
    finally:
        store.close()
