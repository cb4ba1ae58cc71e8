"""The dedup cache end to end: a real daemon with `dedup.enabled`, the official SDKs, streamed and not.

The repeat of an identical request never reaches the simulator, the client gets the same answer (text and
usage), and the repeat is recorded as `outcome: cached` with `saved_usd` equal to the first call's cost.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.genai import types

from harness.gateway import Clients, Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator


@pytest.fixture(scope="module")
def dedup_gateway(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home: Path = tmp_path_factory.mktemp("tokenlens-dedup")
    config = home / "config.yaml"
    write_config(config, sims, "dedup: {enabled: true, ttl_s: 300, max_entries: 100}\n")
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


@pytest.fixture
def dclients(dedup_gateway: Gateway, proxy_env: Callable[[], None]) -> Clients:
    return Clients(dedup_gateway, f"dedup-{uuid.uuid4().hex[:10]}", proxy_env)


def twice(clients: Clients, provider: str, call: Callable[[], Any]) -> tuple[Any, Any, int]:
    """Run `call` twice; the answers and how many requests reached the simulator in all."""
    sim = clients.sim(provider)
    before = len(sim.requests)
    first = call()
    second = call()
    return first, second, len(sim.requests) - before


def assert_recorded(gateway: Gateway, source: str) -> None:
    first, repeat = gateway.wait_calls(source, 2)
    assert first["outcome"] == "ok" and first["cost_usd"] > 0
    assert repeat["outcome"] == "cached" and repeat["status"] == 200
    assert repeat["saved_usd"] == pytest.approx(first["cost_usd"])
    assert repeat["cost_usd"] == 0 and repeat["input_tokens"] == 0
    assert repeat["details"]["dedup"]["hit_of"] == first["id"]
    assert repeat["stream"] == first["stream"]


def test_openai_chat(dclients: Clients, dedup_gateway: Gateway) -> None:
    client = dclients.openai()
    req = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "dedup me " + dclients.source}]}
    first, second, reached = twice(dclients, "openai", lambda: client.chat.completions.create(**req))
    assert reached == 1
    assert second.model_dump() == first.model_dump()
    assert first.usage is not None and first.usage.prompt_tokens > 0
    assert_recorded(dedup_gateway, dclients.source)


def test_openai_chat_stream_without_usage_requested(dclients: Clients, dedup_gateway: Gateway) -> None:
    client = dclients.openai()
    req = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "stream " + dclients.source}]}

    def run() -> list[dict[str, Any]]:
        return [c.model_dump() for c in client.chat.completions.create(**req, stream=True)]

    first, second, reached = twice(dclients, "openai", run)
    assert reached == 1
    assert second == first
    assert all(chunk["usage"] is None for chunk in first)  # the injected usage chunk stays removed
    assert "".join(c["choices"][0]["delta"]["content"] or "" for c in first if c["choices"])
    assert_recorded(dedup_gateway, dclients.source)


def test_openai_chat_stream_with_usage(dclients: Clients, dedup_gateway: Gateway) -> None:
    client = dclients.openai()
    req = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "usage " + dclients.source}],
        "stream_options": {"include_usage": True},
    }

    def run() -> list[dict[str, Any]]:
        return [c.model_dump() for c in client.chat.completions.create(**req, stream=True)]

    first, second, reached = twice(dclients, "openai", run)
    assert reached == 1 and second == first and first[-1]["usage"]["prompt_tokens"] > 0
    assert_recorded(dedup_gateway, dclients.source)


def test_anthropic_messages(dclients: Clients, dedup_gateway: Gateway) -> None:
    client = dclients.anthropic()
    req = {
        "model": "claude-haiku-4-5",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "dedup " + dclients.source}],
    }
    first, second, reached = twice(dclients, "anthropic", lambda: client.messages.create(**req))
    assert reached == 1
    assert second.content[0].text == first.content[0].text and second.usage == first.usage
    assert second.model_dump() == first.model_dump()
    assert_recorded(dedup_gateway, dclients.source)


def test_anthropic_stream(dclients: Clients, dedup_gateway: Gateway) -> None:
    client = dclients.anthropic()
    req = {
        "model": "claude-haiku-4-5",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "stream " + dclients.source}],
    }

    def run() -> tuple[str, Any]:
        with client.messages.stream(**req) as stream:
            text = "".join(stream.text_stream)
            return text, stream.get_final_message()

    (text1, final1), (text2, final2), reached = twice(dclients, "anthropic", run)
    assert reached == 1
    assert text1 and text2 == text1 and final2.usage == final1.usage and final1.usage.output_tokens > 0
    assert_recorded(dedup_gateway, dclients.source)


def test_google_generate_content(dclients: Clients, dedup_gateway: Gateway) -> None:
    client = dclients.google()

    def run() -> Any:
        return client.models.generate_content(
            model="gemini-2.5-flash",
            contents="dedup " + dclients.source,
            config=types.GenerateContentConfig(system_instruction="Answer in one line"),
        )

    first, second, reached = twice(dclients, "google", run)
    assert reached == 1
    assert first.text and second.text == first.text and second.usage_metadata == first.usage_metadata
    assert_recorded(dedup_gateway, dclients.source)


def test_google_stream(dclients: Clients, dedup_gateway: Gateway) -> None:
    client = dclients.google()

    def run() -> tuple[str, Any]:
        chunks = list(
            client.models.generate_content_stream(
                model="gemini-2.5-flash", contents="stream " + dclients.source
            )
        )
        return "".join(c.text or "" for c in chunks), chunks[-1].usage_metadata

    (text1, usage1), (text2, usage2), reached = twice(dclients, "google", run)
    assert reached == 1
    assert text1 and text2 == text1 and usage2 == usage1 and usage1.prompt_token_count > 0
    assert_recorded(dedup_gateway, dclients.source)


def test_a_different_credential_or_body_is_not_served_from_cache(
    dclients: Clients, dedup_gateway: Gateway
) -> None:
    import openai

    req = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "cred " + dclients.source}]}
    sim = dclients.sim("openai")
    before = len(sim.requests)
    dclients.openai().chat.completions.create(**req)
    other = openai.OpenAI(
        base_url=dedup_gateway.base_url("openai"),
        api_key="sk-other",
        max_retries=0,
        default_headers=dclients.headers(),
    )
    other.chat.completions.create(**req)
    dclients.openai().chat.completions.create(**{**req, "temperature": 0.5})
    assert len(sim.requests) - before == 3


def test_errors_are_never_cached(dclients: Clients, dedup_gateway: Gateway) -> None:
    import openai

    req = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fail " + dclients.source}]}
    client = dclients.openai(headers={"x-sim-status": "500"})
    sim = dclients.sim("openai")
    before = len(sim.requests)
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(**req)
    assert len(sim.requests) - before == 2
