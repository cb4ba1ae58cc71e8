"""The Call record: one row per call that went through the gateway (docs/analytics-api.md).

`CallRecord` is what the writer thread stores and what `/api/calls`, the live feed and exports emit
(`to_dict`). Bodies are kept apart (`request_body`, `response_body`) and are emitted only where asked.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

# ---------------------------------------------------------------------------------------------- plausible bounds

MAX_TOKENS = 10**9
"""Any token count of one call: input, output, cache read/write (and the 5m/1h split), reasoning, waste,
and the requested `max_tokens` (no model reads or writes a billion tokens in one call)."""
MAX_COST_USD = 1_000_000.0
"""Any amount of one call in USD: `cost_usd`, its four parts, `saved_usd` (a billion tokens at $1,000 per
million is $1M)."""
MAX_DURATION_MS = 10**9
"""`latency_ms` and `ttft_ms` (about 11.6 days)."""
MAX_STATUS = 999
"""An HTTP status is 0..999."""
MAX_COUNT = 10**6
"""`attempts` and `turn`."""
MAX_COMPLEXITY = 9
"""`complexity` is 0..9 (docs/analytics-api.md#how-the-figures-are-computed)."""
MIN_TS, MAX_TS = 0.0, 32_503_680_000.0
"""`ts`: 1970-01-01 to 3000-01-01 UTC."""
MAX_NAME_CHARS = 256
"""`id`, `provider`, the model names, `source`, `session_id`, `conversation_id`, `blocked_by`,
`service_tier`, `request_id`, a tag's key, a guardrail flag's values."""
MAX_TEXT_CHARS = 8192
"""`endpoint`, `error`, a tag's value."""
MAX_TAGS = 128
"""Tags of one call."""
MAX_FLAGS = 256
"""Guardrail flags of one call."""
MAX_JSON_DEPTH = 32
"""Nesting of `details` (and of an imported JSON line as a whole, one level more)."""

INT_BOUNDS: dict[str, tuple[int, int]] = {
    **{
        name: (0, MAX_TOKENS)
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "reasoning_tokens",
            "max_tokens",
            "waste_tokens",
        )
    },
    "status": (0, MAX_STATUS),
    "attempts": (0, MAX_COUNT),
    "turn": (0, MAX_COUNT),
    "complexity": (0, MAX_COMPLEXITY),
}
"""(lowest, highest) of every integer field of a Call."""

FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    **{
        name: (0.0, MAX_COST_USD)
        for name in (
            "cost_usd",
            "input_cost_usd",
            "output_cost_usd",
            "cache_read_cost_usd",
            "cache_write_cost_usd",
            "saved_usd",
        )
    },
    "latency_ms": (0.0, float(MAX_DURATION_MS)),
    "ttft_ms": (0.0, float(MAX_DURATION_MS)),
}
"""(lowest, highest) of every float field of a Call except `ts` (`MIN_TS`, `MAX_TS`)."""

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
    """Every field of docs/analytics-api.md Call, plus the cost split and a few diagnostic extras."""

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
    transport: Literal["http", "websocket"] = "http"  # websocket: one response on a Responses/Realtime socket
    service_tier: str | None = None
    request_id: str | None = None  # the provider's request id header, when it sends one
    # Which price was used (issue 18): the genai-prices model id, ``inferred:<model id>`` or ``override``.
    price_source: str | None = None
    # Per-modality counts, e.g. {"input": {"text": 120, "image": 1290}, "cache_read": {"audio": 6000}}.
    modality_tokens: dict[str, dict[str, int]] | None = None
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


class SettledFacts(Protocol):
    """What the gateway's own books read of a metered call (budgets, rate-limit alerts, latency, metrics): a
    `CallRecord`, or the `tokenlens.settlement.SettledCall` its analysis process reports."""

    @property
    def id(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def source(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def status(self) -> int | None: ...
    @property
    def stream(self) -> bool: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def ttft_ms(self) -> float | None: ...
    @property
    def cost_usd(self) -> float | None: ...
    @property
    def saved_usd(self) -> float | None: ...
    @property
    def blocked_by(self) -> str | None: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...


CALL_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(CallRecord) if f.name not in CallRecord.BODY_FIELDS
)


_REQUIRED_INT_DEFAULTS = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "attempts": 1,
}


def _clamped_int(value: object, low: int, high: int) -> int | None:
    """`value` as an int within [low, high] (clamped); None when it is NaN or not a number."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return low if value < low else high if value > high else int(value)
    if not isinstance(value, int):
        return None
    return min(max(int(value), low), high)


def _clamped_float(value: object, low: float, high: float) -> float | None:
    """`value` as a float within [low, high] (clamped, infinities included); None when NaN or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return float(min(max(value, math.floor(low)), math.ceil(high)))
    return None if math.isnan(value) else min(max(value, low), high)


