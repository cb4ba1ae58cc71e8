"""tokenlens.config: defaults, validation with field paths, YAML files, section rewrites, start-up checks."""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import stat
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

from tokenlens import config
from tokenlens.config import (
    Alias,
    Budgets,
    ConfigError,
    CustomRule,
    Detector,
    FallbackChain,
    LatencyGroup,
    ModelLimit,
    ModelWeight,
    PriceOverride,
    ProviderSettings,
    Settings,
    SourceLimit,
    Webhook,
    WeightRule,
    config_path,
    is_loopback_host,
    load_settings,
    parse_settings,
    replace_section,
    resolve_timezone,
    section_to_dict,
    settings_to_dict,
    startup_problem,
    tokenlens_home,
    write_section,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENLENS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOKENLENS_CONFIG", raising=False)


def error_of(data: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_settings(data)
    return info.value


# --- defaults ----------------------------------------------------------------------------------------


def test_defaults_match_the_spec() -> None:
    s = Settings()
    assert (s.server.host, s.server.port, s.server.api_token) == ("127.0.0.1", 8420, None)
    assert (s.server.allowed_hosts, s.server.upstream_ca) == ((), None)
    assert (s.storage.url, s.storage.store_bodies, s.storage.retention_days) == (None, True, 90)
    assert {name: (p.upstream, p.format, p.api_key_env) for name, p in s.providers.items()} == {
        "openai": ("https://api.openai.com", "openai", None),
        "anthropic": ("https://api.anthropic.com", "anthropic", None),
        "google": ("https://generativelanguage.googleapis.com", "google", None),
    }
    assert s.budgets == Budgets(daily_usd=None, monthly_usd=None, reserve_output_tokens=4096, fail_open=False)
    assert (s.quotas.kill_switches, s.quotas.source_limits, s.quotas.model_limits) == ((), (), ())
    assert s.quotas.fail_open is False
    assert (s.routing.aliases, s.routing.fallback_chains, s.routing.weights, s.routing.latency_groups) == (
        (),
        (),
        (),
        (),
    )
    g = s.guardrails
    assert g.pii_detection == g.injection_detection == g.response_pii_detection == Detector(False, "warn")
    assert (g.custom_rules, g.fail_open) == ((), True)
    assert (s.dedup.enabled, s.dedup.ttl_s, s.dedup.max_entries) == (False, 300, 10000)
    assert dict(s.pricing) == {}
    assert s.alerts.daily_cost_threshold is None
    assert s.webhooks == ()
    assert s.timezone == "local"


@pytest.mark.parametrize(
    "data", [None, {}, {"budgets": None, "pricing": None, "webhooks": None, "timezone": None}]
)
def test_empty_input_is_the_defaults(data: Any) -> None:
    assert parse_settings(data) == Settings()


def test_settings_are_frozen_hashable_and_copyable() -> None:
    s = parse_settings(
        {"pricing": {"m": {"input": 1, "output": 2}}, "providers": {"x": {"upstream": "http://h"}}}
    )
    with pytest.raises(AttributeError):
        s.budgets.daily_usd = 3.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.pricing["m"] = PriceOverride(1, 1)  # type: ignore[index]
    assert hash(s) == hash(copy.deepcopy(s))
    assert pickle.loads(pickle.dumps(s)) == s


# --- a full, valid configuration (the docs/analytics-api.md bodies) ------------------------------------------

FULL: dict[str, Any] = {
    "server": {
        "host": "0.0.0.0",
        "port": 9000,
        "api_token": "s3cret-token",
        "allowed_hosts": ["Gateway.Example.com"],
        "upstream_ca": "/etc/ssl/corp.pem",
    },
    "storage": {"url": "postgresql://u:p@db/tokenlens", "store_bodies": False, "retention_days": 30},
    "providers": {
        "ollama": {"upstream": "http://localhost:11434", "format": "openai"},
        "groq": {"upstream": "https://api.groq.com/openai/", "api_key_env": "GROQ_API_KEY"},
        "anthropic": {"api_key_env": "ANTHROPIC_API_KEY"},
    },
    "budgets": {"daily_usd": 10, "monthly_usd": 200.5, "reserve_output_tokens": 1000, "fail_open": True},
    "quotas": {
        "kill_switches": ["my-agent"],
        "source_limits": [{"source": "my-agent", "daily_usd": 5.0, "monthly_usd": 50.0, "daily_calls": 7}],
        "model_limits": [{"model": "claude-opus-4-6", "daily_calls": 100}],
        "fail_open": True,
    },
    "routing": {
        "aliases": [{"from": "gpt-4", "to": "claude-sonnet-4-6"}],
        "fallback_chains": [
            {"trigger_model": "claude-opus-4-6", "fallbacks": ["claude-sonnet-4-6", "claude-haiku-4-5"]}
        ],
        "weights": [
            {
                "source": "my-agent",
                "rules": [
                    {"model": "claude-haiku-4-5", "weight": 70},
                    {"model": "claude-sonnet-4-6", "weight": 30},
                ],
            }
        ],
        "latency_groups": [{"name": "fast", "models": ["claude-haiku-4-5", "claude-sonnet-4-6"]}],
    },
    "guardrails": {
        "pii_detection": {"enabled": True, "action": "block"},
        "injection_detection": {"enabled": True, "action": "warn"},
        "response_pii_detection": {"enabled": True, "action": "redact"},
        "custom_rules": [{"name": "no-ssn", "pattern": "\\d{3}-\\d{2}-\\d{4}", "action": "block"}],
        "fail_open": False,
    },
    "dedup": {"enabled": True, "ttl_s": 60, "max_entries": 500},
    "pricing": {"gpt-4.1": {"input": 2, "output": 8, "cache_read": 0.5}},
    "alerts": {"daily_cost_threshold": 25},
    "webhooks": [
        {
            "url": "https://hooks.example.com/x",
            "events": ["alert", "budget"],
            "secret": "k",
            "format": "slack",
        },
        {"url": "http://127.0.0.1:9999/hook"},
    ],
    "timezone": "Europe/Paris",
}


def test_full_configuration_parses() -> None:
    s = parse_settings(FULL)
    assert s.server.allowed_hosts == ("gateway.example.com",)
    assert s.storage.url == "postgresql://u:p@db/tokenlens"
    assert s.providers["ollama"] == ProviderSettings("http://localhost:11434", "openai", None)
    assert s.providers["groq"] == ProviderSettings("https://api.groq.com/openai", "openai", "GROQ_API_KEY")
    assert s.providers["anthropic"] == ProviderSettings(
        "https://api.anthropic.com", "anthropic", "ANTHROPIC_API_KEY"
    )
    assert s.budgets == Budgets(10.0, 200.5, 1000, True)
    assert s.quotas.kill_switches == ("my-agent",)
    assert s.quotas.source_limits == (SourceLimit("my-agent", 5.0, 50.0, 7),)
    assert s.quotas.model_limits == (ModelLimit("claude-opus-4-6", 100, None),)
    assert s.routing.aliases == (Alias("gpt-4", "claude-sonnet-4-6"),)
    assert s.routing.fallback_chains == (
        FallbackChain("claude-opus-4-6", ("claude-sonnet-4-6", "claude-haiku-4-5")),
    )
    assert s.routing.weights == (
        WeightRule("my-agent", (ModelWeight("claude-haiku-4-5", 70), ModelWeight("claude-sonnet-4-6", 30))),
    )
    assert s.routing.latency_groups == (LatencyGroup("fast", ("claude-haiku-4-5", "claude-sonnet-4-6")),)
    assert s.guardrails.pii_detection == Detector(True, "block")
    assert s.guardrails.response_pii_detection == Detector(True, "redact")
    assert s.guardrails.custom_rules == (CustomRule("no-ssn", r"\d{3}-\d{2}-\d{4}", "block"),)
    assert s.guardrails.fail_open is False
    assert dict(s.pricing) == {"gpt-4.1": PriceOverride(2, 8, 0.5, None)}
    assert s.alerts.daily_cost_threshold == 25
    assert s.webhooks == (
        Webhook("https://hooks.example.com/x", ("alert", "budget"), "k", "slack"),
        Webhook(
            "http://127.0.0.1:9999/hook", ("alert", "budget", "anomaly", "digest", "block"), None, "json"
        ),
    )
    assert s.timezone == "Europe/Paris"


def test_round_trip_through_dict_and_json() -> None:
    s = parse_settings(FULL)
    assert parse_settings(settings_to_dict(s)) == s
    assert parse_settings(json.loads(json.dumps(settings_to_dict(s)))) == s
    assert parse_settings(settings_to_dict(Settings())) == Settings()
    assert settings_to_dict(s)["routing"]["aliases"] == [{"from": "gpt-4", "to": "claude-sonnet-4-6"}]
    assert list(settings_to_dict(s)) == [
        "server",
        "storage",
        "providers",
        "budgets",
        "quotas",
        "routing",
        "guardrails",
        "dedup",
        "pricing",
        "alerts",
        "webhooks",
        "timezone",
        "platforms",
    ]


# --- providers ---------------------------------------------------------------------------------------


def test_providers_merge_with_the_defaults() -> None:
    s = parse_settings(
        {
            "providers": {
                "openai": {"upstream": "http://127.0.0.1:9000"},
                "ollama": {"upstream": "http://localhost:11434"},
            }
        }
    )
    assert list(s.providers) == ["openai", "anthropic", "google", "ollama"]
    assert s.providers["openai"] == ProviderSettings("http://127.0.0.1:9000", "openai")
    assert s.providers["anthropic"].upstream == "https://api.anthropic.com"
    assert s.providers["google"].upstream == "https://generativelanguage.googleapis.com"
    assert s.providers["ollama"].format == "openai"


def test_builtin_provider_keeps_its_format() -> None:
    s = parse_settings({"providers": {"google": {"upstream": "http://localhost:7000"}}})
    assert s.providers["google"].format == "google"
    assert (
        parse_settings({"providers": {"google": {"format": "google"}}}).providers["google"].format == "google"
    )
    err = error_of({"providers": {"google": {"format": "openai"}}})
    assert err.field == "providers.google.format"


def test_added_provider_may_declare_its_format() -> None:
    s = parse_settings(
        {"providers": {"my-claude": {"upstream": "https://claude.internal", "format": "anthropic"}}}
    )
    assert s.providers["my-claude"].format == "anthropic"


def test_upstream_parts_and_path_prefix() -> None:
    p = parse_settings({"providers": {"groq": {"upstream": "HTTPS://api.groq.com:8443/openai/"}}}).providers[
        "groq"
    ]
    assert p.upstream == "https://api.groq.com:8443/openai"
    assert (p.scheme, p.host, p.port, p.base_path) == ("https", "api.groq.com", 8443, "/openai")
    assert p.url("/v1/chat/completions?x=1") == "https://api.groq.com:8443/openai/v1/chat/completions?x=1"
    plain = Settings().providers["anthropic"]
    assert (plain.port, plain.base_path) == (443, "")
    assert plain.url("v1/messages") == "https://api.anthropic.com/v1/messages"
    assert ProviderSettings("http://localhost").port == 80


@pytest.mark.parametrize(
    ("providers", "field", "message"),
    [
        ({"ollama": {}}, "providers.ollama.upstream", "is required"),
        ({"ollama": {"upstream": "ftp://host"}}, "providers.ollama.upstream", "http"),
        ({"ollama": {"upstream": "localhost:11434"}}, "providers.ollama.upstream", "http"),
        ({"ollama": {"upstream": "http://"}}, "providers.ollama.upstream", "http"),
        ({"ollama": {"upstream": "http://h/x?y=1"}}, "providers.ollama.upstream", "query"),
        ({"ollama": {"upstream": "http://u:p@h"}}, "providers.ollama.upstream", "credentials"),
        ({"ollama": {"upstream": "http://h:99999"}}, "providers.ollama.upstream", "URL"),
        ({"ollama": {"upstream": 5}}, "providers.ollama.upstream", "non-empty string"),
        (
            {"ollama": {"upstream": "http://h", "format": "mistral"}},
            "providers.ollama.format",
            "openai, anthropic",
        ),
        (
            {"ollama": {"upstream": "http://h", "api_key_env": "MY KEY"}},
            "providers.ollama.api_key_env",
            "variable",
        ),
        (
            {"ollama": {"upstream": "http://h", "formt": "openai"}},
            "providers.ollama.formt",
            'did you mean "format"',
        ),
        ({"Ollama": {"upstream": "http://h"}}, "providers.Ollama", "lower-case"),
        ({"-x": {"upstream": "http://h"}}, "providers.-x", "lower-case"),
        ({"ollama": "http://h"}, "providers.ollama", "must be a mapping"),
    ],
)
def test_provider_validation(providers: dict[str, Any], field: str, message: str) -> None:
    err = error_of({"providers": providers})
    assert err.field == field
    assert message in err.message
    assert str(err).startswith(f"{field}: ")


# --- validation of every section ---------------------------------------------------------------------

CASES: list[tuple[dict[str, Any], str, str]] = [
    # platforms
    ({"platforms": {"azure": {"resource": "my res"}}}, "platforms.azure.resource", "Azure resource name"),
    ({"platforms": {"bedrock": {"region": "US-EAST-1"}}}, "platforms.bedrock.region", "region such as"),
    ({"platforms": {"vertex": {"endpoint": "ftp://x"}}}, "platforms.vertex.endpoint", "http"),
    ({"platforms": {"gcp": {}}}, "platforms.gcp", "unknown key"),
    # server
    ({"server": {"host": ""}}, "server.host", "non-empty string"),
    ({"server": {"port": 0}}, "server.port", "integer from 1 to 65535"),
    ({"server": {"port": "8420"}}, "server.port", 'got "8420"'),
    ({"server": {"port": True}}, "server.port", "got true"),
    ({"server": {"api_token": "a b"}}, "server.api_token", "without spaces"),
    ({"server": {"allowed_hosts": "x.example"}}, "server.allowed_hosts", "must be a list"),
    ({"server": {"allowed_hosts": ["http://x.example/"]}}, "server.allowed_hosts[0]", "host name"),
    ({"server": {"upstream_ca": 3}}, "server.upstream_ca", "non-empty string"),
    ({"server": []}, "server", "must be a mapping"),
    # storage
    ({"storage": {"url": "mysql://h/db"}}, "storage.url", "postgresql://"),
    ({"storage": {"store_bodies": "yes"}}, "storage.store_bodies", 'must be true or false, got "yes"'),
    ({"storage": {"retention_days": 0}}, "storage.retention_days", "integer >= 1"),
    # budgets
    ({"budgets": {"daily_usd": "ten"}}, "budgets.daily_usd", 'must be a number >= 0, got "ten"'),
    ({"budgets": {"monthly_usd": -1}}, "budgets.monthly_usd", "must be a number >= 0, got -1"),
    ({"budgets": {"monthly_usd": float("nan")}}, "budgets.monthly_usd", "must be a number >= 0"),
    ({"budgets": {"reserve_output_tokens": 1.5}}, "budgets.reserve_output_tokens", "integer >= 0"),
    ({"budgets": {"fail_open": None}}, "budgets.fail_open", "true or false"),
    # quotas
    ({"quotas": {"kill_switches": ["a", ""]}}, "quotas.kill_switches[1]", "non-empty string"),
    ({"quotas": {"kill_switches": [{"source": "a"}]}}, "quotas.kill_switches[0]", "non-empty string"),
    ({"quotas": {"source_limits": [{"daily_usd": 1}]}}, "quotas.source_limits[0].source", "is required"),
    (
        {"quotas": {"source_limits": [{"source": "a", "daily_usd": 1}, {"source": "b", "daily_calls": -2}]}},
        "quotas.source_limits[1].daily_calls",
        "integer >= 0",
    ),
    ({"quotas": {"source_limits": [{"source": "a"}]}}, "quotas.source_limits[0]", "at least one of"),
    (
        {"quotas": {"source_limits": [{"source": "a", "daily_usd": 1}, {"source": "a", "daily_calls": 1}]}},
        "quotas.source_limits[1].source",
        "more than once",
    ),
    (
        {"quotas": {"model_limits": [{"model": "m", "daily_calls": "x"}]}},
        "quotas.model_limits[0].daily_calls",
        "integer",
    ),
    (
        {"quotas": {"model_limits": [{"model": "m", "monthly_usd": 1}]}},
        "quotas.model_limits[0].monthly_usd",
        "unknown key",
    ),
    # routing
    ({"routing": {"aliases": [{"from": "a"}]}}, "routing.aliases[0].to", "is required"),
    ({"routing": {"aliases": [{"from": "a", "to": 5}]}}, "routing.aliases[0].to", "non-empty string"),
    ({"routing": {"aliases": [{"from": "a", "to": "a"}]}}, "routing.aliases[0].to", "itself"),
    (
        {"routing": {"aliases": [{"from": "a", "to": "b"}, {"from": "a", "to": "c"}]}},
        "routing.aliases[1].from",
        "more than once",
    ),
    (
        {"routing": {"fallback_chains": [{"trigger_model": "a", "fallbacks": []}]}},
        "routing.fallback_chains[0].fallbacks",
        "must not be empty",
    ),
    (
        {"routing": {"fallback_chains": [{"trigger_model": "a", "fallbacks": "b"}]}},
        "routing.fallback_chains[0].fallbacks",
        "must be a list",
    ),
    (
        {"routing": {"weights": [{"source": "s", "rules": [{"model": "a", "weight": -1}]}]}},
        "routing.weights[0].rules[0].weight",
        "number >= 0",
    ),
    (
        {"routing": {"weights": [{"source": "s", "rules": [{"model": "a", "weight": 0}]}]}},
        "routing.weights[0].rules",
        "not all be 0",
    ),
    (
        {
            "routing": {
                "weights": [
                    {"source": "s", "rules": [{"model": "a", "weight": 1}, {"model": "a", "weight": 2}]}
                ]
            }
        },
        "routing.weights[0].rules[1].model",
        "more than once",
    ),
    (
        {"routing": {"latency_groups": [{"name": "g", "models": []}]}},
        "routing.latency_groups[0].models",
        "empty",
    ),
    ({"routing": {"latency_group": []}}, "routing.latency_group", 'did you mean "latency_groups"'),
    # guardrails
    (
        {"guardrails": {"pii_detection": {"action": "drop"}}},
        "guardrails.pii_detection.action",
        "warn, block, redact",
    ),
    (
        {"guardrails": {"injection_detection": {"action": "redact"}}},
        "guardrails.injection_detection.action",
        "warn, block, got",
    ),
    (
        {"guardrails": {"response_pii_detection": {"enabled": "true"}}},
        "guardrails.response_pii_detection.enabled",
        "true or false",
    ),
    (
        {"guardrails": {"custom_rules": [{"name": "x", "pattern": "(unclosed"}]}},
        "guardrails.custom_rules[0].pattern",
        "not a valid regular expression",
    ),
    (
        {"guardrails": {"custom_rules": [{"name": "x", "pattern": "a*"}]}},
        "guardrails.custom_rules[0].pattern",
        "empty string",
    ),
    (
        {"guardrails": {"custom_rules": [{"name": "no ssn", "pattern": "x"}]}},
        "guardrails.custom_rules[0].name",
        "letters, digits",
    ),
    (
        {"guardrails": {"custom_rules": [{"name": "x", "pattern": "a"}, {"name": "x", "pattern": "b"}]}},
        "guardrails.custom_rules[1].name",
        "more than once",
    ),
    ({"guardrails": {"custom_rules": [{"pattern": "a"}]}}, "guardrails.custom_rules[0].name", "is required"),
    ({"guardrails": {"fail_open": 1}}, "guardrails.fail_open", "true or false, got 1"),
    # dedup
    ({"dedup": {"ttl_s": 0}}, "dedup.ttl_s", "integer >= 1"),
    ({"dedup": {"max_entries": "many"}}, "dedup.max_entries", 'got "many"'),
    ({"dedup": {"enable": True}}, "dedup.enable", 'did you mean "enabled"'),
    # pricing
    ({"pricing": {"m": {"input": 1}}}, "pricing.m.output", "is required"),
    ({"pricing": {"gpt-4.1": {"input": 1, "output": -2}}}, "pricing.gpt-4.1.output", "number >= 0"),
    ({"pricing": {"m": {"input": 1, "output": 2, "cache_read": "x"}}}, "pricing.m.cache_read", "number >= 0"),
    ({"pricing": {"m": {"input": 1, "output": 2, "cache_reads": 1}}}, "pricing.m.cache_reads", "cache_read"),
    ({"pricing": {"m": 3}}, "pricing.m", "must be a mapping"),
    ({"pricing": []}, "pricing", "must be a mapping"),
    # alerts
    ({"alerts": {"daily_cost_threshold": -5}}, "alerts.daily_cost_threshold", "number >= 0"),
    # webhooks
    ({"webhooks": {"url": "http://h"}}, "webhooks", "must be a list"),
    ({"webhooks": [{"events": ["alert"]}]}, "webhooks[0].url", "is required"),
    ({"webhooks": [{"url": "hooks.example.com"}]}, "webhooks[0].url", "http"),
    (
        {"webhooks": [{"url": "http://h", "events": ["alert", "spend"]}]},
        "webhooks[0].events[1]",
        "alert, budget",
    ),
    ({"webhooks": [{"url": "http://h", "events": []}]}, "webhooks[0].events", "must not be empty"),
    ({"webhooks": [{"url": "http://h", "format": "xml"}]}, "webhooks[0].format", "json, slack"),
    # timezone
    ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
    ({"timezone": "../../etc/passwd"}, "timezone", "IANA"),
    ({"timezone": 3}, "timezone", "non-empty string"),
    # top level
    ({"budget": {}}, "budget", 'did you mean "budgets"'),
]


@pytest.mark.parametrize(("data", "field", "message"), CASES, ids=[c[1] for c in CASES])
def test_validation_names_the_field(data: dict[str, Any], field: str, message: str) -> None:
    err = error_of(data)
    assert err.field == field
    assert message in err.message
    assert str(err) == f"{field}: {err.message}"


def test_every_section_is_validated() -> None:
    top = {field.split(".")[0].split("[")[0] for _, field, _ in CASES}
    assert set(config.SECTIONS) <= top | {"providers"}


def test_unknown_key_suggests_the_closest_one() -> None:
    err = error_of({"budgets": {"daly_usd": 5}})
    assert err.field == "budgets.daly_usd"
    assert 'did you mean "daily_usd"?' in str(err)
    far = error_of({"budgets": {"colour": 5}})
    assert far.field == "budgets.colour"
    assert "did you mean" not in str(far)
    assert "daily_usd, monthly_usd, reserve_output_tokens, fail_open" in str(far)


def test_timezone_typo_gets_a_suggestion() -> None:
    err = error_of({"timezone": "Europe/Pariss"})
    assert 'did you mean "Europe/Paris"' in str(err)


def test_numbers_keep_their_value_and_integral_floats_are_integers() -> None:
    s = parse_settings({"dedup": {"ttl_s": 60.0}, "budgets": {"daily_usd": 0}})
    assert s.dedup.ttl_s == 60 and isinstance(s.dedup.ttl_s, int)
    assert s.budgets.daily_usd == 0


def test_webhook_events_are_deduplicated_in_order() -> None:
    s = parse_settings({"webhooks": [{"url": "http://h", "events": ["block", "alert", "block"]}]})
    assert s.webhooks[0].events == ("block", "alert")


def test_config_error_pickles() -> None:
    err = ConfigError("must be a number >= 0, got -1", "budgets.daily_usd")
    back = pickle.loads(pickle.dumps(err))
    assert (back.field, back.message, str(back)) == (err.field, err.message, str(err))
    assert str(ConfigError("whole file")) == "whole file"


# --- replace_section / section_to_dict ---------------------------------------------------------------


def test_replace_section_validates_and_keeps_other_sections() -> None:
    base = parse_settings({"budgets": {"daily_usd": 3}, "timezone": "Europe/Paris"})
    body = {
        "kill_switches": ["my-agent"],
        "source_limits": [{"source": "my-agent", "daily_usd": 5.0, "monthly_usd": 50.0}],
        "model_limits": [{"model": "claude-opus-4-6", "daily_calls": 100}],
    }
    new = replace_section(base, "quotas", body)
    assert new.quotas.kill_switches == ("my-agent",)
    assert new.quotas.source_limits == (SourceLimit("my-agent", 5.0, 50.0, None),)
    assert (new.budgets, new.timezone) == (base.budgets, base.timezone)
    assert section_to_dict(new, "quotas") == {
        "kill_switches": ["my-agent"],
        "source_limits": [{"source": "my-agent", "daily_usd": 5.0, "monthly_usd": 50.0, "daily_calls": None}],
        "model_limits": [{"model": "claude-opus-4-6", "daily_calls": 100, "daily_usd": None}],
        "fail_open": False,
    }
    # PUT replaces: keys left out go back to their defaults.
    assert replace_section(new, "budgets", {"monthly_usd": 9}).budgets == Budgets(monthly_usd=9)


def test_replace_section_errors_carry_the_full_path() -> None:
    with pytest.raises(ConfigError) as info:
        replace_section(Settings(), "routing", {"aliases": [{"from": "gpt-4", "to": ""}]})
    assert info.value.field == "routing.aliases[0].to"
    with pytest.raises(ConfigError) as info:
        replace_section(Settings(), "guardrails", {"pii_detection": {"enabled": True, "action": "shout"}})
    assert info.value.field == "guardrails.pii_detection.action"


@pytest.mark.parametrize("name", ["server", "storage", "providers", "timezone", "bogus"])
def test_replace_section_refuses_other_sections(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        replace_section(Settings(), name, {})
    assert info.value.field == name


def test_webhooks_section_is_a_list() -> None:
    hooks = [{"url": "https://h.example/x", "events": ["digest"]}]
    new = replace_section(Settings(), "webhooks", hooks)
    assert section_to_dict(new, "webhooks") == [
        {"url": "https://h.example/x", "events": ["digest"], "secret": None, "format": "json"}
    ]
    assert replace_section(Settings(), "webhooks", {"webhooks": hooks}) == new
    assert section_to_dict(Settings(), "timezone") == "local"
    assert section_to_dict(Settings(), "pricing") == {}


# --- files -------------------------------------------------------------------------------------------


def test_no_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "absent.yaml") == Settings()
    assert load_settings(None) == Settings()


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file_means_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_settings(path) == Settings()


def test_load_settings_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "budgets:\n  daily_usd: 12.5\nproviders:\n  ollama: {upstream: 'http://localhost:11434'}\n"
    )
    s = load_settings(path)
    assert s.budgets.daily_usd == 12.5
    assert s.providers["ollama"].upstream == "http://localhost:11434"


def test_config_path_and_home_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tokenlens_home() == tmp_path / "home"
    assert config_path() == tmp_path / "home" / "config.yaml"
    monkeypatch.setenv("TOKENLENS_CONFIG", str(tmp_path / "elsewhere.yaml"))
    assert config_path() == tmp_path / "elsewhere.yaml"
    (tmp_path / "elsewhere.yaml").write_text("dedup: {enabled: true}\n")
    assert load_settings(None).dedup.enabled is True
    monkeypatch.delenv("TOKENLENS_HOME")
    assert tokenlens_home() == Path.home() / ".tokenlens"


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 8420\n  host: [unclosed\nbudgets: {}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    err = info.value
    assert err.field is None
    assert err.line is not None and err.line >= 3
    assert re.search(r"line \d+, column \d+", str(err))
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgets:\n  daily_usd: 1\n   monthly_usd: 2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    assert info.value.line == 3
    assert "line 3, column" in str(info.value)
    assert info.value.path == bad


def test_duplicate_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("budgets:\n  daily_usd: 1\n  daily_usd: 2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.line == 3
    assert "duplicate key" in str(info.value)


def test_invalid_value_in_file_gives_field_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "# header\nbudgets:\n  daily_usd: 1\nrouting:\n  aliases:\n    - {from: a, to: b}\n    - from: c\n      tu: d\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.field == "routing.aliases[1].tu"
    assert info.value.line == 8
    path.write_text("budgets:\n  daily_usd: ten\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == 'budgets.daily_usd: must be a number >= 0, got "ten"'
    assert info.value.line == 2


def test_yaml_1_2_booleans_only(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dedup:\n  enabled: yes\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.field == "dedup.enabled"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- server\n- budgets\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.field is None
    assert "mapping" in str(info.value)


def test_unreadable_or_binary_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(tmp_path)  # a directory
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe\x00budgets")
    with pytest.raises(ConfigError):
        load_settings(binary)


def test_relative_upstream_ca_is_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "c.yaml"
    path.parent.mkdir()
    path.write_text("server:\n  upstream_ca: certs/corp.pem\n")
    assert load_settings(path).server.upstream_ca == str(tmp_path / "conf" / "certs" / "corp.pem")
    path.write_text("server:\n  upstream_ca: /abs/ca.pem\n")
    assert load_settings(path).server.upstream_ca == "/abs/ca.pem"


# --- config.example.yaml -----------------------------------------------------------------------------


def test_example_file_loads_to_exactly_the_defaults() -> None:
    assert load_settings(REPO / "config.example.yaml") == Settings()


def _leaf_keys(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        keys = []
        for key, item in value.items():
            keys.append(f"{prefix}{key}")
            keys.extend(_leaf_keys(item, f"{prefix}{key}."))
        return keys
    return []


def test_example_file_shows_every_key_in_spec_order() -> None:
    text = (REPO / "config.example.yaml").read_text()
    for key in _leaf_keys(settings_to_dict(Settings())):
        name = key.rsplit(".", 1)[-1]
        assert re.search(rf"^\s*{re.escape(name)}:", text, re.M), f"{key} missing from config.example.yaml"
    positions = [re.search(rf"^{name}:", text, re.M) for name in config.SECTIONS]
    assert all(positions)
    starts = [m.start() for m in positions if m]
    assert starts == sorted(starts)
    for documented in ("allowed_hosts", "upstream_ca", "api_key_env", "format: openai", "ollama"):
        assert documented in text


# --- write_section -----------------------------------------------------------------------------------

ORIGINAL = """\
# TokenLens config, my notes at the top
server:
  port: 9000   # kept: my port

budgets:
  daily_usd: 1   # this comment is inside the rewritten section
  # so is this one

# Quotas: the comment above another section, kept byte for byte
quotas:
  kill_switches: [legacy-bot]   # inline comment in another section
timezone: Europe/Paris   # trailing
"""


def _tmp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "c.yaml")


def test_write_section_rewrites_only_that_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)
    write_section(path, "budgets", {"monthly_usd": 50})
    text = path.read_text()
    before_budgets = ORIGINAL.split("budgets:")[0]
    after_budgets = ORIGINAL[ORIGINAL.index("\n# Quotas") :]
    assert text.startswith(before_budgets)
    assert text.endswith(after_budgets)
    assert "# Quotas: the comment above another section, kept byte for byte\n" in text
    assert "  kill_switches: [legacy-bot]   # inline comment in another section\n" in text
    assert "inside the rewritten section" not in text
    s = load_settings(path)
    assert s.budgets == Budgets(daily_usd=None, monthly_usd=50)
    assert (s.server.port, s.quotas.kill_switches, s.timezone) == (9000, ("legacy-bot",), "Europe/Paris")
    assert _tmp_files(tmp_path) == []


def test_write_section_adds_a_missing_section_in_spec_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)
    body = {"aliases": [{"from": "gpt-4", "to": "claude-sonnet-4-6"}]}
    write_section(path, "routing", body)
    text = path.read_text()
    assert text.index("routing:") < text.index("timezone:")
    assert text.index("quotas:") < text.index("routing:")
    for line in ORIGINAL.splitlines():
        if "inside" not in line:
            assert line in text.splitlines()
    assert load_settings(path).routing.aliases == (Alias("gpt-4", "claude-sonnet-4-6"),)


def test_write_section_round_trips_tricky_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    guardrails = {
        "custom_rules": [
            {"name": "no-ssn", "pattern": "\\d{3}-\\d{2}-\\d{4}", "action": "block"},
            {"name": "colon", "pattern": "key: [a-z]+, {x}#", "action": "redact"},
        ]
    }
    write_section(path, "guardrails", guardrails)
    write_section(path, "pricing", {"gpt-4.1": {"input": 2, "output": 8}, "null": {"input": 0, "output": 0}})
    write_section(path, "webhooks", [{"url": "https://h.example/x?a=1&b=2", "secret": "yes"}])
    s = load_settings(path)
    assert s.guardrails.custom_rules[0].pattern == r"\d{3}-\d{2}-\d{4}"
    assert s.guardrails.custom_rules[1].pattern == "key: [a-z]+, {x}#"
    assert set(s.pricing) == {"gpt-4.1", "null"}
    assert s.webhooks[0].secret == "yes"
    assert s.webhooks[0].url == "https://h.example/x?a=1&b=2"


def test_write_section_creates_the_file_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "config.yaml"
    write_section(path, "dedup", {"enabled": True})
    assert load_settings(path).dedup.enabled is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]


def test_write_section_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)
    path.chmod(0o644)
    write_section(path, "alerts", {"daily_cost_threshold": 3})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_section_rejects_invalid_data_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)
    with pytest.raises(ConfigError) as info:
        write_section(path, "budgets", {"daily_usd": "ten"})
    assert info.value.field == "budgets.daily_usd"
    assert path.read_text() == ORIGINAL
    assert _tmp_files(tmp_path) == []


