"""4. Request guardrails: PII, injection and custom rules; warn, block (400) or redact.

The logic is `tokenlens.guardrails`; this stage scans the parsed request, flags the call, and either answers
locally (block), rewrites the text fields of the body before it goes upstream (redact), or lets it through
(warn). A body that is not JSON is scanned as text (and refused where a rule would redact it). The stored
request body is masked in the writer thread. An exception in a scan lets the call through
when `guardrails.fail_open` is true (the default) and blocks it otherwise.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mitmproxy import http

from tokenlens.addons._flowstate import pending_call
from tokenlens.addons._gate import answer_guardrail_block
from tokenlens.app import AppDeps
from tokenlens.guardrails.engine import block_message, is_active, scan_body
from tokenlens.guardrails.record import mask_request

log = logging.getLogger(__name__)


def text_as_body(api: str, text: str) -> dict[str, Any]:
    """A body that is not JSON, as one user message in the provider's format, so every rule scans it."""
    if api == "google":
        return {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    return {"messages": [{"role": "user", "content": text}]}


class RequestGuardrails:
    name = "tokenlens.request_guardrails"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None or (exchange.request_json is None and not exchange.request_text):
            return
        g = self.deps.settings.get().guardrails
        if not is_active(g, "request"):
            return
        as_text = exchange.request_json is None
        body = exchange.request_json
        if body is None:
            body = text_as_body(exchange.api, exchange.request_text or "")
        try:
            verdict = scan_body(g, exchange.api, body, "request")
        except Exception as exc:  # the message could quote the text: log the type only
            log.warning("request guardrail failed on call %s: %s", exchange.id, type(exc).__name__)
            exchange.details["guardrails"] = {
                "request": {"error": type(exc).__name__, "fail_open": g.fail_open}
            }
            if not g.fail_open:
                exchange.guardrail_flags.append(
                    {"rule": "guardrail_error", "action": "block", "where": "request"}
                )
                answer_guardrail_block(
                    flow, exchange, "TokenLens guardrail could not check this request (fail_open is off)."
                )
            return
        if not verdict.findings:
            return
        exchange.guardrail_flags.extend(verdict.flags())
        exchange.details["guardrails"] = {"request": verdict.details()}
        exchange.deferred.append(mask_request(g))
        if verdict.blocking:
            answer_guardrail_block(flow, exchange, block_message(verdict.blocking, "request"))
        elif verdict.redacted is not None and as_text:
            # A body that is not JSON cannot be rewritten field by field: refused rather than sent unredacted.
            rules = sorted({f.rule for f in verdict.findings if f.action == "redact"})
            answer_guardrail_block(flow, exchange, block_message(rules, "request"))
        elif verdict.redacted is not None:
            flow.request.content = json.dumps(verdict.redacted, ensure_ascii=False).encode()
            exchange.request_json = verdict.redacted
            exchange.request_body = flow.request.raw_content or b""
