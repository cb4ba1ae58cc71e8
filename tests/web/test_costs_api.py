"""Cost-intelligence endpoints against a synthetic history loaded through POST /api/import.

Every expected number is computed here from the generated calls with the published prices written in
`published_prices.py` (never with tokenlens' own functions).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from genai_prices import Usage as GpUsage
from genai_prices import calc_price
from prometheus_client.parser import text_string_to_metric_families

from harness.deps import app_deps
from published_prices import PRICES, expected_cost
from tokenlens.alerts import CostWatcher
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.records import CallRecord
from tokenlens.web import create_app

HISTORY_DAYS = 40
SPIKE_BACK = 3  # the spike is 3 days before today


def _today() -> date:
    return datetime.now(UTC).date()


def history(today: date) -> list[dict[str, Any]]:
    """40 days: alpha (gpt-4o-mini) grows linearly, beta (claude-haiku-4-5) is flat except a spike."""
    lines: list[dict[str, Any]] = []
    for back in range(HISTORY_DAYS - 1, -1, -1):
        day = today - timedelta(days=back)
        i = HISTORY_DAYS - 1 - back
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        for k in range(10):
            lines.append(
                {
                    "id": f"a-{day}-{k}",
                    "ts": start + 60 * k + 1,
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "source": "alpha",
                    "tags": {"team": "core"},
                    "input_tokens": 1000 + 2000 * i,
                    "output_tokens": 200,
                    "max_tokens": 4096,
                    "complexity": 1,
                }
            )
        beta_calls = 5 + (50 if back == SPIKE_BACK else 0)
        for k in range(beta_calls):
            lines.append(
                {
                    "id": f"b-{day}-{k}",
                    "ts": start + 3600 * 5 + 30 * k,
                    "provider": "anthropic",
                    "model": "claude-haiku-4-5",
                    "source": "beta",
                    "tags": {"team": "ml", "run": "x"},
                    "input_tokens": 2000,
                    "cache_read_tokens": 500,
                    "output_tokens": 500,
                    "waste_tokens": 50,
                }
            )
    return lines


def cost_parts(line: dict[str, Any]) -> dict[str, float]:
    rates = PRICES[line["model"]]
    read = line.get("cache_read_tokens", 0)
    return {
        "input": (line["input_tokens"] - read) * rates["input"] / 1e6,
        "output": line["output_tokens"] * rates["output"] / 1e6,
        "cache_read": read * rates.get("cache_read", rates["input"]) / 1e6,
        "total": expected_cost(line["model"], line),
    }


def day_of(line: dict[str, Any]) -> date:
    return datetime.fromtimestamp(line["ts"], UTC).date()


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[AppDeps]:
    settings = {"timezone": "UTC", "budgets": {"monthly_usd": 1.0}, "alerts": {"daily_cost_threshold": 0.05}}
    with app_deps(tmp_path, parse_settings(settings)) as made:
        yield made


@pytest.fixture
def app(deps: AppDeps) -> Flask:
    return create_app(deps, {"TESTING": True})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def loaded(client: FlaskClient) -> tuple[date, list[dict[str, Any]]]:
    today = _today()
    lines = history(today)
    body = "\n".join(json.dumps(line) for line in lines).encode()
    answer = client.post("/api/import", data=body, content_type="application/x-ndjson").get_json()
    assert answer == {"imported": len(lines), "skipped": 0, "errors": []}
    again = client.post("/api/import", data=body, content_type="application/x-ndjson").get_json()
    assert again["imported"] == 0  # a second import changes nothing, rollups included
    return today, lines


def in_last(lines: list[dict[str, Any]], today: date, days: int) -> list[dict[str, Any]]:
    first = today - timedelta(days=days - 1)
    return [line for line in lines if first <= day_of(line) <= today]


def test_kpi_daily_sources_models_tags(
    client: FlaskClient, loaded: tuple[date, list[dict[str, Any]]]
) -> None:
    today, lines = loaded
    window = in_last(lines, today, 30)
    kpi = client.get("/api/usage/kpi").get_json()
    assert kpi["calls"] == len(window)
    assert kpi["total_cost_usd"] == pytest.approx(sum(cost_parts(x)["total"] for x in window), rel=1e-9)
    assert kpi["input_tokens"] == sum(x["input_tokens"] for x in window)
    assert kpi["cache_read_tokens"] == sum(x.get("cache_read_tokens", 0) for x in window)

    daily = client.get("/api/usage/daily?days=30").get_json()["days"]
    assert [d["date"] for d in daily] == [(today - timedelta(days=29 - i)).isoformat() for i in range(30)]
    for entry in daily:
        of_day = [x for x in window if day_of(x).isoformat() == entry["date"]]
        parts = [cost_parts(x) for x in of_day]
        assert entry["calls"] == len(of_day)
        assert entry["cost_usd"] == pytest.approx(sum(p["total"] for p in parts), rel=1e-9)
        assert entry["input_cost_usd"] == pytest.approx(sum(p["input"] for p in parts), rel=1e-9)
        assert entry["output_cost_usd"] == pytest.approx(sum(p["output"] for p in parts), rel=1e-9)
        assert entry["cache_read_cost_usd"] == pytest.approx(sum(p["cache_read"] for p in parts), rel=1e-9)
        assert entry["cache_write_cost_usd"] == 0
        assert entry["output_tokens"] == sum(x["output_tokens"] for x in of_day)

    week = in_last(lines, today, 7)
    items = client.get("/api/usage/sources?days=7").get_json()["items"]
    expected = {
        name: sum(cost_parts(x)["total"] for x in week if x["source"] == name) for name in ("alpha", "beta")
    }
    assert [i["name"] for i in items] == sorted(expected, key=lambda n: -expected[n])
    for item in items:
        assert item["cost_usd"] == pytest.approx(expected[item["name"]], rel=1e-9)
        assert item["calls"] == sum(1 for x in week if x["source"] == item["name"])

    models = {i["name"]: i for i in client.get("/api/usage/models?days=7").get_json()["items"]}
    assert models["claude-haiku-4-5"]["provider"] == "anthropic"
    assert models["gpt-4o-mini"]["input_tokens"] == sum(
        x["input_tokens"] for x in week if x["model"] == "gpt-4o-mini"
    )

    tags = {i["name"]: i for i in client.get("/api/usage/by-tag?key=team&days=7").get_json()["items"]}
    assert set(tags) == {"core", "ml"}
    assert tags["ml"]["calls"] == sum(1 for x in week if x["tags"]["team"] == "ml")
    assert tags["core"]["cost_usd"] == pytest.approx(expected["alpha"], rel=1e-9)
    runs = client.get("/api/usage/by-tag?key=run&days=7").get_json()["items"]
    assert [(r["name"], r["calls"]) for r in runs] == [("x", sum(1 for x in week if x["source"] == "beta"))]
    assert client.get("/api/usage/by-tag").status_code == 400


def test_forecast(client: FlaskClient, loaded: tuple[date, list[dict[str, Any]]]) -> None:
    today, lines = loaded
    spend: dict[date, float] = {}
    for line in lines:
        spend[day_of(line)] = spend.get(day_of(line), 0.0) + cost_parts(line)["total"]
    fit_days = [today - timedelta(days=30 - i) for i in range(30)]
    y = [spend.get(d, 0.0) for d in fit_days]
    w = [i + 1.0 for i in range(30)]
    x = [float(i) for i in range(30)]
    sw = sum(w)
    mx = sum(wi * xi for wi, xi in zip(w, x, strict=True)) / sw
    my = sum(wi * yi for wi, yi in zip(w, y, strict=True)) / sw
    slope = sum(wi * (xi - mx) * (yi - my) for wi, xi, yi in zip(w, x, y, strict=True)) / sum(
        wi * (xi - mx) ** 2 for wi, xi in zip(w, x, strict=True)
    )
    intercept = my - slope * mx
    sigma = math.sqrt(
        sum(wi * (yi - intercept - slope * xi) ** 2 for wi, xi, yi in zip(w, x, y, strict=True)) / sw
    )
    first = today.replace(day=1)
    month_end = (first + timedelta(days=32)).replace(day=1)
    remaining = (month_end - today).days - 1
    mtd = sum(v for d, v in spend.items() if first <= d <= today)
    rest = sum(max(0.0, intercept + slope * (30 + k)) for k in range(1, remaining + 1))
    spread = 2 * sigma * math.sqrt(remaining)

    body = client.get("/api/usage/forecast").get_json()
    assert body["month"] == today.strftime("%Y-%m")
    assert body["days_of_history"] == 30
    assert body["confidence"] == "high"
    assert body["month_to_date_usd"] == pytest.approx(mtd, rel=1e-9)
    assert body["slope_usd_per_day"] == pytest.approx(slope, rel=1e-6)
    assert body["projected_month_usd"] == pytest.approx(mtd + rest, rel=1e-6)
    assert body["high_usd"] == pytest.approx(mtd + rest + spread, rel=1e-6)
    assert body["low_usd"] == pytest.approx(mtd + max(0.0, rest - spread), rel=1e-6)
    assert body["trend"] == "increasing"  # alpha's input grows 2000 tokens a day
    assert body["budget_monthly_usd"] == 1.0
    assert body["projected_over_budget"] is (mtd + rest > 1.0)


def expected_anomalies(lines: list[dict[str, Any]], today: date, days: int) -> set[tuple[str, Any, str]]:
    series: dict[Any, dict[date, dict[str, float]]] = {}
    for line in lines:
        for key in (line["source"], None):
            day = series.setdefault(key, {}).setdefault(day_of(line), {"spend": 0, "calls": 0, "tokens": 0})
            day["spend"] += cost_parts(line)["total"]
            day["calls"] += 1
            day["tokens"] += line["input_tokens"] + line["output_tokens"]
    found = set()
    for key, per_day in series.items():
        first = min(per_day)
        for back in range(days):
            d = today - timedelta(days=back)
            prev = [d - timedelta(days=k) for k in range(14, 0, -1) if d - timedelta(days=k) >= first]
            if len(prev) < 7:
                continue
            for metric in ("spend", "calls", "tokens"):
                hist = [per_day.get(p, {}).get(metric, 0.0) for p in prev]
                mean = sum(hist) / len(hist)
                std = math.sqrt(sum((h - mean) ** 2 for h in hist) / len(hist))
                if per_day.get(d, {}).get(metric, 0.0) > mean + 2 * std + 1e-12:
                    found.add((d.isoformat(), key, metric))
    return found


def test_anomalies(client: FlaskClient, loaded: tuple[date, list[dict[str, Any]]]) -> None:
    today, lines = loaded
    body = client.get("/api/usage/anomalies?days=30").get_json()["anomalies"]
    got = {(a["date"], a["source"], a["metric"]) for a in body}
    assert got == expected_anomalies(lines, today, 30)
    spike = (today - timedelta(days=SPIKE_BACK)).isoformat()
    for key in ("beta", None):
        for metric in ("spend", "calls", "tokens"):
            assert (spike, key, metric) in got
    beta_calls = next(a for a in body if a["source"] == "beta" and a["metric"] == "calls")
    assert beta_calls["value"] == 55 and beta_calls["mean"] == 5 and beta_calls["std"] == 0


def test_compare(client: FlaskClient, loaded: tuple[date, list[dict[str, Any]]]) -> None:
    today, lines = loaded
    window = [x for x in in_last(lines, today, 30) if x["model"] == "gpt-4o-mini"]
    haiku = PRICES["claude-haiku-4-5"]
    what_if = (
        sum(x["input_tokens"] * haiku["input"] + x["output_tokens"] * haiku["output"] for x in window) / 1e6
    )
    actual = sum(cost_parts(x)["total"] for x in window)
    body = client.get("/api/usage/compare?from_model=gpt-4o-mini&to_model=claude-haiku-4-5").get_json()
    assert body["calls"] == len(window)
    assert body["to_provider"] == "anthropic"
    assert body["actual_usd"] == pytest.approx(actual, rel=1e-9)
    assert body["what_if_usd"] == pytest.approx(what_if, rel=1e-9)
    assert body["delta_usd"] == pytest.approx(what_if - actual, rel=1e-9)
    unknown = client.get("/api/usage/compare?from_model=gpt-4o-mini&to_model=no-such-model")
    assert unknown.status_code == 400 and unknown.get_json()["field"] == "to_model"


def snapshot_rate(model: str, **usage: int) -> float:
    """USD per token of `model` for one kind of token, from genai-prices' own calculator (10k tokens)."""
    return float(calc_price(GpUsage(**usage), model, provider_id="openai").total_price) / 10_000


