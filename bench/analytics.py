"""Analytics endpoints over a store of 1,000,000 calls spread over 90 days (SPEC 12; target p50 < 200 ms).

Fills a fresh SQLite store (or `--url postgresql://...`) through `Store.insert_calls` in large batches (the
same path as the writer, so the hourly rollups are maintained as in production), then times `/api/usage/kpi`,
`/daily`, `/sources`, `/forecast` (and the other cost views) through the Flask app, each `--runs` times.

Reproduce: .venv/bin/python bench/analytics.py [--calls 1000000] [--days 90] [--runs 20] [--url URL]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from tokenlens.app import AppDeps, SettingsHolder
from tokenlens.bus import EventBus
from tokenlens.config import parse_settings
from tokenlens.records import CallRecord
from tokenlens.store import RecordWriter, open_store
from tokenlens.web import create_app

SOURCES = [f"agent-{i}" for i in range(12)]
MODELS = [
    ("openai", "gpt-4o-mini", 0.15, 0.60),
    ("openai", "gpt-4o", 2.5, 10.0),
    ("openai", "gpt-4.1", 2.0, 8.0),
    ("anthropic", "claude-sonnet-4-6", 3.0, 15.0),
    ("anthropic", "claude-haiku-4-5", 1.0, 5.0),
    ("google", "gemini-2.5-flash", 0.3, 2.5),
    ("google", "gemini-2.5-pro", 1.25, 10.0),
    ("openai", "text-embedding-3-small", 0.02, 0.0),
]
ENDPOINTS = [
    "/api/usage/kpi",
    "/api/usage/daily",
    "/api/usage/sources",
    "/api/usage/forecast",
    "/api/usage/models",
    "/api/usage/by-tag?key=team",
    "/api/usage/anomalies",
    "/api/usage/recommendations",
    "/api/usage/kpi?days=90",
    "/api/usage/daily?days=90",
]


def fill(store: object, calls: int, days: int, batch: int = 20_000) -> float:
    rng = random.Random(42)
    now = time.time()
    start = now - days * 86400
    step = (now - start) / calls
    begun = time.perf_counter()
    records: list[CallRecord] = []
    for i in range(calls):
        provider, model, rate_in, rate_out = MODELS[rng.randrange(len(MODELS))]
        input_tokens = rng.randint(200, 8000)
        output_tokens = rng.randint(0, 1500)
        input_cost = input_tokens * rate_in / 1e6
        output_cost = output_tokens * rate_out / 1e6
        records.append(
            CallRecord(
                id=f"bench-{i:08d}",
                ts=start + i * step,
                provider=provider,
                endpoint="/v1/chat/completions",
                source=SOURCES[rng.randrange(len(SOURCES))],
                tags={"team": ("core", "ml", "infra")[i % 3]},
                model=model,
                outcome="ok" if i % 50 else "error",
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=input_cost + output_cost,
                input_cost_usd=input_cost,
                output_cost_usd=output_cost,
                cache_read_cost_usd=0.0,
                cache_write_cost_usd=0.0,
                priced=True,
                latency_ms=rng.uniform(200, 4000),
                max_tokens=4096 if i % 4 == 0 else None,
                complexity=rng.randint(0, 9),
                waste_tokens=rng.randint(0, 40),
            )
        )
        if len(records) >= batch:
            store.insert_calls(records, store_bodies=False)  # type: ignore[attr-defined]
            records = []
    store.insert_calls(records, store_bodies=False)  # type: ignore[attr-defined]
    return time.perf_counter() - begun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--url", default=None, help="storage URL (default: SQLite in a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        store = open_store(args.url, home)
        fill_s = fill(store, args.calls, args.days)
        with store.connection():
            rollup_rows = store.db.execute_sql('SELECT COUNT(*) FROM "usage_hourly"').fetchone()[0]
        print(
            f"filled {args.calls:,} calls over {args.days} days in {fill_s:.1f} s "
            f"({args.calls / fill_s:,.0f} calls/s); {rollup_rows:,} hourly rollup rows; store {store.kind}"
        )
        writer: RecordWriter[CallRecord] = RecordWriter(store, lambda r: r)
        deps = AppDeps(
            settings=SettingsHolder(parse_settings({"timezone": "UTC", "budgets": {"monthly_usd": 50000}})),
            store=store,
            writer=writer,
            bus=EventBus(),
            home=home,
            config_path=home / "config.yaml",
        )
        client = create_app(deps, {"TESTING": True}).test_client()
        print(f"{'endpoint':34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for path in ENDPOINTS:
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, (path, response.get_data(as_text=True))
            times.sort()
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"{path:34} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}")
        writer.stop()
        store.close()
    print("reproduce: .venv/bin/python bench/analytics.py " + f"--calls {args.calls} --days {args.days}")


if __name__ == "__main__":
    main()
