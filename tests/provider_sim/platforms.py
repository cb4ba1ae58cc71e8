"""The cloud platforms' wire formats: Azure OpenAI, Vertex AI (Gemini and Claude), AWS Bedrock.

- Azure OpenAI: `/openai/deployments/<deployment>/<endpoint>?api-version=...` and the v1 API
  (`/openai/v1/<endpoint>`, the deployment in the body's `model`); auth `api-key` or a bearer token; the answer
  reports the deployment's model (`AZURE_DEPLOYMENTS`), never the deployment name.
- Vertex AI: `/v1*/projects/<p>/locations/<l>/publishers/google/models/<m>:generateContent|
  streamGenerateContent` (Gemini) and `.../publishers/anthropic/models/<m>:rawPredict|streamRawPredict`
  (Claude: `anthropic_version` in the body, no `model`); a bearer token is required (`VERTEX_TOKEN`).
  `POST /token` is an OAuth token endpoint handing that token out (google-auth's refresh).
- Bedrock: `/model/<id>/invoke`, `/invoke-with-response-stream` (Anthropic events inside AWS event-stream
  framing, `bytes` base64), `/converse`, `/converse-stream`; each request must carry a valid AWS SigV4
  signature made with `AWS_ACCESS_KEY` / `AWS_SECRET_KEY` (checked here with an independent implementation).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from . import anthropic_api, google_api, openai_api
from .usage import Knobs, Plan, plan
from .wire import (
    Call,
    Ids,
    Reply,
    anthropic_error,
    chunk_words,
    dumps,
    google_error,
    json_reply,
    openai_error,
)

AZURE_DEPLOYMENTS = {"chat-prod": "gpt-4o-2024-11-20", "mini": "gpt-4o-mini-2024-07-18"}
VERTEX_TOKEN = "ya29.simulated-vertex-token"
AWS_ACCESS_KEY = "AKIDSIMULATED0000001"
AWS_SECRET_KEY = "simulated/secret/key/000000000000000000000"
EVENT_STREAM_TYPE = "application/vnd.amazon.eventstream"

_AZURE_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)$")
_AZURE_V1 = re.compile(r"^/openai/v1/(chat/completions|responses|embeddings)$")
_VERTEX = re.compile(
    r"^/(v1[a-z0-9]*)/projects/([^/]+)/locations/([^/]+)/publishers/(google|anthropic)/models/([^/:]+):([A-Za-z]+)$"
)
_BEDROCK = re.compile(r"^/model/([^/]+)/(invoke|invoke-with-response-stream|converse|converse-stream)$")
_OPENAI_KIND = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings"}
_OPENAI_KIND_V1 = {"chat/completions": "chat", "responses": "responses", "embeddings": "embeddings"}


@dataclass(frozen=True)
class PlatformRoute:
    platform: str  # azure | vertex | bedrock | oauth
    kind: str
    model: str = ""
    action: str = ""  # Vertex method, Bedrock action


def match(path: str) -> PlatformRoute | None:
    m = _AZURE_DEPLOYMENT.match(path)
    if m:
        deployment = unquote(m.group(1))
        return PlatformRoute("azure", _OPENAI_KIND[m.group(2)], AZURE_DEPLOYMENTS.get(deployment, deployment))
    m = _AZURE_V1.match(path)
    if m:
        return PlatformRoute("azure", _OPENAI_KIND_V1[m.group(1)], "", "v1")
    m = _VERTEX.match(path)
    if m:
        publisher, model, method = m.group(4), unquote(m.group(5)), m.group(6)
        if publisher == "google":
            kind = google_api_kind(method)
            return PlatformRoute("vertex", kind, model, method)
        if method in ("rawPredict", "streamRawPredict"):
            return PlatformRoute(
                "vertex", "count_tokens" if model == "count-tokens" else "messages", model, method
            )
        return PlatformRoute("vertex", "unknown", model, method)
    m = _BEDROCK.match(path)
    if m:
        return PlatformRoute("bedrock", "messages", unquote(m.group(1)), m.group(2))
    if path == "/token":
        return PlatformRoute("oauth", "token")
    return None


def google_api_kind(method: str) -> str:
    return {
        "generateContent": "generate",
        "streamGenerateContent": "generate",
        "countTokens": "count_tokens",
    }.get(method, "unknown")


# --- AWS SigV4, checked independently of botocore ------------------------------------------------------


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _uri_encode(segment: str) -> str:
    return quote(segment, safe="-_.~")


def canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else []:
        key, _, value = part.partition("=")
        pairs.append((_uri_encode(unquote(key)), _uri_encode(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def verify_sigv4(
    method: str, raw_path: str, query: str, headers: dict[str, str], body: bytes, secret: str = AWS_SECRET_KEY
) -> str | None:
    """None when the request carries a valid SigV4 signature for service `bedrock`; else why not.
    `raw_path` is the path exactly as sent (percent-encoding kept); `headers` have lower-case names."""
    auth = headers.get("authorization", "")
    m = re.match(
        r"AWS4-HMAC-SHA256 Credential=([^,]+), ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$", auth
    )
    if not m:
        return "missing or malformed SigV4 Authorization header"
    credential, signed_headers, signature = m.groups()
    parts = credential.split("/")
    if len(parts) != 5 or parts[0] != AWS_ACCESS_KEY or parts[3] != "bedrock" or parts[4] != "aws4_request":
        return f"unknown credential scope {credential}"
    day, region = parts[1], parts[2]
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(day):
        return "X-Amz-Date does not match the credential scope"
    names = signed_headers.split(";")
    if "host" not in names:
        return "the host header is not signed"
    canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in names)
    payload_hash = hashlib.sha256(body).hexdigest()
    # the path as AWS canonicalises it for non-S3 services: each segment URI-encoded once more
    canonical_path = "/".join(_uri_encode(s) for s in raw_path.split("/"))
    canonical = "\n".join(
        [method, canonical_path, canonical_query(query), canonical_headers, signed_headers, payload_hash]
    )
    scope = f"{day}/{region}/bedrock/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _sign(_sign(_sign(_sign(("AWS4" + secret).encode(), day), region), "bedrock"), "aws4_request")
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "The request signature we calculated does not match the signature you provided."
    return None


# --- AWS event-stream framing ----------------------------------------------------------------------------


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    head = prelude + struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF) + raw + payload
    return head + struct.pack(">I", zlib.crc32(head) & 0xFFFFFFFF)


def event(event_type: str, obj: dict[str, Any]) -> bytes:
    return event_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        dumps(
            {**obj, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"[: 8 + len(event_type)]}
        ).encode(),
    )


# --- dispatch -----------------------------------------------------------------------------------------------


def _bedrock_error(status: int, message: str, kind: str) -> Reply:
    reply = json_reply(status, {"message": message})
    reply.headers.append(("x-amzn-errortype", f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"))
    return reply


def dispatch(
    route: PlatformRoute,
    method: str,
    raw_path: str,
    query: str,
    headers: dict[str, str],
    body_bytes: bytes,
    knobs: Knobs,
    request_id: str,
) -> tuple[Reply, str, int]:
    """(reply, provider family for the rate-limit headers, tokens used)."""
    if route.platform == "oauth":
        return (
            json_reply(200, {"access_token": VERTEX_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            "google",
            0,
        )
    if route.platform == "bedrock":
        problem = verify_sigv4(method, raw_path, query, headers, body_bytes)
        if problem is not None:
            return _bedrock_error(403, problem, "InvalidSignatureException"), "bedrock", 0
    elif route.platform == "vertex":
        if headers.get("authorization") != f"Bearer {VERTEX_TOKEN}":
            err = google_error(401, "Request had invalid authentication credentials.")
            return json_reply(401, err), "google", 0
    elif not (headers.get("api-key") or headers.get("authorization", "").startswith("Bearer ")):
        return (
            json_reply(401, openai_error(401, "Access denied due to invalid subscription key.")),
            "openai",
            0,
        )
    try:
        body = json.loads(body_bytes) if body_bytes else {}
    except ValueError:
        body = None
    if not isinstance(body, dict) or method != "POST":
        return json_reply(400, {"error": {"message": "bad request"}}), "openai", 0
    if knobs.status and knobs.status != 200:
        if route.platform == "bedrock":
            return (
                _bedrock_error(knobs.status, "Simulated failure", "ServiceUnavailableException"),
                "bedrock",
                0,
            )
        family = {"azure": "openai", "vertex": "google"}[route.platform]
        if route.platform == "vertex" and route.kind == "messages":
            family = "anthropic"
        from .router import error_reply

        return error_reply(family, knobs.status, request_id), family, 0
    if route.platform == "azure":
        return _azure(route, body, knobs, request_id, raw_path)
    if route.platform == "vertex":
        return _vertex(route, body, knobs, request_id, raw_path, query)
    return _bedrock(route, body, knobs, request_id, raw_path)


def _tokens(p: Plan | None, reply: Reply) -> int:
    return p.total_input + p.output_tokens if p is not None and reply.status == 200 else 0


def _azure(
    route: PlatformRoute, body: dict[str, Any], knobs: Knobs, request_id: str, path: str
) -> tuple[Reply, str, int]:
    model = route.model
    if route.action == "v1":
        deployment = body.get("model") if isinstance(body.get("model"), str) else ""
        model = AZURE_DEPLOYMENTS.get(deployment, deployment)
    p = plan("openai", route.kind, body, knobs)
    call = Call(
        "openai",
        route.kind,
        {**body, "model": model},
        knobs,
        p,
        model,
        body.get("stream") is True,
        True,
        path,
        "POST",
        request_id,
    )
    reply = openai_api.handle(call)
    return reply, "openai", _tokens(p, reply)


def _vertex(
    route: PlatformRoute, body: dict[str, Any], knobs: Knobs, request_id: str, path: str, query: str
) -> tuple[Reply, str, int]:
    if route.kind == "messages":
        if not isinstance(body.get("anthropic_version"), str) or "model" in body:
            err = anthropic_error(400, "anthropic_version is required in the body; the model is in the URL")
            return json_reply(400, err), "anthropic", 0
        stream = route.action == "streamRawPredict"
        inner = {**body, "model": route.model}
        p = plan("anthropic", "messages", inner, knobs)
        call = Call(
            "anthropic", "messages", inner, knobs, p, route.model, stream, True, path, "POST", request_id
        )
        reply = anthropic_api.handle(call)
        return reply, "anthropic", _tokens(p, reply)
    if route.kind == "count_tokens" and route.model == "count-tokens":
        p = plan("anthropic", "count_tokens", body, knobs)
        return json_reply(200, {"input_tokens": p.prompt}), "anthropic", 0
    if route.kind == "unknown":
        return json_reply(404, google_error(404, f"Method not found: {route.action}")), "google", 0
    p = plan("google", route.kind, body, knobs)
    sse = "alt=sse" in query
    call = Call(
        "google",
        route.kind,
        body,
        knobs,
        p,
        route.model,
        route.action == "streamGenerateContent",
        sse,
        path,
        "POST",
        request_id,
    )
    reply = google_api.handle(call)
    return reply, "google", _tokens(p, reply)


def converse_as_messages(body: dict[str, Any]) -> dict[str, Any]:
    """A Converse request in the Anthropic shape the planner counts (same words, same tokens)."""

    def blocks(content: Any) -> list[dict[str, Any]]:
        return [
            {"type": "text", "text": b["text"]} for b in content or [] if isinstance(b, dict) and "text" in b
        ]

    messages = [
        {"role": m.get("role"), "content": blocks(m.get("content"))} for m in body.get("messages") or []
    ]
    out: dict[str, Any] = {"messages": messages}
    system = blocks(body.get("system"))
    if system:
        out["system"] = system
    config = body.get("inferenceConfig") or {}
    if isinstance(config, dict) and isinstance(config.get("maxTokens"), int):
        out["max_tokens"] = config["maxTokens"]
    return out


def converse_usage(p: Plan) -> dict[str, int]:
    usage = {
        "inputTokens": p.prompt,
        "outputTokens": p.output_tokens,
        "totalTokens": p.prompt + p.cache_read + p.cache_write + p.output_tokens,
    }
    if p.cache_read or p.cache_write:
        usage["cacheReadInputTokens"] = p.cache_read
        usage["cacheWriteInputTokens"] = p.cache_write
    return usage


def _bedrock(
    route: PlatformRoute, body: dict[str, Any], knobs: Knobs, request_id: str, path: str
) -> tuple[Reply, str, int]:
    headers = [("x-amzn-requestid", request_id or Ids.make("sim-", 24))]
    if route.action.startswith("converse"):
        if not isinstance(body.get("messages"), list):
            return _bedrock_error(400, "messages is required", "ValidationException"), "bedrock", 0
        p = plan("anthropic", "messages", converse_as_messages(body), knobs)
        stop = "max_tokens" if p.truncated else "end_turn"
        if route.action == "converse":
            reply = json_reply(
                200,
                {
                    "output": {"message": {"role": "assistant", "content": [{"text": p.text}]}},
                    "stopReason": stop,
                    "usage": converse_usage(p),
                    "metrics": {"latencyMs": 7},
                },
                headers,
            )
            return reply, "bedrock", _tokens(p, reply)
        events = [event("messageStart", {"role": "assistant"})]
        for piece in chunk_words(p.text, knobs.chunk_words):
            events.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}))
        events.append(event("contentBlockStop", {"contentBlockIndex": 0}))
        events.append(event("messageStop", {"stopReason": stop}))
        usage_index = len(events)
        events.append(event("metadata", {"usage": converse_usage(p), "metrics": {"latencyMs": 7}}))
        reply = Reply(
            200, content_type=EVENT_STREAM_TYPE, headers=headers, events=events, usage_index=usage_index
        )
        return reply, "bedrock", _tokens(p, reply)
    if ".meta.llama" in route.model or route.model.startswith("meta.llama"):
        return _bedrock_llama(route, body, knobs, headers)
    if not isinstance(body.get("anthropic_version"), str) or "model" in body:
        return (
            _bedrock_error(
                400,
                "anthropic_version is required in the body; the model is in the URL",
                "ValidationException",
            ),
            "bedrock",
            0,
        )
    if "claude" not in route.model:
        return (
            _bedrock_error(
                400, f"The simulator serves Claude models only, not {route.model}", "ValidationException"
            ),
            "bedrock",
            0,
        )
    stream = route.action == "invoke-with-response-stream"
    inner = {k: v for k, v in body.items() if k != "stream"}
    inner["model"] = bedrock_model_name(route.model)
    p = plan("anthropic", "messages", inner, knobs)
    call = Call(
        "anthropic", "messages", inner, knobs, p, inner["model"], stream, True, path, "POST", request_id
    )
    answer = anthropic_api.handle(call)
    if not stream or answer.events is None:
        answer.headers.extend(headers)
        if answer.status == 200:
            answer.headers += [
                ("x-amzn-bedrock-input-token-count", str(p.prompt + p.cache_read + p.cache_write)),
                ("x-amzn-bedrock-output-token-count", str(p.output_tokens)),
            ]
        return answer, "bedrock", _tokens(p, answer)
    events = []
    for sse in answer.events:
        data = next(line[6:] for line in sse.decode().split("\n") if line.startswith("data: "))
        obj = json.loads(data)
        if obj.get("type") == "message_stop":
            obj["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": p.prompt,
                "outputTokenCount": p.output_tokens,
                "invocationLatency": 7,
                "firstByteLatency": 3,
                "cacheReadInputTokenCount": p.cache_read,
                "cacheWriteInputTokenCount": p.cache_write,
            }
        events.append(event("chunk", {"bytes": base64.b64encode(dumps(obj).encode()).decode()}))
    reply = Reply(
        200, content_type=EVENT_STREAM_TYPE, headers=headers, events=events, usage_index=answer.usage_index
    )
    return reply, "bedrock", _tokens(p, reply)


def bedrock_model_name(model_id: str) -> str:
    """`us.anthropic.claude-haiku-4-5-20251001-v1:0` -> `claude-haiku-4-5-20251001` (what the body reports)."""
    name = model_id.rsplit("/", 1)[-1]
    name = re.sub(r"^(?:[a-z]{2,6}\.)?anthropic\.", "", name)
    return re.sub(r"-v\d+(?::\d+)?$", "", name)


def llama_as_messages(body: dict[str, Any]) -> dict[str, Any]:
    """A Llama InvokeModel body (`prompt`, `max_gen_len`) in the shape the planner counts."""
    out: dict[str, Any] = {"messages": [{"role": "user", "content": str(body.get("prompt", ""))}]}
    if isinstance(body.get("max_gen_len"), int):
        out["max_tokens"] = body["max_gen_len"]
    return out


def _bedrock_llama(
    route: PlatformRoute, body: dict[str, Any], knobs: Knobs, headers: list[tuple[str, str]]
) -> tuple[Reply, str, int]:
    """Meta Llama on InvokeModel: its own body (`generation`, token counts), Bedrock's count headers, and the
    stream's `amazon-bedrock-invocationMetrics` in the last chunk. No cache on these models."""
    if not isinstance(body.get("prompt"), str):
        return _bedrock_error(400, "prompt is required", "ValidationException"), "bedrock", 0
    p = plan("anthropic", "messages", llama_as_messages(body), Knobs.from_headers({}))
    stop = "length" if p.truncated else "stop"
    if route.action == "invoke":
        reply = json_reply(
            200,
            {
                "generation": p.text,
                "prompt_token_count": p.prompt,
                "generation_token_count": p.output_tokens,
                "stop_reason": stop,
            },
            [
                *headers,
                ("x-amzn-bedrock-input-token-count", str(p.prompt)),
                ("x-amzn-bedrock-output-token-count", str(p.output_tokens)),
            ],
        )
        return reply, "bedrock", _tokens(p, reply)
    pieces = chunk_words(p.text, knobs.chunk_words)
    events = []
    for i, piece in enumerate(pieces):
        chunk: dict[str, Any] = {
            "generation": piece,
            "prompt_token_count": p.prompt if i == 0 else None,
            "generation_token_count": i + 1,
            "stop_reason": None,
        }
        if i == len(pieces) - 1:
            chunk["stop_reason"] = stop
            chunk["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": p.prompt,
                "outputTokenCount": p.output_tokens,
                "invocationLatency": 7,
                "firstByteLatency": 3,
            }
        events.append(event("chunk", {"bytes": base64.b64encode(dumps(chunk).encode()).decode()}))
    reply = Reply(
        200, content_type=EVENT_STREAM_TYPE, headers=headers, events=events, usage_index=len(events) - 1
    )
    return reply, "bedrock", _tokens(p, reply)
