"""`POST /api/import` refuses implausible lines one by one (docs/analytics-api.md: token counts and costs finite,
non-negative and plausible): each bad line is reported with its line number and field, the good lines are
imported and counted, and nothing answers 500 (issue 17, finding 5)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from harness.deps import app_deps
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.records import iso_utc
from tokenlens.web import create_app

GOOD_COST = 0.01  # each good line states its cost
MONTHLY_CAP = 100.0


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[AppDeps]:
    settings = parse_settings({"timezone": "UTC", "budgets": {"monthly_usd": MONTHLY_CAP}})
    with app_deps(tmp_path, settings) as made:
        yield made


@pytest.fixture
def client(deps: AppDeps) -> FlaskClient:
    return create_app(deps, {"TESTING": True}).test_client()


def line(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "ts": iso_utc(time.time()),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "source": "importer",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": GOOD_COST,
    }
    values.update(fields)
    return values


def post(client: FlaskClient, text: str) -> dict[str, Any]:
    response = client.post("/api/import", data=text, content_type="application/x-ndjson")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    body: dict[str, Any] = response.get_json()
    return body


def month_spent(client: FlaskClient) -> float:
    caps = client.get("/api/usage/budget-status").get_json()["caps"]
    (month,) = [c for c in caps if c["scope"] == "global" and c["period"] == "month"]
    return float(month["spent_usd"])


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"cost_usd": 1e308}, "cost_usd"),
    ({"cost_usd": -1000}, "cost_usd"),
    ({"cost_usd": -1e308}, "cost_usd"),
    ({"input_cost_usd": 1e300}, "input_cost_usd"),
    ({"saved_usd": -0.5}, "saved_usd"),
    ({"input_tokens": 1e30}, "input_tokens"),
    ({"input_tokens": 10**30}, "input_tokens"),
    ({"output_tokens": -1}, "output_tokens"),
    ({"cache_read_tokens": 2 * 10**9}, "cache_read_tokens"),
    ({"max_tokens": 10**29}, "max_tokens"),
    ({"latency_ms": -5.0}, "latency_ms"),
    ({"status": 10**12}, "status"),
    ({"complexity": 42}, "complexity"),
    ({"ts": 1e20}, "ts"),
    ({"ts": "9999-12-31T00:00:00Z"}, "ts"),
    ({"source": "s" * 10_000}, "source"),
    ({"model": "gpt\u0000-4o"}, "model"),
    ({"provider": "open\ud800ai"}, "provider"),
    ({"tags": {f"k{i}": "v" for i in range(1000)}}, "tags"),
]


@pytest.mark.parametrize(("fields", "field"), HOSTILE, ids=[f"{f}-{i}" for i, (_, f) in enumerate(HOSTILE)])
def test_a_bad_line_is_reported_and_the_good_ones_are_imported(
    client: FlaskClient, fields: dict[str, Any], field: str
) -> None:
    text = "\n".join(json.dumps(x) for x in (line(), line(**fields), line())) + "\n"
    result = post(client, text)
    assert result["imported"] == 2 and result["skipped"] == 0
    assert [(e["line"], e["field"]) for e in result["errors"]] == [(2, field)]
    assert result["errors"][0]["error"].startswith(field)
    # The budget counts the two good lines only; nothing else reached the ledger or the store.
    assert month_spent(client) == pytest.approx(2 * GOOD_COST)
    listed = client.get("/api/calls")
    assert listed.status_code == 200 and len(listed.get_json()["calls"]) == 2
    assert client.get("/api/usage/kpi").get_json()["total_cost_usd"] == pytest.approx(2 * GOOD_COST)


@pytest.mark.parametrize("levels", [40, 2_000, 100_000])
@pytest.mark.parametrize("field", ["details", "tags", "guardrail_flags", "extra"])
def test_deep_nesting_is_an_error_of_its_line(client: FlaskClient, field: str, levels: int) -> None:
    bad = json.dumps(line())[:-1] + f', "{field}": {deep(levels)}}}'
    text = "\n".join([json.dumps(line()), bad, json.dumps(line())]) + "\n"
    result = post(client, text)
    assert result["imported"] == 2
    assert [(e["line"], e.get("field")) for e in result["errors"]] == [(2, field)]
    assert "nested" in result["errors"][0]["error"]


def test_details_as_deep_as_the_bound_are_kept(client: FlaskClient) -> None:
    details = json.loads(deep(31))  # 31 objects below `details`, 32 levels with details itself
    result = post(client, json.dumps(line(id="d1", details=details)) + "\n")
    assert result == {"imported": 1, "skipped": 0, "errors": []}
    assert client.get("/api/calls/d1").get_json()["details"] == details


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity"])
def test_numbers_that_are_not_finite_are_refused_wherever_they_are(client: FlaskClient, number: str) -> None:
    with_cost = json.dumps(line())[:-1] + f', "cost_usd": {number}}}'
    in_details = json.dumps(line())[:-1] + f', "details": {{"waste": {{"cost_usd": {number}}}}}}}'
    result = post(client, "\n".join([with_cost, json.dumps(line()), in_details]) + "\n")
    assert result["imported"] == 1
    assert [e["line"] for e in result["errors"]] == [1, 3]
    assert month_spent(client) == pytest.approx(GOOD_COST)


def test_costs_computed_from_plausible_tokens_are_kept(client: FlaskClient) -> None:
    """The bounds leave room for the largest real calls: a billion tokens each way at gpt-4o-mini's price."""
    fields = line(id="big", input_tokens=10**9, output_tokens=10**9)
    del fields["cost_usd"]
    result = post(client, json.dumps(fields) + "\n")
    assert result == {"imported": 1, "skipped": 0, "errors": []}
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens.
    assert client.get("/api/calls/big").get_json()["cost_usd"] == pytest.approx(1000 * 0.15 + 1000 * 0.60)