def test_recommendations(client: FlaskClient, loaded: tuple[date, list[dict[str, Any]]]) -> None:
    today, lines = loaded
    window = in_last(lines, today, 30)
    alpha = [x for x in window if x["source"] == "alpha"]
    actual = sum(cost_parts(x)["total"] for x in alpha)
    beta_waste = sum(x["waste_tokens"] for x in window if x["source"] == "beta")
    recs = client.get("/api/usage/recommendations").get_json()["recommendations"]
    kinds = [(r["kind"], r["source"]) for r in recs]
    assert kinds == [("right_sizing", "alpha"), ("waste", "beta"), ("output_overallocation", "alpha")]
    right = recs[0]
    # the model the right-sizing view suggests: an openai "gpt" model cheaper on input and output
    sizing = client.get("/api/usage/right-sizing").get_json()["items"]
    (suggested,) = [i["suggested_model"] for i in sizing if i["source"] == "alpha"]
    to_model = right["evidence"]["to_model"]
    assert to_model == suggested and to_model.startswith("gpt-") and to_model != "gpt-4o-mini"
    rate_in = snapshot_rate(to_model, input_tokens=10_000)
    rate_out = snapshot_rate(to_model, output_tokens=10_000)
    mini = PRICES["gpt-4o-mini"]
    assert rate_in < mini["input"] / 1e6 and rate_out < mini["output"] / 1e6
    what_if = sum(x["input_tokens"] * rate_in + x["output_tokens"] * rate_out for x in alpha)
    assert right["saving_usd_month"] == pytest.approx(actual - what_if, rel=1e-9)
    assert right["evidence"]["simple_calls"] == right["evidence"]["rated_calls"] == len(alpha)
    assert right["link"].startswith(f"/api/usage/compare?from_model=gpt-4o-mini&to_model={to_model}")
    assert recs[1]["saving_usd_month"] == pytest.approx(
        beta_waste * PRICES["claude-haiku-4-5"]["input"] / 1e6
    )
    assert recs[2]["evidence"]["utilisation"] == pytest.approx(200 / 4096, abs=1e-4)
    # the same calls and figures as the output-efficiency view
    (view,) = [
        i
        for i in client.get("/api/usage/output-efficiency").get_json()["items"]
        if (i["source"], i["model"]) == ("alpha", recs[2]["model"])
    ]
    assert recs[2]["evidence"]["calls"] == view["calls"] == len(alpha)
    assert recs[2]["evidence"]["suggested_max_tokens"] == view["suggested_max_tokens"]


