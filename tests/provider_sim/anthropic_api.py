"""Anthropic: messages (JSON and SSE, with cache and thinking), count_tokens, models."""

from __future__ import annotations

import hashlib
from typing import Any

from .usage import Plan, reported_model
from .wire import SSE_TYPE, Call, Ids, Reply, anthropic_error, chunk_words, json_reply, sse_event

THINKING_WORDS_PER_DELTA = 8
MODELS = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "claude-opus-4-1-20250805")


def signature(text: str) -> str:
    return "EqQBCkYIBhgCKkB" + hashlib.sha256(text.encode()).hexdigest()[:40]


def input_usage(p: Plan) -> dict[str, Any]:
    return {
        "input_tokens": p.prompt,
        "cache_creation_input_tokens": p.cache_write,
        "cache_read_input_tokens": p.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": p.cache_write_5m,
            "ephemeral_1h_input_tokens": p.cache_write_1h,
        },
    }


def tier_usage(p: Plan) -> dict[str, Any]:
    """``service_tier`` (standard unless a knob says otherwise) and ``speed`` when the request set one."""
    out: dict[str, Any] = {"service_tier": p.service_tier or "standard"}
    if p.speed:
        out["speed"] = p.speed
    return out


def full_usage(p: Plan) -> dict[str, Any]:
    usage = {**input_usage(p), "output_tokens": p.output_tokens, **tier_usage(p)}
    if p.reasoning:
        usage["output_tokens_details"] = {"thinking_tokens": p.reasoning}
    return usage


def stream_error_event(call: Call) -> bytes:
    return sse_event("error", anthropic_error(529, request_id=call.request_id))


def handle(call: Call) -> Reply:
    if call.kind == "models":
        return models(call)
    if call.method != "POST":
        return json_reply(405, anthropic_error(405, "Method Not Allowed", call.request_id))
    for field in (
        ("model", "messages") if call.kind == "count_tokens" else ("model", "messages", "max_tokens")
    ):
        if field not in call.body:
            return json_reply(400, anthropic_error(400, f"{field}: Field required", call.request_id))
    if call.kind == "count_tokens":
        return json_reply(200, {"input_tokens": call.plan.prompt})
    return messages(call)


def messages(call: Call) -> Reply:
    p: Plan = call.plan
    model = reported_model("anthropic", call.model, call.knobs)
    mid = Ids.make("msg_sim")
    stop_reason = "max_tokens" if p.truncated else "end_turn"
    content: list[dict[str, Any]] = []
    if p.reasoning:
        content.append({"type": "thinking", "thinking": p.thinking, "signature": signature(p.thinking)})
    content.append({"type": "text", "text": p.text})
    message = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": full_usage(p),
    }
    if not call.stream:
        return json_reply(200, message)

    start_usage = {**input_usage(p), "output_tokens": 1, **tier_usage(p)}
    events = [
        sse_event(
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
            },
        )
    ]
    index = 0
    if p.reasoning:
        events.append(
            sse_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
        )
        events.append(sse_event("ping", {"type": "ping"}))
        for piece in chunk_words(p.thinking, THINKING_WORDS_PER_DELTA):
            events.append(
                sse_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "thinking_delta", "thinking": piece},
                    },
                )
            )
        events.append(
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "signature_delta", "signature": signature(p.thinking)},
                },
            )
        )
        events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    events.append(
        sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
        )
    )
    if not p.reasoning:
        events.append(sse_event("ping", {"type": "ping"}))
    for piece in chunk_words(p.text, call.knobs.chunk_words):
        events.append(
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        )
    events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta_usage: dict[str, Any] = {
        "input_tokens": p.prompt,
        "cache_creation_input_tokens": p.cache_write,
        "cache_read_input_tokens": p.cache_read,
        "output_tokens": p.output_tokens,
    }
    if p.reasoning:
        delta_usage["output_tokens_details"] = {"thinking_tokens": p.reasoning}
    usage_index = len(events)
    events.append(
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": delta_usage,
            },
        )
    )
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    return Reply(200, content_type=SSE_TYPE, events=events, usage_index=usage_index)


def models(call: Call) -> Reply:
    def entry(model_id: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": "2025-09-29T00:00:00Z",
        }

    tail = call.path.rstrip("/").rsplit("/models", 1)[-1].lstrip("/")
    if tail:
        return json_reply(200, entry(tail))
    return json_reply(
        200,
        {"data": [entry(m) for m in MODELS], "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]},
    )
