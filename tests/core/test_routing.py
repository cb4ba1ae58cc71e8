"""tokenlens.routing: the routing decision, requests for a target, and the PUT checks."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from tokenlens.config import ConfigError, Settings, parse_settings
from tokenlens.routing import (
    CallInfo,
    RequestParts,
    Target,
    check_routing,
    decide,
    is_retryable,
    model_family,
    request_for,
)

PROVIDERS = {
    "openai": {"upstream": "https://api.openai.com"},
    "anthropic": {"upstream": "https://api.anthropic.com", "api_key_env": "TL_UNIT_ANTHROPIC"},
    "google": {"upstream": "https://generativelanguage.googleapis.com", "api_key_env": "TL_UNIT_GOOGLE"},
}


def settings(routing: dict[str, Any], providers: dict[str, Any] | None = None) -> Settings:
    return parse_settings({"providers": providers or PROVIDERS, "routing": routing})


def call(model: str | None, provider: str = "openai", source: str = "app", **extra: Any) -> CallInfo:
    api = PROVIDERS.get(provider, {}).get("format", provider) if provider in PROVIDERS else "openai"
    kind = {"openai": "chat", "anthropic": "messages", "google": "generate"}[api]
    return CallInfo(
        provider=provider, api=api, kind=extra.pop("kind", kind), source=source, model=model, **extra
    )


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_UNIT_ANTHROPIC", "ant-key")
    monkeypatch.setenv("TL_UNIT_GOOGLE", "goo-key")


def test_model_families() -> None:
    assert [
        model_family(m) for m in ("gpt-4o", "o3-mini", "claude-haiku-4-5", "gemini-2.5-flash", "llama3")
    ] == [
        "openai",
        "openai",
        "anthropic",
        "google",
        None,
    ]
    assert [is_retryable(s) for s in (200, 400, 404, 429, 500, 503, 529)] == [
        False,
        False,
        False,
        True,
        True,
        True,
        True,
    ]


def test_no_rules_keeps_the_model() -> None:
    route = decide(settings({}), call("gpt-4o"), random.Random(1))
    assert route.model == "gpt-4o" and route.rule is None and not route.has_chain


def test_alias_same_provider_and_cross_provider() -> None:
    s = settings(
        {"aliases": [{"from": "gpt-4", "to": "gpt-4o-mini"}, {"from": "gpt-x", "to": "claude-sonnet-4-6"}]}
    )
    same = decide(s, call("gpt-4"), random.Random(1))
    assert (same.model, same.rule, same.targets[0]) == (
        "gpt-4o-mini",
        "alias",
        Target("gpt-4o-mini", "openai"),
    )
    cross = decide(s, call("gpt-x"), random.Random(1))
    assert cross.targets[0] == Target("claude-sonnet-4-6", "anthropic", cross=True)


def test_cross_provider_alias_is_not_applied_to_a_request_it_cannot_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = settings({"aliases": [{"from": "gpt-x", "to": "claude-sonnet-4-6"}]})
    embeddings = decide(s, call("gpt-x", kind="embeddings"), random.Random(1))
    assert embeddings.model == "gpt-x" and embeddings.rule is None and embeddings.notes
    monkeypatch.delenv("TL_UNIT_ANTHROPIC")
    no_key = decide(s, call("gpt-x"), random.Random(1))
    assert no_key.model == "gpt-x" and "api_key_env" in no_key.notes[0]


def test_weighted_choice_over_1000_calls_is_within_5_points() -> None:
    weights = [("gpt-4o-mini", 70), ("gpt-4.1-mini", 20), ("gpt-4o", 10)]
    s = settings({"weights": [{"source": "agent", "rules": [{"model": m, "weight": w} for m, w in weights]}]})
    rng = random.Random(20240601)
    counts = Counter(decide(s, call("gpt-4o", source="agent"), rng).model for _ in range(1000))
    for model, weight in weights:
        assert abs(counts[model] / 1000 * 100 - weight) <= 5, counts
    other = decide(s, call("gpt-4o", source="someone-else"), rng)
    assert other.model == "gpt-4o" and other.rule is None


def test_weights_apply_only_where_the_provider_serves_the_models() -> None:
    s = settings({"weights": [{"source": "agent", "rules": [{"model": "claude-haiku-4-5", "weight": 1}]}]})
    assert decide(s, call("gpt-4o", source="agent"), random.Random(1)).model == "gpt-4o"
    assert (
        decide(s, call("claude-opus-4-6", "anthropic", source="agent"), random.Random(1)).model
        == "claude-haiku-4-5"
    )


class FixedChooser:
    def __init__(self, pick: str) -> None:
        self.pick = pick
        self.asked: list[Sequence[str]] = []

    def choose(self, models: Sequence[str], stream: bool, rng: random.Random) -> str:
        self.asked.append(list(models))
        return self.pick


def test_latency_group_asks_the_tracker_and_chains_apply_to_the_routed_model() -> None:
    s = settings(
        {
            "latency_groups": [{"name": "fast", "models": ["gpt-4o-mini", "gpt-4.1-mini"]}],
            "fallback_chains": [
                {"trigger_model": "gpt-4.1-mini", "fallbacks": ["gpt-4o-mini", "gemini-2.5-flash"]},
                {"trigger_model": "gpt-4.1-mini", "fallbacks": ["gpt-3.5-turbo"]},
            ],
        }
    )
    chooser = FixedChooser("gpt-4.1-mini")
    route = decide(s, call("fast"), random.Random(1), chooser)
    assert chooser.asked == [["gpt-4o-mini", "gpt-4.1-mini"]]
    assert route.rule == "latency" and route.requested == "fast"
    assert route.targets == (
        Target("gpt-4.1-mini", "openai"),
        Target("gpt-4o-mini", "openai"),
        Target("gemini-2.5-flash", "google", cross=True),
    )


def test_chain_skips_fallbacks_the_request_cannot_reach() -> None:
    s = settings(
        {
            "fallback_chains": [
                {"trigger_model": "claude-opus-4-6", "fallbacks": ["gpt-4o", "claude-haiku-4-5"]}
            ]
        }
    )
    route = decide(s, call("claude-opus-4-6", "anthropic"), random.Random(1))
    assert [t.model for t in route.targets] == ["claude-opus-4-6", "claude-haiku-4-5"] and route.notes


def test_requests_for_targets() -> None:
    providers = settings({}).providers
    body = json.dumps({"model": "gpt-4o", "messages": [], "stream": True}).encode()
    base = RequestParts(
        "POST",
        "https://api.openai.com/v1/chat/completions",
        (("authorization", "Bearer sk"), ("x-a", "1")),
        body,
    )
    same = request_for("openai", base, "gpt-4o", Target("gpt-4o-mini", "openai"), providers)
    assert json.loads(same.body) == {"model": "gpt-4o-mini", "messages": [], "stream": True}
    assert same.url == base.url and same.headers == base.headers
    cross = request_for("openai", base, "gpt-4o", Target("claude-haiku-4-5", "anthropic", True), providers)
    assert cross.url == "https://api.anthropic.com/v1/chat/completions"
    assert dict(cross.headers) == {"x-a": "1", "authorization": "Bearer ant-key", "x-api-key": "ant-key"}
    gem = request_for("openai", base, "gpt-4o", Target("gemini-2.5-flash", "google", True), providers)
    assert gem.url == "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
    assert dict(gem.headers)["authorization"] == "Bearer goo-key"
    google = RequestParts(
        "POST", "https://g.example/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", (), b"{}"
    )
    moved = request_for("google", google, "gemini-2.5-pro", Target("gemini-2.5-flash", "google"), providers)
    assert moved.url == "https://g.example/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert moved.body == b"{}"


def knows_only(*models: str) -> Any:
    return lambda provider, model: model in models


def test_check_rejects_cross_provider_rules_that_cannot_be_served() -> None:
    with pytest.raises(ConfigError) as bad:
        check_routing(settings({"aliases": [{"from": "claude-opus-4-6", "to": "gpt-4o"}]}), knows_only())
    assert bad.value.field == "routing.aliases[0].to" and "OpenAI chat-completions" in str(bad.value)
    no_key = {**PROVIDERS, "anthropic": {"upstream": "https://api.anthropic.com"}}
    with pytest.raises(ConfigError) as missing:
        check_routing(
            settings(
                {
                    "fallback_chains": [
                        {"trigger_model": "gpt-4o", "fallbacks": ["gpt-4o-mini", "claude-haiku-4-5"]}
                    ]
                },
                no_key,
            ),
            knows_only(),
        )
    assert missing.value.field == "routing.fallback_chains[0].fallbacks[1]"
    assert "providers.anthropic.api_key_env" in str(missing.value)


def test_check_warns_about_unknown_models_and_mixed_weights() -> None:
    s = settings(
        {
            "aliases": [{"from": "gpt-4", "to": "gpt-4o-mini"}],
            "latency_groups": [{"name": "fast", "models": ["gpt-4o-mini", "my-local-model"]}],
            "weights": [
                {
                    "source": "a",
                    "rules": [{"model": "gpt-4o", "weight": 1}, {"model": "claude-haiku-4-5", "weight": 1}],
                }
            ],
        }
    )
    warnings = check_routing(s, knows_only("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5"))
    assert any("my-local-model" in w and "latency_groups[0].models[1]" in w for w in warnings)
    assert any("routing.weights[0]" in w and "never applies" in w for w in warnings)
    assert not any("gpt-4o-mini" in w for w in warnings)
