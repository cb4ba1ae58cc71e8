"""What the store keeps of a call a guardrail touched (run in the writer thread, via `exchange.deferred`).

- Request and answer bodies are stored with every PII and custom-rule match replaced by its placeholder,
  whatever the action (warn forwards the text, but the store never keeps it in clear). A redacted request is
  stored as it was forwarded. A streamed answer whose matches cannot all be masked in the stored SSE text (a
  match split across events) is not stored.
- An answer blocked by a response guardrail was paid for: its tokens and cost are metered from the upstream's
  answer, although the client got the guardrail's error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tokenlens.config import Guardrails, Settings
from tokenlens.exchange import Exchange
from tokenlens.guardrails.engine import mask_body, mask_text
from tokenlens.metering import meter, price_call
from tokenlens.pricing import Pricer
from tokenlens.pricing import from_settings as overrides_from_settings
from tokenlens.records import CallRecord

Deferred = Callable[[Exchange, CallRecord], None]


def mask_request(g: Guardrails) -> Deferred:
    def run(ex: Exchange, record: CallRecord) -> None:
        if record.request_body:
            record.request_body = mask_body(g, ex.api, record.request_body, "request")

    return run


def mask_response(g: Guardrails, streamed_findings: int) -> Deferred:
    def run(ex: Exchange, record: CallRecord) -> None:
        if not record.response_body:
            return
        if not ex.streamed:
            record.response_body = mask_body(g, ex.api, record.response_body, "response")
            return
        text = record.response_body.decode("utf-8", "replace")
        masked, count = mask_text(g, "response", text)
        record.response_body = masked.encode() if count >= streamed_findings else None

    return run


def meter_blocked_answer(settings: Settings, original_body: bytes | None, status: int | None) -> Deferred:
    """Tokens and cost of an answer the upstream gave but the guardrail kept from the client."""

    def run(ex: Exchange, record: CallRecord) -> None:
        answered = dataclasses.replace(
            ex,
            outcome=None,
            status=status,
            response_body=original_body if not ex.streamed else None,
            response_headers={k: v for k, v in ex.response_headers.items() if k != "content-encoding"},
        )
        metered = meter(answered)
        usage = metered.usage
        if usage is None:
            return
        record.usage_source = metered.usage_source  # type: ignore[assignment]
        record.response_model = metered.response_model
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
        ):
            setattr(record, name, getattr(usage, name))
        price = price_call(Pricer(overrides_from_settings(settings.pricing)), answered, metered)
        if price is not None:
            record.priced = price.priced
            record.cost_usd = None if price.cost_usd is None else float(price.cost_usd)

    return run
