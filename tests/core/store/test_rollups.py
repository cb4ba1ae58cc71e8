"""Hourly rollups: maintained by insert_calls (duplicates ignored), exact for half-hour time zones, built by
the migration for calls stored before it."""

from __future__ import annotations

import random
import zoneinfo
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tokenlens.records import CALL_FIELDS, CallRecord
from tokenlens.store import Store, open_store
from tokenlens.store.db import make_database
from tokenlens.store.migrations import MIGRATIONS, apply_migrations
from tokenlens.store.models import record_to_values
from tokenlens.store.queries import Store as StoreClass
from tokenlens.store.rollups import sums, tag_sums

BASE = datetime(2026, 3, 1).timestamp()


def spread(make_call: Any, count: int, seed: int = 7) -> list[CallRecord]:
    rng = random.Random(seed)
    return [
        make_call(
            id=f"r{i}",
            ts=BASE + rng.uniform(0, 6 * 86400),
            source=rng.choice(["a", "b"]),
            model=rng.choice(["m1", "m2", None]),
            cost_usd=rng.choice([None, rng.uniform(0, 0.01)]),
            input_tokens=rng.randint(0, 5000),
            output_tokens=rng.randint(0, 900),
            tags={"team": rng.choice(["x", "y"])},
            outcome=rng.choice(["ok", "ok", "error", "blocked"]),
        )
        for i in range(count)
    ]


def by_day(records: list[CallRecord], tz: Any, days: list[date]) -> list[dict[str, float]]:
    out = []
    for day in days:
        of_day = [r for r in records if datetime.fromtimestamp(r.ts, tz).date() == day]
        out.append(
            {
                "calls": len(of_day),
                "cost_usd": sum(r.cost_usd or 0 for r in of_day),
                "input_tokens": sum(r.input_tokens for r in of_day),
                "blocked_calls": sum(1 for r in of_day if r.outcome == "blocked"),
            }
        )
    return out


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns"])
def test_daily_sums_exact_in_any_zone(store: Store, make_call: Any, zone: str) -> None:
    records = spread(make_call, 600)
    store.insert_calls(records[:400], store_bodies=False)
    store.insert_calls(records[300:] + records[:10], store_bodies=False)  # duplicates are not counted twice
    tz = zoneinfo.ZoneInfo(zone)
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(-1, 7)]
    edges = [datetime.combine(d, datetime.min.time(), tz).timestamp() for d in days]
    edges.append(datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), tz).timestamp())
    with store.connection():
        got = sums(store.db, edges)
        whole = sums(store.db, [edges[0], edges[-1]], ("source",))[0]
        teams = tag_sums(store.db, edges[2], edges[-2], "team")
    for expected, groups in zip(by_day(records, tz, days), got, strict=True):
        row = groups.get((), {})
        assert row.get("calls", 0) == expected["calls"]
        assert row.get("cost_usd", 0) == pytest.approx(expected["cost_usd"], abs=1e-12)
        assert row.get("input_tokens", 0) == expected["input_tokens"]
        assert row.get("blocked_calls", 0) == expected["blocked_calls"]
    assert whole[("a",)]["calls"] == sum(1 for r in records if r.source == "a")
    inner = [r for r in records if edges[2] <= r.ts < edges[-2]]
    assert teams["x"]["calls"] == sum(1 for r in inner if r.tags["team"] == "x")
    assert teams["y"]["cost_usd"] == pytest.approx(
        sum(r.cost_usd or 0 for r in inner if r.tags["team"] == "y"), abs=1e-12
    )


def test_migration_builds_rollups_of_existing_calls(tmp_path: Path, make_call: Any) -> None:
    db, location = make_database(None, tmp_path)
    db.connect()
    apply_migrations(db, MIGRATIONS[:3])
    records = spread(make_call, 300, seed=3)
    old = StoreClass(db, location)
    columns = {c.name for c in db.get_columns("call")}  # a column added later is not there yet
    fields = [f for f in CALL_FIELDS if f in columns]
    rows = [dict(zip(CALL_FIELDS, record_to_values(r), strict=True)) for r in records]
    with db.atomic():
        old._bulk_insert("call", fields, [tuple(row[f] for f in fields) for row in rows])
    db.close()
    store = open_store(None, tmp_path)
    try:
        with store.connection():
            total = sums(store.db, [BASE - 86400, BASE + 8 * 86400], ("model",))[0]
            teams = tag_sums(store.db, BASE - 86400, BASE + 8 * 86400, "team")
        assert total[("",)]["calls"] == sum(1 for r in records if r.model is None)
        assert total[("m1",)]["cost_usd"] == pytest.approx(
            sum(r.cost_usd or 0 for r in records if r.model == "m1"), abs=1e-12
        )
        assert teams["x"]["calls"] + teams["y"]["calls"] == len(records)
    finally:
        store.close()
