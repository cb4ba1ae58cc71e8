"""Bedrock answers: usage of InvokeModel (an Anthropic body, streamed inside event-stream framing) and of the
Converse API (`usage.inputTokens`, `outputTokens`, `cacheReadInputTokens`, `cacheWriteInputTokens`).

Converse's `inputTokens` is the uncached input only (Bedrock's `totalTokens` = input + output + cache read +
cache write), like Anthropic's `input_tokens`: the normalised input is the sum of the three.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from tokenlens.platforms.eventstream import EventStreamDecoder, EventStreamError
from tokenlens.usage import StreamParser, StreamSummary, Usage


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        return 0
    return int(value)


def converse_usage(u: Mapping[str, Any]) -> Usage:
    cache_read = _count(u.get("cacheReadInputTokens"))
    cache_write = _count(u.get("cacheWriteInputTokens"))
    return Usage(
        input_tokens=_count(u.get("inputTokens")) + cache_read + cache_write,
        output_tokens=_count(u.get("outputTokens")),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def _has_counts(u: Any) -> bool:
    return isinstance(u, dict) and any(
        isinstance(u.get(k), int) for k in ("inputTokens", "outputTokens", "totalTokens")
    )


def converse_body_usage(body: bytes) -> Usage | None:
    try:
        obj = json.loads(body)
    except (ValueError, TypeError):
        return None
    u = obj.get("usage") if isinstance(obj, dict) else None
    return converse_usage(u) if isinstance(u, dict) and _has_counts(u) else None


def summarize_converse_stream(chunks: Iterable[bytes]) -> StreamSummary:
    """ConverseStream: text from `contentBlockDelta`, usage from the `metadata` event (sent last)."""
    decoder = EventStreamDecoder()
    text: list[str] = []
    usage: Usage | None = None
    events = 0
    complete = False
    extra: dict[str, object] = {}
    try:
        for chunk in chunks:
            for message in decoder.feed(chunk):
                events += 1
                if message.message_type != "event":
                    extra["exception"] = message.headers.get(":exception-type") or message.message_type
                    continue
                payload = _json(message.payload)
                kind = message.event_type
                if kind == "contentBlockDelta":
                    delta = payload.get("delta")
                    if isinstance(delta, dict):
                        for key in ("text",):
                            if isinstance(delta.get(key), str):
                                text.append(delta[key])
                        reasoning = delta.get("reasoningContent")
                        if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str):
                            text.append(reasoning["text"])
                elif kind == "metadata" and _has_counts(payload.get("usage")):
                    usage = converse_usage(payload["usage"])
                    complete = True
    except EventStreamError as exc:
        extra["parse_error"] = str(exc)
    return StreamSummary(
        usage=usage,
        output_text="".join(text),
        complete=complete,
        events=events,
        extra=extra,
        usage_final=usage is not None,
    )


def summarize_invoke_stream(chunks: Iterable[bytes]) -> StreamSummary:
    """InvokeModelWithResponseStream of an Anthropic model: each `chunk` event carries one Anthropic stream
    event (base64 JSON in `bytes`), read as the Anthropic SSE stream it would have been."""
    decoder = EventStreamDecoder()
    parser = StreamParser("anthropic", "messages")
    extra: dict[str, object] = {}
    invocation: dict[str, Any] | None = None
    try:
        for chunk in chunks:
            for message in decoder.feed(chunk):
                if message.message_type != "event":
                    extra["exception"] = message.headers.get(":exception-type") or message.message_type
                    continue
                inner = _json(message.payload).get("bytes")
                if not isinstance(inner, str):
                    continue
                data = base64.b64decode(inner, validate=False)
                event = _json(data)
                metrics = event.get("amazon-bedrock-invocationMetrics")
                if isinstance(metrics, dict):
                    invocation = metrics
                name = event.get("type")
                line = b"event: " + str(name).encode() + b"\n" if isinstance(name, str) else b""
                parser.feed(line + b"data: " + data.replace(b"\n", b" ") + b"\n\n")
    except (EventStreamError, ValueError) as exc:
        extra["parse_error"] = str(exc)
    summary = parser.summary()
    if extra:
        summary.extra.update(extra)
    if summary.usage is None and invocation is not None:
        # a model whose own events carry no usage (Llama, Titan, Nova, ...): Bedrock's invocation metrics
        usage = invocation_usage(invocation)
        if usage is not None:
            summary.usage, summary.usage_final, summary.complete = usage, True, True
    return summary


def invocation_usage(metrics: Mapping[str, Any]) -> Usage | None:
    """Bedrock's own counts for any model: `amazon-bedrock-invocationMetrics` at the end of a stream, or the
    `x-amzn-bedrock-*-token-count` headers of an answer (input there is all input, cache included)."""

    def get(*keys: str) -> int | None:
        for key in keys:
            value = metrics.get(key)
            if isinstance(value, int | str) and not isinstance(value, bool) and str(value).isdigit():
                return int(value)
        return None

    input_tokens = get("inputTokenCount", "x-amzn-bedrock-input-token-count")
    output_tokens = get("outputTokenCount", "x-amzn-bedrock-output-token-count")
    if input_tokens is None and output_tokens is None:
        return None
    read = get("cacheReadInputTokenCount", "x-amzn-bedrock-cache-read-input-token-count") or 0
    write = get("cacheWriteInputTokenCount", "x-amzn-bedrock-cache-write-input-token-count") or 0
    return Usage(
        input_tokens=(input_tokens or 0) + read + write,
        output_tokens=output_tokens or 0,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def _json(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, TypeError):
        return {}
    return obj if isinstance(obj, dict) else {}
