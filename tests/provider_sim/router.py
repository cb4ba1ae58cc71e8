"""Which provider and endpoint a request is for, and the reply it gets (including the injected faults)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import anthropic_api, google_api, openai_api, platforms
from .usage import Knobs, plan
from .wire import Call, Ids, ReceivedRequest, Reply, error_body, json_reply

GOOGLE_CALL = re.compile(r"^/(v1|v1beta|v1alpha)/(?:models|tunedModels)/([^/:]+):([A-Za-z]+)$")
GOOGLE_MODELS = re.compile(r"^/(v1|v1beta|v1alpha)/models(/[^/:]+)?/?$")
GOOGLE_KINDS = {
    "generateContent": "generate",
    "streamGenerateContent": "generate",
    "embedContent": "embed",
    "batchEmbedContents": "embed",
    "countTokens": "count_tokens",
}
OPENAI_KINDS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/completions": "completions",
    # the OpenAI-compatible chat endpoints of Anthropic (same path) and Gemini, answered in the OpenAI format
    "/v1beta/openai/chat/completions": "chat",
}
ANTHROPIC_KINDS = {"/v1/messages": "messages", "/v1/messages/count_tokens": "count_tokens"}

OPENAI_LIMITS = {"requests": 10_000, "tokens": 30_000_000}
ANTHROPIC_LIMITS = {
    "requests": 4_000,
    "tokens": 2_000_000,
    "input-tokens": 1_600_000,
    "output-tokens": 400_000,
}
ANTHROPIC_ORG = "5e1a7c2b-0000-4000-8000-000000000001"


@dataclass
class Counters:
    """Per-provider request and token counts, for the rate-limit headers."""

    requests: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    provider: str
    kind: str | None  # None: unknown path
    model: str = ""  # from the URL (Gemini)
    google_method: str = ""


def detect_provider(req: ReceivedRequest) -> str:
    """The provider whose format an unknown path is answered in."""
    h = req.headers
    if req.path.startswith(("/v1beta", "/v1alpha")) or ":" in req.path.rsplit("/", 1)[-1]:
        return "google"
    if "x-goog-api-key" in h or "key=" in req.query:
        return "google"
    if "anthropic-version" in h or "x-api-key" in h or req.path.startswith("/v1/messages"):
        return "anthropic"
    return "openai"


def route(req: ReceivedRequest) -> Route:
    path = req.path
    kind = OPENAI_KINDS.get(path)
    if kind:
        return Route("openai", kind)
    kind = ANTHROPIC_KINDS.get(path)
    if kind:
        return Route("anthropic", kind)
    m = GOOGLE_CALL.match(path)
    if m and m.group(3) in GOOGLE_KINDS:
        return Route("google", GOOGLE_KINDS[m.group(3)], m.group(2), m.group(3))
    provider = detect_provider(req)
    if provider == "google" and GOOGLE_MODELS.match(path) and req.method == "GET":
        return Route("google", "models")
    if path == "/v1/models" or path.startswith("/v1/models/"):
        if req.method == "GET":
            return Route("anthropic" if provider == "anthropic" else "openai", "models")
    return Route(provider, None)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def provider_headers(
    provider: str, request_id: str, counters: Counters, tokens: int
) -> list[tuple[str, str]]:
    n = counters.requests.get(provider, 0) + 1
    counters.requests[provider] = n
    used = counters.tokens.get(provider, 0) + tokens
    counters.tokens[provider] = used
    if provider == "openai":
        limit_r, limit_t = OPENAI_LIMITS["requests"], OPENAI_LIMITS["tokens"]
        return [
            ("x-request-id", request_id),
            ("openai-organization", "user-sim"),
            ("openai-processing-ms", "7"),
            ("openai-version", "2020-10-01"),
            ("x-ratelimit-limit-requests", str(limit_r)),
            ("x-ratelimit-limit-tokens", str(limit_t)),
            ("x-ratelimit-remaining-requests", str(limit_r - 1 - (n - 1) % limit_r)),
            ("x-ratelimit-remaining-tokens", str(limit_t - used % limit_t)),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-reset-tokens", "0s"),
        ]
    if provider == "anthropic":
        reset = _rfc3339(time.time() + 1)
        out = [("request-id", request_id), ("anthropic-organization-id", ANTHROPIC_ORG)]
        for name, limit in ANTHROPIC_LIMITS.items():
            count = n if name == "requests" else used
            remaining = limit - 1 - (count - 1) % limit if name == "requests" else limit - count % limit
            out += [
                (f"anthropic-ratelimit-{name}-limit", str(limit)),
                (f"anthropic-ratelimit-{name}-remaining", str(remaining)),
                (f"anthropic-ratelimit-{name}-reset", reset),
            ]
        return out
    return [("vary", "Origin, X-Origin, Referer"), ("server-timing", "gfet4t7; dur=7")]


def new_request_id(provider: str) -> str:
    if provider == "anthropic":
        return Ids.make("req_011Sim", 16)
    if provider == "openai":
        return Ids.make("req_sim", 29)
    return ""


def error_reply(provider: str, status: int, request_id: str, message: str | None = None) -> Reply:
    reply = json_reply(status, error_body(provider, status, message, request_id or None))
    if status == 429:
        reply.headers.append(("retry-after", "1"))
    return reply


def _body(req: ReceivedRequest) -> dict[str, Any] | None:
    if req.method != "POST":
        return {}
    if not req.body:
        return None
    try:
        data = req.json()
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


def dispatch(req: ReceivedRequest, knobs: Knobs, counters: Counters) -> Reply:
    """Build the reply of one request (faults that need the socket are applied by the server)."""
    on_platform = platforms.match(req.path)  # Azure OpenAI, Vertex AI, Bedrock paths
    if on_platform is not None:
        request_id = new_request_id("openai" if on_platform.platform == "azure" else "anthropic")
        reply, family, tokens = platforms.dispatch(
            on_platform, req.method, req.path, req.query, req.headers, req.body, knobs, request_id
        )
        reply.headers.extend(provider_headers(family, request_id, counters, tokens))
        return reply
    r = route(req)
    request_id = new_request_id(r.provider)
    reply, tokens = _dispatch(req, r, knobs, request_id)
    reply.headers.extend(provider_headers(r.provider, request_id, counters, tokens))
    return reply


def _dispatch(req: ReceivedRequest, r: Route, knobs: Knobs, request_id: str) -> tuple[Reply, int]:
    if knobs.status and knobs.status != 200:
        return error_reply(r.provider, knobs.status, request_id), 0
    if r.kind is None:
        message = f"Invalid URL ({req.method} {req.path})" if r.provider == "openai" else None
        return error_reply(r.provider, 404, request_id, message), 0
    body = _body(req)
    if body is None:
        return error_reply(
            r.provider, 400, request_id, "We could not parse the JSON body of your request."
        ), 0
    if r.provider == "google":
        model, stream, sse = (
            r.model,
            r.google_method == "streamGenerateContent",
            req.params.get("alt") == "sse",
        )
    else:
        raw_model = body.get("model")
        model, stream, sse = (
            (raw_model if isinstance(raw_model, str) else ""),
            body.get("stream") is True,
            True,
        )
    p = plan(r.provider, r.kind, body, knobs) if req.method == "POST" and r.kind != "models" else None
    call = Call(
        provider=r.provider,
        kind=r.kind,
        body=body,
        knobs=knobs,
        plan=p,
        model=model,
        stream=stream,
        sse=sse,
        path=req.path,
        method=req.method,
        request_id=request_id,
    )
    module = {"openai": openai_api, "anthropic": anthropic_api, "google": google_api}[r.provider]
    reply = module.handle(call)
    if reply.events is not None and knobs.stream_error_after is not None:
        keep = min(knobs.stream_error_after, len(reply.events) - 1)
        if reply.usage_index is not None:
            keep = min(keep, reply.usage_index)
        reply.events = [*reply.events[:keep], module.stream_error_event(call)]
        reply.usage_index = None
    tokens = p.total_input + p.output_tokens if p is not None and reply.status == 200 else 0
    return reply, tokens
