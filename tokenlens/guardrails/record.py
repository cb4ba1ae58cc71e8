"""What the store keeps of a call a guardrail touched (`exchange.deferred`: the gateway's spool thread meters
such a call itself, with the guardrails' settings the call was gated with).

- Request and answer bodies are stored with every PII and custom-rule match replaced by its placeholder,
  whatever the action (warn forwards the text, but the store never keeps it in clear). A redacted request is
  stored as it was forwarded. A streamed answer whose matches cannot all be masked in the stored SSE text (a
  match split across events) is not stored.
- An answer blocked by a response guardrail was paid for: its tokens and cost are metered from the upstream's
  answer, although the client got the guardrail's error.
- `mask_secrets` is what the API shows of a stored body: every secret (`pii.secret`) replaced by a numbered
  `[SECRET_n]`, whatever the guardrails settings (bodies stored before a rule was on, or with it off, hold
  keys pasted into prompts). The stored body itself is kept as it was stored.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from tokenlens.config import Guardrails, Settings
from tokenlens.exchange import Exchange
from tokenlens.guardrails.engine import Placeholders, apply_redaction, mask_body, mask_text
from tokenlens.guardrails.pii import Match, find_pii
from tokenlens.metering import meter, price_call
from tokenlens.pricing import pricer_for
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
        price = price_call(pricer_for(settings.pricing), answered, metered)
        if price is not None:
            record.priced = price.priced
            record.cost_usd = None if price.cost_usd is None else float(price.cost_usd)

    return run


def _secrets_in(text: str) -> list[Match]:
    return [m for m in find_pii(text) if m.rule == "pii.secret"]


def _mask_string(text: str, context: str, placeholders: Placeholders) -> str:
    """`text` (a JSON string) with its secrets masked; `context` ("key: ") lets `"api_key": "..."` be seen."""
    found = _secrets_in(context + text)
    shift = len(context)
    matches = [Match(m.rule, m.kind, max(m.start - shift, 0), m.end - shift) for m in found if m.end > shift]
    return apply_redaction(text, matches, placeholders) if matches else text


def _entries(container: dict[str, Any] | list[Any]) -> Iterator[tuple[Any, Any, Any]]:
    pairs = container.items() if isinstance(container, dict) else enumerate(container)
    return iter([(container, key, item) for key, item in pairs])


def _mask_keys(container: dict[str, Any], placeholders: Placeholders) -> bool:
    """Mask the secrets of an object's keys in place, keeping the keys' order; whether any was found."""
    masked = [(_mask_string(key, "", placeholders), item) for key, item in container.items()]
    if all(new is old for (new, _), old in zip(masked, container, strict=True)):
        return False
    container.clear()
    container.update(masked)
    return True


def _mask_json(value: dict[str, Any] | list[Any], placeholders: Placeholders) -> bool:
    """Mask the secrets of every string value of a parsed JSON value, in place and in document order (a loop
    over a stack, no recursion); whether any was found."""
    changed = isinstance(value, dict) and _mask_keys(value, placeholders)
    stack = [_entries(value)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        container, key, item = entry
        if isinstance(item, str):
            masked = _mask_string(item, f"{key}: " if isinstance(key, str) else "", placeholders)
            if masked != item:
                container[key], changed = masked, True
        elif isinstance(item, dict | list):
            changed = (isinstance(item, dict) and _mask_keys(item, placeholders)) or changed
            stack.append(_entries(item))
    return changed


def _mask_plain(text: str, matches: list[Match], placeholders: Placeholders) -> str:
    """Text that is not one JSON value (a stream) with the matches replaced where they are; a match never
    ends inside a backslash escape, so a JSON string in an SSE event stays a JSON string."""
    kept = []
    for m in matches:
        segment = text[m.start : m.end]
        end = m.end - (len(segment) - len(segment.rstrip("\\"))) % 2
        if end > m.start:
            kept.append(Match(m.rule, m.kind, m.start, end))
    return apply_redaction(text, kept, placeholders)


def mask_secrets(text: str | None) -> str | None:
    """A stored body (as text) with every secret replaced by `[SECRET_n]`, the same secret by the same number.

    A JSON body is masked string by string, keys included (a key such as `api_key` counts as the keyword of its
    value; a secret written with `\\u` escapes is found once decoded) and written back as JSON; any other text
    where the secrets are. Text without a secret is returned unchanged.
    """
    if not text:
        return text
    found = _secrets_in(text)
    if not found and "\\u" not in text:
        return text
    placeholders = Placeholders()
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return _mask_plain(text, found, placeholders) if found else text
    if not isinstance(body, dict | list):
        return _mask_plain(text, found, placeholders) if found else text
    return json.dumps(body, ensure_ascii=False) if _mask_json(body, placeholders) else text
