"""OpenAI through the gateway with the official SDK, in base-URL and HTTPS_PROXY mode, streamed and not."""

from __future__ import annotations

import httpx
import openai
import pytest

from harness.expect import assert_metered, sse_events
from harness.gateway import Clients, Gateway
from provider_sim import reply_text

MODES = ["base_url", "proxy"]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway tests please"},
]


@pytest.mark.parametrize("mode", MODES)
def test_chat_not_streamed(clients: Clients, gateway: Gateway, mode: str) -> None:
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 64}
    via = clients.openai(mode).chat.completions.create(**request)
    direct = clients.openai("direct").chat.completions.create(**request)
    assert (
        via.choices[0].message.content
        == direct.choices[0].message.content
        == reply_text("openai", "chat", request)
    )
    assert via.usage == direct.usage and via.model == direct.model
    (call,) = gateway.wait_calls(clients.source)
    assert_metered(call, clients.sim("openai"), "openai", "chat", request, "gpt-4o-mini")
    assert (call["provider"], call["endpoint"], call["mode"], call["stream"]) == (
        "openai",
        "/v1/chat/completions",
        mode,
        False,
    )
    assert (call["requested_model"], call["model"], call["max_tokens"]) == ("gpt-4o-mini", "gpt-4o-mini", 64)
    assert call["response_model"] == via.model


@pytest.mark.parametrize("mode", MODES)
def test_stream_without_include_usage_is_exactly_what_the_client_asked_for(
    clients: Clients, gateway: Gateway, mode: str
) -> None:
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    via = list(clients.openai(mode).chat.completions.create(**request))
    direct = list(clients.openai("direct").chat.completions.create(**request))
    assert len(via) == len(direct) and all(c.usage is None for c in via)
    text = "".join(c.choices[0].delta.content or "" for c in via if c.choices)
    assert text == reply_text("openai", "chat", request)
    upstream_saw = clients.sim("openai").requests[-2]  # before the direct call
    assert upstream_saw.json()["stream_options"] == {"include_usage": True}
    (call,) = gateway.wait_calls(clients.source)
    assert_metered(
        call,
        clients.sim("openai"),
        "openai",
        "chat",
        {**request, "stream_options": {"include_usage": True}},
        "gpt-4o-mini",
    )
    assert call["stream"] is True and call["ttft_ms"] is not None and call["ttft_ms"] <= call["latency_ms"]


@pytest.mark.parametrize("mode", MODES)
def test_stream_with_include_usage(clients: Clients, gateway: Gateway, mode: str) -> None:
    request = {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"x-sim-cache-read": "4", "x-sim-reasoning": "5"}
    via = list(clients.openai(mode, headers).chat.completions.create(**request))
    direct = list(clients.openai("direct", headers).chat.completions.create(**request))
    assert via[-1].usage == direct[-1].usage and via[-1].usage is not None
    assert clients.sim("openai").requests[-2].json() == request
    (call,) = gateway.wait_calls(clients.source)
    assert_metered(call, clients.sim("openai"), "openai", "chat", request, "gpt-4o", headers)
    assert call["cache_read_tokens"] == 4 and call["reasoning_tokens"] == 5


@pytest.mark.parametrize("mode", MODES)
def test_responses_streamed_and_not(clients: Clients, gateway: Gateway, mode: str) -> None:
    request = {"model": "gpt-4o-mini", "input": "Tell the gateway something short", "max_output_tokens": 100}
    client = clients.openai(mode)
    answer = client.responses.create(**request)
    assert answer.output_text == reply_text("openai", "responses", request)
    with client.responses.stream(**request) as stream:
        final = stream.get_final_response()
    assert final.output_text == answer.output_text and final.usage == answer.usage
    plain, streamed = gateway.wait_calls(clients.source, 2)
    for call in (plain, streamed):
        assert_metered(call, clients.sim("openai"), "openai", "responses", request, "gpt-4o-mini")
        assert call["endpoint"] == "/v1/responses" and call["max_tokens"] == 100
    assert (plain["stream"], streamed["stream"]) == (False, True)


