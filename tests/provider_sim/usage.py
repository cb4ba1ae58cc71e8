"""Deterministic token accounting, shared by the server and by `expected_usage` / `reply_text`.

The rule (one "word" = a whitespace-separated run of characters = one token):

* Prompt tokens P:
  - every message / content / input item costs ``MESSAGE_OVERHEAD`` (4) plus the words of its text;
  - a system prompt (Anthropic ``system``, Gemini ``systemInstruction``, Responses ``instructions``) costs
    ``MESSAGE_OVERHEAD`` plus its words;
  - tool definitions cost the words of ``json.dumps(tools)`` (default separators);
  - legacy completions and embeddings cost the words of their input (token-id arrays count one per id),
    without overhead.
  The text of an item is found by `text_of`: a string is itself; a list joins its items; a dict is its
  ``text`` (or ``thinking``) string, else the text of its ``content`` / ``parts`` (plus the JSON of any
  ``tool_calls``), else its whole JSON (images, tool calls, function results).
* Reply: ``REPLY_SENTENCE`` repeated to ``x-sim-reply-words`` words (default 12); when the request sets a
  maximum output (``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``,
  ``generationConfig.maxOutputTokens``) the visible reply is cut to ``max - reasoning`` words and the finish
  reason becomes the provider's "length".
* Output tokens = visible reply words + ``x-sim-reasoning``.
* Cache knobs add tokens ON TOP of P, as if that many tokens of cached prefix had been sent:
  ``x-sim-cache-read`` (read), ``x-sim-cache-write`` (written, 5-minute TTL), ``x-sim-cache-write-1h``.
  Each provider then reports them with its own semantics (see `Plan.normalized`).
* Gemini media (`media_tokens`): an ``inlineData`` part is not text: an image costs ``IMAGE_TOKENS`` (258, a
  Gemini 2.x image up to 384 px), audio ``AUDIO_TOKENS_PER_KB`` per KB of decoded data (at least 1), video
  ``VIDEO_TOKENS_PER_KB``, a PDF ``DOCUMENT_TOKENS`` per part; they are reported by modality in
  ``promptTokensDetails``. ``generationConfig.responseModalities`` with ``IMAGE`` adds one generated image of
  ``OUTPUT_IMAGE_TOKENS`` (1290, a 1024x1024 image) to the output, in ``candidatesTokensDetails``. The
  request's ``serviceTier`` is reported back as ``usageMetadata.serviceTier`` (``x-sim-service-tier``
  reports another one, as when a priority request is served at standard).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MESSAGE_OVERHEAD = 4
IMAGE_TOKENS = 258
OUTPUT_IMAGE_TOKENS = 1290
AUDIO_TOKENS_PER_KB = 1
VIDEO_TOKENS_PER_KB = 3
DOCUMENT_TOKENS = 560
DEFAULT_REPLY_WORDS = 12
REPLY_SENTENCE = "The quick brown fox jumps over the lazy dog while the simulator counts every token"
THINKING_SENTENCE = "Let me think about this request carefully and reason through it step by step"
_REPLY_WORDS = REPLY_SENTENCE.split()
_THINKING_WORDS = THINKING_SENTENCE.split()

#: Requested model -> the dated name the provider reports (others are echoed unchanged).
DATED_MODELS: dict[str, str] = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "o1": "o1-2024-12-17",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "claude-opus-4-0": "claude-opus-4-20250514",
    "claude-3-7-sonnet-latest": "claude-3-7-sonnet-20250219",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
}

PROVIDERS = ("openai", "anthropic", "google")


def _int(headers: Mapping[str, str], name: str, default: int = 0) -> int:
    value = headers.get(name)
    if value is None or value.strip() == "":
        return default
    return int(value.strip())


def _float(headers: Mapping[str, str], name: str) -> float:
    value = headers.get(name)
    return float(value) if value else 0.0


def _flag(headers: Mapping[str, str], name: str) -> bool:
    return headers.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Knobs:
    """The ``x-sim-*`` request headers, parsed (header names are case-insensitive).

    x-sim-status: N          answer status N with the provider's error body (429 adds retry-after: 1)
    x-sim-delay-ms: N        wait before the response headers
    x-sim-chunk-delay-ms: N  wait between stream events
    x-sim-cut-after: N       streams: close the connection after N events, never reaching the final-usage
                             event nor the end of the stream
    x-sim-stream-error: N    streams: after N events send the provider's in-stream error event and end
    x-sim-garbage: 1         write non-HTTP bytes and close
    x-sim-reply-words: N     visible reply length in words (default 12)
    x-sim-chunk-words: N     words per stream delta (default 1)
    x-sim-cache-read: N, x-sim-cache-write: N (5 minutes), x-sim-cache-write-1h: N, x-sim-reasoning: N
    x-sim-gzip: 1            gzip the body (streams: one flush per event)
    x-sim-model: NAME        the model name reported
    x-sim-service-tier: T    the tier reported: Gemini serviceTier (default: the one the request asked for),
                             Anthropic usage.service_tier (default standard; usage.speed echoes the request's)
    x-sim-model-status: M=N[,M2=N2]   per requested model: answer status N (or `close`: drop the connection
                             without answering); other models are answered normally
    x-sim-model-delay-ms: M=N[,M2=N2] per requested model: wait N ms before the response headers

    WebSocket endpoints read the same knobs from the upgrade request and, per response, from the
    ``x-sim-*`` keys of the frame's metadata (see `provider_sim.websocket`).
    """

    status: int | None = None
    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    cut_after: int | None = None
    garbage: bool = False
    reply_words: int = DEFAULT_REPLY_WORDS
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    gzip: bool = False
    model: str | None = None
    chunk_words: int = 1
    stream_error_after: int | None = None
    service_tier: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Knobs:
        h = {k.lower(): v for k, v in headers.items()} if any(k != k.lower() for k in headers) else headers
        if not any(k.startswith("x-sim-") for k in h):
            return _DEFAULT_KNOBS
        status = _int(h, "x-sim-status", 0)
        cut = h.get("x-sim-cut-after")
        stream_error = h.get("x-sim-stream-error")
        return cls(
            status=status or None,
            delay_ms=_float(h, "x-sim-delay-ms"),
            chunk_delay_ms=_float(h, "x-sim-chunk-delay-ms"),
            cut_after=int(cut) if cut else None,
            garbage=_flag(h, "x-sim-garbage"),
            reply_words=max(0, _int(h, "x-sim-reply-words", DEFAULT_REPLY_WORDS)),
            cache_read=max(0, _int(h, "x-sim-cache-read")),
            cache_write=max(0, _int(h, "x-sim-cache-write")),
            cache_write_1h=max(0, _int(h, "x-sim-cache-write-1h")),
            reasoning=max(0, _int(h, "x-sim-reasoning")),
            gzip=_flag(h, "x-sim-gzip"),
            model=h.get("x-sim-model") or None,
            chunk_words=max(1, _int(h, "x-sim-chunk-words", 1)),
            stream_error_after=int(stream_error) if stream_error else None,
            service_tier=h.get("x-sim-service-tier") or None,
        )


_DEFAULT_KNOBS = Knobs()


def words(text: str) -> int:
    return len(text.split())


def repeat_words(sentence_words: list[str], n: int) -> str:
    return " ".join(sentence_words[i % len(sentence_words)] for i in range(n))


def text_of(value: Any) -> str:
    """The text of a message, content block, part or input item (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, list):
        return " ".join(text_of(v) for v in value)
    if isinstance(value, dict):
        for key in ("text", "thinking"):
            if isinstance(value.get(key), str):
                return str(value[key])
        for key in ("content", "parts"):
            if key in value:
                extra = " " + json.dumps(value["tool_calls"]) if value.get("tool_calls") else ""
                return text_of(value[key]) + extra
        return json.dumps(value)
    return str(value)


def _items_tokens(items: Any) -> int:
    if items is None:
        return 0
    if not isinstance(items, list):
        items = [items]
    return sum(MESSAGE_OVERHEAD + words(text_of(item)) for item in items)


def _system_tokens(system: Any) -> int:
    text = text_of(system)
    return MESSAGE_OVERHEAD + words(text) if text.strip() else 0


def _tools_tokens(tools: Any) -> int:
    return words(json.dumps(tools)) if tools else 0


def _raw_input_tokens(value: Any) -> int:
    """Legacy completions / embeddings input: strings, lists of strings, token ids, lists of token ids."""
    if value is None:
        return 0
    if isinstance(value, str):
        return words(value)
    if isinstance(value, int):
        return 1
    if isinstance(value, list):
        return sum(_raw_input_tokens(v) for v in value)
    return words(text_of(value))


def endpoint_kind(provider: str, endpoint: str) -> str:
    """Map an endpoint name or path to the simulator's kind.

    openai: chat | responses | completions | embeddings | models; anthropic: messages | count_tokens | models;
    google: generate | embed | count_tokens | models.
    """
    e = endpoint.lower()
    if provider == "openai":
        if "chat" in e:
            return "chat"
        for kind in ("responses", "embeddings", "completions", "models"):
            if kind.rstrip("s") in e:
                return kind
    elif provider == "anthropic":
        if "count" in e:
            return "count_tokens"
        if "message" in e:
            return "messages"
        if "model" in e:
            return "models"
    elif provider == "google":
        if "count" in e:
            return "count_tokens"
        if "embed" in e:
            return "embed"
        if "generate" in e:
            return "generate"
        if "model" in e:
            return "models"
    else:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    raise ValueError(f"unknown {provider} endpoint {endpoint!r}")


def prompt_tokens(provider: str, kind: str, body: Mapping[str, Any]) -> int:
    """P: the counted prompt of a request, before the cache knobs."""
    if provider == "openai":
        if kind == "chat":
            return _items_tokens(body.get("messages")) + _tools_tokens(
                body.get("tools") or body.get("functions")
            )
        if kind == "responses":
            return (
                _system_tokens(body.get("instructions"))
                + _items_tokens(body.get("input"))
                + _tools_tokens(body.get("tools"))
            )
        if kind == "completions":
            return _raw_input_tokens(body.get("prompt"))
        if kind == "embeddings":
            return _raw_input_tokens(body.get("input"))
        return 0
    if provider == "anthropic":
        if kind in ("messages", "count_tokens"):
            return (
                _system_tokens(body.get("system"))
                + _items_tokens(body.get("messages"))
                + _tools_tokens(body.get("tools"))
            )
        return 0
    if provider == "google":
        if kind == "count_tokens" and isinstance(body.get("generateContentRequest"), dict):
            body = body["generateContentRequest"]
        if kind in ("generate", "count_tokens"):
            system = body.get("systemInstruction") or body.get("system_instruction")
            return (
                _system_tokens(system)
                + _items_tokens(body.get("contents"))
                + _tools_tokens(body.get("tools"))
            )
        if kind == "embed":
            if isinstance(body.get("requests"), list):
                return sum(words(text_of(r.get("content"))) for r in body["requests"] if isinstance(r, dict))
            return words(text_of(body.get("content")))
        return 0
    raise ValueError(f"unknown provider {provider!r}")


def max_output(provider: str, kind: str, body: Mapping[str, Any]) -> int | None:
    value: Any = None
    if provider == "openai":
        if kind == "chat":
            value = body.get("max_completion_tokens", body.get("max_tokens"))
        elif kind == "responses":
            value = body.get("max_output_tokens")
        elif kind == "completions":
            value = body.get("max_tokens")
    elif provider == "anthropic" and kind == "messages":
        value = body.get("max_tokens")
    elif provider == "google" and kind == "generate":
        config = body.get("generationConfig") or body.get("generation_config") or {}
        value = config.get("maxOutputTokens", config.get("max_output_tokens"))
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Plan:
    """Everything the simulator will answer for one request."""

    provider: str
    kind: str
    prompt: int  # P, counted from the request
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    reasoning: int
    reply_words: int  # visible words actually sent
    truncated: bool  # the visible reply was cut by the request's max output
    text: str
    thinking: str
    # Gemini: (modality, tokens) of the request's inline media, generated image tokens, the reported tier
    media: tuple[tuple[str, int], ...] = ()
    output_image: int = 0
    service_tier: str | None = None
    speed: str | None = None  # Anthropic: the request's `speed` (fast mode), reported in usage

    @property
    def media_tokens(self) -> int:
        return sum(n for _, n in self.media)

    @property
    def output_tokens(self) -> int:
        return self.reply_words + self.reasoning + self.output_image

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total_input(self) -> int:
        return self.prompt + self.cache_read + self.cache_write

    def normalized(self) -> dict[str, int | None]:
        """The usage the gateway must record (docs/gateway.md#metering)."""
        zero: dict[str, int | None] = {
            "input_tokens": self.prompt + self.media_tokens,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cache_write_5m_tokens": None,
            "cache_write_1h_tokens": None,
            "reasoning_tokens": 0,
        }
        if self.kind not in ("chat", "responses", "completions", "messages", "generate"):
            return zero  # embeddings, count_tokens: input only
        out = dict(zero, output_tokens=self.output_tokens, reasoning_tokens=self.reasoning)
        if self.provider == "anthropic":
            out.update(
                input_tokens=self.total_input,
                cache_read_tokens=self.cache_read,
                cache_write_tokens=self.cache_write,
                cache_write_5m_tokens=self.cache_write_5m,
                cache_write_1h_tokens=self.cache_write_1h,
            )
        elif self.provider == "openai":
            out.update(
                input_tokens=self.total_input,
                cache_read_tokens=self.cache_read,
                cache_write_tokens=self.cache_write,
            )
        else:  # google: no cache writes in per-request usage
            out.update(
                input_tokens=self.prompt + self.cache_read + self.media_tokens,
                cache_read_tokens=self.cache_read,
            )
        return out

    def modality_tokens(self) -> dict[str, dict[str, int]]:
        """Gemini: the per-modality counts the gateway must record (`Call.modality_tokens`)."""
        inputs: dict[str, int] = (
            {"text": self.prompt + self.cache_read} if self.prompt + self.cache_read else {}
        )
        for modality, n in self.media:
            inputs[modality] = inputs.get(modality, 0) + n
        out: dict[str, dict[str, int]] = {"input": inputs} if inputs else {}
        if self.kind == "generate":
            outputs = {"text": self.reply_words} if self.reply_words else {}
            if self.output_image:
                outputs["image"] = self.output_image
            if outputs:
                out["output"] = outputs
            if self.cache_read:
                out["cache_read"] = {"text": self.cache_read}
        return out


def _inline_parts(value: Any) -> list[dict[str, Any]]:
    """Every ``inlineData`` / ``inline_data`` part of a Gemini request's contents."""
    found: list[dict[str, Any]] = []
    if isinstance(value, list):
        for item in value:
            found += _inline_parts(item)
    elif isinstance(value, dict):
        if isinstance(value.get("inlineData") or value.get("inline_data"), dict):
            found.append(value)
        else:
            for key in ("contents", "content", "parts", "requests"):
                if key in value:
                    found += _inline_parts(value[key])
    return found


def media_tokens(part: Mapping[str, Any]) -> tuple[str, int]:
    """(modality, tokens) of one inline part (see the module docstring)."""
    data = part.get("inlineData") or part.get("inline_data") or {}
    mime = str(data.get("mimeType") or data.get("mime_type") or "")
    try:
        size = len(base64.b64decode(str(data.get("data") or ""), validate=False))
    except (binascii.Error, ValueError):
        size = 0
    kb = max(1, size // 1000)
    if mime.startswith("image/"):
        return "image", IMAGE_TOKENS
    if mime.startswith("audio/"):
        return "audio", kb * AUDIO_TOKENS_PER_KB
    if mime.startswith("video/"):
        return "video", kb * VIDEO_TOKENS_PER_KB
    return "document", DOCUMENT_TOKENS


def _wants_image(body: Mapping[str, Any]) -> bool:
    config = body.get("generationConfig") or body.get("generation_config") or {}
    modalities = config.get("responseModalities") or config.get("response_modalities") or []
    return isinstance(modalities, list) and any(str(m).upper() == "IMAGE" for m in modalities)


def plan(
    provider: str,
    endpoint: str,
    request_json: Mapping[str, Any],
    headers: Mapping[str, str] | Knobs | None = None,
) -> Plan:
    """Compute the reply plan of a request; `endpoint` is a kind or a path (see `endpoint_kind`)."""
    knobs = headers if isinstance(headers, Knobs) else Knobs.from_headers(headers or {})
    kind = endpoint_kind(provider, endpoint)
    prompt = prompt_tokens(provider, kind, request_json)
    generative = kind in ("chat", "responses", "completions", "messages", "generate")
    legacy = kind == "completions"
    reasoning = knobs.reasoning if generative and not legacy else 0
    cache_on = generative and not legacy
    cache_read = knobs.cache_read if cache_on else 0
    write_5m = knobs.cache_write if cache_on and provider != "google" else 0
    write_1h = knobs.cache_write_1h if cache_on and provider != "google" else 0
    media: tuple[tuple[str, int], ...] = ()
    output_image = 0
    tier = None
    if provider == "google" and kind in ("generate", "embed", "count_tokens"):
        parts = _inline_parts(request_json)
        media = tuple(media_tokens(part) for part in parts)
        prompt -= sum(words(json.dumps(part)) for part in parts)  # counted as media, not as text
        output_image = OUTPUT_IMAGE_TOKENS if kind == "generate" and _wants_image(request_json) else 0
        requested = request_json.get("serviceTier") or request_json.get("service_tier")
        tier = knobs.service_tier or (str(requested) if requested else None)
    speed = None
    if provider == "anthropic" and kind == "messages":
        tier = knobs.service_tier or "standard"
        speed = request_json.get("speed") if isinstance(request_json.get("speed"), str) else None
    n = knobs.reply_words if generative else 0
    truncated = False
    limit = max_output(provider, kind, request_json)
    if limit is not None and n > max(0, limit - reasoning):
        n = max(0, limit - reasoning)
        truncated = True
    return Plan(
        provider=provider,
        kind=kind,
        prompt=prompt,
        cache_read=cache_read,
        cache_write_5m=write_5m,
        cache_write_1h=write_1h,
        reasoning=reasoning,
        reply_words=n,
        truncated=truncated,
        text=repeat_words(_REPLY_WORDS, n),
        thinking=repeat_words(_THINKING_WORDS, reasoning),
        media=media,
        output_image=output_image,
        service_tier=tier,
        speed=speed,
    )


def expected_usage(
    provider: str, endpoint: str, request_json: Mapping[str, Any], headers: Mapping[str, str] = {}
) -> dict[str, int | None]:
    """The normalised usage the simulator reports for this request.

    Keys: input_tokens (all input incl. cache read and write), output_tokens (incl. reasoning),
    cache_read_tokens, cache_write_tokens, cache_write_5m_tokens, cache_write_1h_tokens (None where the
    provider gives no TTL split: OpenAI, Google, and non-generative endpoints), reasoning_tokens.
    `headers` are the ``x-sim-*`` knobs the request carried (include the simulator's default headers).
    """
    return plan(provider, endpoint, request_json, headers).normalized()


def reply_text(
    provider: str = "openai",
    endpoint: str = "chat",
    request_json: Mapping[str, Any] = {},
    headers: Mapping[str, str] = {},
) -> str:
    """The visible reply text the simulator sends for this request."""
    return plan(provider, endpoint, request_json, headers).text


def thinking_text(
    provider: str = "anthropic",
    endpoint: str = "messages",
    request_json: Mapping[str, Any] = {},
    headers: Mapping[str, str] = {},
) -> str:
    """The reasoning text (Anthropic thinking blocks, Gemini thought parts when includeThoughts is set)."""
    return plan(provider, endpoint, request_json, headers).thinking


def reported_model(provider: str, requested: str, knobs: Knobs) -> str:
    if knobs.model:
        return knobs.model
    if provider == "google":
        return requested.removeprefix("models/").removeprefix("tunedModels/")
    return DATED_MODELS.get(requested, requested)