def test_digest(client: FlaskClient, loaded: tuple[date, list[dict[str, Any]]]) -> None:
    today, lines = loaded
    week = [x for x in lines if today - timedelta(days=7) <= day_of(x) < today]
    body = client.get("/api/usage/digest").get_json()
    assert body["week_start"] == (today - timedelta(days=7)).isoformat()
    assert body["week_end"] == (today - timedelta(days=1)).isoformat()
    assert body["spend_usd"] == pytest.approx(sum(cost_parts(x)["total"] for x in week), rel=1e-9)
    assert body["calls"] == len(week)
    assert {s["name"] for s in body["top_sources"]} == {"alpha", "beta"}
    assert body["waste"]["tokens"] == sum(x.get("waste_tokens", 0) for x in week)
    assert any(a["source"] == "beta" for a in body["anomalies"])
    assert body["recommendations"][0]["kind"] == "right_sizing"
    assert body["forecast"]["month"] == today.strftime("%Y-%m")


def test_watcher_alerts_and_anomalies_once(deps: AppDeps, loaded: tuple[date, list[dict[str, Any]]]) -> None:
    today, lines = loaded
    start = datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()
    burst = [
        {**next(x for x in lines if x["source"] == "beta"), "id": f"burst-{k}", "ts": start + k}
        for k in range(40)
    ]
    client = create_app(deps, {"TESTING": True}).test_client()
    body = "\n".join(json.dumps(line) for line in burst).encode()
    assert (
        client.post("/api/import", data=body, content_type="application/x-ndjson").get_json()["imported"]
        == 40
    )
    lines = lines + burst
    spent_today = sum(cost_parts(x)["total"] for x in lines if day_of(x) == today)
    assert spent_today > 0.05  # the configured threshold
    with deps.bus.subscribe() as sub:
        watcher = CostWatcher(deps.settings, deps.store, deps.bus, deps.home)
        first = watcher.check()
        again = CostWatcher(
            deps.settings, deps.store, deps.bus, deps.home
        ).check()  # a restart reads the state file: nothing repeated
        events = []
        while (message := sub.get(timeout=0)) is not None:
            events.append(message)
    assert [e for e, _ in first if e == "alert"] == ["alert"]
    alert = next(d for e, d in first if e == "alert")
    assert alert["spent_usd"] == pytest.approx(spent_today, rel=1e-9)
    assert alert["date"] == today.isoformat()
    expected = expected_anomalies(lines, today, 2)
    assert (today.isoformat(), "beta", "calls") in expected
    assert {(d["date"], d["source"], d["metric"]) for e, d in first if e == "anomaly"} == expected
    assert [e for e, _ in again if e != "digest"] == []
    assert len(events) == len(first) + len(again)


