"""WebSocket model calls (docs/gateway.md): the OpenAI Responses API in WebSocket mode and the Realtime API.

Pure bookkeeping of one upgraded connection, no I/O; the mitmproxy layer is `tokenlens.addons.websocket`.

- Responses WebSocket mode (`GET /v1/responses` upgraded): every client `response.create` text frame is one
  call, the `Exchange` of a `POST /v1/responses` whose body is the frame; the server's events are kept as
  the SSE stream of that call (`data: <event>` lines), so `metering` reads usage, model and text exactly as
  for a streamed HTTP call. The call ends with `response.completed`, `response.failed`,
  `response.incomplete` or an `error` event.
- Realtime API (`GET /v1/realtime?model=M`): every client `response.create` is one call, ending with
  `response.done` (usage with text and audio tokens; `usage.openai_responses_usage` reads both shapes). The
  model is the session's (the upgrade's `?model=`, as the server confirms it in `session.created`).

The server answers one response at a time, in the order of the frames; a client frame that is not a call
may be answered by an `error` event, so it holds a place in the queue until an answer for a later frame
arrives.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from tokenlens.exchange import Exchange, max_tokens_from_request
from tokenlens.records import new_call_id
from tokenlens.request_body import RequestBody, read_request_body

WsKind = Literal["responses", "realtime"]

RESPONSES_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})
REALTIME_TERMINAL = frozenset({"response.done"})
# Large Realtime audio payloads are not kept in the call's stream copy (nothing is metered from them).
AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
CALL_FRAME = "response.create"


def ws_kind(api: str, endpoint: str) -> WsKind | None:
    """Which WebSocket API an upgrade on a provider route speaks (None: relayed untouched, not metered)."""
    if api != "openai":
        return None
    path = endpoint.rstrip("/").lower()
    if path.endswith("/responses"):
        return "responses"
    if path.endswith("/realtime"):
        return "realtime"
    return None


def is_upgrade(headers: dict[str, str]) -> bool:
    """A WebSocket upgrade request (lower-case header names)."""
    return "websocket" in headers.get("upgrade", "").lower()


def realtime_model(path: str) -> str | None:
    """The `?model=` of a Realtime upgrade path."""
    _, _, query = path.partition("?")
    values = parse_qs(query).get("model")
    return values[0] if values and values[0] else None


def read_frame(content: bytes) -> RequestBody | None:
    """A client text frame as the gates read it (lenient as an upstream could be), or None when it cannot be
    a `response.create` at all. Raises `request_body.BodyRefused` for a frame that cannot be checked safely.

    Fast path: a frame that cannot name the type (e.g. Realtime audio) is not parsed (`_may_name`).
    """
    if not _may_name(content, (CALL_FRAME,)):
        return None
    read = read_request_body(content)
    if read.json is None or read.json.get("type") != CALL_FRAME:
        return None
    return read


TEXT_FRAMES = ("conversation.item.create", "session.update")


def realtime_text(content: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(frame, body the request guardrails read) for a Realtime frame that carries text ahead of a
    `response.create` (a conversation item, the session's instructions), else None. The body is in the
    OpenAI format (`{"messages": [item]}`), whose text parts the guardrails know. Raises
    `request_body.BodyRefused` for a frame that cannot be checked safely."""
    if not _may_name(content, TEXT_FRAMES):
        return None
    frame = read_request_body(content).json
    if frame is None:
        return None
    if frame.get("type") == "conversation.item.create" and isinstance(frame.get("item"), dict):
        return frame, {"messages": [frame["item"]]}
    session = frame.get("session")
    if frame.get("type") == "session.update" and isinstance(session, dict):
        if isinstance(session.get("instructions"), str):
            return frame, {"messages": [{"role": "system", "content": session["instructions"]}]}
    return None


def with_text(frame: dict[str, Any], body: dict[str, Any]) -> bytes:
    """`frame` carrying the (redacted) text of `body`, as `realtime_text` read it."""
    message = body["messages"][0]
    if frame.get("type") == "conversation.item.create":
        return json.dumps({**frame, "item": message}, ensure_ascii=False).encode()
    session = {**frame["session"], "instructions": message["content"]}
    return json.dumps({**frame, "session": session}, ensure_ascii=False).encode()


