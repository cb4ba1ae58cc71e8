"""Usage extraction and stream summaries (docs/gateway.md#metering, shared/notes/provider-usage.md).

Every expected count below is written from the provider payload in the test, by the rules of the notes
(e.g. Anthropic input = input_tokens + cache_creation_input_tokens + cache_read_input_tokens).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from tokenlens.usage import (
    StreamParser,
    StreamSummary,
    Usage,
    endpoint_kind,
    is_usage_only_chunk,
    summarize_stream,
    usage_from_body,
)


def sse(*events: dict[str, Any] | str, named: bool = False, crlf: bool = False) -> bytes:
    """An SSE body: one `data:` event per item (a str item is sent verbatim, e.g. "[DONE]")."""
    nl = "\r\n" if crlf else "\n"
    out = []
    for ev in events:
        data = ev if isinstance(ev, str) else json.dumps(ev)
        if named and isinstance(ev, dict):
            out.append(f"event: {ev['type']}{nl}")
        out.append(f"data: {data}{nl}{nl}")
    return "".join(out).encode()


def byte_chunks(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


def random_chunks(body: bytes, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(body)), k=min(40, len(body) - 1)))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


def same_summary(a: StreamSummary, b: StreamSummary) -> None:
    assert a.usage == b.usage
    assert a.output_text == b.output_text
    assert a.model == b.model
    assert a.complete == b.complete
    assert a.events == b.events
    assert a.usage_final == b.usage_final


# ---- endpoint kinds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "path", "kind"),
    [
        ("openai", "/v1/chat/completions", "chat"),
        ("openai", "/v1/responses", "responses"),
        ("openai", "/v1/embeddings", "embeddings"),
        ("openai", "/v1/completions", "completions"),
        ("openai", "/v1/models", "other"),
        ("openai", "/v1/responses/resp_123/cancel", "other"),
        ("openai", "/api/v1/chat/completions", "chat"),  # an OpenAI-compatible server's prefix
        ("anthropic", "/v1/messages", "messages"),
        ("anthropic", "/v1/messages/count_tokens", "count_tokens"),
        ("anthropic", "/v1/messages/batches", "other"),
        ("google", "/v1beta/models/gemini-2.5-pro:generateContent", "generate"),
        ("google", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "stream_generate"),
        ("google", "/v1beta/models/text-embedding-004:embedContent", "embed"),
        ("google", "/v1beta/models/gemini-embedding-001:batchEmbedContents", "embed"),
        ("google", "/v1beta/models/gemini-2.5-pro:countTokens", "count_tokens"),
        ("google", "/v1beta/models", "other"),
        ("google", "/v1beta/cachedContents", "other"),
        # the providers' OpenAI-compatible endpoints
        ("google", "/v1beta/openai/chat/completions", "chat"),
        ("anthropic", "/v1/chat/completions", "chat"),
    ],
)
def test_endpoint_kind(api: str, path: str, kind: str) -> None:
    assert endpoint_kind(api, path) == kind


# ---- non-streamed bodies -----------------------------------------------------------------------------------


def test_openai_chat_body_with_cache_reasoning_audio() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 6, "cache_write_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 20},
        },
    }
    usage, model = usage_from_body("openai", "/v1/chat/completions", json.dumps(body).encode())
    assert model == "gpt-4o-2024-08-06"
    assert usage == Usage(
        input_tokens=2006,
        output_tokens=300,
        cache_read_tokens=1920,
        reasoning_tokens=64,
        input_audio_tokens=6,
        output_audio_tokens=20,
        service_tier="default",
        modality_tokens=(("input", "audio", 6), ("output", "audio", 20)),
    )


def test_openai_responses_body() -> None:
    body = {
        "id": "resp_1",
        "object": "response",
        "model": "o3-2025-04-16",
        "service_tier": "flex",
        "status": "completed",
        "usage": {
            "input_tokens": 5000,
            "input_tokens_details": {"cached_tokens": 4096, "cache_write_tokens": 500},
            "output_tokens": 1200,
            "output_tokens_details": {"reasoning_tokens": 1000},
            "total_tokens": 6200,
        },
        "tool_usage": {"web_search": {"num_requests": 3}},
    }
    usage, model = usage_from_body("openai", "responses", json.dumps(body).encode())
    assert model == "o3-2025-04-16"
    assert usage == Usage(
        input_tokens=5000,
        output_tokens=1200,
        cache_read_tokens=4096,
        cache_write_tokens=500,
        reasoning_tokens=1000,
        web_search_requests=3,
        service_tier="flex",
    )


def test_openai_embeddings_and_legacy_completions() -> None:
    emb = {
        "object": "list",
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    assert usage_from_body("openai", "/v1/embeddings", json.dumps(emb).encode()) == (
        Usage(input_tokens=8),
        "text-embedding-3-small",
    )
    comp = {
        "object": "text_completion",
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": "x"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    assert usage_from_body("openai", "/v1/completions", json.dumps(comp).encode()) == (
        Usage(input_tokens=5, output_tokens=7),
        "gpt-3.5-turbo-instruct",
    )


def test_anthropic_body_totals_cache_split_and_web_search() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {
            "input_tokens": 50,
            "cache_creation_input_tokens": 3000,
            "cache_read_input_tokens": 10000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
            "output_tokens": 700,
            "output_tokens_details": {"thinking_tokens": 400},
            "server_tool_use": {"web_search_requests": 2},
            "service_tier": "standard",
        },
    }
    usage, model = usage_from_body("anthropic", "/v1/messages", json.dumps(body).encode())
    assert model == "claude-sonnet-4-5-20250929"
    assert usage == Usage(
        input_tokens=50 + 3000 + 10000,
        output_tokens=700,
        cache_read_tokens=10000,
        cache_write_tokens=3000,
        cache_write_5m_tokens=1000,
        cache_write_1h_tokens=2000,
        reasoning_tokens=400,
        web_search_requests=2,
        service_tier="standard",
    )


def test_anthropic_plain_body_has_no_split_and_fast_mode_is_a_tier() -> None:
    body = {"model": "claude-haiku-4-5", "usage": {"input_tokens": 10, "output_tokens": 3, "speed": "fast"}}
    usage, _ = usage_from_body("anthropic", "messages", json.dumps(body).encode())
    assert usage == Usage(input_tokens=10, output_tokens=3, service_tier="fast", speed="fast")
    assert usage.cache_write_5m_tokens is None and usage.cache_write_1h_tokens is None


def test_openai_compatible_endpoints_of_other_providers_are_read_as_openai() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    expected = (Usage(input_tokens=12, output_tokens=3), "claude-sonnet-4-5")
    assert usage_from_body("anthropic", "/v1/chat/completions", json.dumps(body).encode()) == expected
    assert usage_from_body("google", "/v1beta/openai/chat/completions", json.dumps(body).encode()) == expected
    s = summarize_stream("google", "/v1beta/openai/chat/completions", [sse(*CHAT_EVENTS)])
    assert s.usage is not None and s.usage.input_tokens == 1500 and s.complete


def test_anthropic_count_tokens_is_not_usage() -> None:
    assert usage_from_body("anthropic", "/v1/messages/count_tokens", b'{"input_tokens": 1234}') == (
        None,
        None,
    )


def test_gemini_generate_body() -> None:
    body = {
        "candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": 1000,
            "cachedContentTokenCount": 600,
            "candidatesTokenCount": 80,
            "thoughtsTokenCount": 120,
            "toolUsePromptTokenCount": 40,
            "totalTokenCount": 1240,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 900},
                {"modality": "AUDIO", "tokenCount": 100},
            ],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 80}],
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc",
    }
    usage, model = usage_from_body(
        "google", "/v1beta/models/gemini-2.5-flash:generateContent", json.dumps(body).encode()
    )
    assert model == "gemini-2.5-flash"
    assert usage == Usage(
        input_tokens=1000 + 40,
        output_tokens=80 + 120,
        cache_read_tokens=600,
        reasoning_tokens=120,
        input_audio_tokens=100,
        modality_tokens=(("input", "text", 900), ("input", "audio", 100), ("output", "text", 80)),
    )


def test_gemini_embed_body() -> None:
    body = {
        "embedding": {"values": [0.1, 0.2]},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    }
    usage, model = usage_from_body(
        "google", "/v1beta/models/gemini-embedding-001:embedContent", json.dumps(body).encode()
    )
    assert usage == Usage(input_tokens=9)
    assert model is None


@pytest.mark.parametrize("api", ["openai", "anthropic", "google"])
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2",
        b"null",
        b"42",
        b'{"usage": "x"}',
        b'{"usage": {"prompt_tokens": "abc"}}',
        b'{"usageMetadata": {"trafficType": "ON_DEMAND"}}',
        b'{"error": {"message": "Incorrect API key", "type": "invalid_request_error", "code": "invalid_api_key"}}',
        b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
        b'{"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}',
        b"\xff\xfe\x00garbage",
    ],
)
def test_malformed_or_error_bodies_give_nothing(api: Any, body: bytes) -> None:
    endpoint = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "google": "generate"}[api]
    assert usage_from_body(api, endpoint, body) == (None, None)


# ---- OpenAI chat streams -----------------------------------------------------------------------------------


def _chat_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


CHAT_USAGE = {
    "prompt_tokens": 1500,
    "completion_tokens": 42,
    "total_tokens": 1542,
    "prompt_tokens_details": {"cached_tokens": 1280, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}
CHAT_EVENTS: list[dict[str, Any] | str] = [
    _chat_chunk({"role": "assistant", "content": ""}, usage=None),
    _chat_chunk({"content": "Hello"}, usage=None),
    _chat_chunk({"content": ', {wörld} ]"\\'}, usage=None),
    _chat_chunk(
        {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}]}, usage=None
    ),
    _chat_chunk({}, "stop", usage=None),
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "choices": [],
        "usage": CHAT_USAGE,
    },
    "[DONE]",
]
CHAT_TEXT = 'Hello, {wörld} ]"\\' + 'f{"a":1}'


def test_openai_chat_stream_with_usage_chunk() -> None:
    s = summarize_stream("openai", "/v1/chat/completions", [sse(*CHAT_EVENTS)])
    assert s.usage == Usage(
        input_tokens=1500, output_tokens=42, cache_read_tokens=1280, service_tier="default"
    )
    assert s.usage_final
    assert s.complete
    assert s.model == "gpt-4o-mini-2024-07-18"
    assert s.output_text == CHAT_TEXT
    assert s.events == len(CHAT_EVENTS)


def test_openai_chat_stream_byte_by_byte_and_random_splits() -> None:
    body = sse(*CHAT_EVENTS, crlf=True)
    whole = summarize_stream("openai", "chat", [body])
    parser = StreamParser("openai", "chat")
    for b in byte_chunks(body):
        parser.feed(b)
    same_summary(parser.summary(), whole)
    for seed in range(5):
        same_summary(summarize_stream("openai", "chat", random_chunks(body, seed)), whole)
    assert whole.usage is not None and whole.usage.input_tokens == 1500


def test_openai_chat_stream_cut_before_usage() -> None:
    body = sse(*CHAT_EVENTS[:3])
    cut = body + b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"trunc'  # half an event
    s = summarize_stream("openai", "chat", [cut])
    assert s.usage is None
    assert not s.complete
    assert not s.usage_final
    assert s.output_text == 'Hello, {wörld} ]"\\'
    assert s.model == "gpt-4o-mini-2024-07-18"


def test_openai_chat_last_event_without_blank_line_is_read() -> None:
    body = sse(*CHAT_EVENTS[:-1]) + b"data: [DONE]"
    s = summarize_stream("openai", "chat", [body])
    assert s.complete and s.usage is not None


def test_summary_mid_stream_does_not_double_count() -> None:
    parser = StreamParser("openai", "chat")
    first = b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"ab"}}]}'
    parser.feed(first)
    assert parser.summary().output_text == "ab"  # the whole (but unterminated) event is read...
    parser.feed(b"\n\n" + sse(_chat_chunk({"content": "cd"})))
    s = parser.summary()
    assert s.output_text == "abcd"  # ...and not read twice once its blank line arrives
    assert s.events == 2


def test_is_usage_only_chunk() -> None:
    final = json.dumps(CHAT_EVENTS[5]).encode()
    assert is_usage_only_chunk(final)
    assert is_usage_only_chunk(b"data: " + final)
    assert not is_usage_only_chunk(json.dumps(CHAT_EVENTS[1]).encode())  # usage null, has choices
    assert not is_usage_only_chunk(b"[DONE]")
    assert not is_usage_only_chunk(b'{"choices": [], "usage": null}')
    assert not is_usage_only_chunk(b'{"choices": [], "usage": {"prompt_tokens": 1}')  # broken JSON


# ---- OpenAI responses streams ------------------------------------------------------------------------------


def _resp(status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "auto" if usage is None else "priority",
        "usage": usage,
    }


RESP_USAGE = {
    "input_tokens": 2000,
    "input_tokens_details": {"cached_tokens": 1500},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 100},
    "total_tokens": 2300,
}


@pytest.mark.parametrize("terminal", ["response.completed", "response.incomplete", "response.failed"])
def test_openai_responses_stream(terminal: str) -> None:
    events = [
        {"type": "response.created", "sequence_number": 0, "response": _resp("in_progress", None)},
        {"type": "response.in_progress", "sequence_number": 1, "response": _resp("in_progress", None)},
        {"type": "response.reasoning_summary_text.delta", "delta": "Plan. ", "sequence_number": 2},
        {"type": "response.output_text.delta", "delta": "Hi", "sequence_number": 3},
        {"type": "response.output_text.delta", "delta": " there", "sequence_number": 4},
        {"type": "response.output_text.done", "text": "Hi there", "sequence_number": 5},
        {"type": terminal, "sequence_number": 6, "response": _resp(terminal.split(".")[1], RESP_USAGE)},
    ]
    body = sse(*events, named=True)
    s = summarize_stream("openai", "/v1/responses", byte_chunks(body))
    assert s.usage == Usage(
        input_tokens=2000,
        output_tokens=300,
        cache_read_tokens=1500,
        reasoning_tokens=100,
        service_tier="priority",
    )
    assert s.complete and s.usage_final
    assert s.output_text == "Plan. Hi there"
    assert s.model == "gpt-4o-2024-08-06"


def test_openai_responses_stream_cut() -> None:
    events = [
        {"type": "response.created", "response": _resp("in_progress", None)},
        {"type": "response.output_text.delta", "delta": "partial"},
    ]
    s = summarize_stream("openai", "responses", [sse(*events)])
    assert s.usage is None and not s.complete and s.output_text == "partial"


# ---- Anthropic streams -------------------------------------------------------------------------------------

ANTHROPIC_EVENTS: list[dict[str, Any] | str] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-sonnet-4-5-20250929",
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 1000,
                "cache_read_input_tokens": 2000,
                "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 400},
                "output_tokens": 1,
                "service_tier": "standard",
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "Let me see."},
    },
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "ping"},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello "}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "there."}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        # cumulative; null values and absent keys must not erase message_start's
        "usage": {
            "input_tokens": 25,
            "cache_read_input_tokens": None,
            "output_tokens": 350,
            "server_tool_use": {"web_search_requests": 2},
        },
    },
    {"type": "message_stop"},
]


def test_anthropic_stream_usage_split_between_start_and_delta() -> None:
    body = sse(*ANTHROPIC_EVENTS, named=True)
    s = summarize_stream("anthropic", "/v1/messages", byte_chunks(body))
    assert s.usage == Usage(
        input_tokens=25 + 1000 + 2000,
        output_tokens=350,
        cache_read_tokens=2000,
        cache_write_tokens=1000,
        cache_write_5m_tokens=600,
        cache_write_1h_tokens=400,
        web_search_requests=2,
        service_tier="standard",
    )
    assert s.complete and s.usage_final
    assert s.model == "claude-sonnet-4-5-20250929"
    assert s.output_text == "Let me see.Hello there."
    assert s.extra["stop_reason"] == "end_turn"
    same_summary(summarize_stream("anthropic", "messages", [body]), s)


def test_anthropic_stream_cut_after_message_start() -> None:
    body = sse(*ANTHROPIC_EVENTS[:8], named=True)
    s = summarize_stream("anthropic", "messages", [body])
    assert s.usage is not None and s.usage.input_tokens == 3010 and s.usage.output_tokens == 1
    assert not s.usage_final  # output must be estimated from the text
    assert not s.complete
    assert s.output_text == "Let me see.Hello "


def test_anthropic_stream_error_event() -> None:
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    s = summarize_stream("anthropic", "messages", [sse(*ANTHROPIC_EVENTS[:2], err, named=True)])
    assert s.extra["error"] == err["error"] and not s.complete


# ---- Gemini streams ----------------------------------------------------------------------------------------

GEMINI_CHUNKS: list[dict[str, Any]] = [
    {
        "candidates": [
            {"content": {"parts": [{"text": "Thinking {about} [it]", "thought": True}], "role": "model"}}
        ],
        "usageMetadata": {"promptTokenCount": 250000, "totalTokenCount": 250000},
        "modelVersion": "gemini-2.5-pro",
        "responseId": "r1",
    },
    {
        "candidates": [{"content": {"parts": [{"text": 'Hello "quoted" \\ back'}], "role": "model"}}],
        "usageMetadata": {
            "promptTokenCount": 250000,
            "cachedContentTokenCount": 100000,
            "trafficType": "ON_DEMAND",
        },
        "modelVersion": "gemini-2.5-pro",
    },
    {"usageMetadata": {"trafficType": "ON_DEMAND"}, "modelVersion": "gemini-2.5-pro"},  # Vertex-style filler
    {
        "candidates": [
            {
                "content": {"parts": [{"text": " world ]}"}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 250000,
            "candidatesTokenCount": 2000,
            "thoughtsTokenCount": 3000,
            "totalTokenCount": 255000,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 250000}],
        },
        "modelVersion": "gemini-2.5-pro",
    },
]
GEMINI_USAGE = Usage(
    input_tokens=250000,
    output_tokens=2000 + 3000,
    cache_read_tokens=100000,  # only on the second chunk: a later chunk without it must not erase it
    reasoning_tokens=3000,
    service_tier="ON_DEMAND",
    modality_tokens=(("input", "text", 250000),),
)
GEMINI_TEXT = 'Thinking {about} [it]Hello "quoted" \\ back world ]}'


def gemini_array(chunks: list[dict[str, Any]]) -> bytes:
    """The streamed JSON array as the API sends it without alt=sse (pretty-printed, comma-separated)."""
    return ("[" + ",\r\n".join(json.dumps(c, indent=2) for c in chunks) + "]").encode()


def test_gemini_sse_stream_partial_usage_on_early_chunks() -> None:
    body = sse(*GEMINI_CHUNKS, crlf=True)
    path = "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
    s = summarize_stream("google", path, byte_chunks(body))
    assert s.usage == GEMINI_USAGE
    assert s.complete and s.usage_final
    assert s.model == "gemini-2.5-pro"
    assert s.output_text == GEMINI_TEXT
    assert s.events == 4


def test_gemini_json_array_stream() -> None:
    body = gemini_array(GEMINI_CHUNKS)
    whole = summarize_stream("google", "stream_generate", [body])
    assert whole.usage == GEMINI_USAGE
    assert whole.complete and whole.output_text == GEMINI_TEXT and whole.events == 4
    assert whole.model == "gemini-2.5-pro"
    parser = StreamParser("google", "stream_generate")
    for b in byte_chunks(body):
        parser.feed(b)
    same_summary(parser.summary(), whole)
    for seed in range(5):
        same_summary(summarize_stream("google", "stream_generate", random_chunks(body, seed)), whole)


def test_gemini_json_array_cut_mid_array() -> None:
    body = gemini_array(GEMINI_CHUNKS)
    third = json.dumps(GEMINI_CHUNKS[2], indent=2).encode()
    cut_at = body.index(third) + len(third) + 40  # inside the 4th element
    s = summarize_stream("google", "stream_generate", [body[:cut_at]])
    assert s.events == 3  # every complete element was parsed
    assert not s.complete and not s.usage_final
    assert s.usage == Usage(input_tokens=250000, cache_read_tokens=100000, service_tier="ON_DEMAND")
    assert s.output_text == 'Thinking {about} [it]Hello "quoted" \\ back'


def test_gemini_array_without_finish_reason_completes_when_closed() -> None:
    chunk = {
        "candidates": [{"content": {"parts": [{"text": "x"}]}}],
        "usageMetadata": {"promptTokenCount": 5},
    }
    s = summarize_stream("google", "stream_generate", [gemini_array([chunk])])
    assert s.complete
    s2 = summarize_stream("google", "stream_generate", [gemini_array([chunk])[:-1]])
    assert not s2.complete


def test_gemini_given_whole_array_to_usage_from_body() -> None:
    usage, model = usage_from_body("google", "stream_generate", gemini_array(GEMINI_CHUNKS))
    assert usage == GEMINI_USAGE and model == "gemini-2.5-pro"


def test_non_sse_error_answer_to_a_stream_request() -> None:
    err = b'{"error": {"message": "bad model", "type": "invalid_request_error", "code": null}}'
    s = summarize_stream("openai", "chat", [err[:10], err[10:]])
    assert s.usage is None and not s.complete
    assert s.extra["error"] == {"message": "bad model", "type": "invalid_request_error", "code": None}


def test_garbage_stream_never_raises() -> None:
    for body in [b"\x00\xff" * 50, b"data: {bad json\n\n", b"[[[[", b"{" * 100, b"]]]}}}"]:
        for api in ("openai", "anthropic", "google"):
            s = summarize_stream(api, "stream_generate" if api == "google" else "chat", byte_chunks(body))
            assert s.usage is None


def test_large_stream_is_linear() -> None:
    """10k events, fed in 7-byte chunks: a quadratic buffer would take seconds here."""
    import time

    events = [_chat_chunk({"content": "tok "}) for _ in range(10_000)]
    body = sse(*events, {"choices": [], "usage": CHAT_USAGE}, "[DONE]")
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]
    t0 = time.perf_counter()
    s = summarize_stream("openai", "chat", chunks)
    elapsed = time.perf_counter() - t0
    assert s.complete and s.output_text == "tok " * 10_000
    assert elapsed < 5.0


def test_split_events_keeps_the_incomplete_rest() -> None:
    from tokenlens.usage import split_events

    buffer = b"data: 1\n\ndata: 2\r\n\r\nevent: x\ndata: 3\n\ndata: 4"
    assert split_events(buffer) == (
        [b"data: 1\n\n", b"data: 2\r\n\r\n", b"event: x\ndata: 3\n\n"],
        b"data: 4",
    )
    assert split_events(b"") == ([], b"")


@pytest.mark.parametrize("count", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_a_count_that_is_no_number_of_tokens_counts_zero(count: str) -> None:
    """json reads Infinity, NaN and 1e400 as floats; a usage holding one is metered, not an exception."""
    chunk: dict[str, Any] = {
        "id": "c",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": "hi"}}],
    }
    usage = f'{{"id":"c","model":"gpt-4o","choices":[],"usage":{{"prompt_tokens":{count},"completion_tokens":3}}}}'
    s = summarize_stream("openai", "/v1/chat/completions", [sse(chunk, usage, "[DONE]")])
    assert s.usage is not None and s.usage.input_tokens == 0 and s.usage.output_tokens == 3
    body = usage.replace('"choices":[]', '"choices":[{"index":0,"message":{"content":"hi"}}]').encode()
    usage_body, _ = usage_from_body("openai", "/v1/chat/completions", body)
    assert usage_body is not None and usage_body.input_tokens == 0 and usage_body.output_tokens == 3