def test_write_section_refuses_to_write_over_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    broken = "budgets:\n  daily_usd: 1\nquotas: {kill_switches: [a]\n"
    path.write_text(broken)
    with pytest.raises(ConfigError):
        write_section(path, "budgets", {"daily_usd": 2})
    assert path.read_text() == broken
    invalid = "budgets:\n  daily_usd: 1\ndedup:\n  ttl_s: -1\n"
    path.write_text(invalid)
    with pytest.raises(ConfigError) as info:
        write_section(path, "budgets", {"daily_usd": 2})
    assert info.value.field == "dedup.ttl_s"
    assert path.read_text() == invalid


def test_write_section_is_atomic_when_the_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_section(path, "budgets", {"daily_usd": 2})
    assert path.read_text() == ORIGINAL
    assert _tmp_files(tmp_path) == []


def test_write_section_writes_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "tokenlens.yaml"
    real.parent.mkdir()
    real.write_text(ORIGINAL)
    link = tmp_path / "c.yaml"
    link.symlink_to(real)
    write_section(link, "budgets", {"daily_usd": 2})
    assert link.is_symlink()
    assert load_settings(real).budgets.daily_usd == 2


def test_write_section_handles_a_flow_style_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("{budgets: {daily_usd: 1}, timezone: Europe/Paris}\n")
    write_section(path, "budgets", {"daily_usd": 4})
    s = load_settings(path)
    assert (s.budgets.daily_usd, s.timezone) == (4, "Europe/Paris")


