"""Response guardrails on Bedrock's event streams (tokenlens.platforms.stream_guard): what the client receives,
decoded with botocore's own event-stream parser."""

from __future__ import annotations

import base64
import json
from typing import Any

from botocore.eventstream import EventStreamBuffer

from provider_sim import platforms as sim
from tokenlens.config import parse_settings
from tokenlens.platforms.stream_guard import EventStreamGuard

EMAIL = "jane.doe@example.com"


def settings(action: str) -> Any:
    return parse_settings(
        {"guardrails": {"response_pii_detection": {"enabled": True, "action": action}}}
    ).guardrails


def invoke_frames(pieces: list[str]) -> list[bytes]:
    def frame(obj: dict[str, Any]) -> bytes:
        return sim.event("chunk", {"bytes": base64.b64encode(json.dumps(obj).encode()).decode()})

    out = [frame({"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}})]
    for piece in pieces:
        out.append(
            frame({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})
        )
    out.append(
        frame({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}})
    )
    out.append(frame({"type": "message_stop"}))
    return out


def converse_frames(pieces: list[str]) -> list[bytes]:
    out = [sim.event("messageStart", {"role": "assistant"})]
    out += [sim.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces]
    out += [
        sim.event("messageStop", {"stopReason": "end_turn"}),
        sim.event("metadata", {"usage": {"inputTokens": 1}}),
    ]
    return out


def run(guard: EventStreamGuard, frames: list[bytes], split: int = 0) -> bytes:
    data = b"".join(frames)
    chunks = [data[i : i + split] for i in range(0, len(data), split)] if split else frames
    return b"".join(guard(chunk) for chunk in chunks) + guard(b"")


def decoded(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event type or exception type, payload) of each message, as botocore reads them (CRCs checked)."""
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    out = []
    for message in buffer:
        headers = message.headers
        kind = headers.get(":event-type") or headers.get(":exception-type")
        payload = json.loads(message.payload)
        if "bytes" in payload:
            payload = json.loads(base64.b64decode(payload["bytes"]))
        out.append((kind, payload))
    return out


def text_of(messages: list[tuple[str, dict[str, Any]]]) -> str:
    parts = []
    for _, payload in messages:
        delta = payload.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("text"), str):
            parts.append(delta["text"])
    return "".join(parts)


PIECES = ["Write to jane", ".doe@exam", "ple.com about", " the invoice."]


def test_no_match_passes_every_frame_byte_for_byte() -> None:
    for action in ("warn", "redact", "block"):
        hello = ["Hello", " there."]
        for converse, frames in ((False, invoke_frames(hello)), (True, converse_frames(hello))):
            guard = EventStreamGuard(settings(action), converse=converse)
            assert run(guard, frames, split=7) == b"".join(frames)
            assert not guard.findings


def test_warn_flags_and_changes_nothing() -> None:
    frames = invoke_frames(PIECES)
    guard = EventStreamGuard(settings("warn"), converse=False)
    assert run(guard, frames, split=5) == b"".join(frames)
    assert [f.rule for f in guard.findings] == ["pii.email"]


def test_redact_rewrites_the_text_in_valid_frames() -> None:
    for converse, frames in ((False, invoke_frames(PIECES)), (True, converse_frames(PIECES))):
        guard = EventStreamGuard(settings("redact"), converse=converse)
        out = run(guard, frames, split=11)
        messages = decoded(out)
        assert len(messages) == len(frames)
        text = text_of(messages)
        assert EMAIL not in text and "[EMAIL_1]" in text and text.endswith("about the invoice.")
        assert EMAIL.encode() not in out and b"jane" not in out.replace(b"[EMAIL_1]", b"")
        assert not guard.stopped


def test_block_ends_the_stream_with_an_exception_frame() -> None:
    for converse, frames in ((False, invoke_frames(PIECES)), (True, converse_frames(PIECES))):
        guard = EventStreamGuard(settings("block"), converse=converse)
        out = run(guard, frames)
        messages = decoded(out)
        assert messages[-1][0] == "validationException" and "email" in messages[-1][1]["message"]
        assert EMAIL not in text_of(messages) and guard.stopped


def test_broken_framing_is_passed_on_unscanned() -> None:
    frames = invoke_frames(["Hello"])
    guard = EventStreamGuard(settings("redact"), converse=False)
    first = guard(frames[0])
    rest = guard(b"\x00\x00\x00\x05garbage") + guard(b"")
    assert first + rest == frames[0] + b"\x00\x00\x00\x05garbage"
