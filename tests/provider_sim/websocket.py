"""WebSocket endpoints: the OpenAI Responses API in WebSocket mode and the Realtime API.

``GET /v1/responses`` and ``GET /v1/realtime?model=M`` with ``Upgrade: websocket`` are upgraded (101, with
the provider headers; permessage-deflate when the client offers it; the ``realtime`` subprotocol when
offered). Every client message and every server text message is kept on the request
(`ReceivedRequest.ws_received` / `ws_sent`).

Responses API WebSocket mode (several turns per socket):

* a text message ``{"type": "response.create", ...}`` carries the fields of a ``POST /v1/responses`` body
  (``stream`` and ``background`` are ignored). It is answered with the events of the SSE stream
  (`openai_api.ResponseBuilder.events`), one text message each, so the usage is the plan of the frame
  without its ``type``: ``plan("openai", "responses", frame)``. ``previous_response_id`` is echoed, not
  counted (the plan counts only the frame's own instructions, input and tools). A ``stream_id`` is echoed
  on every event of that response.
* ``"generate": false`` (a warm-up) is answered with ``response.created`` and ``response.completed``: no
  output, usage ``input_tokens`` as planned and ``output_tokens`` 0.
* A message that is not a JSON object, an unknown ``type`` or a missing ``model`` gets
  ``{"type": "error", "status": 400, "error": {"type": "invalid_request_error", "code": C, "message": M,
  "param": P}}`` (openai-python: ``ResponseWsError``) with C ``invalid_json``, ``invalid_value`` (param
  ``type``) or ``missing_required_parameter`` (param ``model``); the socket stays open.

Knobs (``x-sim-*``, see `usage.Knobs`):

* on the upgrade request (or the simulator's defaults): ``x-sim-status: N`` refuses the upgrade (HTTP N
  with the provider's error body), as does ``x-sim-model-status: M=N`` for ``/v1/realtime?model=M``;
  ``x-sim-delay-ms`` waits before the 101 (and again before each response); ``x-sim-garbage`` answers
  garbage. Every other knob applies to every response on the socket.
* per response: the upgrade's knobs overlaid with the ``x-sim-*`` keys of the frame's ``metadata``
  (Responses) or ``response.metadata`` (Realtime ``response.create``):

  - ``x-sim-status: N``: an ``error`` event with status N instead of the response (the socket stays open);
    ``x-sim-model-status: M=N`` the same for frames whose model is M (``close``: drop the connection);
  - ``x-sim-cut-after: N``: send the response's first N events (never the final one), then close the TCP
    connection without a close frame (the client sees code 1006);
  - ``x-sim-stream-error: N``: after N events (at most all but the final one) end with ``response.failed``
    (Realtime: ``response.done`` with status ``failed``), whose usage counts the input and only the
    output already sent;
  - ``x-sim-model-delay-ms: M=N``: wait N ms before the first event of responses for model M;
  - ``x-sim-delay-ms`` (before the first event), ``x-sim-chunk-delay-ms``, ``x-sim-reply-words``,
    ``x-sim-chunk-words``, ``x-sim-reasoning``, cache knobs, ``x-sim-model``: as for HTTP calls.

``response.incomplete`` comes from ``max_output_tokens``, as for HTTP. The Realtime API is described in
`realtime_api`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from . import realtime_api
from .openai_api import ResponseBuilder
from .realtime_api import frame_headers
from .usage import Knobs, plan
from .wire import Call, ReceivedRequest, dumps, openai_error, per_model

RESPONSES_PATH = "/v1/responses"
REALTIME_PATH = "/v1/realtime"
READ_SIZE = 256 * 1024

Event = dict[str, Any]


def wants_upgrade(req: ReceivedRequest) -> bool:
    """A WebSocket upgrade of one of the simulated WebSocket endpoints."""
    return (
        req.method == "GET"
        and "websocket" in req.headers.get("upgrade", "").lower()
        and req.path in (RESPONSES_PATH, REALTIME_PATH)
    )


def upgrade_model(req: ReceivedRequest) -> str:
    """The model an upgrade asks for (Realtime: ``?model=``)."""
    return req.params.get("model", "")


class Socket:
    """The server side of one upgraded connection (wsproto framing over asyncio streams)."""

    def __init__(
        self,
        req: ReceivedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: WSConnection,
    ) -> None:
        self.req = req
        self._reader = reader
        self._writer = writer
        self._conn = conn
        self._ready: list[str | bytes] = []
        self._text: list[str] = []
        self._bytes: list[bytes] = []
        self.closed = False

    async def recv(self) -> str | bytes | None:
        """The next complete client message; None once the client closed (or the connection broke)."""
        while not self._ready:
            if self.closed:
                return None
            data = await self._reader.read(READ_SIZE)
            if not data:
                self.closed = True
                return None
            try:
                self._conn.receive_data(data)
                for event in self._conn.events():
                    self._on_event(event)
            except (RemoteProtocolError, LocalProtocolError):
                self.closed = True
        message = self._ready.pop(0)
        self.req.ws_received.append(message)
        return message

    def _on_event(self, event: object) -> None:
        if isinstance(event, TextMessage):
            self._text.append(event.data)
            if event.message_finished:
                self._ready.append("".join(self._text))
                self._text.clear()
        elif isinstance(event, BytesMessage):
            self._bytes.append(bytes(event.data))
            if event.message_finished:
                self._ready.append(b"".join(self._bytes))
                self._bytes.clear()
        elif isinstance(event, Ping):
            self._writer.write(self._conn.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._writer.write(self._conn.send(event.response()))
            self.closed = True

    async def send(self, event: Mapping[str, Any]) -> None:
        """Send one JSON text message."""
        text = dumps(event)
        if self.req.first_write_at is None:
            self.req.first_write_at = time.time()
        self.req.ws_sent.append(text)
        self._writer.write(self._conn.send(TextMessage(data=text)))
        await self._writer.drain()

    def cut(self) -> None:
        """Close the TCP connection without a close frame."""
        self.closed = True
        self._writer.close()

    async def stream(self, events: list[Event], knobs: Knobs, fail: Callable[[list[Event]], Event]) -> bool:
        """Send a response's events with the knobs' faults applied; False when the connection was cut."""
        if knobs.stream_error_after is not None:
            keep = max(0, min(knobs.stream_error_after, len(events) - 1))
            events = [*events[:keep], fail(events[:keep])]
        cut = max(0, min(knobs.cut_after, len(events) - 1)) if knobs.cut_after is not None else None
        if knobs.delay_ms > 0:
            await asyncio.sleep(knobs.delay_ms / 1000)
        delay = knobs.chunk_delay_ms / 1000
        for i, event in enumerate(events):
            if cut is not None and i >= cut:
                await self._writer.drain()
                self.cut()
                return False
            if i and delay > 0:
                await asyncio.sleep(delay)
            await self.send(event)
        return True


def _handshake_bytes(req: ReceivedRequest) -> bytes:
    target = req.path + ("?" + req.query if req.query else "")
    lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in req.headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def serve(
    req: ReceivedRequest,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    headers: Mapping[str, str],
    extra_headers: list[tuple[str, str]],
) -> None:
    """Accept the upgrade of `req` and serve the socket until either side closes it."""
    conn = WSConnection(ConnectionType.SERVER)
    request: Request | None = None
    try:
        conn.receive_data(_handshake_bytes(req))
        request = next((e for e in conn.events() if isinstance(e, Request)), None)
    except RemoteProtocolError:
        request = None
    if request is None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        return
    subprotocol = "realtime" if "realtime" in request.subprotocols else None
    accept = AcceptConnection(
        subprotocol=subprotocol,
        extensions=[PerMessageDeflate()],
        extra_headers=[(k.encode(), v.encode()) for k, v in extra_headers],
    )
    writer.write(conn.send(accept))
    await writer.drain()
    socket = Socket(req, reader, writer, conn)
    if req.path == REALTIME_PATH:
        beta = "realtime=v1" in headers.get("openai-beta", "").replace(" ", "")
        await realtime_api.RealtimeSession(socket, upgrade_model(req), headers, beta=beta).run()
    else:
        await responses_socket(socket, headers)
    if not socket.closed:
        try:
            writer.write(conn.send(CloseConnection(code=1000)))
            await writer.drain()
        except LocalProtocolError:
            pass


# ---- Responses API WebSocket mode -----------------------------------------------------------------------


def responses_error(
    status: int, message: str | None = None, code: str | None = None, param: str | None = None
) -> Event:
    """The ``error`` event of the Responses WebSocket mode (openai-python ``ResponseWsError``)."""
    error = openai_error(status, message, code)["error"]
    error["param"] = param
    return {"type": "error", "status": status, "error": error}


def parse_frame(message: str | bytes) -> dict[str, Any] | None:
    """A client message as a JSON object, or None."""
    try:
        frame = json.loads(message)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


async def responses_socket(socket: Socket, headers: Mapping[str, str]) -> None:
    """Answer ``response.create`` frames until the client closes the socket."""
    while (message := await socket.recv()) is not None:
        frame = parse_frame(message)
        if frame is None:
            await socket.send(responses_error(400, "The message is not a JSON object.", "invalid_json"))
            continue
        if frame.get("type") != "response.create":
            message_text = f"Invalid value: {frame.get('type')!r}. Supported values are: 'response.create'."
            await socket.send(responses_error(400, message_text, "invalid_value", "type"))
            continue
        if not await _respond(socket, frame, headers):
            return


async def _respond(socket: Socket, frame: dict[str, Any], headers: Mapping[str, str]) -> bool:
    """Answer one ``response.create``; False when the connection was dropped."""
    body = {k: v for k, v in frame.items() if k not in ("type", "stream", "background", "generate")}
    raw_model = body.get("model")
    model = raw_model if isinstance(raw_model, str) else ""
    frame_h = frame_headers(headers, body.get("metadata"))
    knobs = Knobs.from_headers(frame_h)
    model_status = per_model(frame_h, "x-sim-model-status", model)
    if model_status == "close":
        socket.cut()
        return False
    model_delay = per_model(frame_h, "x-sim-model-delay-ms", model)
    if model_delay is not None:
        knobs = dataclasses.replace(knobs, delay_ms=knobs.delay_ms + float(model_delay))
    status = int(model_status) if model_status is not None else knobs.status
    if status and status != 200:
        await socket.send(responses_error(status))
        return True
    if not model:
        await socket.send(
            responses_error(
                400, "Missing required parameter: 'model'.", "missing_required_parameter", "model"
            )
        )
        return True
    p = plan("openai", "responses", body, knobs)
    call = Call("openai", "responses", body, knobs, p, model, stream=True, path=RESPONSES_PATH)
    builder = ResponseBuilder(call)
    events = builder.warmup() if frame.get("generate") is False else builder.events()
    stream_id = frame.get("stream_id")
    if isinstance(stream_id, str):
        events = [{**e, "stream_id": stream_id} for e in events]

    def fail(sent: list[Event]) -> Event:
        event = builder.failed(sent)
        return {**event, "stream_id": stream_id} if isinstance(stream_id, str) else event

    return await socket.stream(events, knobs, fail)