def error_event(kind: WsKind, status: int, error: dict[str, Any], client_event_id: Any = None) -> bytes:
    """An `error` event in the API's WebSocket format, from an OpenAI error object (message, type, code)."""
    body = {
        "type": error.get("type") or "invalid_request_error",
        "code": error.get("code"),
        "message": error.get("message") or "",
        "param": error.get("param"),
    }
    event: dict[str, Any]
    if kind == "responses":
        event = {"type": "error", "status": status, "error": body}
    else:
        body["event_id"] = client_event_id if isinstance(client_event_id, str) else None
        event = {"type": "error", "event_id": "event_tokenlens_" + new_call_id(), "error": body}
    return json.dumps(event, ensure_ascii=False).encode()


@dataclass(eq=False)
class WsCall:
    """One call on the socket: its Exchange and what ties the server's answers to it."""

    exchange: Exchange
    client_event_id: str | None = None  # Realtime: the `event_id` of the response.create frame
    response_id: str | None = None  # Realtime: the response the server created for it


@dataclass
class Connection:
    """One upgraded connection: what every call on it inherits, and the client frames awaiting answers.

    `queue` holds the calls in flight in frame order; in Responses mode also None for each client frame that
    is not a call but may be answered by an `error` event (the server answers frames one at a time, in
    order). Realtime errors name the client event they answer (`error.event_id`), and its responses their
    `response_id`, so there the queue holds calls only.
    """

    kind: WsKind
    template: Exchange  # the upgrade's Exchange: provider, source, tags, session, mode, endpoint
    model: str | None = None  # Realtime: the session's model
    queue: collections.deque[WsCall | None] = field(default_factory=collections.deque)
    closed: bool = False
    calls: int = 0
    ungated: list[WsCall] = field(default_factory=list)  # server-started responses the gates have not seen

    def new_call(self, content: bytes, read: RequestBody, started: float) -> WsCall:
        """The call of a `response.create` frame: an Exchange as if it were `POST /v1/responses` with the
        frame as its body (Realtime: the frame's `response` options and the session's model)."""
        t = self.template
        frame = read.json or {}
        event_id = frame.get("event_id")
        if self.kind == "realtime":
            raw = frame.get("response")
            options: dict[str, Any] = raw if isinstance(raw, dict) else {}
            body: dict[str, Any] = {**options, "model": self.model} if self.model else dict(options)
            limit = options.get("max_output_tokens")  # may be "inf"
            max_tokens = max_tokens_from_request("openai", body) if isinstance(limit, int) else None
            model = self.model
        else:
            body = frame
            named = frame.get("model")
            model = named if isinstance(named, str) and named else None
            max_tokens = max_tokens_from_request("openai", frame)
        self.calls += 1
        exchange = Exchange(
            id=new_call_id(),
            started=started,
            provider=t.provider,
            api=t.api,
            endpoint=t.endpoint,
            kind="responses",
            mode=t.mode,
            source=t.source,
            tags=dict(t.tags),
            session_id=t.session_id,
            request_body=content,
            request_json=body,
            requested_model=model,
            model=model,
            stream_requested=True,
            max_tokens=max_tokens,
            streamed=True,
        )
        exchange.details["websocket"] = {"api": self.kind, "turn": self.calls}
        exchange.transport = "websocket"
        return WsCall(exchange, client_event_id=event_id if isinstance(event_id, str) else None)

    def sent(self, call: WsCall) -> None:
        """A call's frame went upstream: the next answers are its own."""
        self.queue.append(call)

    def forwarded(self, content: bytes) -> None:
        """A client frame that is not a call went upstream. In Responses mode the server answers a frame it
        cannot read (not JSON, no known type) with an `error` event, so that frame holds a place in the
        queue; Realtime errors name the event they answer."""
        if self.kind == "responses" and not _event_like(content):
            self.queue.append(None)

    def on_server_text(self, text: str, ts: float) -> list[WsCall]:
        """A server event; returns the calls it ends."""
        if not self.queue and self.kind == "responses":
            return []
        try:
            event = json.loads(text)
        except ValueError:
            return []
        etype = event.get("type") if isinstance(event, dict) else None
        if not isinstance(etype, str):
            return []
        if etype.startswith("session."):
            self._session_model(event)
            return []
        if etype == "error":
            call = self._answered_by_error(event)
            if call is None:
                return []
            self._keep(call, text, ts)
            ex = call.exchange
            status = event.get("status")
            ex.status = status if isinstance(status, int) and not isinstance(status, bool) else None
            ex.error = _error_text(event.get("error")) or "error event"
            ex.ended = ts
            return [call]
        if not etype.startswith("response."):
            return []  # Realtime conversation and input-buffer events belong to no single call
        call = self._call_of(etype, event, ts)
        if call is None:
            return []
        if etype in AUDIO_DELTAS:
            if call.exchange.first_chunk_at is None:
                call.exchange.first_chunk_at = ts
        else:
            self._keep(call, text, ts)
        if etype not in (REALTIME_TERMINAL if self.kind == "realtime" else RESPONSES_TERMINAL):
            return []
        self.queue.remove(call)
        self._finish(call.exchange, etype, event, ts)
        return [call]

    def close(self, reason: str, ts: float) -> list[WsCall]:
        """The connection ended: the calls still waiting for their end are cut."""
        self.closed = True
        cut = [call for call in self.queue if call is not None]
        self.queue.clear()
        for call in cut:
            ex = call.exchange
            ex.status = 200 if ex.first_chunk_at is not None else None
            ex.error = reason
            ex.ended = ts
        return cut

    def _answered_by_error(self, event: dict[str, Any]) -> WsCall | None:
        """The call an `error` event refuses, or None (it answers a frame that is not a call)."""
        if self.kind == "responses":
            return self.queue.popleft() if self.queue else None
        error = event.get("error")
        about = error.get("event_id") if isinstance(error, dict) else None
        for call in self.queue:
            if call is not None and (
                call.client_event_id == about if about else call.exchange.first_chunk_at is None
            ):
                self.queue.remove(call)
                return call
        return None

    def _call_of(self, etype: str, event: dict[str, Any], ts: float) -> WsCall | None:
        if self.kind == "responses":
            while self.queue and self.queue[0] is None:
                self.queue.popleft()  # frames that were answered by nothing
            return self.queue[0] if self.queue else None
        response = event.get("response")
        rid = event.get("response_id") or (response.get("id") if isinstance(response, dict) else None)
        calls = [c for c in self.queue if c is not None]
        for call in calls:
            if rid and call.response_id == rid:
                return call
        for call in calls:
            if call.response_id is None:
                call.response_id = rid if isinstance(rid, str) else None
                return call
        if etype == "response.created" and isinstance(rid, str) and rid:
            return self._server_call(rid, ts)
        return None if rid else (calls[0] if calls else None)

    def _server_call(self, rid: str, ts: float) -> WsCall:
        """A response the server started with no `response.create` (server VAD's `create_response`): a call
        of its own, recorded from its events; it waits in `ungated` for the gates (the addon runs them when
        the event that started it has been read, and cancels the response if they refuse it)."""
        call = self.new_call(b"", RequestBody({"type": CALL_FRAME}), ts)
        call.response_id = rid
        call.exchange.details["websocket"]["initiated_by"] = "server"
        self.queue.append(call)
        self.ungated.append(call)
        return call

    def _keep(self, call: WsCall, text: str, ts: float) -> None:
        ex = call.exchange
        if ex.first_chunk_at is None:
            ex.first_chunk_at = ts
        ex.chunks.append(b"data: " + text.encode() + b"\n\n")

    def _finish(self, ex: Exchange, etype: str, event: dict[str, Any], ts: float) -> None:
        raw = event.get("response")
        response: dict[str, Any] = raw if isinstance(raw, dict) else {}
        ex.status, ex.ended = 200, ts
        status = response.get("status")
        if etype == "response.failed" or status == "failed":
            details = response.get("status_details")
            reason = _error_text(response.get("error")) or _error_text(
                details.get("error") if isinstance(details, dict) else None
            )
            ex.error = f"{etype} ({status}): {reason or 'failed'}"
        if self.kind == "realtime":
            # per-modality counts are read with the usage (`Usage.modality_tokens`, the record's field)
            if isinstance(status, str):
                ex.details["websocket"]["status"] = status

    def _session_model(self, event: dict[str, Any]) -> None:
        """Realtime: the model the server confirms for the session (`session.created` / `.updated`)."""
        session = event.get("session")
        model = session.get("model") if isinstance(session, dict) else None
        if isinstance(model, str) and model:
            self.model = model


def _may_name(content: bytes, types: tuple[str, ...]) -> bool:
    """Whether a frame could be JSON naming one of `types` as `read_request_body` reads it: it holds one of
    them as bytes, or a JSON escape, or a NUL (UTF-16/32 JSON, which the gates read too, has one)."""
    return any(t.encode() in content for t in types) or b"\\" in content or b"\x00" in content


def _event_like(content: bytes) -> bool:
    """A JSON object whose `type` names a Responses event (the server may answer it with nothing)."""
    try:
        value = json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return (
        isinstance(value, dict)
        and isinstance(value.get("type"), str)
        and value["type"].startswith("response.")
    )


def _error_text(error: Any) -> str | None:
    if not isinstance(error, dict):
        return None
    parts = [str(error[k]) for k in ("code", "message") if error.get(k)]
    return ": ".join(parts)[:500] or None