def test_metrics(client: FlaskClient, deps: AppDeps) -> None:
    records = [
        CallRecord(
            id="m1",
            ts=1.0,
            provider="openai",
            endpoint="/v1/chat/completions",
            source="alpha",
            model="gpt-4o-mini",
            input_tokens=100,
            output_tokens=10,
            cost_usd=0.25,
            priced=True,
            latency_ms=300.0,
        ),
        CallRecord(
            id="m2",
            ts=1.0,
            provider="openai",
            endpoint="/v1/chat/completions",
            source="alpha",
            model="gpt-4o-mini",
            outcome="blocked",
            blocked_by="budget",
        ),
    ]
    deps.metrics.observe(records)  # the record listener the writer thread calls
    text = client.get("/metrics").get_data(as_text=True)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    who = {"provider": "openai", "model": "gpt-4o-mini", "source": "alpha"}
    assert value("tokenlens_calls_total", **who, outcome="ok") == 1
    assert value("tokenlens_calls_total", **who, outcome="blocked") == 1
    assert value("tokenlens_tokens_total", **who, kind="input") == 100
    assert value("tokenlens_cost_usd_total", **who) == 0.25
    assert value("tokenlens_blocks_total", blocked_by="budget", source="alpha") == 1
    assert value("tokenlens_latency_seconds_bucket", provider="openai", model="gpt-4o-mini", le="0.25") == 0
    assert value("tokenlens_latency_seconds_bucket", provider="openai", model="gpt-4o-mini", le="0.5") == 1
    other = create_app(deps, {"TESTING": True})  # a second app in the same process: its own registry
    assert other.test_client().get("/metrics").status_code == 200
