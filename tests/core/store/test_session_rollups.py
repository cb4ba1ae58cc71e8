"""The session rollups (migration 9) equal an exact computation from the calls, on SQLite and PostgreSQL.

Runs are crafted here (sessions with several conversations, conversations without a session, every outcome,
tool calls, calls inserted in several batches and out of batch order) and their figures computed here from
the records: sums, first and last call, end, highest turn, the context's first and last size, and the history
each call re-sends (`min(input, previous input + previous output)` of its conversation, priced at its own
input-side rate). `list_runs` must give the runs with a call in the period, newest first, in pages that cover
each exactly once, reading at most `limit` rows. Migration 9 builds the same rows from calls stored at
version 8.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tokenlens.records import CallRecord
from tokenlens.store import Store
from tokenlens.store.rollups import list_runs, run_parts

NOW = 1_790_000_000.0
DAY = 86400.0


def crafted(seed: int = 3, runs: int = 40) -> list[CallRecord]:
    rng = random.Random(seed)
    calls: list[CallRecord] = []
    for r in range(runs):
        session = f"s-{r:03d}" if r % 3 else None
        conversations = [f"c-{r:03d}-{k}" for k in range(1 if session is None else rng.randint(1, 3))]
        ts = NOW - rng.uniform(0, 20 * DAY)
        source = rng.choice(["claude-code", "codex", "my-script"])
        for turn in range(1, rng.randint(1, 9) + 1):
            model = rng.choice(["claude-sonnet-4-6", "claude-haiku-4-5", None])
            outcome = rng.choice(["ok"] * 7 + ["error", "blocked", "cached"])
            inp = 0 if outcome in ("blocked", "cached") else rng.randint(0, 40_000)
            out = rng.randint(0, 2000) if outcome == "ok" else 0
            read = rng.randint(0, inp)
            write = rng.randint(0, inp - read)
            priced = rng.random() < 0.9 and model is not None
            parts = [(inp - read - write) * 3e-6, read * 3e-7, write * 3.75e-6, out * 1.5e-5]
            tools = rng.sample(["Read", "Bash", "Edit", "Grep"], rng.randint(0, 3))
            calls.append(
                CallRecord(
                    id=f"call-{r:03d}-{turn:02d}",
                    ts=ts,
                    provider="anthropic",
                    endpoint="/v1/messages",
                    source=source if rng.random() < 0.9 else "helper",
                    model=model,
                    outcome=outcome,
                    input_tokens=inp,
                    output_tokens=out,
                    cache_read_tokens=read,
                    cache_write_tokens=write,
                    reasoning_tokens=rng.randint(0, out),
                    cost_usd=sum(parts) if priced else None,
                    input_cost_usd=parts[0] if priced else None,
                    cache_read_cost_usd=parts[1] if priced else None,
                    cache_write_cost_usd=parts[2] if priced else None,
                    output_cost_usd=parts[3] if priced else None,
                    priced=priced,
                    session_id=session,
                    conversation_id=rng.choice([*conversations, None]) if session else conversations[0],
                    turn=turn,
                    latency_ms=rng.choice([None, rng.uniform(10, 90_000)]),
                    details={"tools": {"called": tools}} if tools else {},
                )
            )
            ts += rng.uniform(1, 4 * 3600)
    return calls


def exact(calls: list[CallRecord]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each run's figures, computed from its calls in time order."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    last: dict[tuple[str, str, str], tuple[int, int]] = {}
    for c in sorted(calls, key=lambda c: (c.ts, c.id)):
        if c.session_id is not None:
            key = ("session", c.session_id)
        elif c.conversation_id is not None:
            key = ("conversation", c.conversation_id)
        else:
            continue
        run = out.setdefault(
            key,
            {
                "calls": 0,
                "cost_usd": 0.0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "unpriced_calls": 0,
                "error_calls": 0,
                "blocked_calls": 0,
                "cached_calls": 0,
                "tool_calls": 0,
                "history_tokens": 0,
                "history_cost_usd": 0.0,
                "first_ts": c.ts,
                "last_ts": c.ts,
                "ended": c.ts,
                "turns": 0,
                "inputs": [],
                "models": set(),
                "sources": set(),
                "conversations": set(),
            },
        )
        run["calls"] += 1
        run["cost_usd"] += c.cost_usd or 0.0
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            run[name] += getattr(c, name)
        run["unpriced_calls"] += c.cost_usd is None and (
            c.outcome == "ok" or c.input_tokens + c.output_tokens > 0
        )
        run[f"{c.outcome}_calls"] = run.get(f"{c.outcome}_calls", 0) + 1
        if c.outcome == "ok":
            run["tool_calls"] += len(c.details.get("tools", {}).get("called", []))
        run["last_ts"] = c.ts
        run["ended"] = max(run["ended"], c.ts + (c.latency_ms or 0) / 1000)
        run["turns"] = max(run["turns"], c.turn or 0)
        if c.input_tokens:
            run["inputs"].append(c.input_tokens)
        if c.model:
            run["models"].add(c.model)
        run["sources"].add(c.source)
        if c.conversation_id is not None:
            run["conversations"].add(c.conversation_id)
            conversation = (*key, c.conversation_id)
            previous = last.get(conversation)
            if previous is not None and c.input_tokens:
                tokens = min(c.input_tokens, previous[0] + previous[1])
                side = (c.input_cost_usd or 0) + (c.cache_read_cost_usd or 0) + (c.cache_write_cost_usd or 0)
                run["history_tokens"] += tokens
                run["history_cost_usd"] += side * tokens / c.input_tokens
            if c.input_tokens:
                last[conversation] = (c.input_tokens, c.output_tokens)
    return out


def insert_in_batches(store: Store, calls: list[CallRecord], seed: int = 9) -> None:
    """Insert in time order, in batches of random size; each batch shuffled (the writer's batches are in
    completion order), and one batch repeated (known ids are ignored)."""
    rng = random.Random(seed)
    ordered = sorted(calls, key=lambda c: (c.ts, c.id))
    start = 0
    while start < len(ordered):
        size = rng.randint(1, 60)
        batch = ordered[start : start + size]
        rng.shuffle(batch)
        store.insert_calls(batch, store_bodies=False)
        if start == 0:
            store.insert_calls(batch, store_bodies=False)
        start += size


def check_rows(store: Store, calls: list[CallRecord]) -> None:
    want = exact(calls)
    with store.connection():
        got = {}
        for kind in ("session", "conversation"):
            for row in list_runs(store.db, kind, NOW - 400 * DAY, NOW + 400 * DAY, 10_000):
                got[(kind, row["group_id"])] = row
            parts, conversations = run_parts(store.db, kind, [k[1] for k in got if k[0] == kind])
            for group, items in parts.items():
                got[(kind, group)]["parts"] = items
                got[(kind, group)]["conversation_count"] = conversations.get(group, 0)
    assert set(got) == set(want)
    for key, run in want.items():
        row = got[key]
        for name in (
            "calls",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "unpriced_calls",
            "error_calls",
            "blocked_calls",
            "cached_calls",
            "tool_calls",
            "history_tokens",
            "turns",
        ):
            assert row[name] == run.get(name, 0), (key, name)
        for name in ("cost_usd", "history_cost_usd", "first_ts", "last_ts", "ended"):
            assert row[name] == pytest.approx(run[name], rel=1e-9, abs=1e-12), (key, name)
        assert row["input_calls"] == len(run["inputs"])
        assert (row["first_input"], row["last_input"]) == (
            (run["inputs"][0], run["inputs"][-1]) if run["inputs"] else (None, None)
        )
        assert {p["model"] for p in row["parts"]} - {""} == run["models"]
        assert {p["source"] for p in row["parts"]} == run["sources"]
        assert sum(p["calls"] for p in row["parts"]) == run["calls"]
        assert sum(p["cost_usd"] for p in row["parts"]) == pytest.approx(run["cost_usd"], rel=1e-9, abs=1e-12)
        assert row["conversation_count"] == len(run["conversations"])


def test_the_rollups_equal_the_calls(store: Store) -> None:
    calls = crafted()
    insert_in_batches(store, calls)
    check_rows(store, calls)


def test_the_list_is_the_runs_with_a_call_in_the_period_newest_first_in_pages(store: Store) -> None:
    start, end = NOW - 10 * DAY, NOW + DAY
    calls = crafted(seed=5, runs=60)
    for i, ts in enumerate((start - 2 * DAY, start + 3600, start - 3 * DAY, start - 1)):
        kind = "spanning" if i < 2 else "before"  # a run that goes on into the period; one that ended before
        calls.append(
            CallRecord(
                id=f"x{i}", ts=ts, provider="openai", endpoint="/v1/x", session_id=f"{kind}-run", turn=1
            )
        )
    insert_in_batches(store, calls)
    want = exact(calls)
    for kind in ("session", "conversation"):
        active = {
            group
            for (k, group) in want
            if k == kind
            and any(
                start <= c.ts < end
                for c in calls
                if (
                    c.session_id if kind == "session" else c.conversation_id if c.session_id is None else None
                )
                == group
            )
        }
        spanning = {g for g in active if want[(kind, g)]["first_ts"] < start}
        expected_order = sorted(active, key=lambda g: (want[(kind, g)]["first_ts"], g), reverse=True)
        pages: list[str] = []
        before = None
        with store.connection():
            while True:
                rows = list_runs(store.db, kind, start, end, 4, before)
                assert len(rows) <= 4
                pages += [r["group_id"] for r in rows]
                if len(rows) < 4:
                    break
                before = (rows[-1]["first_ts"], rows[-1]["group_id"])
        assert pages == expected_order
        if kind == "session":
            assert "spanning-run" in spanning and "before-run" not in pages


def test_migration_9_builds_the_rollups_of_calls_stored_before(upgraded_store: Any) -> None:
    calls = crafted(seed=11)
    store = upgraded_store(8, calls)
    check_rows(store, calls)
    later = crafted(seed=12, runs=5)
    for c in later:  # the writer goes on from the migrated rows: same runs, later calls
        c.id, c.ts = c.id + "-late", c.ts + 25 * DAY
        c.session_id = "s-001" if c.session_id else None
        c.conversation_id = "c-001-0" if c.session_id else "c-000-0"
    store.insert_calls(later, store_bodies=False)
    check_rows(store, calls + later)
