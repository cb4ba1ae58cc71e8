"""`PUT /api/config/routing` (docs/analytics-api.md): cross-provider rules that cannot be served are refused with 400 naming the
field; unknown model names are accepted with warnings; a valid change applies to the next request."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness.gateway import Clients, Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def gateway(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("tokenlens-routing-config")
    config = home / "config.yaml"
    write_config(config, sims)
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


def put(gateway: Gateway, body: object) -> httpx.Response:
    return httpx.put(f"{gateway.url}/api/config/routing", json=body, timeout=10)


def test_cross_provider_rule_from_a_non_openai_format_is_refused(gateway: Gateway) -> None:
    answer = put(gateway, {"aliases": [{"from": "claude-opus-4-6", "to": "gpt-4o"}]})
    assert answer.status_code == 400
    assert answer.json()["field"] == "routing.aliases[0].to" and "OpenAI" in answer.json()["error"]
    assert httpx.get(f"{gateway.url}/api/config/routing").json()["aliases"] == []


def test_cross_provider_rule_without_a_key_variable_is_refused(gateway: Gateway) -> None:
    chain = {"trigger_model": "gpt-4o", "fallbacks": ["gpt-4o-mini", "gemini-2.5-flash"]}
    answer = put(gateway, {"fallback_chains": [chain]})
    assert answer.status_code == 400
    assert answer.json()["field"] == "routing.fallback_chains[0].fallbacks[1]"
    assert "providers.google.api_key_env" in answer.json()["error"]


def test_unknown_models_are_accepted_with_a_warning_and_apply_at_once(
    clients: Clients, gateway: Gateway
) -> None:
    answer = put(gateway, {"aliases": [{"from": "gpt-4o", "to": "gpt-no-such-model-9"}]})
    assert answer.status_code == 200
    assert any("gpt-no-such-model-9" in w for w in answer.json()["warnings"])
    clients.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert clients.sim("openai").requests[-1].json()["model"] == "gpt-no-such-model-9"
    (call,) = gateway.wait_calls(clients.source)
    assert (call["requested_model"], call["model"], call["priced"]) == (
        "gpt-4o",
        "gpt-no-such-model-9",
        False,
    )
    assert put(gateway, {}).status_code == 200
