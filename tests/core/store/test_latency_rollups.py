"""`GET /api/usage/latency` answered from the latency rollups equals an exact computation from the calls.

The exact figures are computed here from the crafted records (docs/analytics-api.md `/latency`: every call but blocked and
cached ones, per provider and model; percentiles interpolated linearly between the two closest ranks), on
SQLite and PostgreSQL, in time zones whose day boundaries fall on whole UTC days, on other whole hours and
inside an hour (:30 and :45 offsets). Counts, error rates and fallbacks must be equal; percentiles within the
documented bound: 16 bins per doubling, each read as its geometric middle, so within 2^(1/32) - 1 of the exact
value (plus the rounding to 0.001 ms). Migration 8 builds the same rollups from calls stored at version 7.
"""

from __future__ import annotations

import math
import random
import time as _time
import zoneinfo
from datetime import datetime, time, timedelta, tzinfo
from typing import Any

import pytest

from harness.clock import today_from
from tokenlens.latency import latency_report
from tokenlens.records import CallRecord
from tokenlens.store import Store

DAYS = 7
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns"]
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-6")]
BOUND = 2 ** (1 / 32) - 1  # half a bin of 2^(1/16), relative
PERCENTILES = {"p50_ms": 50, "p95_ms": 95, "p99_ms": 99}
TTFT_PERCENTILES = {"ttft_p50_ms": 50, "ttft_p95_ms": 95}


def window(days: int, tz: tzinfo) -> tuple[float, float]:
    today = datetime.now(tz).date()
    start = datetime.combine(today - timedelta(days=days - 1), time.min, tz)
    end = datetime.combine(today + timedelta(days=1), time.min, tz)
    return start.timestamp(), end.timestamp()


def duration(rng: random.Random) -> float | None:
    """A duration in ms: mostly log-uniform from 0.5 ms to 20 min, sometimes missing, zero or clustered."""
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.08:
        return 0.0
    if roll < 0.3:
        return rng.choice([250.0, 1000.0, 1024.0])  # repeated values, one on a bin boundary
    return math.exp(rng.uniform(math.log(0.5), math.log(1_200_000)))


def crafted(tz: tzinfo, count: int = 600, seed: int = 17) -> list[CallRecord]:
    """Calls around and inside the window of the last DAYS days in `tz`, every outcome, streamed or not."""
    rng = random.Random(seed)
    start, end = window(DAYS, tz)
    stamps = [rng.uniform(start - 3 * 86400, min(end, _time.time())) for _ in range(count)]
    stamps += [start - 1, start, start + 1, start + 1799, start + 1800, end - 1, end, end + 30]
    calls = []
    for i, ts in enumerate(stamps):
        provider, model = rng.choice(MODELS)
        outcome = rng.choice(["ok"] * 6 + ["error", "error", "blocked", "cached"])
        stream = rng.random() < 0.5
        calls.append(
            CallRecord(
                id=f"l{i:05d}",
                ts=ts,
                provider=provider,
                endpoint="/v1/x",
                source=rng.choice(["alpha", "beta"]),
                model=rng.choice([model] * 8 + [None, ""]),
                stream=stream,
                status=200 if outcome == "ok" else 529,
                outcome=outcome,
                latency_ms=duration(rng),
                ttft_ms=duration(rng) if rng.random() < 0.9 else None,
                fallback_from=rng.choice([None, None, None, "", "gpt-4"]),
            )
        )
    return calls


def exact_percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    below = ordered[int(rank)]
    above = ordered[min(int(rank) + 1, len(ordered) - 1)]
    return below + (above - below) * (rank - int(rank))


