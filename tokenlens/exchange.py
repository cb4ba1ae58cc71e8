"""One call as the gateway saw it: captured on the proxy path without parsing, turned into a record later.

The ingress stage creates an `Exchange` per provider call and keeps it in the flow's metadata; each stage
adds what it knows; the record stage hands it to the writer thread, where `metering.build_record` parses
usage and prices it. Nothing here does I/O.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from math import ceil, isnan
from typing import TYPE_CHECKING, Any, Literal

from tokenlens.providers import ApiFormat

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tokenlens.config import Settings
    from tokenlens.guardrails.stream import StreamGuard
    from tokenlens.platforms import PlatformState
    from tokenlens.records import CallRecord
    from tokenlens.routing import ChainPlan, LatencyChooser, Route

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
    request_text: str | None = None  # a body that is not a JSON object, as text (the guardrails scan it)
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
    # A call with any is metered where it is spooled (the gateway's spool thread); one without is spooled as it
    # is and metered by the analysis process.
    deferred: list[Callable[[Exchange, CallRecord], None]] = field(default_factory=list)
    # Gateway state the finished call updates before it is recorded (the rate-limit book): each gets the
    # exchange and may fill `details`; run by the gateway wherever the call is metered.
    on_recorded: list[Callable[[Exchange], None]] = field(default_factory=list)
    # Told the call's cost (USD, None: unpriced) once it is metered (the answer cache keeps an original's cost).
    on_cost: list[Callable[[float | None], None]] = field(default_factory=list)
    transport: Literal["http", "websocket"] = "http"  # websocket: one response on a Responses/Realtime socket
    # The record analyses the call gets (`tokenlens.analyses`, by name): run where the record is stored.
    analyses: list[str] = field(default_factory=list)
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
    # False for traffic around the API (a preflight, a path outside the API, a WebSocket upgrade): forwarded,
    # counted apart (`AppDeps.passthrough`), never gated as a call nor recorded (docs/gateway.md, "Only model calls count").
    is_call: bool = True
    # Headers a client's signature covers (AWS SigV4 relayed in HTTPS_PROXY mode, tokenlens.platforms): the
    # request goes upstream byte for byte, so no stage may set or remove them (nor change the path or body).
    signed_headers: frozenset[str] = frozenset()
    platform: PlatformState | None = None  # a cloud platform's call (Azure OpenAI, Vertex AI, Bedrock)
    # Decisions one stage makes and later stages read (the per-call state of the pipeline, all of it here):
    route: Route | None = None  # the routing decision, made once (`route_of`)
    chain: ChainPlan | None = None  # the fallback chain the upstream stage hands to the chain service
    dedup_key: str | None = None  # the cache key the answer is stored under when it completes
    response_guard: StreamGuard | None = None  # the streamed answer's guardrail scanner


def route_of(
    exchange: Exchange, settings: Settings, rng: random.Random, latency: LatencyChooser | None = None
) -> Route:
    """The routing decision of a call (`tokenlens.routing.decide`), made on the first ask and kept on the
    exchange: the budget and quota gates price the call at the model it will really use, before the routing
    stage applies it."""
    if exchange.route is None:
        from tokenlens.routing import CallInfo, decide

        call = CallInfo(
            provider=exchange.provider,
            api=exchange.api,
            kind=exchange.kind,
            source=exchange.source,
            model=exchange.requested_model,
            stream=exchange.stream_requested,
        )
        exchange.route = decide(settings, call, rng, latency)
    return exchange.route


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
    """The largest output limit the request sets (docs/gateway.md#refused-and-failed-calls: "with several output limits, the largest"), or None.

    Every output-limit field of the format counts, whichever one the upstream honours: `max_tokens`,
    `max_completion_tokens` and `max_output_tokens` for the OpenAI and Anthropic formats (and the
    OpenAI-compatible servers behind them); Gemini's `generationConfig` / `generation_config` with
    `maxOutputTokens` / `max_output_tokens`. A number written as a string ("4000") or a float (4000.0;
    4000.5 counts as 4001) counts, since a lenient upstream may accept it. A value that is not a positive
    number (0, negative, a boolean, NaN, any other type) is ignored, so it can never lower the result; one
    above `MAX_OUTPUT_TOKENS` (infinity included) counts as `MAX_OUTPUT_TOKENS`.
    """
    from tokenlens.config import MAX_OUTPUT_TOKENS

    if body is None:
        return None
    candidates: list[Any] = []
    if api == "google":
        for key in ("generationConfig", "generation_config"):
            config = body.get(key)
            if isinstance(config, dict):
                candidates += [config.get("maxOutputTokens"), config.get("max_output_tokens")]
    else:
        candidates = [
            body.get("max_tokens"),
            body.get("max_completion_tokens"),
            body.get("max_output_tokens"),
        ]
    limits = [limit for value in candidates if (limit := count_from_request(value, MAX_OUTPUT_TOKENS))]
    return max(limits) if limits else None


def count_from_request(value: Any, ceiling: int) -> int | None:
    """A count a request field sets, read as leniently as an upstream may read it: a number written as a
    string ("4000") or a float (4000.5 counts as 4001); past `ceiling` (infinity included), `ceiling`. None for
    what is not a positive number (0, negative, a boolean, NaN, any other type)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or isinstance(value, bool) or isnan(value) or value <= 0:
        return None
    return ceiling if value >= ceiling else ceil(value)


def wants_stream(kind: str, body: dict[str, Any] | None) -> bool:
    if kind == "stream_generate":
        return True
    return bool(body is not None and body.get("stream") is True)


def run_on_recorded(ex: Exchange) -> None:
    """Run (once) the gateway-state hooks of a finished call (`Exchange.on_recorded`); one that fails is
    logged and the others still run."""
    hooks, ex.on_recorded = ex.on_recorded, []
    _run_each(hooks, ex, "on_recorded", ex.id)


def tell_cost(ex: Exchange, cost_usd: float | None) -> None:
    """Tell the call's `on_cost` hooks (once) what it cost."""
    hooks, ex.on_cost = ex.on_cost, []
    _run_each(hooks, cost_usd, "on_cost", ex.id)


def _run_each(hooks: list[Callable[[Any], None]], argument: object, kind: str, call_id: str) -> None:
    for hook in hooks:
        try:
            hook(argument)
        except Exception as exc:  # its type only: the message may quote a body
            log.error("%s hook %s failed for call %s: %s", kind, hook_name(hook), call_id, type(exc).__name__)


def hook_name(function: object) -> str:
    """A hook's name for a log line (a partial or a callable object has no `__qualname__`)."""
    return str(getattr(function, "__qualname__", None) or type(function).__name__)
