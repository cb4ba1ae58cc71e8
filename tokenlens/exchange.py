"""One call as the gateway saw it: captured on the proxy path without parsing, turned into a record later.

The ingress stage creates an `Exchange` per provider call and keeps it in the flow's metadata; each stage
adds what it knows; the record stage hands it to the writer thread, where `metering.build_record` parses
usage and prices it. Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tokenlens.providers import ApiFormat

if TYPE_CHECKING:
    from tokenlens.records import CallRecord

Mode = Literal["base_url", "proxy"]

GENERATION_KINDS = frozenset({"chat", "responses", "completions", "messages", "generate", "stream_generate"})
EMBEDDING_KINDS = frozenset({"embeddings", "embed"})
METERED_KINDS = GENERATION_KINDS | EMBEDDING_KINDS


@dataclass
class Exchange:
    id: str
    started: float  # epoch seconds when the request arrived
    provider: str
    api: ApiFormat
    endpoint: str  # upstream path without query string
    kind: str  # tokenlens.usage.endpoint_kind
    mode: Mode
    source: str = "unknown"
    tags: dict[str, str] = field(default_factory=dict)
    session_id: str | None = None
    request_body: bytes = b""
    request_json: dict[str, Any] | None = None
    requested_model: str | None = None
    model: str | None = None
    stream_requested: bool = False
    max_tokens: int | None = None
    usage_injected: bool = False  # the gateway asked upstream for stream usage the client did not ask for
    # set by the gates and later stages
    outcome: str | None = None  # "blocked" or "cached" when a stage answered locally
    blocked_by: str | None = None
    saved_usd: float | None = None
    guardrail_flags: list[dict[str, str]] = field(default_factory=list)
    waste_tokens: int | None = None
    complexity: int | None = None
    attempts: int = 1
    fallback_from: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # per-call analysis by stage, copied to the record
    # Analysis that only annotates the record runs in the writer thread, off the proxy path: each callable gets
    # the exchange and the record built so far, and may fill record fields and record.details.
    deferred: list[Callable[[Exchange, CallRecord], None]] = field(default_factory=list)
    # the answer
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes | None = None
    streamed: bool = False
    chunks: list[bytes] = field(default_factory=list)  # decoded stream bytes as they passed
    stream_undecodable: bool = False
    first_chunk_at: float | None = None
    ended: float | None = None
    error: str | None = None
    recorded: bool = False


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is empty, not JSON, or not an object."""
    if not body or body.lstrip()[:1] != b"{":
        return None
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def model_from_request(api: ApiFormat, endpoint: str, body: dict[str, Any] | None) -> str | None:
    """The model asked for: the body's `model`, or Gemini's `models/<name>:<method>` path segment."""
    if api == "google":
        marker = "/models/"
        if marker in endpoint:
            name = endpoint.split(marker, 1)[1].split(":", 1)[0]
            return name or None
    if body is not None:
        model = body.get("model")
        if isinstance(model, str) and model:
            return model
    return None


def max_tokens_from_request(api: ApiFormat, body: dict[str, Any] | None) -> int | None:
    if body is None:
        return None
    candidates: list[Any]
    if api == "google":
        config = body.get("generationConfig") or body.get("generation_config") or {}
        candidates = (
            [config.get("maxOutputTokens"), config.get("max_output_tokens")]
            if isinstance(config, dict)
            else []
        )
    else:
        candidates = [
            body.get("max_completion_tokens"),
            body.get("max_output_tokens"),
            body.get("max_tokens"),
        ]
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def wants_stream(kind: str, body: dict[str, Any] | None) -> bool:
    if kind == "stream_generate":
        return True
    return bool(body is not None and body.get("stream") is True)
