"""Client-side helpers for tests that drive the simulator's WebSocket endpoints (directly or through the
gateway) with openai-python's `responses.connect()` / `realtime.connect()`."""

from __future__ import annotations

import base64
from typing import Any

RESPONSES_FINAL = ("response.completed", "response.incomplete", "response.failed", "error")
REALTIME_FINAL = ("response.done", "error")


def _until(conn: Any, final: tuple[str, ...]) -> list[Any]:
    events = []
    for event in conn:
        events.append(event)
        if event.type in final:
            return events
    raise AssertionError(f"socket closed after {[e.type for e in events]}")


def turn(conn: Any) -> list[Any]:
    """The events of one Responses WebSocket-mode response, up to its final event (or an error event)."""
    return _until(conn, RESPONSES_FINAL)


def realtime_turn(conn: Any) -> list[Any]:
    """The events of one Realtime response, up to `response.done` (or an error event)."""
    return _until(conn, REALTIME_FINAL)


def audio(n_bytes: int) -> str:
    """`n_bytes` of silence, base64 (a Realtime `audio` payload)."""
    return base64.b64encode(bytes(n_bytes)).decode()
