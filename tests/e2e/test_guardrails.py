"""Guardrails end to end: the real daemon, the provider simulators and the official SDKs.

Requests: PII in the user's message under warn, block and redact, for each provider, streamed and not.
Answers: the simulator's reply is fixed text without PII and it cannot be made to echo, so response scanning
is exercised with a custom rule matching the reply ("lazy dog"); custom rules scan answers whenever
`response_pii_detection` is enabled. PII split across real SSE events is covered by tests/addons.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.gateway import Clients, Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator, reply_text

EMAIL = "maria.gonzalez@acme-corp.com"
PROVIDERS = ["openai", "anthropic", "google"]


@pytest.fixture(scope="module")
def guard_gateway(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("tokenlens-guardrails")
    config = home / "config.yaml"
    write_config(config, sims)
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


@pytest.fixture
def gclients(guard_gateway: Gateway, proxy_env: Callable[[], None]) -> Clients:
    return Clients(guard_gateway, f"guard-{uuid.uuid4().hex[:10]}", proxy_env)


def configure(gateway: Gateway, body: dict[str, Any]) -> None:
    response = httpx.put(f"{gateway.url}/api/config/guardrails", json=body, timeout=10)
    assert response.status_code == 200, response.text


def ask(clients: Clients, provider: str, text: str, stream: bool) -> str:
    """The answer's text through the gateway, as the SDK gives it."""
    if provider == "openai":
        client = clients.openai()
        messages = [{"role": "user", "content": text}]
        if stream:
            chunks = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return str(
            client.chat.completions.create(model="gpt-4o-mini", messages=messages).choices[0].message.content
        )
    if provider == "anthropic":
        client = clients.anthropic()
        request = {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
        }
        if stream:
            with client.messages.stream(**request) as events:
                return "".join(events.text_stream)
        return str(client.messages.create(**request).content[0].text)
    client = clients.google()
    if stream:
        return "".join(
            c.text or ""
            for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents=text)
        )
    return str(client.models.generate_content(model="gemini-2.5-flash", contents=text).text)


def sdk_errors() -> tuple[type[BaseException], ...]:
    import anthropic
    import openai
    from google.genai import errors

    return (openai.APIError, anthropic.APIError, errors.APIError)


def status_of(error: BaseException) -> int | None:
    return getattr(error, "status_code", None) or getattr(error, "code", None)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_request_block_warn_redact(gclients: Clients, provider: str, stream: bool) -> None:
    gateway, sim = gclients.gateway, gclients.sim(provider)
    text = f"Please write to {EMAIL} about the refund"

    configure(gateway, {"pii_detection": {"enabled": True, "action": "block"}})
    before = len(sim.requests)
    with pytest.raises(sdk_errors()) as raised:
        ask(gclients, provider, text, stream)
    assert (
        status_of(raised.value) == 400 and "pii.email" in str(raised.value) and EMAIL not in str(raised.value)
    )
    assert len(sim.requests) == before  # nothing reached the upstream

    configure(gateway, {"pii_detection": {"enabled": True, "action": "redact"}})
    assert ask(gclients, provider, text, stream)
    forwarded = sim.last_request.body.decode()
    assert EMAIL not in forwarded and "Please write to [EMAIL_1] about the refund" in forwarded

    configure(gateway, {"pii_detection": {"enabled": True, "action": "warn"}})
    assert ask(gclients, provider, text, stream)
    assert EMAIL in sim.last_request.body.decode()

    blocked, redacted, warned = gateway.wait_calls(gclients.source, 3)
    assert (blocked["outcome"], blocked["blocked_by"], blocked["status"]) == ("blocked", "guardrail", 400)
    for call, action in ((blocked, "block"), (redacted, "redact"), (warned, "warn")):
        assert [(f["rule"], f["action"], f["where"]) for f in call["guardrail_flags"]] == [
            ("pii.email", action, "request")
        ]
        stored = gateway.call(call["id"])
        assert EMAIL not in str(stored.get("request_body")) and EMAIL not in str(stored.get("details"))
    assert warned["outcome"] == redacted["outcome"] == "ok"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_response_warn_block_redact(gclients: Clients, provider: str, stream: bool) -> None:
    gateway = gclients.gateway
    reply = reply_text("openai", "chat", {"messages": [{"role": "user", "content": "hello there"}]})
    assert "lazy dog" in reply  # the simulator's reply sentence is the same for every provider

    def rule(action: str) -> dict[str, Any]:
        return {
            "response_pii_detection": {"enabled": True, "action": "warn"},
            "custom_rules": [{"name": "lazy-dog", "pattern": "lazy dog", "action": action}],
        }

    configure(gateway, rule("warn"))
    assert ask(gclients, provider, "hello there", stream) == reply

    configure(gateway, rule("block"))
    with pytest.raises(sdk_errors()) as raised:
        ask(gclients, provider, "hello there", stream)
    assert "custom.lazy-dog" in str(raised.value)

    configure(gateway, rule("redact"))  # streamed too: the held events carrying the match are rewritten
    assert ask(gclients, provider, "hello there", stream) == reply.replace("lazy dog", "[LAZY_DOG_1]")

    warned, blocked, redacted = gateway.wait_calls(gclients.source, 3)
    assert warned["outcome"] == "ok" and warned["guardrail_flags"][0]["where"] == "response"
    assert (blocked["outcome"], blocked["blocked_by"]) == ("blocked", "guardrail")
    assert blocked["output_tokens"] > 0  # the upstream answered and was paid for
    assert redacted["outcome"] == "ok" and redacted["guardrail_flags"][0]["action"] == "redact"
    for call in (warned, blocked, redacted):
        assert "lazy dog" not in str(gateway.call(call["id"]).get("response_body") or "")
    configure(gateway, {})


def test_fixture_home_is_separate(guard_gateway: Gateway) -> None:
    assert Path(guard_gateway.home).exists()
