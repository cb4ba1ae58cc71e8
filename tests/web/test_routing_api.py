"""`GET /api/usage/latency` (docs/analytics-api.md): figures per provider and model from the store, and the live averages."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient

from tokenlens.app import AppDeps
from tokenlens.records import CallRecord, new_call_id

ITEM_KEYS = {
    "provider",
    "model",
    "calls",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "error_rate",
    "fallbacks",
}


@pytest.fixture
def kolkata(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("timezone: Asia/Kolkata\n")


def call(ts: float, **fields: object) -> CallRecord:
    return CallRecord(id=new_call_id(), ts=ts, provider="openai", endpoint="/v1/chat/completions", **fields)  # type: ignore[arg-type]


def test_latency_figures_over_calendar_days_in_the_configured_zone(
    kolkata: None, web_deps: AppDeps, web_client: FlaskClient
) -> None:
    tz = ZoneInfo("Asia/Kolkata")
    midnight = datetime.combine(datetime.now(tz).date(), datetime.min.time(), tz)
    today = min(time.time() - 1, midnight.timestamp() + 60)
    yesterday_late = (midnight - timedelta(minutes=10)).timestamp()  # in the UTC hour that midnight cuts
    calls = [
        call(today, model="gpt-4o", latency_ms=100.0, stream=True, ttft_ms=40.0),
        call(today, model="gpt-4o", latency_ms=300.0, outcome="error", status=529, fallback_from="gpt-4.1"),
        call(today, model="gpt-4o", latency_ms=2.0, outcome="blocked"),
        call(today, model="gpt-4o", latency_ms=1.0, outcome="cached"),
        call(yesterday_late, model="gpt-4o", latency_ms=900.0),
        call(yesterday_late, model=None, latency_ms=50.0),
    ]
    web_deps.store.insert_calls(calls)
    web_deps.latency(calls)  # the record listener the writer thread calls

    body = web_client.get("/api/usage/latency?days=1").get_json()
    assert set(body) == {"days", "items", "live"} and body["days"] == 1
    (item,) = body["items"]
    assert set(item) == ITEM_KEYS
    assert (item["provider"], item["model"], item["calls"]) == ("openai", "gpt-4o", 2)
    assert item["error_rate"] == 0.5 and item["fallbacks"] == 1
    bound = 2 ** (1 / 32) - 1  # 16 bins per doubling, each read as its geometric middle
    assert item["p50_ms"] == pytest.approx(200.0, rel=bound) and item["p99_ms"] == pytest.approx(
        298.0, rel=bound
    )
    assert item["ttft_p50_ms"] == pytest.approx(40.0, rel=bound)
    assert [i["model"] for i in body["live"]] == ["gpt-4o"]

    items = web_client.get("/api/usage/latency?days=2").get_json()["items"]
    assert [(i["model"], i["calls"]) for i in items] == [(None, 1), ("gpt-4o", 3)]
    assert items[0]["ttft_p50_ms"] is None and items[0]["fallbacks"] == 0
    assert web_client.get("/api/usage/latency?days=0").status_code == 400
