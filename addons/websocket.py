"""WebSocket model calls (docs/gateway.md): each `response.create` frame on a Responses or Realtime socket is a call.

- The upgrade itself is not a call (the ingress forwards it ungated and unrecorded); its Exchange is the
  template of the connection's calls (`tokenlens.websocket.Connection`, kept with the flow by `_flowstate`). Other upgrades
  on provider routes are relayed untouched.
- Each client `response.create` frame gets its own Exchange and a *gate flow*: an `http.HTTPFlow` that
  exists only to run the pipeline's request stages on it, as for `POST /v1/responses` with the frame as its
  body (budget, quota and kill switches, routing, request guardrails, and the analyses that queue deferred
  work). A stage that answers the gate flow refuses the frame: the frame is dropped and an `error` event in
  the API's WebSocket format is injected towards the client; the socket stays open. A frame the stages
  rewrote (a routed model, a redaction) goes upstream rewritten; any other frame goes as it came.
- Server events are relayed as they come and copied to the call in flight; its end (or the connection's)
  hands the Exchange to the writer thread, where `metering.build_record` builds the record.

Only the newest message is kept in `flow.websocket.messages` (mitmproxy would keep every one for the life of
the socket).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import ctx, http

from tokenlens.addons._flowstate import attach, attach_connection, connection_of, exchange_of, lower_headers
from tokenlens.app import AppDeps
from tokenlens.exchange import Exchange, route_of
from tokenlens.guardrails.engine import block_message, is_active, scan_body
from tokenlens.guardrails.record import meter_blocked_answer
from tokenlens.request_body import BodyRefused, RequestBody
from tokenlens.routing import Route, Target
from tokenlens.websocket import (
    Connection,
    WsCall,
    error_event,
    is_upgrade,
    read_frame,
    realtime_model,
    realtime_text,
    with_text,
    ws_kind,
)

log = logging.getLogger(__name__)

UNCHECKED = "TokenLens could not check this message; it was not forwarded."
_UPGRADE_HEADERS = frozenset({b"upgrade", b"connection", b"content-length", b"transfer-encoding"})


# Runs the request stages on a gate flow (built by the pipeline: `tokenlens.addons.dispatch.request_stages`).
GateRunner = Callable[[http.HTTPFlow], Awaitable[None] | None]


class WebSocketCalls:
    name = "tokenlens.websocket"

    def __init__(self, deps: AppDeps, run_responses: GateRunner, run_realtime: GateRunner) -> None:
        """`run_responses`: every request stage of a call (gates and analyses), in pipeline order; `run_realtime`:
        the gates only (a Realtime frame is not a request body the analyses could read)."""
        self.deps = deps
        self.run_responses = run_responses
        self.run_realtime = run_realtime

    # ---- the upgrade --------------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        if exchange is None or flow.response is not None or not is_upgrade(lower_headers(flow.request)):
            return
        # The ingress marks the upgrade as no call (no gate, no record); its Exchange is the calls' template.
        kind = ws_kind(exchange.api, exchange.endpoint)
        if kind is not None:
            model = realtime_model(flow.request.path) if kind == "realtime" else None
            attach_connection(flow, Connection(kind, exchange, model))

    # ---- frames -------------------------------------------------------------------------------------------

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        messages = flow.websocket.messages
        message = messages[-1]
        del messages[:-1]
        conn = connection_of(flow)
        if conn is None or message.injected:
            return
        if not message.from_client:
            if message.is_text:
                try:
                    self.finished(conn.on_server_text(message.text, message.timestamp))
                except Exception as exc:  # metering must never break the relay
                    log.error("WebSocket event not metered: %s", type(exc).__name__, exc_info=exc)
            while conn.ungated:
                await self.gate_server_call(flow, conn, conn.ungated.pop(0))
            return
        try:
            await self.client_frame(flow, conn, message)
        except Exception as exc:  # fail closed: a frame that could not be checked does not go upstream
            log.error("WebSocket frame not checked: %s", type(exc).__name__, exc_info=exc)
            if not message.dropped:
                message.drop()
                error = {"type": "server_error", "code": "request_unreadable", "message": UNCHECKED}
                self.inject(flow, error_event(conn.kind, 503, error))

    async def client_frame(self, flow: http.HTTPFlow, conn: Connection, message: Any) -> None:
        """A client frame (text or binary: an upstream may read either): a call goes through the stages."""
        content = message.content
        try:
            read = read_frame(content)
        except BodyRefused as refused:
            call = conn.new_call(content, RequestBody(None), message.timestamp)
            call.exchange.outcome, call.exchange.blocked_by = "blocked", "request"
            call.exchange.error = f"TokenLens: {refused}."
            self.refuse(flow, conn, message, call, 400, {"code": refused.code, "message": str(refused)})
            return
        if read is None:
            if conn.kind == "realtime" and self.guard_text(flow, conn, message):
                return
            conn.forwarded(content)
            return
        call = conn.new_call(content, read, message.timestamp)
        gate = self.gate_flow(flow, conn, call.exchange, content)
        pending = (self.run_realtime if conn.kind == "realtime" else self.run_responses)(gate)
        if pending is not None and inspect.isawaitable(pending):
            await pending
        if gate.response is not None:
            self.refuse_answered(flow, conn, message, call, gate.response)
            return
        changed = gate.request.raw_content or b""
        if changed != content:
            message.content = self.rewritten(conn, read.json or {}, changed)
        conn.sent(call)

    def guard_text(self, flow: http.HTTPFlow, conn: Connection, message: Any) -> bool:
        """Realtime text sent ahead of a `response.create` (a conversation item, session instructions) meets
        the request guardrails here, since the call's frame does not carry it: a blocking rule refuses the
        frame with an `error` event, a redact rule rewrites it. True when the frame was refused."""
        g = self.deps.settings.get().guardrails
        if not is_active(g, "request"):
            return False
        try:
            found = realtime_text(message.content)
            if found is None:
                return False
            frame, body = found
            verdict = scan_body(g, "openai", body, "request")
        except BodyRefused as refused:
            return self.refuse_text(flow, conn, message, 400, refused.code, str(refused))
        except Exception as exc:  # the message could quote the text: log the type only
            log.warning("Realtime guardrail failed: %s", type(exc).__name__)
            if g.fail_open:
                return False
            return self.refuse_text(flow, conn, message, 503, "guardrail", UNCHECKED)
        if verdict.blocking:
            return self.refuse_text(
                flow, conn, message, 400, "guardrail", block_message(verdict.blocking, "request")
            )
        if verdict.redacted is not None:
            message.content = with_text(frame, verdict.redacted)
        return False

    def refuse_text(
        self, flow: http.HTTPFlow, conn: Connection, message: Any, status: int, code: str, text: str
    ) -> bool:
        """A frame that is not a call, refused: dropped, answered with an `error` event (no record)."""
        message.drop()
        try:
            event_id = json.loads(message.content).get("event_id")
        except (ValueError, AttributeError):
            event_id = None
        error = {"type": "invalid_request_error", "code": code, "message": text}
        self.inject(flow, error_event(conn.kind, status, error, event_id))
        return True

    async def gate_server_call(self, flow: http.HTTPFlow, conn: Connection, call: WsCall) -> None:
        """A Realtime response the server started itself (voice detection): the gates see it as if the client
        had sent `response.create`. A refusal cancels it upstream (`response.cancel`), tells the client with
        an `error` event, and records the call as blocked with what the provider billed until it stopped."""
        gate = self.gate_flow(flow, conn, call.exchange, b"")
        try:
            pending = self.run_realtime(gate)
            if pending is not None and inspect.isawaitable(pending):
                await pending
            answer = gate.response
        except Exception as exc:  # fail closed: a response no gate could check is stopped
            log.error("Realtime response not checked: %s", type(exc).__name__, exc_info=exc)
            answer = http.Response.make(503, json.dumps({"error": {"message": UNCHECKED}}))
        if answer is None:
            return
        ex = call.exchange
        ex.outcome = "blocked"
        ex.blocked_by = answer.headers.get("x-tokenlens-blocked-by") or "request"
        ex.deferred.append(meter_blocked_answer(self.deps.settings.get(), None, 200))
        cancel = {"type": "response.cancel", "response_id": call.response_id}
        self.inject_upstream(flow, json.dumps(cancel).encode())
        try:
            error = json.loads(answer.content or b"{}").get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        self.inject(flow, error_event(conn.kind, answer.status_code, error))

    def gate_flow(
        self, flow: http.HTTPFlow, conn: Connection, exchange: Exchange, content: bytes
    ) -> http.HTTPFlow:
        """The flow the request stages see for one frame: `POST` to the socket's URL with the frame as body."""
        headers = [(k, v) for k, v in flow.request.headers.fields if k.lower() not in _UPGRADE_HEADERS]
        headers = [(k, v) for k, v in headers if not k.lower().startswith(b"sec-websocket")]
        gate = http.HTTPFlow(flow.client_conn, flow.server_conn, live=True)
        gate.request = http.Request.make("POST", flow.request.url, content, headers)
        attach(gate, exchange)
        if conn.kind == "realtime":
            # The session's model is fixed at the upgrade: nothing to route, priced as it is.
            model = exchange.model
            exchange.route = Route(model, (Target(model, exchange.provider),) if model else ())
        else:
            routed = route_of(exchange, self.deps.settings.get(), self.deps.rng, self.deps.latency)
            exchange.route = same_provider(routed, exchange)
        return gate

    @staticmethod
    def rewritten(conn: Connection, frame: dict[str, Any], body: bytes) -> bytes:
        """The frame to send for a body the stages rewrote (Realtime: into the frame's `response` options)."""
        if conn.kind == "responses":
            return body
        options = {k: v for k, v in json.loads(body).items() if k != "model"}
        return json.dumps({**frame, "response": options}, ensure_ascii=False).encode()

    # ---- refusals -----------------------------------------------------------------------------------------

    def refuse_answered(
        self, flow: http.HTTPFlow, conn: Connection, message: Any, call: WsCall, answer: http.Response
    ) -> None:
        try:
            error = json.loads(answer.content or b"{}").get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        call.exchange.response_body = answer.content
        self.refuse(flow, conn, message, call, answer.status_code, error)

    def refuse(
        self,
        flow: http.HTTPFlow,
        conn: Connection,
        message: Any,
        call: WsCall,
        status: int,
        error: dict[str, Any],
    ) -> None:
        """The frame is not forwarded; the client gets an `error` event; the call is recorded as refused."""
        message.drop()
        event = error_event(conn.kind, status, error, call.client_event_id)
        self.inject(flow, event)
        ex = call.exchange
        ex.status, ex.ended, ex.streamed = status, time.time(), False
        if ex.response_body is None:
            ex.response_body = event
        ex.response_headers = {"content-type": "application/json"}
        self.finished([call])

    def inject(self, flow: http.HTTPFlow, data: bytes) -> None:
        ctx.master.commands.call("inject.websocket", flow, True, data)

    def inject_upstream(self, flow: http.HTTPFlow, data: bytes) -> None:
        ctx.master.commands.call("inject.websocket", flow, False, data)

    # ---- the end ------------------------------------------------------------------------------------------

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        conn = connection_of(flow)
        if conn is None or conn.closed:
            return
        ws = flow.websocket
        code = ws.close_code if ws is not None else None
        by = "client" if ws is not None and ws.closed_by_client else "upstream"
        self.finished(
            conn.close(f"WebSocket closed by the {by} (code {code}) before the response ended", time.time())
        )

    def error(self, flow: http.HTTPFlow) -> None:
        conn = connection_of(flow)
        if conn is not None and not conn.closed:
            reason = flow.error.msg if flow.error else "connection error"
            self.finished(conn.close(f"WebSocket connection failed: {reason}", time.time()))

    def finished(self, calls: list[WsCall]) -> None:
        """Hand ended calls to the writer thread; their budget reservations settle when the records commit."""
        for call in calls:
            ex = call.exchange
            if ex.recorded:
                continue
            ex.recorded = True
            if ex.response_headers == {}:
                ex.response_headers = {"content-type": "text/event-stream"}
            self.deps.writer.submit(ex)
            self.deps.ledger.end(ex.id)


def same_provider(route: Route | None, exchange: Exchange) -> Route:
    """A socket cannot change provider nor retry: the route's first target on the socket's provider only."""
    if route is None or not route.targets:
        model = exchange.requested_model
        return Route(model, (Target(model, exchange.provider),) if model else ())
    usable = [t for t in route.targets if not t.cross and t.provider == exchange.provider]
    notes = route.notes
    if len(usable) != len(route.targets) or len(usable) > 1:
        notes = (*notes, "websocket: fallback chains and cross-provider targets do not apply to a socket")
    if not usable:
        model = exchange.requested_model
        return Route(model, (Target(model, exchange.provider),) if model else (), None, notes)
    return Route(route.requested, (usable[0],), route.rule, notes)
