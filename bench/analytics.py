"""Analytics endpoints over a store of 1,000,000 calls spread over 90 days (docs/benchmarks.md; target p50 < 200 ms).

Fills a fresh SQLite store (or `--url postgresql://...`) with `bench/dashboard.py`'s calls through
`Store.insert_calls` in large batches (the writer's path, so every rollup is maintained as in production),
then times `/api/usage/kpi`, `/daily`, `/sources`, `/forecast` (and the other cost views) through the Flask
app, each `--runs` times.

Reproduce: .venv/bin/python bench/analytics.py [--calls 1000000] [--days 90] [--runs 20] [--url URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dashboard import api_client, fill

from tokenlens.store import open_store

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
        client = api_client(args.url, home)
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
        store.close()
    print("reproduce: .venv/bin/python bench/analytics.py " + f"--calls {args.calls} --days {args.days}")


if __name__ == "__main__":
    main()
