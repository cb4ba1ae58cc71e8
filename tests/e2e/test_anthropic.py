"""Anthropic through the gateway with the official SDK, in base-URL and HTTPS_PROXY mode, streamed and not."""

from __future__ import annotations

import pytest

from harness.expect import assert_metered
from harness.gateway import Clients, Gateway
from provider_sim import reply_text

MODES = ["base_url", "proxy"]
CACHE = {"x-sim-cache-read": "40", "x-sim-cache-write": "20", "x-sim-cache-write-1h": "8"}
REQUEST = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 300,
    "system": "You are a careful assistant.",
    "messages": [{"role": "user", "content": "Summarise the gateway design in one line"}],
}


@pytest.mark.parametrize("mode", MODES)
def test_messages_with_both_cache_writes(clients: Clients, gateway: Gateway, mode: str) -> None:
    via = clients.anthropic(mode, CACHE).messages.create(**REQUEST)
    direct = clients.anthropic("direct", CACHE).messages.create(**REQUEST)
    assert (
        via.content[0].text == direct.content[0].text == reply_text("anthropic", "messages", REQUEST, CACHE)
    )
    assert via.usage == direct.usage
    (call,) = gateway.wait_calls(clients.source)
    assert_metered(
        call, clients.sim("anthropic"), "anthropic", "messages", REQUEST, "claude-sonnet-4-6", CACHE
    )
    assert (call["cache_read_tokens"], call["cache_write_5m_tokens"], call["cache_write_1h_tokens"]) == (
        40,
        20,
        8,
    )
    assert call["endpoint"] == "/v1/messages" and call["max_tokens"] == 300 and call["mode"] == mode


@pytest.mark.parametrize("mode", MODES)
def test_stream_with_thinking_and_usage_split_across_events(
    clients: Clients, gateway: Gateway, mode: str
) -> None:
    headers = {**CACHE, "x-sim-reasoning": "15"}
    with clients.anthropic(mode, headers).messages.stream(**REQUEST) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    with clients.anthropic("direct", headers).messages.stream(**REQUEST) as stream:
        direct = stream.get_final_message()
    assert "".join(texts) == reply_text("anthropic", "messages", REQUEST, headers)
    assert final.usage == direct.usage and [b.type for b in final.content] == ["thinking", "text"]
    (call,) = gateway.wait_calls(clients.source)
    assert_metered(
        call, clients.sim("anthropic"), "anthropic", "messages", REQUEST, "claude-sonnet-4-6", headers
    )
    assert call["stream"] is True and call["reasoning_tokens"] == 15


@pytest.mark.parametrize("mode", MODES)
def test_count_tokens_passes_through_unpriced(clients: Clients, gateway: Gateway, mode: str) -> None:
    request = {"model": REQUEST["model"], "messages": REQUEST["messages"], "system": REQUEST["system"]}
    counted = clients.anthropic(mode).messages.count_tokens(**request)
    expected = clients.sim("anthropic").expected_usage("anthropic", "count_tokens", request)["input_tokens"]
    assert counted.input_tokens == expected
    (call,) = gateway.wait_calls(clients.source)
    assert (call["endpoint"], call["status"], call["priced"], call["cost_usd"]) == (
        "/v1/messages/count_tokens",
        200,
        False,
        None,
    )


def test_path_tag_sets_the_source_and_is_removed(clients: Clients, gateway: Gateway) -> None:
    import anthropic

    tag = clients.source + "-tagged"
    client = anthropic.Anthropic(base_url=f"{gateway.url}/proxy/anthropic/{tag}", api_key="k", max_retries=0)
    client.messages.create(**REQUEST)
    assert clients.sim("anthropic").requests[-1].path == "/v1/messages"
    (call,) = gateway.wait_calls(tag)
    assert call["source"] == tag