@pytest.mark.parametrize("mode", MODES)
def test_embeddings_and_legacy_completions(clients: Clients, gateway: Gateway, mode: str) -> None:
    client = clients.openai(mode)
    embedding = {"model": "text-embedding-3-small", "input": ["one two three", "four five"]}
    result = client.embeddings.create(**embedding)
    assert len(result.data) == 2
    completion = {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 20}
    legacy = client.completions.create(**completion)
    assert legacy.choices[0].text
    streamed = list(client.completions.create(**completion, stream=True))
    assert all(c.usage is None for c in streamed)
    emb_call, comp_call, stream_call = gateway.wait_calls(clients.source, 3)
    sim = clients.sim("openai")
    assert_metered(emb_call, sim, "openai", "embeddings", embedding, "text-embedding-3-small")
    assert_metered(comp_call, sim, "openai", "completions", completion, "gpt-3.5-turbo-instruct")
    assert_metered(
        stream_call,
        sim,
        "openai",
        "completions",
        {**completion, "stream": True, "stream_options": {"include_usage": True}},
        "gpt-3.5-turbo-instruct",
    )


def test_stream_bytes_match_direct(clients: Clients, gateway: Gateway) -> None:
    """At the HTTP level: the same events, in the same framing, as the simulator sends directly."""
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    sim = clients.sim("openai")
    via = httpx.post(
        f"{gateway.base_url('openai')}/chat/completions", json=request, headers=clients.headers()
    )
    direct = httpx.post(f"{sim.base_url('openai')}/chat/completions", json=request)
    assert via.status_code == direct.status_code == 200
    assert via.headers["content-type"] == direct.headers["content-type"]
    assert sse_events(via.content) == sse_events(direct.content)
    assert via.content.endswith(b"data: [DONE]\n\n")


def test_dated_model_name_is_priced(clients: Clients, gateway: Gateway) -> None:
    request = {"model": "gpt-4o-2024-08-06", "messages": MESSAGES}
    clients.openai().chat.completions.create(**request)
    (call,) = gateway.wait_calls(clients.source)
    assert_metered(call, clients.sim("openai"), "openai", "chat", request, "gpt-4o")


def test_unknown_model_is_recorded_unpriced_not_free(clients: Clients, gateway: Gateway) -> None:
    request = {"model": "my-private-finetune-xyz", "messages": MESSAGES}
    clients.openai().chat.completions.create(**request)
    (call,) = gateway.wait_calls(clients.source)
    assert call["priced"] is False and call["cost_usd"] is None
    assert (
        call["input_tokens"]
        == clients.sim("openai").expected_usage("openai", "chat", request)["input_tokens"]
    )


def test_upstream_error_reaches_the_client_unchanged(clients: Clients, gateway: Gateway) -> None:
    request = {"model": "gpt-4o-mini", "messages": MESSAGES}
    with pytest.raises(openai.InternalServerError) as via:
        clients.openai(headers={"x-sim-status": "503"}).chat.completions.create(**request)
    with pytest.raises(openai.InternalServerError) as direct:
        clients.openai("direct", headers={"x-sim-status": "503"}).chat.completions.create(**request)
    assert via.value.status_code == direct.value.status_code == 503
    assert via.value.body == direct.value.body
    (call,) = gateway.wait_calls(clients.source)
    assert (call["status"], call["outcome"], call["cost_usd"]) == (503, "error", 0.0)


def test_user_added_openai_compatible_provider(clients: Clients, gateway: Gateway) -> None:
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    client = openai.OpenAI(
        base_url=f"{gateway.url}/proxy/compat",
        api_key="sk-test",
        max_retries=0,
        default_headers=clients.headers(),
    )
    text = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(**request) if c.choices
    )
    assert text == reply_text("openai", "chat", request)
    assert clients.sim("openai").requests[-1].path == "/v1/chat/completions"
    (call,) = gateway.wait_calls(clients.source)
    assert call["provider"] == "compat"
    usage = clients.sim("openai").expected_usage(
        "openai", "chat", {**request, "stream_options": {"include_usage": True}}
    )
    assert (call["input_tokens"], call["output_tokens"]) == (usage["input_tokens"], usage["output_tokens"])
    # a user-added provider is priced only by its own price entries or an override, never as OpenAI's model
    assert (call["priced"], call["cost_usd"], call["price_source"]) == (False, None, None)
