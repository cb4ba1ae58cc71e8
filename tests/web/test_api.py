from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from harness.deps import app_deps
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.records import CALL_FIELDS, CallRecord, iso_utc
from tokenlens.web import create_app

MakeDeps = Callable[..., AppDeps]


@pytest.fixture
def make_deps(tmp_path: Path) -> Iterator[MakeDeps]:
    with contextlib.ExitStack() as stack:
        count = iter(range(1000))

        def make(settings: dict[str, Any] | None = None) -> AppDeps:
            home = tmp_path / f"home{next(count)}"
            return stack.enter_context(app_deps(home, parse_settings(settings or {"timezone": "UTC"})))

        yield make


@pytest.fixture
def deps(make_deps: MakeDeps) -> AppDeps:
    return make_deps()


@pytest.fixture
def app(deps: AppDeps) -> Flask:
    return create_app(deps, {"TESTING": True})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def record(call_id: str, ts: float, **kw: Any) -> CallRecord:
    values: dict[str, Any] = {
        "provider": "openai",
        "endpoint": "/v1/chat/completions",
        "source": "agent",
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_usd": 0.001,
        "priced": True,
        "tags": {"team": "core"},
    }
    values.update(kw)
    return CallRecord(id=call_id, ts=ts, **values)


def test_healthz_and_home(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    page = client.get("/").get_data(as_text=True)
    assert "TokenLens is running" in page
    assert 'href="/api/calls"' in page and 'href="/api/usage/kpi"' in page


def test_status(client: FlaskClient, deps: AppDeps) -> None:
    now = datetime.now(UTC)
    month_start = datetime(now.year, now.month, 1, tzinfo=UTC)
    deps.store.insert_calls(
        [
            record("now", now.timestamp() - 1, cost_usd=0.5),
            record("month", month_start.timestamp() + 1, cost_usd=0.25),
            record("before", month_start.timestamp() - 1, cost_usd=8.0),
            record("unpriced", now.timestamp() - 1, cost_usd=None, priced=False),
        ],
        store_bodies=False,
    )
    body = client.get("/api/status").get_json()
    assert body["version"] == deps.version
    assert body["uptime_s"] >= 0
    assert body["store"] == {"kind": "sqlite", "path": str(deps.home / "tokenlens.db")}
    assert body["today_usd"] == pytest.approx(0.5 + (0.25 if now.day == 1 else 0.0))
    assert body["month_usd"] == pytest.approx(0.75)
    assert body["pending_records"] == 0


def test_pagination_walks_250_calls(client: FlaskClient, deps: AppDeps) -> None:
    base = 1_790_000_000.0
    deps.store.insert_calls([record(f"c{i:03d}", base + i // 3) for i in range(250)], store_bodies=False)
    seen: list[str] = []
    url = "/api/calls?limit=100"
    pages = 0
    while True:
        body = client.get(url).get_json()
        pages += 1
        seen.extend(c["id"] for c in body["calls"])
        if body["next"] is None:
            break
        url = f"/api/calls?limit=100&before={body['next']}"
    assert pages == 3
    assert len(seen) == 250 and set(seen) == {f"c{i:03d}" for i in range(250)}
    assert seen[0] == "c249" and seen[-1] == "c000"
    first = client.get("/api/calls").get_json()
    assert len(first["calls"]) == 100  # default limit
    call = first["calls"][0]
    assert set(call) == set(CALL_FIELDS)
    assert call["ts"] == iso_utc(base + 249 // 3)
    assert call["tags"] == {"team": "core"}


def test_filters(client: FlaskClient, deps: AppDeps) -> None:
    deps.store.insert_calls(
        [
            record("a", 1.0, source="s1", provider="openai", model="m1", outcome="ok"),
            record("b", 2.0, source="s2", provider="anthropic", model="m1", outcome="blocked"),
            record("c", 3.0, source="s1", provider="anthropic", model="m2", outcome="error"),
        ],
        store_bodies=False,
    )

    def ids(query: str) -> list[str]:
        return [c["id"] for c in client.get(f"/api/calls?{query}").get_json()["calls"]]

    assert ids("source=s1") == ["c", "a"]
    assert ids("provider=anthropic&model=m1") == ["b"]
    assert ids("outcome=error") == ["c"]
    assert ids("source=") == ["c", "b", "a"]  # an empty filter is no filter


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5"])
def test_bad_limit(client: FlaskClient, value: str) -> None:
    response = client.get(f"/api/calls?limit={value}")
    assert response.status_code == 400
    assert response.get_json()["field"] == "limit" and "limit" in response.get_json()["error"]


def test_limit_above_max_is_capped(client: FlaskClient, deps: AppDeps) -> None:
    deps.store.insert_calls([record(f"c{i}", float(i)) for i in range(1005)], store_bodies=False)
    body = client.get("/api/calls?limit=5000").get_json()
    assert len(body["calls"]) == 1000 and body["next"] is not None


def test_bad_cursor(client: FlaskClient) -> None:
    response = client.get("/api/calls?before=not-a-cursor")
    assert response.status_code == 400 and response.get_json()["field"] == "before"


def test_get_call_with_bodies_and_404(client: FlaskClient, deps: AppDeps) -> None:
    deps.store.insert_calls(
        [record("x", 5.0, request_body=b'{"messages": []}', response_body=b'{"id": "r"}')], store_bodies=True
    )
    body = client.get("/api/calls/x").get_json()
    assert body["id"] == "x" and body["request_body"] == '{"messages": []}'
    assert body["response_body"] == '{"id": "r"}'
    missing = client.get("/api/calls/nope")
    assert missing.status_code == 404 and "error" in missing.get_json()


def test_unknown_api_path_is_json_404(client: FlaskClient) -> None:
    response = client.get("/api/no-such-endpoint")
    assert response.status_code == 404 and "error" in response.get_json()


def test_kpi(client: FlaskClient, deps: AppDeps) -> None:
    now = time.time()
    long_ago = now - 40 * 86400
    deps.store.insert_calls(
        [
            record("a", now - 5, cost_usd=0.25, input_tokens=1000, output_tokens=100),
            record(
                "b", now - 5, outcome="blocked", cost_usd=None, priced=False, input_tokens=0, output_tokens=0
            ),
            record("old", long_ago, cost_usd=5.0),
        ],
        store_bodies=False,
    )
    body = client.get("/api/usage/kpi").get_json()
    assert body["calls"] == 2 and body["total_cost_usd"] == pytest.approx(0.25)
    assert body["blocked_calls"] == 1 and body["input_tokens"] == 1000 and body["unpriced_calls"] == 0
    for key in (
        "total_saved_usd",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "error_calls",
        "cached_calls",
    ):
        assert key in body
    assert client.get("/api/usage/kpi?days=60").get_json()["calls"] == 3


@pytest.mark.parametrize("value", ["x", "0", "-1", "99999"])
def test_kpi_bad_days(client: FlaskClient, value: str) -> None:
    response = client.get(f"/api/usage/kpi?days={value}")
    assert response.status_code == 400 and response.get_json()["field"] == "days"


def _history(deps: AppDeps) -> list[CallRecord]:
    records = [
        record(
            f"h{i:02d}",
            datetime(2026, 10, 1 + i, 12, tzinfo=UTC).timestamp() + 0.123,
            guardrail_flags=[{"rule": "pii.email", "action": "warn", "where": "request"}] if i % 2 else [],
            session_id=f"s{i % 3}",
            latency_ms=100.5 + i,
            # a breakdown that adds up, as the gateway records it (an import would price missing parts)
            input_cost_usd=0.0008,
            output_cost_usd=0.0002,
            cache_read_cost_usd=0.0,
            cache_write_cost_usd=0.0,
        )
        for i in range(20)
    ]
    deps.store.insert_calls(records, store_bodies=False)
    return records


def test_export_jsonl_and_csv(client: FlaskClient, deps: AppDeps) -> None:
    records = _history(deps)
    response = client.get("/api/export?format=jsonl")
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    lines = response.get_data(as_text=True).splitlines()
    assert [json.loads(line) for line in lines] == [r.to_dict() for r in records]
    since = client.get("/api/export?format=jsonl&since=2026-10-15").get_data(as_text=True).splitlines()
    assert [json.loads(line)["id"] for line in since] == [f"h{i:02d}" for i in range(14, 20)]
    csv_response = client.get("/api/export?format=csv")
    assert csv_response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(csv_response.get_data(as_text=True))))
    assert len(rows) == 20 and rows[1]["id"] == "h01"
    assert json.loads(rows[1]["guardrail_flags"])[0]["rule"] == "pii.email"
    assert client.get("/api/export?format=xml").status_code == 400
    assert client.get("/api/export?since=last-tuesday").get_json()["field"] == "since"


def test_export_import_round_trip(client: FlaskClient, deps: AppDeps, make_deps: MakeDeps) -> None:
    _history(deps)
    exported = client.get("/api/export?format=jsonl").get_data()
    fresh = make_deps()
    fresh_client = create_app(fresh, {"TESTING": True}).test_client()
    with fresh.bus.subscribe() as feed:
        first = fresh_client.post("/api/import", data=exported, content_type="application/x-ndjson")
        assert first.status_code == 200
        assert first.get_json() == {"imported": 20, "skipped": 0, "errors": []}
        assert feed.get(timeout=0.2) is None  # imports are history: nothing on the live feed
    second = fresh_client.post("/api/import", data=exported, content_type="application/x-ndjson")
    assert second.get_json() == {"imported": 0, "skipped": 20, "errors": []}
    original = list(deps.store.iter_calls())
    copied = list(fresh.store.iter_calls())
    assert len(copied) == 20
    for a, b in zip(original, copied, strict=True):
        # ts travels as ISO 8601 with milliseconds
        assert b.ts == pytest.approx(a.ts, abs=0.0005)
        assert dataclasses.replace(b, ts=a.ts) == a


def test_import_errors_and_cost(client: FlaskClient, deps: AppDeps) -> None:
    lines = [
        {"id": "p1", "ts": "2026-11-02T08:00:00Z", "provider": "openai", "model": "gpt-4o-mini",
         "input_tokens": 2_000_000, "output_tokens": 500_000},
        {"id": "p2", "ts": "2026-11-02T08:00:00Z", "provider": "openai", "input_tokens": 1, "output_tokens": 1},
        {"id": "p3", "ts": "2026-11-02T08:00:00Z", "provider": "openai", "model": "gpt-4o-mini",
         "input_tokens": 1, "output_tokens": 1, "unknown": True},
    ]  # fmt: skip
    body = "\n".join(json.dumps(line) for line in lines) + "\n"
    result = client.post("/api/import", data=body, content_type="application/x-ndjson").get_json()
    assert result["imported"] == 2 and result["skipped"] == 0
    assert result["errors"] == [{"line": 2, "field": "model", "error": "missing field 'model'"}]
    priced = client.get("/api/calls/p1").get_json()
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens.
    assert priced["cost_usd"] == pytest.approx(2 * 0.15 + 0.5 * 0.60)
    assert priced["priced"] is True


def test_import_refuses_form_posts(client: FlaskClient) -> None:
    response = client.post("/api/import", data={"file": "x"})
    assert response.status_code == 415


def test_call_detail_says_the_prompt_cache_was_used_only_when_it_was(
    client: FlaskClient, deps: AppDeps
) -> None:
    """Issue 20: a Claude Code call with cache read and write 0 / 0 was said to have used the prompt cache."""
    from published_prices import PRICES
    from tokenlens.money import format_usd

    sonnet = PRICES["claude-sonnet-4-6"]

    def claude(call_id: str, prefix_tokens: int, **kw: Any) -> CallRecord:
        prefix = {"hash": "h", "tokens": prefix_tokens, "cache_used": True}  # the request asked for caching
        return record(
            call_id,
            5.0,
            provider="anthropic",
            endpoint="/v1/messages",
            source="claude-code",
            model="claude-sonnet-4-6",
            input_tokens=30_000,
            details={"heatmap": {"system": prefix_tokens, "tools": 0, "scaled": True, "prefix": prefix}},
            **kw,
        )

    deps.store.insert_calls(
        [
            claude("uncached", 27_616),
            claude("cached", 27_616, cache_read_tokens=27_000, cache_write_tokens=616),
            claude("short", 800),
        ],
        store_bodies=False,
    )
    saving = 27_616 * (sonnet["input"] - sonnet["cache_read"]) / 1e6
    premium = 27_616 * (sonnet["cache_write_5m"] - sonnet["input"]) / 1e6
    uncached = client.get("/api/calls/uncached").get_json()["details"]["heatmap"]["prefix"]["message"]
    assert uncached == (
        "Repeated prefix of 27,616 tokens; not cached (cache read 0, cache write 0): caching it would save about "
        f"{format_usd(saving)} on each later call that resends it (writing it to the cache once costs "
        f"{format_usd(premium)} more)."
    )
    assert format_usd(saving) == "$0.075" and "prompt cache used" not in uncached
    cached = client.get("/api/calls/cached").get_json()["details"]["heatmap"]["prefix"]["message"]
    assert cached == (
        "Repeated prefix of 27,616 tokens; prompt cache used (27,000 tokens read from it, 616 written to it)."
    )
    short = client.get("/api/calls/short").get_json()["details"]["heatmap"]["prefix"]["message"]
    assert short == (
        "Repeated prefix of 800 tokens; not cached (cache read 0, cache write 0): below the 1,024 tokens "
        "providers start caching at."
    )
