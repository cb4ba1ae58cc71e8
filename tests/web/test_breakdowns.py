"""Every view that splits a total adds up to it (docs/analytics-api.md: "a breakdown always sums to its total"), for a store
holding gateway records (costs with their four parts) and imported ones (a `cost_usd` without parts, an
unpriced model, no tokens, some parts only, no cost at all), on SQLite and on PostgreSQL.

Expected costs come from the published per-token prices (tests/published_prices.py), never from the code.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from harness.deps import app_deps
from harness.pg import store_url
from published_prices import PRICES
from tokenlens.config import parse_settings
from tokenlens.records import CallRecord, iso_utc, new_call_id
from tokenlens.web import create_app

PARTS = ("input_cost_usd", "output_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd")
ALL_PARTS = (*PARTS, "unattributed_cost_usd")
MIDNIGHT = int(time.time() // 86400) * 86400  # today 00:00 UTC (the store's time zone is UTC)


def noon(days_ago: int) -> float:
    return MIDNIGHT - days_ago * 86400 + 12 * 3600


def day_of(days_ago: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(noon(days_ago)))


def per_m(model: str, kind: str, tokens: int) -> float:
    return tokens * PRICES[model][kind] / 1_000_000


def gateway_records() -> list[CallRecord]:
    """Calls as the gateway records them: priced, with four parts summing to the cost."""
    sonnet = {
        "input_cost_usd": per_m("claude-sonnet-4-6", "input", 7_000),
        "cache_read_cost_usd": per_m("claude-sonnet-4-6", "cache_read", 2_000),
        "cache_write_cost_usd": per_m("claude-sonnet-4-6", "cache_write_5m", 1_000),
        "output_cost_usd": per_m("claude-sonnet-4-6", "output", 800),
    }
    mini = {
        "input_cost_usd": per_m("gpt-4o-mini", "input", 3_000),
        "cache_read_cost_usd": 0.0,
        "cache_write_cost_usd": 0.0,
        "output_cost_usd": per_m("gpt-4o-mini", "output", 400),
    }
    out = []
    for days_ago, model, provider, parts, tokens, session in (
        (1, "claude-sonnet-4-6", "anthropic", sonnet, (10_000, 800, 2_000, 1_000), "s-gw"),
        (2, "gpt-4o-mini", "openai", mini, (3_000, 400, 0, 0), "s-gw"),
        (2, "gpt-4o-mini", "openai", mini, (3_000, 400, 0, 0), None),
    ):
        inp, outp, read, write = tokens
        out.append(
            CallRecord(
                id=new_call_id(),
                ts=noon(days_ago),
                provider=provider,
                endpoint="/v1/chat",
                source="gateway-app",
                tags={"team": "core"},
                model=model,
                requested_model=model,
                input_tokens=inp,
                output_tokens=outp,
                cache_read_tokens=read,
                cache_write_tokens=write,
                cost_usd=sum(parts.values()),
                priced=True,
                session_id=session,
                **parts,
            )
        )
    return out


def imported_lines() -> list[dict[str, Any]]:
    base = {"source": "history", "tags": {"team": "data"}, "session_id": "s-imp"}
    return [
        # cost without parts, priced model: parts from the tokens, scaled to 3.14 (alone on day 3)
        {
            **base,
            "ts": iso_utc(noon(3)),
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 1_000_000,
            "cache_read_tokens": 200_000,
            "output_tokens": 500_000,
            "cost_usd": 3.14,
        },
        # the model is not priced: all unattributed
        {
            **base,
            "ts": iso_utc(noon(1)),
            "provider": "openai",
            "model": "in-house-tuned-7",
            "input_tokens": 5_000,
            "output_tokens": 100,
            "cost_usd": 1.0,
        },
        # no tokens: nothing to split by, all unattributed
        {
            **base,
            "ts": iso_utc(noon(1)),
            "provider": "anthropic",
            "model": "claude-sonnet-4-6",
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.5,
        },
        # two parts given: kept, the rest unattributed
        {
            **base,
            "ts": iso_utc(noon(2)),
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
            "input_tokens": 1_000,
            "output_tokens": 1_000,
            "cost_usd": 0.5,
            "input_cost_usd": 0.1,
            "output_cost_usd": 0.2,
        },
        # no cost: priced from the tokens (parts and total)
        {
            **{k: v for k, v in base.items() if k != "session_id"},
            "ts": iso_utc(noon(2)),
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
            "input_tokens": 20_000,
            "output_tokens": 2_000,
        },
        # cost null: an unpriced call, no parts
        {
            **base,
            "ts": iso_utc(noon(2)),
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 10,
            "output_tokens": 10,
            "cost_usd": None,
            "input_cost_usd": 0.4,
        },
    ]


SCALE = 3.14 / (
    per_m("gpt-4o-mini", "input", 800_000)
    + per_m("gpt-4o-mini", "cache_read", 200_000)
    + per_m("gpt-4o-mini", "output", 500_000)
)
HAIKU_PRICED = per_m("claude-haiku-4-5", "input", 20_000) + per_m("claude-haiku-4-5", "output", 2_000)


def expected_total() -> float:
    gateway = sum(r.cost_usd or 0.0 for r in gateway_records())
    return gateway + 3.14 + 1.0 + 0.5 + 0.5 + HAIKU_PRICED


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlaskClient]:
    with store_url(request.param, tmp_path) as url:
        settings = parse_settings(
            {"timezone": "UTC", "storage": {"url": url}} if url else {"timezone": "UTC"}
        )
        with app_deps(tmp_path, settings) as deps:
            deps.store.insert_calls(gateway_records())
            web = create_app(deps, {"TESTING": True}).test_client()
            body = "\n".join(json.dumps(line) for line in imported_lines()) + "\n"
            answer = web.post("/api/import", data=body, content_type="application/x-ndjson").get_json()
            assert answer == {"imported": 6, "skipped": 0, "errors": []}
            yield web


def get(client: FlaskClient, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=2e-9)


def test_every_breakdown_sums_to_its_total(client: FlaskClient) -> None:
    total = expected_total()
    kpi = get(client, "/api/usage/kpi")
    assert close(kpi["total_cost_usd"], total)
    assert kpi["unpriced_calls"] == 1  # the line with cost_usd null

    days = get(client, "/api/usage/daily")["days"]
    for day in days:
        assert close(sum(day[p] for p in ALL_PARTS), day["cost_usd"]), day
        assert all(day[p] >= 0 for p in ALL_PARTS), day
    assert close(sum(d["cost_usd"] for d in days), total)

    for view in ("/api/usage/sources", "/api/usage/models", "/api/usage/by-tag?key=team"):
        items = get(client, view)["items"]
        assert close(sum(i["cost_usd"] for i in items), total), view

    listed = get(client, "/api/usage/sessions?days=30")["sessions"]
    assert {s["id"] for s in listed} == {"s-gw", "s-imp"}
    for run in listed:
        assert close(sum(run[p] for p in ALL_PARTS), run["cost_usd"]), run
        detail = get(client, f"/api/usage/sessions/{run['id']}")
        assert close(sum(detail[p] for p in ALL_PARTS), detail["cost_usd"]), detail
    gateway_session = sum(r.cost_usd or 0.0 for r in gateway_records() if r.session_id)
    assert close(sum(s["cost_usd"] for s in listed), gateway_session + 3.14 + 1.0 + 0.5 + 0.5)


def test_imported_costs_are_split_at_the_models_rates(client: FlaskClient) -> None:
    days = {d["date"]: d for d in get(client, "/api/usage/daily")["days"]}
    day3 = days[day_of(3)]  # only the gpt-4o-mini line with cost_usd 3.14
    assert close(day3["cost_usd"], 3.14)
    assert close(day3["input_cost_usd"], per_m("gpt-4o-mini", "input", 800_000) * SCALE)
    assert close(day3["cache_read_cost_usd"], per_m("gpt-4o-mini", "cache_read", 200_000) * SCALE)
    assert close(day3["output_cost_usd"], per_m("gpt-4o-mini", "output", 500_000) * SCALE)
    assert day3["cache_write_cost_usd"] == 0
    assert day3["unattributed_cost_usd"] == 0

    # day 1: the gateway's sonnet call (fully split), the unpriced model and the tokenless line (unattributed)
    assert close(days[day_of(1)]["unattributed_cost_usd"], 1.0 + 0.5)
    # day 2: haiku with two parts given (0.2 left), the haiku priced on import, the gateway mini calls
    day2 = days[day_of(2)]
    assert close(day2["unattributed_cost_usd"], 0.5 - 0.1 - 0.2)
    assert close(
        day2["output_cost_usd"],
        0.2 + per_m("claude-haiku-4-5", "output", 2_000) + 2 * per_m("gpt-4o-mini", "output", 400),
    )


def test_parts_larger_than_the_cost_are_refused(client: FlaskClient) -> None:
    line = {
        "ts": iso_utc(noon(1)),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        "output_tokens": 10,
        "cost_usd": 0.1,
        "input_cost_usd": 0.08,
        "output_cost_usd": 0.05,
    }
    answer = client.post(
        "/api/import", data=json.dumps(line) + "\n", content_type="application/x-ndjson"
    ).get_json()
    assert answer["imported"] == 0
    assert answer["errors"][0]["field"] == "cost_usd"
