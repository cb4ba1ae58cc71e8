"""Response guardrails on Bedrock's event streams (InvokeModelWithResponseStream, ConverseStream).

`EventStreamGuard` is a `StreamGuard` (tokenlens.guardrails.stream) fed with the Anthropic SSE event each frame
stands for (InvokeModel: the event inside the frame; ConverseStream: a text delta as Anthropic's
`content_block_delta`, any other frame as a `ping`), and writing frames back out:

- warn: the frames go on at once, untouched; the text is scanned on the way.
- block and redact: frames are held back exactly as the SSE events are, and released in order: unchanged ones
  byte for byte, redacted ones re-encoded with their text rewritten (CRCs recomputed); a block ends the
  stream with an `exception` frame (`validationException`), which the SDKs raise as an error.

A stream that is not valid event-stream framing is passed on unscanned from there (nothing held is lost).
"""

from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from tokenlens.config import Guardrails
from tokenlens.guardrails.stream import Held, StreamGuard
from tokenlens.platforms.eventstream import EventStreamDecoder, EventStreamError, Message, encode_message

_PING = b'event: ping\ndata: {"type":"ping"}\n\n'


@dataclass
class _Frame:
    raw: bytes
    message: Message
    sse: bytes  # the SSE event it was scanned as
    inner: dict[str, Any] | None  # InvokeModel: the Anthropic event inside; ConverseStream: the payload


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class EventStreamGuard(StreamGuard):
    def __init__(self, g: Guardrails, converse: bool) -> None:
        super().__init__(g, "anthropic", "messages")
        self.converse = converse
        self.decoder = EventStreamDecoder()
        self.frames: deque[_Frame] = deque()  # one per Held of the base class, in the same order
        self.current: _Frame | None = None
        self.broken = False  # not event-stream framing: passed on as it comes

    def _as_frame(self, message: Message) -> _Frame:
        payload = _json(message.payload) if message.message_type == "event" else None
        if payload is None:
            return _Frame(message.raw, message, _PING, None)
        if self.converse:
            delta = payload.get("delta")
            text = delta.get("text") if isinstance(delta, dict) else None
            if message.event_type == "contentBlockDelta" and isinstance(text, str):
                index = payload.get("contentBlockIndex", 0)
                event = {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": text},
                }
                return _Frame(message.raw, message, _sse("content_block_delta", event), payload)
            return _Frame(message.raw, message, _PING, None)
        chunk = payload.get("bytes")
        inner = _json(base64.b64decode(chunk)) if isinstance(chunk, str) else None
        if inner is None:
            return _Frame(message.raw, message, _PING, None)
        return _Frame(message.raw, message, _sse(str(inner.get("type") or "message"), inner), inner)

    def __call__(self, data: bytes) -> bytes:
        if self.stopped:
            return b""
        if self.broken:
            return data
        if not data:  # the end: what is held goes (or the stream stops), then an incomplete last frame
            released = super().__call__(b"")
            rest = self.decoder.pending_bytes()
            return released if self.stopped or not self.holding else released + rest
        try:
            messages = list(self.decoder.feed(data))
        except EventStreamError:
            return self._give_up(data)
        out: list[bytes] = []
        for message in messages:
            self.current = self._as_frame(message)
            released = super().__call__(self.current.sse)
            if self.stopped:
                return released  # the exception frame; what was held is dropped
            out.append(released)
        if not self.holding:
            return data  # warn: every byte goes on at once, scanned on the way
        return b"".join(out)

    def _give_up(self, data: bytes) -> bytes:
        """Not valid framing: release what is held (unchanged) and pass everything on from here."""
        self.broken = True
        if not self.holding:
            return data  # everything before was sent already
        held = b"".join(f.raw for f in self.frames)
        self.frames.clear()
        self.held.clear()
        return held + self.decoder.pending_bytes() + data

    def _hold(self, event: bytes) -> bytes | None:
        if self.current is not None:
            self.frames.append(self.current)
            self.current = None
        return super()._hold(event)

    def send_held(self, held: Held) -> bytes:
        frame = self.frames.popleft()
        event = super().send_held(held)
        if event == held.event or frame.inner is None:
            return frame.raw
        data = next((line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")), b"")
        rewritten = _json(data)
        if rewritten is None:
            return frame.raw
        headers = {k: v for k, v in frame.message.headers.items() if isinstance(v, str)}
        if self.converse:
            text = rewritten.get("delta", {}).get("text")
            payload = {**frame.inner, "delta": {**frame.inner.get("delta", {}), "text": text}}
        else:
            payload = _json(frame.message.payload) or {}
            payload["bytes"] = base64.b64encode(
                json.dumps(rewritten, separators=(",", ":")).encode()
            ).decode()
        return encode_message(headers, json.dumps(payload, separators=(",", ":")).encode())

    def _stop(self, rules: list[str]) -> bytes:
        self.stopped = True
        self.frames.clear()
        message = (
            f"TokenLens guardrail stopped this response: rule {', '.join(dict.fromkeys(rules))} matched."
        )
        return encode_message(
            {
                ":message-type": "exception",
                ":exception-type": "validationException",
                ":content-type": "application/json",
            },
            json.dumps({"message": message}).encode(),
        )
