"""The provider simulator, driven by the official SDKs (openai, anthropic, google-genai) and raw sockets.

Expected numbers come from the documented rule (provider_sim.usage), some written out by hand here.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from provider_sim import Simulator, expected_usage, reply_text, thinking_text

REPLY_12 = "The quick brown fox jumps over the lazy dog while the simulator"
CLAUDE = "claude-sonnet-4-6"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: Simulator) -> None:
    sim.clear()
    sim.set_default_headers({})


@pytest.fixture
def oai(sim: Simulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url("openai"), api_key="sk-test", max_retries=0, timeout=10)


@pytest.fixture
def ant(sim: Simulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=sim.base_url("anthropic"), api_key="sk-ant-test", max_retries=0, timeout=10
    )


@pytest.fixture
def gem(sim: Simulator) -> genai.Client:
    return genai.Client(
        api_key="g-test",
        http_options=genai_types.HttpOptions(base_url=sim.base_url("google"), api_version="v1beta"),
    )


# ---- mapping each provider's usage back to the normalised fields (the docs/gateway.md#metering rules) -------------


def norm_openai_chat(u: Any) -> dict[str, int | None]:
    details = u.prompt_tokens_details
    return {
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.completion_tokens,
        "cache_read_tokens": details.cached_tokens or 0,
        "cache_write_tokens": details.cache_write_tokens or 0,
        "cache_write_5m_tokens": None,
        "cache_write_1h_tokens": None,
        "reasoning_tokens": u.completion_tokens_details.reasoning_tokens or 0,
    }


def norm_openai_responses(u: Any) -> dict[str, int | None]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.input_tokens_details.cached_tokens or 0,
        "cache_write_tokens": u.input_tokens_details.cache_write_tokens or 0,
        "cache_write_5m_tokens": None,
        "cache_write_1h_tokens": None,
        "reasoning_tokens": u.output_tokens_details.reasoning_tokens or 0,
    }


def norm_anthropic(u: Any) -> dict[str, int | None]:
    details = u.output_tokens_details
    return {
        "input_tokens": u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_input_tokens,
        "cache_write_tokens": u.cache_creation_input_tokens,
        "cache_write_5m_tokens": u.cache_creation.ephemeral_5m_input_tokens,
        "cache_write_1h_tokens": u.cache_creation.ephemeral_1h_input_tokens,
        "reasoning_tokens": details.thinking_tokens if details else 0,
    }


def norm_google(u: Any) -> dict[str, int | None]:
    return {
        "input_tokens": u.prompt_token_count + (u.tool_use_prompt_token_count or 0),
        "output_tokens": (u.candidates_token_count or 0) + (u.thoughts_token_count or 0),
        "cache_read_tokens": u.cached_content_token_count or 0,
        "cache_write_tokens": 0,
        "cache_write_5m_tokens": None,
        "cache_write_1h_tokens": None,
        "reasoning_tokens": u.thoughts_token_count or 0,
    }


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """(event name, data) of every SSE event in a body."""
    out = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((name, "\n".join(data)))
    return out


# ---- the rule itself, by hand -------------------------------------------------------------------------


def test_rule_by_hand() -> None:
    chat = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there friend"},
        ],
    }
    assert expected_usage("openai", "/v1/chat/completions", chat) == {
        "input_tokens": 4 + 2 + 4 + 3,
        "output_tokens": 12,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cache_write_5m_tokens": None,
        "cache_write_1h_tokens": None,
        "reasoning_tokens": 0,
    }
    assert reply_text("openai", "chat", chat) == REPLY_12
    knobs = {
        "x-sim-cache-read": "100",
        "x-sim-cache-write": "20",
        "x-sim-cache-write-1h": "7",
        "x-sim-reasoning": "30",
    }
    claude = {
        "model": CLAUDE,
        "max_tokens": 100,
        "system": [{"type": "text", "text": "you are a helpful bot"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "one two"}]}],
    }
    assert expected_usage("anthropic", "messages", claude, knobs) == {
        "input_tokens": (4 + 5) + (4 + 2) + 100 + 20 + 7,
        "output_tokens": 12 + 30,
        "cache_read_tokens": 100,
        "cache_write_tokens": 27,
        "cache_write_5m_tokens": 20,
        "cache_write_1h_tokens": 7,
        "reasoning_tokens": 30,
    }
    assert thinking_text("anthropic", "messages", claude, {"x-sim-reasoning": "3"}) == "Let me think"
    gemini = {
        "contents": [{"role": "user", "parts": [{"text": "a b c"}]}],
        "systemInstruction": {"parts": [{"text": "x"}]},
    }
    assert expected_usage("google", "generateContent", gemini, knobs) == {
        "input_tokens": (4 + 1) + (4 + 3) + 100,  # Gemini has no cache writes
        "output_tokens": 42,
        "cache_read_tokens": 100,
        "cache_write_tokens": 0,
        "cache_write_5m_tokens": None,
        "cache_write_1h_tokens": None,
        "reasoning_tokens": 30,
    }
    embed = expected_usage("openai", "embeddings", {"input": ["a b", "c d e"]}, knobs)
    assert (embed["input_tokens"], embed["output_tokens"], embed["cache_read_tokens"]) == (5, 0, 0)
    tools = [{"type": "function", "function": {"name": "f"}}]  # json.dumps -> 5 words
    with_tools = expected_usage(
        "openai", "chat", {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    )
    assert with_tools["input_tokens"] == 4 + 1 + 5
    capped = {"model": "gpt-4o", "messages": [], "max_completion_tokens": 5}
    assert reply_text("openai", "chat", capped, {"x-sim-reply-words": "20"}) == "The quick brown fox jumps"
    assert reply_text("openai", "chat", {}, {"x-sim-reply-words": "17"}).split()[15:] == ["The", "quick"]


# ---- OpenAI --------------------------------------------------------------------------------------------


def test_openai_chat(sim: Simulator, oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hello there friend"}]
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    r = raw.parse()
    assert r.model == "gpt-4o-2024-08-06"
    assert r.choices[0].message.content == REPLY_12
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (7, 12, 19)
    assert norm_openai_chat(r.usage) == expected_usage("openai", "chat", {"messages": messages})
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    assert raw.headers["x-ratelimit-remaining-requests"] == "9999"
    assert "x-ratelimit-remaining-tokens" in raw.headers and "x-ratelimit-reset-requests" in raw.headers
    req = sim.last_request
    assert (req.method, req.path, req.json()["messages"]) == ("POST", "/v1/chat/completions", messages)
    assert req.headers["authorization"] == "Bearer sk-test"
    oai.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    assert len(sim.requests) == 2


def test_openai_chat_cache_and_reasoning(oai: openai.OpenAI) -> None:
    knobs = {
        "x-sim-cache-read": "100",
        "x-sim-cache-write": "20",
        "x-sim-reasoning": "30",
        "x-sim-reply-words": "5",
    }
    messages = [{"role": "user", "content": "hi"}]
    r = oai.chat.completions.create(model="o3-mini", messages=messages, extra_headers=knobs)  # type: ignore[arg-type]
    assert r.model == "o3-mini-2025-01-31"
    assert r.usage is not None
    assert r.usage.prompt_tokens == 5 + 120
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 100
    assert r.usage.prompt_tokens_details.cache_write_tokens == 20
    assert r.usage.completion_tokens == 35
    assert norm_openai_chat(r.usage) == expected_usage("openai", "chat", {"messages": messages}, knobs)
    assert r.choices[0].message.content == "The quick brown fox jumps"


def test_openai_chat_stream_without_usage(sim: Simulator, oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=messages, stream=True))  # type: ignore[arg-type]
    assert all(c.usage is None and c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY_12
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    raw = httpx.post(
        sim.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": messages, "stream": True}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["transfer-encoding"] == "chunked"
    assert '"usage"' not in raw.text
    assert raw.text.endswith("data: [DONE]\n\n")
    assert len(sse_events(raw.text)) == 1 + 12 + 1 + 1


def test_openai_chat_stream_with_usage(sim: Simulator, oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "one two three"}]
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-sim-cache-read": "8"},
    )
    chunks = list(stream)
    *body, last = chunks
    assert all(c.usage is None for c in body)
    assert last.choices == [] and last.usage is not None
    assert norm_openai_chat(last.usage) == expected_usage(
        "openai", "chat", {"messages": messages}, {"x-sim-cache-read": "8"}
    )
    assert last.usage.prompt_tokens == 7 + 8
    assert "".join(c.choices[0].delta.content or "" for c in body) == REPLY_12
    raw = httpx.post(
        sim.url + "/v1/chat/completions",
        json={
            "model": "gpt-4o",
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    datas = [json.loads(d) for _, d in sse_events(raw.text) if d != "[DONE]"]
    assert all("usage" in d and d["usage"] is None for d in datas[:-1])
    assert datas[-1]["choices"] == [] and datas[-1]["usage"]["prompt_tokens"] == 7
    assert raw.text.endswith("data: [DONE]\n\n")


def test_openai_responses(oai: openai.OpenAI) -> None:
    knobs = {"x-sim-reasoning": "4", "x-sim-cache-read": "3"}
    request = {"model": "gpt-4o", "input": "hello you", "instructions": "be nice"}
    r = oai.responses.create(**request, extra_headers=knobs)  # type: ignore[call-overload]
    assert r.output_text == REPLY_12
    assert r.model == "gpt-4o-2024-08-06"
    assert r.status == "completed"
    assert [item.type for item in r.output] == ["reasoning", "message"]
    assert r.usage is not None
    assert r.usage.input_tokens == (4 + 2) + (4 + 2) + 3
    assert norm_openai_responses(r.usage) == expected_usage("openai", "responses", request, knobs)


def test_openai_responses_stream(sim: Simulator, oai: openai.OpenAI) -> None:
    request = {"model": "gpt-4.1", "input": [{"role": "user", "content": "tell me"}]}
    events = list(oai.responses.create(**request, stream=True, extra_headers={"x-sim-reply-words": "3"}))  # type: ignore[call-overload]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.usage is None  # type: ignore[union-attr]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "The quick brown"  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert final.model == "gpt-4.1-2025-04-14"
    assert norm_openai_responses(final.usage) == expected_usage(
        "openai", "responses", request, {"x-sim-reply-words": "3"}
    )
    with oai.responses.stream(model="gpt-4o", input="hello you") as stream:
        assert stream.get_final_response().output_text == REPLY_12
    raw = sim.requests[-1]
    assert raw.json()["stream"] is True


def test_openai_responses_incomplete(oai: openai.OpenAI) -> None:
    events = list(
        oai.responses.create(
            model="gpt-4o",
            input="x",
            max_output_tokens=16,
            stream=True,
            extra_headers={"x-sim-reply-words": "40"},
        )
    )
    assert events[-1].type == "response.incomplete"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.usage.output_tokens == 16


def test_openai_embeddings(sim: Simulator, oai: openai.OpenAI) -> None:
    inputs = ["a b", "c d e"]
    r64 = oai.embeddings.create(model="text-embedding-3-small", input=inputs)
    assert sim.last_request.json()["encoding_format"] == "base64"  # the SDK asks for base64 and decodes it
    rf = oai.embeddings.create(
        model="text-embedding-3-small", input=inputs, encoding_format="float", dimensions=8
    )
    assert len(r64.data) == 2 and len(r64.data[0].embedding) == 16
    assert len(rf.data[1].embedding) == 8
    again = oai.embeddings.create(model="text-embedding-3-small", input=inputs, encoding_format="float")
    assert again.data[0].embedding == pytest.approx(r64.data[0].embedding)
    assert (r64.usage.prompt_tokens, r64.usage.total_tokens) == (5, 5)
    assert (
        r64.usage.prompt_tokens == expected_usage("openai", "embeddings", {"input": inputs})["input_tokens"]
    )


def test_openai_legacy_completions(sim: Simulator, oai: openai.OpenAI) -> None:
    r = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="say this please")
    assert r.choices[0].text == REPLY_12
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 12)
    chunks = list(
        oai.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="say this",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == REPLY_12
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (
        chunks[-1].usage.prompt_tokens
        == expected_usage("openai", "completions", {"prompt": "say this"})["input_tokens"]
    )
    plain = list(oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="x", stream=True))
    assert all(c.usage is None for c in plain) and plain[-1].choices[0].finish_reason == "stop"


def test_openai_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o" in ids


def test_openai_errors(sim: Simulator, oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.InternalServerError) as err:
        oai.chat.completions.create(model="gpt-4o", messages=messages, extra_headers={"x-sim-status": "503"})  # type: ignore[arg-type]
    assert err.value.status_code == 503
    assert set(err.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as rate:
        oai.chat.completions.create(model="gpt-4o", messages=messages, extra_headers={"x-sim-status": "429"})  # type: ignore[arg-type]
    assert rate.value.response.headers["x-request-id"].startswith("req_")
    with pytest.raises(openai.AuthenticationError):
        oai.chat.completions.create(model="gpt-4o", messages=messages, extra_headers={"x-sim-status": "401"})  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(
            model="gpt-4o", messages=messages, stream=True, extra_headers={"x-sim-status": "400"}
        )  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="gpt-4o", messages="nope")  # type: ignore[arg-type]


# ---- Anthropic -----------------------------------------------------------------------------------------


def test_anthropic_messages_with_cache_and_thinking(sim: Simulator, ant: anthropic.Anthropic) -> None:
    knobs = {
        "x-sim-cache-read": "50",
        "x-sim-cache-write": "20",
        "x-sim-cache-write-1h": "10",
        "x-sim-reasoning": "9",
    }
    request = {
        "model": CLAUDE,
        "max_tokens": 200,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello there"}],
    }
    raw = ant.messages.with_raw_response.create(**request, extra_headers=knobs)  # type: ignore[call-overload]
    m = raw.parse()
    assert m.model == CLAUDE
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].thinking == "Let me think about this request carefully and reason"
    assert m.content[1].text == REPLY_12
    assert m.stop_reason == "end_turn"
    u = m.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (6 + 6, 50, 30)
    assert (u.cache_creation.ephemeral_5m_input_tokens, u.cache_creation.ephemeral_1h_input_tokens) == (
        20,
        10,
    )
    assert u.output_tokens == 21
    assert norm_anthropic(u) == expected_usage("anthropic", "messages", request, knobs)
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "3999"
    assert "anthropic-ratelimit-tokens-remaining" in raw.headers
    assert "anthropic-ratelimit-requests-reset" in raw.headers
    # anthropic 2.14 sends the API key as a bearer token, not x-api-key
    assert sim.last_request.headers["authorization"] == "Bearer sk-ant-test"
    assert "anthropic-version" in sim.last_request.headers


def test_anthropic_dated_model_and_max_tokens(ant: anthropic.Anthropic) -> None:
    m = ant.messages.create(
        model="claude-haiku-4-5",
        max_tokens=4,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-sim-reply-words": "30"},
    )
    assert m.model == "claude-haiku-4-5-20251001"
    assert m.stop_reason == "max_tokens"
    assert m.content[0].text == "The quick brown fox"  # type: ignore[union-attr]
    assert m.usage.output_tokens == 4


def test_anthropic_stream(sim: Simulator, ant: anthropic.Anthropic) -> None:
    knobs = {"x-sim-cache-read": "5", "x-sim-cache-write-1h": "7", "x-sim-reasoning": "20"}
    request = {"model": CLAUDE, "max_tokens": 500, "messages": [{"role": "user", "content": "go"}]}
    with ant.messages.stream(**request, extra_headers=knobs) as stream:  # type: ignore[arg-type]
        types = [e.type for e in stream]
        final = stream.get_final_message()
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert final.content[1].text == REPLY_12  # type: ignore[union-attr]
    assert final.content[0].thinking == thinking_text("anthropic", "messages", request, knobs)  # type: ignore[union-attr]
    assert final.content[0].signature  # type: ignore[union-attr]
    assert norm_anthropic(final.usage) == expected_usage("anthropic", "messages", request, knobs)
    raw = httpx.post(sim.url + "/v1/messages", json={**request, "stream": True}, headers=knobs)
    events = sse_events(raw.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "thinking_delta" in raw.text and "signature_delta" in raw.text
    start = json.loads(events[0][1])["message"]["usage"]
    assert start["output_tokens"] == 1
    assert start["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 7}
    assert (start["input_tokens"], start["cache_read_input_tokens"]) == (5, 5)
    delta = json.loads(events[-2][1])
    assert delta["usage"]["output_tokens"] == 32 and delta["delta"]["stop_reason"] == "end_turn"
    plain = httpx.post(sim.url + "/v1/messages", json={**request, "stream": True})
    assert [n for n, _ in sse_events(plain.text)][:3] == ["message_start", "content_block_start", "ping"]
    assert "thinking" not in plain.text


def test_anthropic_count_tokens(ant: anthropic.Anthropic) -> None:
    request = {"model": CLAUDE, "system": "a b", "messages": [{"role": "user", "content": "c d e"}]}
    count = ant.messages.count_tokens(**request)  # type: ignore[arg-type]
    assert count.input_tokens == (4 + 2) + (4 + 3)
    assert count.input_tokens == expected_usage("anthropic", "count_tokens", request)["input_tokens"]


def test_anthropic_errors(ant: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
    }
    with pytest.raises(anthropic.OverloadedError) as err:
        ant.messages.create(**kwargs, extra_headers={"x-sim-status": "529"})
    assert err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert err.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as rate:
        ant.messages.create(**kwargs, extra_headers={"x-sim-status": "429"})
    assert rate.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError):
        ant.messages.create(**kwargs, stream=True, extra_headers={"x-sim-status": "500"})
    missing = httpx.post(
        ant.base_url.join("/v1/messages").__str__(), json={"model": CLAUDE, "messages": []}
    )  # the SDK itself refuses a call without max_tokens
    assert missing.status_code == 400
    assert missing.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


def test_anthropic_stream_error_event(ant: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
    }
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        with ant.messages.stream(**kwargs, extra_headers={"x-sim-stream-error": "3"}) as stream:
            stream.get_final_message()


# ---- Google --------------------------------------------------------------------------------------------


def test_google_generate_content(sim: Simulator, gem: genai.Client) -> None:
    knobs = {"x-sim-cache-read": "10", "x-sim-reasoning": "6"}
    config = genai_types.GenerateContentConfig(
        http_options=genai_types.HttpOptions(headers=knobs), system_instruction="be brief"
    )
    r = gem.models.generate_content(model="gemini-2.5-flash", contents="hello world", config=config)
    assert r.text == REPLY_12
    assert r.model_version == "gemini-2.5-flash"
    assert r.candidates and r.candidates[0].finish_reason == genai_types.FinishReason.STOP
    u = r.usage_metadata
    assert u is not None
    assert (u.prompt_token_count, u.cached_content_token_count, u.candidates_token_count) == (
        6 + 6 + 10,
        10,
        12,
    )
    assert (u.thoughts_token_count, u.total_token_count) == (6, 22 + 12 + 6)
    req = sim.last_request
    assert req.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert req.headers["x-goog-api-key"] == "g-test"
    assert norm_google(u) == expected_usage("google", "generateContent", req.json(), knobs)


def test_google_stream_sse(sim: Simulator, gem: genai.Client) -> None:
    chunks = list(gem.models.generate_content_stream(model="gemini-2.0-flash", contents="a b c"))
    assert "".join(c.text or "" for c in chunks) == REPLY_12
    assert len(chunks) == 12
    for c in chunks[:-1]:
        assert c.usage_metadata is not None and c.usage_metadata.candidates_token_count is None
        assert c.usage_metadata.prompt_token_count == c.usage_metadata.total_token_count == 7
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert last.usage_metadata is not None
    req = sim.last_request
    assert (req.path, req.query) == ("/v1beta/models/gemini-2.0-flash:streamGenerateContent", "alt=sse")
    assert norm_google(last.usage_metadata) == expected_usage("google", req.path, req.json())
    raw = httpx.post(sim.url + req.path + "?alt=sse", content=req.body)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.startswith("data: {") and raw.text.endswith("}\r\n\r\n")


def test_google_thoughts(gem: genai.Client) -> None:
    config = genai_types.GenerateContentConfig(
        thinking_config=genai_types.ThinkingConfig(include_thoughts=True),
        http_options=genai_types.HttpOptions(headers={"x-sim-reasoning": "10"}),
    )
    chunks = list(gem.models.generate_content_stream(model="gemini-2.5-pro", contents="q", config=config))
    parts = [p for c in chunks if c.candidates for p in (c.candidates[0].content.parts or [])]  # type: ignore[union-attr]
    thought = "".join(p.text or "" for p in parts if p.thought)
    assert thought == thinking_text("google", "generate", {}, {"x-sim-reasoning": "10"})
    assert "".join(p.text or "" for p in parts if not p.thought) == REPLY_12
    assert chunks[-1].usage_metadata is not None and chunks[-1].usage_metadata.thoughts_token_count == 10


def test_google_json_array_stream(sim: Simulator) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    url = sim.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=g-test"
    pieces: list[bytes] = []
    with httpx.stream(
        "POST", url, json=body, headers={"x-sim-reply-words": "3", "x-sim-chunk-delay-ms": "20"}
    ) as r:
        assert r.headers["content-type"].startswith("application/json")
        pieces = list(r.iter_raw())
    assert len(pieces) >= 3  # arrives in pieces, not as one body
    text = b"".join(pieces).decode()
    assert text.startswith("[{") and ",\r\n{" in text and text.endswith("]")
    items = json.loads(text)
    assert isinstance(items, list) and len(items) == 3
    assert "".join(i["candidates"][0]["content"]["parts"][0]["text"] for i in items) == "The quick brown"
    assert items[-1]["candidates"][0]["finishReason"] == "STOP"
    assert items[-1]["usageMetadata"]["candidatesTokenCount"] == 3
    assert (
        items[-1]["usageMetadata"]["promptTokenCount"]
        == expected_usage("google", "streamGenerateContent", body)["input_tokens"]
    )
    assert sim.last_request.params == {"key": "g-test"}


def test_google_embed(sim: Simulator, gem: genai.Client) -> None:
    r = gem.models.embed_content(model="gemini-embedding-001", contents=["a b c", "d"])
    assert r.embeddings is not None and len(r.embeddings) == 2
    assert r.embeddings[0].values is not None and len(r.embeddings[0].values) == 16
    assert sim.last_request.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert expected_usage("google", "batchEmbedContents", sim.last_request.json())["input_tokens"] == 4
    single = httpx.post(
        sim.url + "/v1beta/models/gemini-embedding-001:embedContent",
        json={"content": {"parts": [{"text": "x y"}]}, "outputDimensionality": 4},
    ).json()
    assert len(single["embedding"]["values"]) == 4
    assert single["usageMetadata"]["promptTokenCount"] == 2


def test_google_errors(gem: genai.Client) -> None:
    def call(status: str) -> None:
        config = genai_types.GenerateContentConfig(
            http_options=genai_types.HttpOptions(headers={"x-sim-status": status})
        )
        gem.models.generate_content(model="gemini-2.5-flash", contents="x", config=config)

    with pytest.raises(genai_errors.ServerError) as err:
        call("503")
    assert (err.value.code, err.value.status) == (503, "UNAVAILABLE")
    with pytest.raises(genai_errors.ClientError) as client_err:
        call("429")
    assert (client_err.value.code, client_err.value.status) == (429, "RESOURCE_EXHAUSTED")


# ---- faults and knobs ----------------------------------------------------------------------------------


def test_unknown_paths_are_404_in_provider_format(sim: Simulator) -> None:
    o = httpx.post(sim.url + "/v1/nope", json={})
    assert o.status_code == 404 and set(o.json()["error"]) == {"message", "type", "param", "code"}
    a = httpx.post(sim.url + "/v1/nope", json={}, headers={"anthropic-version": "2023-06-01"})
    assert (
        a.status_code == 404
        and a.json()["type"] == "error"
        and a.json()["error"]["type"] == "not_found_error"
    )
    g = httpx.post(sim.url + "/v1beta/models/x:nope", json={})
    assert (
        g.status_code == 404
        and g.json()["error"]["status"] == "NOT_FOUND"
        and g.json()["error"]["code"] == 404
    )


def test_cut_after_breaks_sdk_streams(
    sim: Simulator, oai: openai.OpenAI, ant: anthropic.Anthropic, gem: genai.Client
) -> None:
    cut = {"x-sim-cut-after": "4"}
    received: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        stream = oai.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=cut,
        )
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 4 and all(c.usage is None for c in received)
    # a cut far beyond the end still stops before the usage chunk
    got: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-sim-cut-after": "1000"},
        ):
            got.append(chunk)
    assert len(got) == 14 and all(c.usage is None for c in got)
    # anthropic 2.14 lets the transport error escape from a stream unwrapped
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        with ant.messages.stream(
            model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "x"}], extra_headers=cut
        ) as s:
            s.get_final_message()
    with pytest.raises(Exception) as google_err:
        config = genai_types.GenerateContentConfig(http_options=genai_types.HttpOptions(headers=cut))
        list(gem.models.generate_content_stream(model="gemini-2.5-flash", contents="x", config=config))
    assert "incomplete" in str(google_err.value).lower() or isinstance(
        google_err.value, httpx.HTTPError | OSError
    )
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            sim.url + "/v1/responses", json={"model": "gpt-4o", "input": "x", "stream": True}, headers=cut
        )


def test_garbage_and_delay(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=messages, extra_headers={"x-sim-garbage": "1"})  # type: ignore[arg-type]
    start = time.perf_counter()
    oai.chat.completions.create(model="gpt-4o", messages=messages, extra_headers={"x-sim-delay-ms": "200"})  # type: ignore[arg-type]
    assert time.perf_counter() - start >= 0.2


def test_chunk_delay_spaces_events(sim: Simulator) -> None:
    arrivals = []
    body = {"model": "gpt-4o", "messages": [], "stream": True}
    headers = {"x-sim-chunk-delay-ms": "40", "x-sim-reply-words": "3"}
    with httpx.stream("POST", sim.url + "/v1/chat/completions", json=body, headers=headers) as r:
        for _ in r.iter_raw():
            arrivals.append(time.perf_counter())
    assert len(arrivals) >= 5
    assert arrivals[-1] - arrivals[0] >= 0.04 * 4 * 0.9


def test_gzip(sim: Simulator, oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    g = {"x-sim-gzip": "1"}
    r = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers=g
    )  # type: ignore[arg-type]
    assert r.choices[0].message.content == REPLY_12
    with ant.messages.stream(
        model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "x"}], extra_headers=g
    ) as s:
        assert s.get_final_message().content[0].text == REPLY_12  # type: ignore[union-attr]
    request = {"model": CLAUDE, "max_tokens": 5, "messages": []}
    with httpx.stream("POST", sim.url + "/v1/messages", json=request, headers=g) as raw:
        assert raw.headers["content-encoding"] == "gzip"
        compressed = b"".join(raw.iter_raw())
    assert int(raw.headers["content-length"]) == len(compressed)
    assert json.loads(gzip.decompress(compressed))["content"][0]["text"] == "The quick brown fox jumps"
    # streamed gzip is flushed per event: the first event decodes before the stream ends
    body = {"model": "gpt-4o", "messages": [], "stream": True}
    with httpx.stream(
        "POST", sim.url + "/v1/chat/completions", json=body, headers={**g, "x-sim-chunk-delay-ms": "30"}
    ) as resp:
        assert resp.headers["content-encoding"] == "gzip"
        decoder = zlib.decompressobj(31)
        chunks = resp.iter_raw()
        first = decoder.decompress(next(chunks))
        assert first.startswith(b"data: {") and first.endswith(b"\n\n") and first.count(b"data: ") == 1
        rest = b"".join(decoder.decompress(c) for c in chunks)
    assert (first + rest).endswith(b"data: [DONE]\n\n")


def test_model_override_and_default_headers(
    sim: Simulator, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    r = oai.chat.completions.create(model="gpt-4o", messages=[], extra_headers={"x-sim-model": "my-model"})
    assert r.model == "my-model"
    sim.set_default_headers({"X-Sim-Reply-Words": "2", "x-sim-cache-read": "3"})
    m = ant.messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "x"}])
    assert m.content[0].text == "The quick"  # type: ignore[union-attr]
    assert norm_anthropic(m.usage) == sim.expected_usage("anthropic", "messages", sim.last_request.json())
    assert m.usage.cache_read_input_tokens == 3
    r2 = oai.chat.completions.create(model="gpt-4o", messages=[], extra_headers={"x-sim-reply-words": "4"})
    assert r2.choices[0].message.content == "The quick brown fox"  # a request header wins over the default
    assert "x-sim-reply-words" not in sim.requests[1].headers  # defaults are not recorded as received headers


def test_https_with_ca_file(sim: Simulator) -> None:
    assert sim.https_url is not None and sim.ca_file is not None
    assert sim.https_url.startswith("https://localhost:")
    with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_file)) as client:
        r = client.post(sim.https_url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
        assert r.json()["choices"][0]["message"]["content"] == REPLY_12
        ip_url = sim.https_url.replace("localhost", "127.0.0.1")
        assert client.get(ip_url + "/v1/models").status_code == 200
    assert sim.last_request.tls
    with pytest.raises(httpx.ConnectError):
        httpx.get(sim.https_url + "/v1/models")  # not trusted without the CA
    client2 = openai.OpenAI(
        base_url=sim.base_url("openai", https=True),
        api_key="k",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=sim.client_ssl_context()),
    )
    assert client2.chat.completions.create(model="gpt-4o", messages=[]).choices[0].message.content == REPLY_12


def _read_response(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest[:length], rest[length:]


def test_keep_alive_and_chunked_request_body(sim: Simulator) -> None:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "a b"}]}).encode()
    plain = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    half = len(body) // 2
    chunked = (
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])
    )
    with socket.create_connection(("127.0.0.1", sim.port)) as sock:
        sock.sendall(plain)
        head1, body1, buf = _read_response(sock, b"")
        sock.sendall(chunked)
        head2, body2, buf = _read_response(sock, buf)
        sock.sendall(plain.replace(b"Host: x", b"Host: x\r\nConnection: close"))
        head3, _, buf = _read_response(sock, buf)
        assert sock.recv(10) == b""  # closed after Connection: close
    assert head1.startswith(b"HTTP/1.1 200") and head2.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in head3.lower()
    assert json.loads(body1)["usage"]["prompt_tokens"] == 6
    assert json.loads(body2)["usage"]["prompt_tokens"] == 6
    assert [r.query for r in sim.requests] == ["", "x=1", ""]
    assert sim.requests[1].json() == json.loads(body)


def test_cli_runs_in_foreground(tmp_path: Path) -> None:
    tests_dir = Path(__file__).parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provider_sim",
            "--port",
            "0",
            "--https-port",
            "0",
            "--certs-dir",
            str(tmp_path),
        ],
        cwd=tests_dir,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        url = line.rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        r = httpx.post(url + "/v1/messages", json={"model": CLAUDE, "max_tokens": 5, "messages": []})
        assert r.json()["usage"]["output_tokens"] == 5
        https_line = proc.stdout.readline()
        assert "https://localhost:" in https_line and (tmp_path / "ca.pem").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