TEXT_FIELDS = (
    "id",
    "provider",
    "endpoint",
    "source",
    "requested_model",
    "model",
    "response_model",
    "blocked_by",
    "error",
    "session_id",
    "conversation_id",
    "fallback_from",
    "service_tier",
    "request_id",
    "price_source",
)
"""The free-text fields of a Call (stored in text columns)."""
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> str:
    """`value` as every store can hold it: NUL (refused by PostgreSQL) and lone surrogates (refused by both
    drivers, which encode UTF-8) replaced by U+FFFD."""
    if value.isascii() and "\x00" not in value:
        return value
    return _UNSTORABLE.sub("\ufffd", value)


def bound_record(record: CallRecord) -> CallRecord:
    """Make a record the gateway built storable as it is, in place (and return it): never a reason to lose it.

    Numbers out of range are clamped: an integer to the nearest bound of `INT_BOUNDS` (a `max_tokens` of
    10^29 is stored as `MAX_TOKENS`, a negative count as 0; a huge figure stays conspicuous and still counts
    toward budgets as large), a float to `FLOAT_BOUNDS` (infinities included). NaN, or a value that is not a
    number, becomes null (0 for the token counts, 1 for `attempts`). `ts` is kept within `MIN_TS`..`MAX_TS`.
    Text fields and tags go through `storable_text`. Imports do not clamp: they refuse the line
    (`tokenlens.store.queries`).
    """
    for name, (low, high) in INT_BOUNDS.items():
        value = getattr(record, name)
        if value is None or (type(value) is int and low <= value <= high):  # the usual case, kept as it is
            continue
        bounded = _clamped_int(value, low, high)
        if bounded is None:
            bounded = _REQUIRED_INT_DEFAULTS.get(name)
        if bounded != value or type(value) is not int:
            setattr(record, name, bounded)
    for name, (low_f, high_f) in FLOAT_BOUNDS.items():
        value = getattr(record, name)
        if value is not None and not (type(value) is float and low_f <= value <= high_f):  # NaN fails too
            setattr(record, name, _clamped_float(value, low_f, high_f))
    _parts_within_cost(record)
    ts = _clamped_float(record.ts, MIN_TS, MAX_TS)
    record.ts = MIN_TS if ts is None else ts
    for name in TEXT_FIELDS:
        text = getattr(record, name)
        if isinstance(text, str):
            setattr(record, name, storable_text(text))
    if record.tags:
        record.tags = {storable_text(str(k)): storable_text(str(v)) for k, v in record.tags.items()}
    record.modality_tokens = bound_modality_tokens(record.modality_tokens)
    return record


COST_PARTS = ("input_cost_usd", "output_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd")


def _parts_within_cost(record: CallRecord) -> None:
    """A cost clamped to `MAX_COST_USD` keeps a breakdown that adds up: its parts are scaled by the same
    factor (each part was clamped on its own, so they could sum to more than the cost)."""
    parts = [getattr(record, name) for name in COST_PARTS]
    total = sum(p for p in parts if p is not None)
    if record.cost_usd is None or record.cost_usd < MAX_COST_USD or total <= record.cost_usd:
        return
    scale = record.cost_usd / total
    for name, part in zip(COST_PARTS, parts, strict=True):
        if part is not None:
            setattr(record, name, part * scale)


MODALITY_GROUPS = ("input", "output", "cache_read", "cache_write")
"""The parts of `modality_tokens`."""
MODALITY_NAMES = ("text", "image", "audio", "video", "document")
"""The modalities of `modality_tokens`."""


def bound_modality_tokens(value: object) -> dict[str, dict[str, int]] | None:
    """`modality_tokens` as the store keeps it: known parts and modalities, counts within `MAX_TOKENS` (a
    count that is not a number is dropped); None when nothing is left."""
    if not isinstance(value, dict):
        return None
    out: dict[str, dict[str, int]] = {}
    for group, counts in value.items():
        if group not in MODALITY_GROUPS or not isinstance(counts, dict):
            continue
        kept = {}
        for modality, count in counts.items():
            bounded = _clamped_int(count, 0, MAX_TOKENS) if not isinstance(count, bool) else None
            if modality in MODALITY_NAMES and bounded:
                kept[modality] = bounded
        if kept:
            out[group] = kept
    return out or None


def describe_failure(exc: BaseException) -> str:
    """What to log of a failure around a record: the exception's type and where it was raised, never its
    message (a driver's message can quote the row: a body, a tag, a secret)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {os.path.basename(last.filename)}:{last.lineno} in {last.name}"
