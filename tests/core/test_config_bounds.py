"""Every numeric setting and every list of the configuration is range-checked, with an error naming the key:
in the file, in `tokenlens config validate` and in the config API (issue 17, finding 11b)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from typer.testing import CliRunner

from harness.deps import app_deps
from tokenlens.cli.config_cmd import app as config_cli
from tokenlens.config import ConfigError, Settings, load_settings, parse_settings
from tokenlens.web import create_app

HUGE: list[tuple[dict[str, Any], str]] = [
    ({"budgets": {"reserve_output_tokens": 1e300}}, "budgets.reserve_output_tokens"),
    ({"budgets": {"reserve_output_tokens": 10**30}}, "budgets.reserve_output_tokens"),
    ({"budgets": {"daily_usd": 1e308}}, "budgets.daily_usd"),
    ({"budgets": {"monthly_usd": 1e12}}, "budgets.monthly_usd"),
    (
        {"quotas": {"source_limits": [{"source": "a", "daily_calls": 1e30}]}},
        "quotas.source_limits[0].daily_calls",
    ),
    (
        {"quotas": {"source_limits": [{"source": "a", "daily_usd": 1e308}]}},
        "quotas.source_limits[0].daily_usd",
    ),
    (
        {"quotas": {"source_limits": [{"source": "a", "monthly_usd": 1e20}]}},
        "quotas.source_limits[0].monthly_usd",
    ),
    (
        {"quotas": {"model_limits": [{"model": "m", "daily_calls": 10**19}]}},
        "quotas.model_limits[0].daily_calls",
    ),
    ({"quotas": {"model_limits": [{"model": "m", "daily_usd": 1e300}]}}, "quotas.model_limits[0].daily_usd"),
    (
        {"routing": {"weights": [{"source": "s", "rules": [{"model": "m", "weight": 1e308}]}]}},
        "routing.weights[0].rules[0].weight",
    ),
    ({"pricing": {"m": {"input": 1e300, "output": 1}}}, "pricing.m.input"),
    ({"pricing": {"m": {"input": 1, "output": 1, "cache_write": 1e300}}}, "pricing.m.cache_write"),
    ({"alerts": {"daily_cost_threshold": 1e308}}, "alerts.daily_cost_threshold"),
    ({"dedup": {"ttl_s": 1e18}}, "dedup.ttl_s"),
    ({"dedup": {"max_entries": 10**12}}, "dedup.max_entries"),
    ({"storage": {"retention_days": 10**9}}, "storage.retention_days"),
]
NOT_FINITE_OR_NEGATIVE: list[tuple[dict[str, Any], str]] = [
    ({"budgets": {"daily_usd": math.inf}}, "budgets.daily_usd"),
    ({"budgets": {"monthly_usd": math.nan}}, "budgets.monthly_usd"),
    ({"budgets": {"daily_usd": -1}}, "budgets.daily_usd"),
    ({"budgets": {"reserve_output_tokens": math.inf}}, "budgets.reserve_output_tokens"),
    ({"budgets": {"reserve_output_tokens": -1}}, "budgets.reserve_output_tokens"),
    (
        {"quotas": {"source_limits": [{"source": "a", "daily_calls": -1}]}},
        "quotas.source_limits[0].daily_calls",
    ),
    (
        {"quotas": {"model_limits": [{"model": "m", "daily_usd": -math.inf}]}},
        "quotas.model_limits[0].daily_usd",
    ),
]
TOO_MANY: list[tuple[dict[str, Any], str]] = [
    ({"quotas": {"kill_switches": [f"s{i}" for i in range(10_001)]}}, "quotas.kill_switches"),
    (
        {"quotas": {"source_limits": [{"source": f"s{i}", "daily_calls": 1} for i in range(10_001)]}},
        "quotas.source_limits",
    ),
    (
        {"quotas": {"model_limits": [{"model": f"m{i}", "daily_calls": 1} for i in range(10_001)]}},
        "quotas.model_limits",
    ),
    ({"routing": {"aliases": [{"from": f"a{i}", "to": "b"} for i in range(10_001)]}}, "routing.aliases"),
    ({"pricing": {f"m{i}": {"input": 1, "output": 1} for i in range(10_001)}}, "pricing"),
]


def error_of(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        parse_settings(data)
    return raised.value


@pytest.mark.parametrize(("data", "field"), HUGE, ids=[f for _, f in HUGE])
def test_an_absurdly_large_number_is_refused_by_name(data: dict[str, Any], field: str) -> None:
    err = error_of(data)
    assert err.field == field
    assert err.message.startswith("must be at most "), err.message


@pytest.mark.parametrize(
    ("data", "field"), NOT_FINITE_OR_NEGATIVE, ids=[f for _, f in NOT_FINITE_OR_NEGATIVE]
)
def test_a_negative_or_non_finite_number_is_refused_by_name(data: dict[str, Any], field: str) -> None:
    err = error_of(data)
    assert err.field == field and err.message.startswith("must be ")


@pytest.mark.parametrize(("data", "field"), TOO_MANY, ids=[f for _, f in TOO_MANY])
def test_more_than_ten_thousand_entries_are_refused(data: dict[str, Any], field: str) -> None:
    err = error_of(data)
    assert (err.field, err.message) == (field, "has 10001 entries; at most 10000 are allowed")


def test_values_at_the_bounds_are_accepted() -> None:
    settings = parse_settings(
        {
            "budgets": {"daily_usd": 1e9, "monthly_usd": 1_000_000_000, "reserve_output_tokens": 10_000_000},
            "quotas": {
                "kill_switches": [f"s{i}" for i in range(10_000)],
                "source_limits": [{"source": "a", "daily_calls": 10**9, "daily_usd": 1e9}],
                "model_limits": [{"model": "m", "daily_calls": 1e9}],
            },
            "pricing": {"m": {"input": 1e6, "output": 1e6}},
            "dedup": {"ttl_s": 30 * 86400, "max_entries": 1_000_000},
            "storage": {"retention_days": 36_500},
        }
    )
    assert settings.budgets.reserve_output_tokens == 10_000_000
    assert settings.quotas.model_limits[0].daily_calls == 10**9
    assert len(settings.quotas.kill_switches) == 10_000


def test_the_file_names_the_key_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("budgets:\n  daily_usd: 5\n  reserve_output_tokens: 1e300\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert raised.value.field == "budgets.reserve_output_tokens"
    assert raised.value.line == 3
    path.write_text("quotas:\n  source_limits:\n    - {source: a, daily_calls: 1e30}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert raised.value.field == "quotas.source_limits[0].daily_calls"


@pytest.mark.parametrize("value", [".inf", ".nan", "-1", "1e308"])
def test_config_validate_refuses_the_file(
    tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENLENS_HOME", str(tmp_path / "home"))
    path = tmp_path / "c.yaml"
    path.write_text(f"budgets:\n  daily_usd: {value}\n")
    result = CliRunner().invoke(config_cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}: budgets.daily_usd: must be ")
    assert result.stderr.rstrip().endswith("(line 2)")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    (tmp_path / "config.yaml").write_text("budgets:\n  daily_usd: 20\n")
    with app_deps(tmp_path, load_settings(tmp_path / "config.yaml")) as deps:
        yield create_app(deps, {"TESTING": True}).test_client()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/settings/budget", {"reserve_output_tokens": 1e300}, "budgets.reserve_output_tokens"),
        ("/api/settings/budget", {"daily_usd": 1e308}, "budgets.daily_usd"),
        (
            "/api/config/quotas",
            {"source_limits": [{"source": "a", "daily_calls": 1e30}]},
            "quotas.source_limits[0].daily_calls",
        ),
        ("/api/config/quotas", {"kill_switches": [f"k{i}" for i in range(10_001)]}, "quotas.kill_switches"),
        ("/api/settings/budget", {"monthly_usd": 1e308}, "budgets.monthly_usd"),
    ],
)
def test_the_config_api_refuses_the_change_and_keeps_the_file(
    client: FlaskClient, tmp_path: Path, path: str, body: dict[str, Any], field: str
) -> None:
    before = (tmp_path / "config.yaml").read_text()
    response = client.put(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json is not None and response.json["field"] == field
    assert (tmp_path / "config.yaml").read_text() == before


def test_the_config_api_refuses_infinity(client: FlaskClient) -> None:
    response = client.put(
        "/api/settings/budget", data=json.dumps({"daily_usd": math.inf}), content_type="application/json"
    )
    assert response.status_code == 400 and response.json is not None
    assert response.json["field"] == "budgets.daily_usd"


def test_the_defaults_are_within_the_bounds() -> None:
    assert parse_settings({}) == Settings()