def test_write_section_then_replace_section_agree(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)
    body = FULL["routing"]
    expected = replace_section(load_settings(path), "routing", body)
    write_section(path, "routing", section_to_dict(expected, "routing"))
    assert load_settings(path) == expected


def test_write_section_timezone_and_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)
    write_section(path, "timezone", "UTC")
    assert path.read_text().endswith("timezone: UTC\n")
    with pytest.raises(ConfigError) as info:
        write_section(path, "budget", {})
    assert info.value.field == "budget"
    assert 'did you mean "budgets"' in str(info.value)


# --- start-up checks and helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.10.20.30", True),
        ("::1", True),
        ("[::1]", True),
        ("[::1]:8420", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("localhost:8420", True),
        ("127.0.0.1:8420", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.5", False),
        ("localhost.evil.com", False),
        ("gateway.example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected


def test_startup_problem_requires_a_token_off_loopback() -> None:
    assert startup_problem(Settings()) is None
    assert startup_problem(parse_settings({"server": {"host": "localhost"}})) is None
    problem = startup_problem(parse_settings({"server": {"host": "0.0.0.0"}}))
    assert problem is not None
    assert "server.api_token" in problem
    assert problem.count(". ") == 0  # one sentence
    assert startup_problem(parse_settings({"server": {"host": "0.0.0.0", "api_token": "t0ken"}})) is None


def test_startup_problem_reports_a_missing_upstream_ca(tmp_path: Path) -> None:
    missing = parse_settings({"server": {"upstream_ca": str(tmp_path / "nope.pem")}})
    problem = startup_problem(missing)
    assert problem is not None and "server.upstream_ca" in problem
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert startup_problem(parse_settings({"server": {"upstream_ca": str(ca)}})) is None


def test_resolve_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_timezone("Europe/Paris") == zoneinfo.ZoneInfo("Europe/Paris")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert resolve_timezone("local") == zoneinfo.ZoneInfo("Asia/Tokyo")
    monkeypatch.delenv("TZ")
    local = resolve_timezone("local")
    from datetime import datetime

    assert datetime(2025, 1, 1, tzinfo=local).utcoffset() is not None


def test_package_imports_neither_mitmproxy_nor_flask() -> None:
    modules = sorted((REPO / "tokenlens" / "config").glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "model.py", "validation.py", "files.py"}
    for module in modules:
        source = module.read_text()
        assert not re.search(r"^\s*(import|from)\s+(mitmproxy|flask)", source, re.M), module.name
    assert Path(config.__file__).parent == REPO / "tokenlens" / "config"
