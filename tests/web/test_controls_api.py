"""Budget status, and the budget/quota settings refused when invalid (docs/analytics-api.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tokenlens.app import AppDeps
from tokenlens.records import CallRecord

CONFIG = """# mine
budgets:
  daily_usd: 2.0  # a comment
  monthly_usd: 30
quotas:
  source_limits:
    - {source: agent, daily_usd: 1.0, daily_calls: 10}
  model_limits:
    - {model: gpt-4o, daily_usd: 0.5}
    - {model: o3, daily_calls: 3}
timezone: UTC
"""


@pytest.fixture(autouse=True)
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def test_budget_status_lists_every_usd_cap_with_spend_reserved_remaining_and_reset(
    web_client: FlaskClient, web_deps: AppDeps
) -> None:
    now = datetime.now(UTC)
    recorded = (  # through the writer, as the gateway records calls: the ledger settles each batch
        [
            CallRecord(
                id="1",
                ts=now.timestamp(),
                provider="openai",
                endpoint="/v1/chat/completions",
                source="agent",
                model="gpt-4o",
                cost_usd=0.25,
                priced=True,
            ),
            CallRecord(
                id="2",
                ts=now.timestamp(),
                provider="openai",
                endpoint="/v1/chat/completions",
                source="other",
                model="gpt-4o-mini",
                cost_usd=0.5,
                priced=True,
            ),
        ]
    )
    for record in recorded:
        web_deps.writer.submit(record)
    assert web_deps.writer.flush()
    response = web_client.get("/api/usage/budget-status")
    assert response.status_code == 200
    caps = {(c["scope"], c["period"]): c for c in response.json["caps"]}
    assert set(caps) == {
        ("global", "day"),
        ("global", "month"),
        ("source:agent", "day"),
        ("model:gpt-4o", "day"),
    }
    day = caps[("global", "day")]
    tomorrow = (now + timedelta(days=1)).date().isoformat()
    assert day == {
        "scope": "global",
        "period": "day",
        "limit_usd": 2.0,
        "spent_usd": pytest.approx(0.75),
        "reserved_usd": 0.0,
        "remaining_usd": pytest.approx(1.25),
        "resets_at": f"{tomorrow}T00:00:00+00:00",
    }
    assert caps[("source:agent", "day")]["spent_usd"] == pytest.approx(0.25)
    assert caps[("model:gpt-4o", "day")]["remaining_usd"] == pytest.approx(0.25)
    assert [c["scope"] for c in response.json["call_caps"]] == ["source:agent", "model:o3"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"daily_usd": 5, "weekly_usd": 1}, "budgets.weekly_usd"),
        ({"daily_usd": -1}, "budgets.daily_usd"),
        ({"monthly_usd": "lots"}, "budgets.monthly_usd"),
        ({"reserve_output_tokens": 1.5}, "budgets.reserve_output_tokens"),
        ({"fail_open": "yes"}, "budgets.fail_open"),
    ],
)
def test_an_invalid_budget_gets_400_naming_the_field_and_changes_nothing(
    web_client: FlaskClient, web_deps: AppDeps, config_file: Path, body: dict[str, Any], field: str
) -> None:
    before = web_deps.settings.get()
    response = web_client.put("/api/settings/budget", json=body)
    assert response.status_code == 400 and response.json["field"] == field
    assert web_deps.settings.get() is before
    assert config_file.read_text() == CONFIG


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kill_switches": "agent"}, "quotas.kill_switches"),
        ({"source_limits": [{"source": "a", "daily_calls": -2}]}, "quotas.source_limits[0].daily_calls"),
        ({"source_limits": [{"source": "a", "hourly_usd": 1}]}, "quotas.source_limits[0].hourly_usd"),
        ({"model_limits": [{"model": "m", "daily_usd": "1"}]}, "quotas.model_limits[0].daily_usd"),
        ({"model_limits": [{"daily_calls": 1}]}, "quotas.model_limits[0].model"),
    ],
)
def test_an_invalid_quota_gets_400_naming_the_field_and_changes_nothing(
    web_client: FlaskClient, web_deps: AppDeps, config_file: Path, body: dict[str, Any], field: str
) -> None:
    before = web_deps.settings.get()
    response = web_client.put("/api/config/quotas", json=body)
    assert response.status_code == 400 and response.json["field"] == field
    assert web_deps.settings.get() is before
    assert config_file.read_text() == CONFIG


def test_a_budget_put_shows_in_the_status_at_once(web_client: FlaskClient) -> None:
    response = web_client.put("/api/settings/budget", json={"daily_usd": 7.5})
    assert response.status_code == 200
    caps = web_client.get("/api/usage/budget-status").json["caps"]
    assert [(c["scope"], c["limit_usd"]) for c in caps if c["scope"] == "global"] == [("global", 7.5)]
