"""Google Gemini API: generateContent, streamGenerateContent (SSE and JSON array), embeddings, countTokens."""

from __future__ import annotations

from typing import Any

from .usage import Plan, reported_model
from .wire import Call, Ids, Reply, chunk_words, dumps, embedding_vector, google_error, json_reply

SSE_TYPE = "text/event-stream"
JSON_STREAM_TYPE = "application/json; charset=UTF-8"
DEFAULT_EMBED_DIMS = 16
MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-embedding-001")


def _config(body: dict[str, Any]) -> dict[str, Any]:
    config = body.get("generationConfig") or body.get("generation_config") or {}
    return config if isinstance(config, dict) else {}


def include_thoughts(body: dict[str, Any]) -> bool:
    config = _config(body)
    thinking = config.get("thinkingConfig") or config.get("thinking_config") or {}
    # google-genai 3.6 sends {"thinkingConfig": {"include_thoughts": true}} (snake case inside)
    return isinstance(thinking, dict) and True in (
        thinking.get("includeThoughts"),
        thinking.get("include_thoughts"),
    )


def _details(counts: dict[str, int]) -> list[dict[str, Any]]:
    return [{"modality": m.upper(), "tokenCount": n} for m, n in counts.items() if n]


def usage_metadata(p: Plan) -> dict[str, Any]:
    """As the Gemini API reports it: totals, then per-modality details of the prompt, the cached part and the
    candidates (Gemini 2.5 sends candidatesTokensDetails only when the output is not text alone), the tier."""
    modalities = p.modality_tokens()
    prompt = p.prompt + p.cache_read + p.media_tokens
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": p.reply_words + p.output_image,
        "totalTokenCount": prompt + p.output_tokens,
    }
    if p.cache_read:
        usage["cachedContentTokenCount"] = p.cache_read
    usage["promptTokensDetails"] = _details(modalities.get("input", {})) or [
        {"modality": "TEXT", "tokenCount": 0}
    ]
    if p.cache_read:
        usage["cacheTokensDetails"] = _details(modalities.get("cache_read", {}))
    if p.output_image:
        usage["candidatesTokensDetails"] = _details(modalities.get("output", {}))
    if p.reasoning:
        usage["thoughtsTokenCount"] = p.reasoning
    if p.service_tier:
        usage["serviceTier"] = p.service_tier
    return usage


# 1x1 PNG: the generated image's bytes (its tokens are what the API bills, not its size)
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def stream_error_event(call: Call) -> bytes:
    error = dumps(google_error(503))
    return f"data: {error}\r\n\r\n".encode() if call.sse else f",\r\n{error}\n]".encode()


def handle(call: Call) -> Reply:
    if call.kind == "models":
        return models(call)
    if call.method != "POST":
        return json_reply(404, google_error(404, f"Method not found: {call.method} {call.path}"))
    if call.kind == "count_tokens":
        p: Plan = call.plan
        return json_reply(
            200,
            {"totalTokens": p.prompt, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": p.prompt}]},
        )
    if call.kind == "embed":
        return embed(call)
    if not call.body.get("contents"):
        return json_reply(
            400, google_error(400, "* GenerateContentRequest.contents: contents is not specified\n")
        )
    return generate(call)


def generate(call: Call) -> Reply:
    p: Plan = call.plan
    model = reported_model("google", call.model, call.knobs)
    response_id = Ids.make("sim", 20)
    finish = "MAX_TOKENS" if p.truncated else "STOP"
    thoughts = include_thoughts(call.body) and p.reasoning > 0

    def chunk(parts: list[dict[str, Any]], usage: dict[str, Any], final: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if final:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": response_id,
        }

    image_part = {"inlineData": {"mimeType": "image/png", "data": PNG_1X1}}
    if not call.stream:
        parts: list[dict[str, Any]] = [{"text": p.thinking, "thought": True}] if thoughts else []
        parts.append({"text": p.text})
        if p.output_image:
            parts.append(image_part)
        return json_reply(200, chunk(parts, usage_metadata(p), True))

    prompt = p.prompt + p.cache_read + p.media_tokens
    early_usage = {"promptTokenCount": prompt, "totalTokenCount": prompt}
    objects: list[dict[str, Any]] = []
    if thoughts:
        for piece in chunk_words(p.thinking, 8):
            objects.append(chunk([{"text": piece, "thought": True}], early_usage, False))
    pieces = chunk_words(p.text, call.knobs.chunk_words) or [""]
    for piece in pieces[:-1]:
        objects.append(chunk([{"text": piece}], early_usage, False))
    last: list[dict[str, Any]] = (
        [{"text": pieces[-1]}, image_part] if p.output_image else [{"text": pieces[-1]}]
    )
    objects.append(chunk(last, usage_metadata(p), True))
    usage_index = len(objects) - 1
    if call.sse:
        events = [f"data: {dumps(obj)}\r\n\r\n".encode() for obj in objects]
        return Reply(200, content_type=SSE_TYPE, events=events, usage_index=usage_index)
    events = [(("[" if i == 0 else ",\r\n") + dumps(obj)).encode() for i, obj in enumerate(objects)]
    events.append(b"]")
    return Reply(200, content_type=JSON_STREAM_TYPE, events=events, usage_index=usage_index)


def embed(call: Call) -> Reply:
    p: Plan = call.plan
    body = call.body
    usage: dict[str, Any] = {
        "promptTokenCount": p.prompt + p.media_tokens,
        "totalTokenCount": p.prompt + p.media_tokens,
    }
    if p.media:
        usage["promptTokensDetails"] = _details(p.modality_tokens().get("input", {}))

    def values(request: dict[str, Any]) -> dict[str, Any]:
        dims = int(
            request.get("outputDimensionality") or body.get("outputDimensionality") or DEFAULT_EMBED_DIMS
        )
        return {"values": embedding_vector(dumps(request.get("content")), dims)}

    if isinstance(body.get("requests"), list):
        embeddings = [values(r) for r in body["requests"] if isinstance(r, dict)]
        return json_reply(200, {"embeddings": embeddings, "usageMetadata": usage})
    return json_reply(200, {"embedding": values(body), "usageMetadata": usage})


def models(call: Call) -> Reply:
    def entry(model_id: str) -> dict[str, Any]:
        methods = ["embedContent"] if "embedding" in model_id else ["generateContent", "countTokens"]
        return {
            "name": f"models/{model_id}",
            "version": "001",
            "displayName": model_id,
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": methods,
        }

    tail = call.path.rstrip("/").rsplit("/models", 1)[-1].lstrip("/")
    if tail:
        return json_reply(200, entry(tail))
    return json_reply(200, {"models": [entry(m) for m in MODELS]})