def exact(calls: list[CallRecord], tz: tzinfo) -> list[dict[str, Any]]:
    start, end = window(DAYS, tz)
    groups: dict[tuple[str, str], list[CallRecord]] = {}
    for c in calls:
        if start <= c.ts < end and c.outcome not in ("blocked", "cached"):
            groups.setdefault((c.provider, c.model or ""), []).append(c)
    items = []
    for (provider, model), members in sorted(groups.items()):
        latencies = [c.latency_ms for c in members if c.latency_ms is not None]
        ttfts = [c.ttft_ms for c in members if c.stream and c.ttft_ms is not None]
        item: dict[str, Any] = {
            "provider": provider,
            "model": model or None,
            "calls": len(members),
            "error_rate": round(sum(c.outcome == "error" for c in members) / len(members), 4),
            "fallbacks": sum(1 for c in members if c.fallback_from),
        }
        item.update({k: exact_percentile(latencies, q) for k, q in PERCENTILES.items()})
        item.update({k: exact_percentile(ttfts, q) for k, q in TTFT_PERCENTILES.items()})
        items.append(item)
    return items


def assert_figures(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [(i["provider"], i["model"]) for i in got] == [(i["provider"], i["model"]) for i in want]
    for item, expected in zip(got, want, strict=True):
        assert set(item) == set(expected)
        for key in ("calls", "error_rate", "fallbacks"):
            assert item[key] == expected[key], (item, key)
        for key in (*PERCENTILES, *TTFT_PERCENTILES):
            if expected[key] is None:
                assert item[key] is None, (item, key)
            else:
                # the bound, plus the rounding to 0.001 ms (and float noise)
                slack = BOUND * expected[key] * (1 + 1e-9) + 0.0005 + 1e-9
                assert abs(item[key] - expected[key]) <= slack, (item, key, expected[key])


@pytest.mark.parametrize("zone", ZONES)
def test_latency_figures_equal_an_exact_computation(store: Store, zone: str) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    calls = crafted(tz)
    for batch in (calls[:400], calls[350:] + calls[:10]):  # ids already stored are not counted twice
        store.insert_calls(batch, store_bodies=False)
    want = exact(calls, tz)
    assert len(want) == len(MODELS) + 2  # every model, and calls without a model for each of the 2 providers
    assert_figures(latency_report(store, DAYS, tz), want)
    one_day = latency_report(store, 1, tz)
    start, end = window(1, tz)
    assert sum(i["calls"] for i in one_day) == sum(
        1 for c in calls if start <= c.ts < end and c.outcome not in ("blocked", "cached")
    )


def test_a_narrow_distribution_is_within_the_bound(store: Store) -> None:
    """Many calls whose latencies differ by less than a bin: the percentiles still land within 2.2%."""
    rng = random.Random(5)
    now = today_from(3600) + 3600  # the calls go up to an hour back: all today
    calls = [
        CallRecord(
            id=f"n{i}",
            ts=now - rng.uniform(0, 3600),
            provider="openai",
            endpoint="/v1/x",
            model="gpt-4o",
            stream=True,
            latency_ms=rng.gauss(800, 15),
            ttft_ms=rng.choice([120.0, 121.0, 4000.0]),
        )
        for i in range(2000)
    ]
    store.insert_calls(calls, store_bodies=False)
    assert_figures(latency_report(store, 1, zoneinfo.ZoneInfo("UTC")), exact(calls, zoneinfo.ZoneInfo("UTC")))


def test_migration_builds_latency_rollups_of_stored_calls(upgraded_store: Any) -> None:
    tz = zoneinfo.ZoneInfo("Asia/Kolkata")
    calls = crafted(tz, count=500, seed=9)
    store = upgraded_store(7, calls[:450])  # calls written before the latency rollups existed
    assert store.schema_version() >= 8  # migrated past the latency rollups
    store.insert_calls(calls[450:], store_bodies=False)  # and the writer adds to what the migration built
    assert_figures(latency_report(store, DAYS, tz), exact(calls, tz))


def test_empty_store_has_no_items(store: Store) -> None:
    assert latency_report(store, 30, zoneinfo.ZoneInfo("Europe/Paris")) == []
