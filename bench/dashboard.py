"""Every API call the dashboard pages make, over a store of 1,000,000 calls (issues 6 and 8, docs/benchmarks.md).

Fills a SQLite store (or `--url postgresql://...`) through `Store.insert_calls` in large batches (the writer's
path, so every rollup is maintained as in production) with calls that carry the per-call analysis the pipeline
stores: `details.heatmap` (sections scaled to the input, turns, a prefix fingerprint), `details.waste`
(findings by type, priced), `complexity`, `max_tokens`, and a mix of outcomes (errors, blocks, dedup hits
with `saved_usd`). Then it requests, through the Flask app, each endpoint that each page of the dashboard
fetches when it loads (see `web/static/js/pages/*.js`), `--runs` times, and prints the p50 per endpoint and
per page (sum and slowest of the page's requests).

`--store DIR` keeps the store in DIR and reuses it on the next run (no refill): to compare two versions of
the code on the same data, fill once, then run each version against DIR (a newer schema migrates it first;
the migration time is printed).

Reproduce: .venv/bin/python bench/dashboard.py [--calls 1000000] [--days 90] [--runs 5] [--store DIR]
[--url URL] [--timezone ZONE] [--explain]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokenlens.config import parse_settings
from tokenlens.records import CallRecord
from tokenlens.runtime import build_runtime
from tokenlens.store import Store, open_store, redact_url
from tokenlens.web import create_app

SOURCES = [f"agent-{i}" for i in range(12)]
MODELS = [  # provider, model, USD per million input and output tokens, cached input
    ("openai", "gpt-4o-mini", 0.15, 0.60, 0.075),
    ("openai", "gpt-4o", 2.5, 10.0, 1.25),
    ("openai", "gpt-4.1", 2.0, 8.0, 0.5),
    ("anthropic", "claude-sonnet-4-6", 3.0, 15.0, 0.3),
    ("anthropic", "claude-haiku-4-5", 1.0, 5.0, 0.1),
    ("google", "gemini-2.5-flash", 0.3, 2.5, 0.075),
    ("google", "gemini-2.5-pro", 1.25, 10.0, 0.31),
    ("openai", "gpt-4.1-mini", 0.4, 1.6, 0.1),
]
WASTE_TYPES = ("whitespace", "filler", "repeated_instruction", "empty_message")
TAGS = [{"team": t, "env": e} for t in ("core", "ml", "infra") for e in ("prod", "dev")]
PAGES: dict[str, list[str]] = {
    "Overview": [
        "/api/usage/kpi?days=30",
        "/api/status",
        "/api/usage/budget-status",
        "/api/usage/forecast",
        "/api/usage/daily?days=30",
        "/api/usage/sources?days=30",
        "/api/usage/models?days=30",
    ],
    "Overview (90 days)": [
        "/api/usage/kpi?days=90",
        "/api/usage/daily?days=90",
        "/api/usage/sources?days=90",
        "/api/usage/models?days=90",
    ],
    "Live / calls": [
        "/api/calls?limit=50",
        "/api/calls?limit=50&before={cursor}",
        "/api/calls?limit=50&source=agent-3",
        "/api/calls?limit=50&outcome=blocked",
        "/api/calls?limit=50&source=agent-3&model=gpt-4o",
        "/api/calls?limit=50&source=agent-3&model=claude-opus-4-6",  # a model the source never used
        "/api/usage/sources?days=30",
        "/api/usage/models?days=30",
    ],
    "Call detail": ["/api/calls/{call_id}"],
    "Sources": ["/api/usage/sources?days=30", "/api/usage/by-tag?key=team&days=30"],
    "Models": [
        "/api/usage/models?days=30",
        "/api/usage/compare?from_model=gpt-4o&to_model=gpt-4o-mini&days=30",
    ],
    "Insights": [
        "/api/usage/recommendations",
        "/api/usage/anomalies",
        "/api/usage/right-sizing",
        "/api/usage/conversation-efficiency",
        "/api/usage/output-efficiency",
        "/api/usage/caching-opportunities",
        "/api/usage/waste-summary",
        "/api/usage/token-heatmap",
    ],
    "Latency": ["/api/usage/latency?days=30"],
    "Sessions": [
        "/api/usage/sessions?days=7&kind=session&limit=50",  # the page's request
        "/api/usage/sessions?days=30",
        "/api/usage/sessions?days=90",
    ],
    "Session detail": ["/api/usage/sessions/{session_id}"],
    "Settings": ["/api/settings/budget", "/api/config/quotas", "/api/config/routing"],
}


def _split(total: int, shares: dict[str, float]) -> dict[str, int]:
    """`total` split into system, tools, context, history and query (the rest), as integers."""
    out = {name: int(total * share) for name, share in shares.items()}
    out["query"] = max(0, total - sum(out.values()))
    return out


def make_call(i: int, ts: float, rng: random.Random) -> CallRecord:
    """One call as the pipeline records it, analysis details included."""
    source_index = rng.randrange(len(SOURCES))
    source = SOURCES[source_index]
    provider, model, rate_in, rate_out, rate_read = MODELS[rng.randrange(len(MODELS))]
    turn = 1 + (i // len(SOURCES)) % 8
    input_tokens = rng.randint(300, 6000) + 700 * (turn - 1)
    output_tokens = rng.randint(20, 1200 + 200 * (source_index % 4))
    cache_read = int(input_tokens * 0.6) if source_index % 3 == 0 and rng.random() < 0.5 else 0
    roll = rng.random()
    outcome = "ok" if roll < 0.925 else "error" if roll < 0.95 else "blocked" if roll < 0.975 else "cached"
    if outcome != "ok":
        output_tokens = 0
    if outcome in ("blocked", "cached"):
        input_tokens = cache_read = 0
    input_cost = (input_tokens - cache_read) * rate_in / 1e6
    read_cost = cache_read * rate_read / 1e6
    output_cost = output_tokens * rate_out / 1e6
    history = min(0.8, 0.1 * (turn - 1) * (1 + source_index % 3))
    sections = _split(
        input_tokens or rng.randint(300, 6000),
        {"system": 0.15, "tools": 0.1 if source_index % 2 else 0.0, "context": 0.15, "history": history},
    )
    heatmap: dict[str, Any] = {
        **sections,
        "scaled": outcome in ("ok", "error") and input_tokens > 0,
        "estimated_total": sum(sections.values()),
        "turns": turn,
        "messages": 2 * turn,
    }
    prefix_tokens = sections["system"] + sections["tools"]
    if prefix_tokens:
        variant = f"{source_index:02d}{rng.randrange(3)}" if rng.random() < 0.97 else f"u{i:07d}"
        heatmap["prefix"] = {
            "hash": f"{variant:0>24}",
            "tokens": prefix_tokens,
            "cache_used": cache_read > 0 or source_index % 5 == 0,
        }
    details: dict[str, Any] = {"heatmap": heatmap}
    waste_tokens = None
    if outcome != "cached" and rng.random() < 0.35:
        findings = []
        for waste_type in rng.sample(WASTE_TYPES, rng.randint(1, 3)):
            tokens = rng.randint(2, 120)
            findings.append(
                {
                    "type": waste_type,
                    "where": f"messages[{rng.randrange(2 * turn)}]",
                    "tokens": tokens,
                    "count": rng.randint(1, 4),
                    "cost_usd": tokens * rate_in / 1e6,
                    **({"example": "please kindly"} if waste_type == "filler" else {}),
                }
            )
        waste_tokens = sum(f["tokens"] for f in findings)
        by_type = dict.fromkeys(WASTE_TYPES, 0)
        for f in findings:
            by_type[f["type"]] += f["tokens"]
        details["waste"] = {
            "tokens": waste_tokens,
            "cost_usd": waste_tokens * rate_in / 1e6,
            "input_rate_usd_per_mtok": rate_in,
            "by_type": by_type,
            "findings": findings,
        }
    if outcome == "error" and rng.random() < 0.5:
        details["attempts"] = [{"attempt": 1, "model": model, "provider": provider, "status": 529}]
    max_tokens = (256, 1024, 4096, 8192)[source_index % 4] if rng.random() < 0.6 else None
    return CallRecord(
        id=f"dash-{i:08d}",
        ts=ts,
        provider=provider,
        endpoint="/v1/chat/completions",
        source=source,
        tags=dict(TAGS[source_index % len(TAGS)]),
        requested_model=model,
        model=model,
        stream=rng.random() < 0.5,
        status={"ok": 200, "error": 529, "blocked": 429, "cached": 200}[outcome],
        outcome=outcome,
        blocked_by="budget" if outcome == "blocked" else None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        usage_source="provider" if outcome == "ok" else None,
        cost_usd=input_cost + read_cost + output_cost,
        input_cost_usd=input_cost,
        output_cost_usd=output_cost,
        cache_read_cost_usd=read_cost,
        cache_write_cost_usd=0.0,
        priced=True,
        session_id=f"{source}-s{i // 96}",
        conversation_id=f"{source}-c{i // 96}",
        turn=turn,
        saved_usd=rng.uniform(0.0005, 0.02) if outcome == "cached" else None,
        latency_ms=rng.uniform(200, 4000) if outcome in ("ok", "error") else rng.uniform(1, 4),
        ttft_ms=rng.uniform(100, 900) if outcome == "ok" else None,
        max_tokens=max_tokens,
        details=details,
        waste_tokens=waste_tokens,
        complexity=min(9, max(0, int(rng.gauss(2 + source_index % 6, 1.5)))),
    )


def fill(store: Store, calls: int, days: int, batch: int = 20_000) -> float:
    """`calls` calls spread evenly over the last `days` days, inserted in batches; returns seconds."""
    rng = random.Random(42)
    now = time.time()
    start = now - days * 86400
    step = (now - start) / calls
    begun = time.perf_counter()
    records: list[CallRecord] = []
    for i in range(calls):
        records.append(make_call(i, start + i * step, rng))
        if len(records) >= batch:
            store.insert_calls(records, store_bodies=False)
            records = []
            if (i + 1) % 200_000 == 0:
                print(f"  {i + 1:,} calls in {time.perf_counter() - begun:.0f} s", flush=True)
    store.insert_calls(records, store_bodies=False)
    return time.perf_counter() - begun


def api_client(url: str | None, home: Path, timezone: str = "UTC") -> Any:
    """A Flask test client of the dashboard's API over the store at `url` in `home`, built as the daemon builds
    it (a $50,000 monthly budget, for the gauges)."""
    settings: dict[str, Any] = {"timezone": timezone, "budgets": {"monthly_usd": 50000}}
    if url:
        settings["storage"] = {"url": url}
    runtime = build_runtime(parse_settings(settings), home, prepare=lambda record: record)
    return create_app(runtime.deps, {"TESTING": True}).test_client()


@contextmanager
def home_dir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def explain(store: Store) -> None:
    """SQLite's plan of the calls-table queries of the Live and Call pages."""
    if store.kind != "sqlite":
        return
    queries = {
        "first page": 'SELECT * FROM "call" ORDER BY ts DESC, id DESC LIMIT 51',
        "next page": "SELECT * FROM \"call\" WHERE (ts < 1e12 OR (ts = 1e12 AND id < 'z')) "
        "ORDER BY ts DESC, id DESC LIMIT 51",
        "by source": "SELECT * FROM \"call\" WHERE source = 'agent-3' ORDER BY ts DESC, id DESC LIMIT 51",
        "by outcome": "SELECT * FROM \"call\" WHERE outcome = 'blocked' ORDER BY ts DESC, id DESC LIMIT 51",
        "by source and model": "SELECT * FROM \"call\" WHERE source = 'agent-3' AND model = 'claude-opus-4-6' "
        "ORDER BY ts DESC, id DESC LIMIT 51",
        "one call": "SELECT * FROM \"call\" WHERE id = 'dash-00000001'",
    }
    with store.connection():
        for name, sql in queries.items():
            plan = store.db.execute_sql("EXPLAIN QUERY PLAN " + sql).fetchall()
            print(f"  {name:19} " + "; ".join(str(row[-1]) for row in plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--store", default=None, help="keep the SQLite store in this directory (reused)")
    parser.add_argument("--url", default=None, help="storage URL (default: SQLite)")
    parser.add_argument("--explain", action="store_true", help="print the query plans of the calls table")
    parser.add_argument("--timezone", default="UTC", help="the dashboard's time zone (days are local days)")
    args = parser.parse_args()
    with home_dir(args.store) as home:
        began = time.perf_counter()
        store = open_store(args.url, home)
        opened_s = time.perf_counter() - began
        existing = store.count_calls()
        if existing:
            print(f"reusing {existing:,} calls in {home} (opened and migrated in {opened_s:.1f} s)")
        else:
            fill_s = fill(store, args.calls, args.days)
            print(f"filled {args.calls:,} calls over {args.days} days in {fill_s:.0f} s; store {store.kind}")
        if args.explain:
            explain(store)
        client = api_client(args.url, home, args.timezone)
        first = client.get("/api/calls?limit=50").get_json()
        values = {
            "cursor": first["next"],
            "call_id": first["calls"][7]["id"],
            "session_id": first["calls"][7]["session_id"],
        }
        p50: dict[str, float] = {}
        print(f"{'endpoint':72} {'p50 ms':>9} {'max ms':>9}")
        for page in PAGES.values():
            for template in page:
                path = template.format(**values)
                if path in p50:
                    continue
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    response = client.get(path)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, (path, response.get_data(as_text=True)[:300])
                p50[path] = statistics.median(times)
                print(f"{path:72} {p50[path]:9.1f} {max(times):9.1f}", flush=True)
        print(f"\n{'page':24} {'requests':>8} {'sum p50 ms':>11} {'slowest p50 ms':>15}  slowest")
        for name, page in PAGES.items():
            paths = [t.format(**values) for t in page]
            slowest = max(paths, key=lambda p: p50[p])
            total = sum(p50[p] for p in paths)
            print(f"{name:24} {len(paths):8} {total:11.1f} {p50[slowest]:15.1f}  {slowest}")
        store.close()
    print(
        "reproduce: .venv/bin/python bench/dashboard.py "
        + f"--calls {args.calls} --days {args.days} --runs {args.runs}"
        + (f" --store {args.store}" if args.store else "")
        + (f" --url '{redact_url(args.url)}'" if args.url else "")
        + (f" --timezone {args.timezone}" if args.timezone != "UTC" else "")
    )


if __name__ == "__main__":
    main()
