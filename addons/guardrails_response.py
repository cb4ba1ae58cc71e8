"""9. Response guardrails: PII (and custom rules) in the model's output, streamed or not.

- Non-streamed answers are parsed and scanned; `warn` flags, `redact` rewrites the text fields, `block`
  replaces the answer with a 400 in the provider's format.
- Streams are scanned as they pass (the upstream tap is wrapped, so metering still sees every byte the
  upstream sent); see `tokenlens.guardrails.stream` for what a client sees when a stream is stopped.
- Upstream compression is turned off while response guardrails are on (`accept-encoding: identity`), because
  a compressed stream cannot be cut cleanly; one that still arrives compressed is only flagged.
"""

from __future__ import annotations

import json
import logging

from mitmproxy import http

from tokenlens.addons._flowstate import exchange_of, pending_call
from tokenlens.addons._gate import answer_guardrail_block
from tokenlens.app import AppDeps
from tokenlens.exchange import Exchange
from tokenlens.guardrails.engine import Verdict, block_message, is_active, scan_body
from tokenlens.guardrails.record import mask_response, meter_blocked_answer
from tokenlens.guardrails.stream import StreamGuard
from tokenlens.platforms.eventstream import CONTENT_TYPE as EVENT_STREAM
from tokenlens.platforms.stream_guard import EventStreamGuard
from tokenlens.request_body import parse_json_object
from tokenlens.stream_taps import GuardedTap

log = logging.getLogger(__name__)


class ResponseGuardrails:
    name = "tokenlens.response_guardrails"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is not None and is_active(self.deps.settings.get().guardrails, "response"):
            if "accept-encoding" not in exchange.signed_headers:  # a client-signed header is never changed
                flow.request.headers["accept-encoding"] = "identity"

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        response = flow.response
        if exchange is None or response is None or exchange.outcome is not None or not exchange.streamed:
            return
        g = self.deps.settings.get().guardrails
        encoding = response.headers.get("content-encoding", "identity").lower()
        if not is_active(g, "response") or encoding not in ("", "identity"):
            return
        if response.headers.get("content-type", "").startswith(EVENT_STREAM):  # Bedrock's binary framing
            guard: StreamGuard = EventStreamGuard(g, converse=exchange.endpoint.endswith("/converse-stream"))
        else:
            guard = StreamGuard(g, exchange.api, exchange.endpoint)
        exchange.response_guard = guard
        if guard.holding:
            response.headers.pop("content-length", None)
        response.stream = GuardedTap(response.stream, guard)

    def response(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        response = flow.response
        if exchange is None or response is None or exchange.recorded:
            return
        if exchange.response_guard is not None:
            self._after_stream(exchange, exchange.response_guard)
        elif exchange.outcome is None and not exchange.streamed and 200 <= response.status_code < 300:
            self._scan_answer(flow, exchange, response)

    def error(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        if exchange is not None and not exchange.recorded and exchange.response_guard is not None:
            self._after_stream(exchange, exchange.response_guard)

    def _after_stream(self, exchange: Exchange, guard: StreamGuard) -> None:
        if not guard.findings:
            return
        verdict = Verdict("response", guard.findings)
        exchange.guardrail_flags.extend(verdict.flags())
        exchange.details.setdefault("guardrails", {})["response"] = {
            **verdict.details(),
            "stopped": guard.stopped,
        }
        exchange.deferred.append(mask_response(guard.g, len(guard.findings)))
        if guard.stopped:
            settings = self.deps.settings.get()
            exchange.outcome, exchange.blocked_by = "blocked", "guardrail"
            exchange.deferred.append(meter_blocked_answer(settings, None, exchange.status or 200))

    def _scan_answer(self, flow: http.HTTPFlow, exchange: Exchange, response: http.Response) -> None:
        settings = self.deps.settings.get()
        g = settings.guardrails
        if not is_active(g, "response"):
            return
        body = parse_json_object(response.get_content(strict=False) or b"")
        if body is None:
            return
        try:
            verdict = scan_body(g, exchange.api, body, "response")
        except Exception as exc:
            log.warning("response guardrail failed on call %s: %s", exchange.id, type(exc).__name__)
            exchange.details.setdefault("guardrails", {})["response"] = {"error": type(exc).__name__}
            if not g.fail_open:
                answer_guardrail_block(
                    flow, exchange, "TokenLens guardrail could not check this response (fail_open is off)."
                )
            return
        if not verdict.findings:
            return
        exchange.guardrail_flags.extend(verdict.flags())
        exchange.details.setdefault("guardrails", {})["response"] = verdict.details()
        exchange.deferred.append(mask_response(g, 0))
        if verdict.blocking:
            original, status = response.get_content(strict=False), response.status_code
            answer_guardrail_block(flow, exchange, block_message(verdict.blocking, "response"))
            exchange.deferred.append(meter_blocked_answer(settings, original, status))
        elif verdict.redacted is not None:
            response.content = json.dumps(verdict.redacted, ensure_ascii=False).encode()
