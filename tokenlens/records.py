"""The Call record: one row per call that went through the gateway (SPEC section 9).

`CallRecord` is what the writer thread stores and what `/api/calls`, the live feed and exports emit
(`to_dict`). Bodies are kept apart (`request_body`, `response_body`) and are emitted only where asked.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Outcome = Literal["ok", "error", "blocked", "cached"]
UsageSource = Literal["provider", "estimated"]

_last_id_ns = 0


def new_call_id() -> str:
    """A time-ordered, unique id: 16 hex digits of nanoseconds since the epoch then 8 random hex digits."""
    global _last_id_ns
    now = max(time.time_ns(), _last_id_ns + 1)
    _last_id_ns = now
    return f"{now:016x}{os.urandom(4).hex()}"


def iso_utc(ts: float) -> str:
    """Epoch seconds to ISO 8601 UTC with milliseconds, e.g. 2026-11-28T11:14:52.123Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(value: str) -> float:
    """ISO 8601 (with Z, an offset, or naive meaning UTC; a date alone is midnight UTC) to epoch seconds."""
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass
class CallRecord:
    """Every field of SPEC section 9's Call, plus the cost split and a few diagnostic extras."""

    id: str
    ts: float  # epoch seconds, UTC: when the request arrived
    provider: str  # configured provider name: openai, anthropic, google, or a user-added one
    endpoint: str  # upstream path without query string, e.g. /v1/chat/completions
    source: str = "unknown"
    tags: dict[str, str] = field(default_factory=dict)
    requested_model: str | None = None  # the model the client asked for
    model: str | None = None  # the model actually called (after routing)
    response_model: str | None = None  # the model the provider reported, e.g. gpt-4o-2024-08-06
    stream: bool = False
    status: int | None = None  # HTTP status the client received
    outcome: Outcome = "ok"
    blocked_by: str | None = None
    error: str | None = None  # what went wrong, for outcome "error" (never a secret)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int = 0
    usage_source: UsageSource | None = None  # None when the call carries no usage (e.g. a 4xx)
    cost_usd: float | None = None  # None = unpriced; never a silent 0
    input_cost_usd: float | None = None  # uncached input
    output_cost_usd: float | None = None
    cache_read_cost_usd: float | None = None
    cache_write_cost_usd: float | None = None
    priced: bool = False
    session_id: str | None = None
    conversation_id: str | None = None
    turn: int | None = None
    saved_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    max_tokens: int | None = None
    attempts: int = 1
    fallback_from: str | None = None
    guardrail_flags: list[dict[str, str]] = field(default_factory=list)
    waste_tokens: int | None = None
    complexity: int | None = None
    mode: Literal["base_url", "proxy"] = "base_url"
    service_tier: str | None = None
    request_id: str | None = None  # the provider's request id header, when it sends one
    # Per-call analysis the stages add, keyed by stage (e.g. "heatmap", "waste", "attempts", "guardrails").
    details: dict[str, Any] = field(default_factory=dict)
    request_body: bytes | None = None
    response_body: bytes | None = None

    BODY_FIELDS = ("request_body", "response_body")

    def to_dict(self, *, bodies: bool = False) -> dict[str, Any]:
        """The JSON shape of the API: `ts` as ISO 8601 UTC; bodies (decoded as text) only when asked."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in self.BODY_FIELDS:
                continue
            out[f.name] = getattr(self, f.name)
        out["ts"] = iso_utc(self.ts)
        if bodies:
            for name in self.BODY_FIELDS:
                raw = getattr(self, name)
                out[name] = raw.decode("utf-8", "replace") if raw is not None else None
        return out


CALL_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(CallRecord) if f.name not in CallRecord.BODY_FIELDS
)
