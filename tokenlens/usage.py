"""Provider-reported usage, normalised (docs/gateway.md#metering; rules in shared/notes/provider-usage.md).

INTERFACE FILE: `Usage` is fixed; `StreamSummary` may only gain fields with defaults.

- `usage_from_body(api, endpoint, body)`: non-streamed JSON answers.
- `StreamParser(api, endpoint)` (`feed(chunk)`, `summary()`): streamed answers, fed chunk by chunk as they
  pass (events may be split at any byte). `summarize_stream` is the one-shot form.
- `endpoint_kind(api, path)`: what kind of call an upstream path is.
- `is_usage_only_chunk(data)`: the extra OpenAI chat chunk the gateway strips when it injected include_usage.

`endpoint` arguments accept an upstream path (``/v1/chat/completions``) or an `endpoint_kind` value.
Normalisation: `input_tokens` is ALL input (cache reads and writes included), `output_tokens` ALL output
(reasoning included). Nothing here raises on bad input: unreadable bodies give no usage.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tokenlens.records import MODALITY_NAMES

ApiFormat = Literal["openai", "anthropic", "google"]

EndpointKind = Literal[
    "chat",
    "responses",
    "embeddings",
    "completions",
    "messages",
    "count_tokens",
    "generate",
    "stream_generate",
    "embed",
    "other",
]
ENDPOINT_KINDS: frozenset[str] = frozenset(
    {
        "chat",
        "responses",
        "embeddings",
        "completions",
        "messages",
        "count_tokens",
        "generate",
        "stream_generate",
        "embed",
        "other",
    }
)


@dataclass(frozen=True)
class Usage:
    """Normalised token counts of one call.

    input_tokens: ALL input, cache reads and cache writes included.
    output_tokens: ALL output, reasoning/thinking included.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    web_search_requests: int = 0
    service_tier: str | None = None
    # Added with defaults (issue 18). `speed`: Anthropic's `usage.speed` (standard | fast), apart from the tier
    # because a batch answer may carry both. `modality_tokens`: per-modality counts as the provider reported
    # them, ``(part, modality, tokens)`` with part ``input`` (ALL input of that modality, cached included),
    # ``output`` or ``cache_read`` (the cached subset) and modality ``text``, ``image``, ``audio``, ``video`` or
    # ``document``. `input_audio_tokens` is all audio input, cached audio included (the cached audio is the
    # ``("cache_read", "audio", n)`` entry).
    speed: str | None = None
    modality_tokens: tuple[tuple[str, str, int], ...] = ()

    def modality(self, part: str, modality: str) -> int:
        """Tokens of one modality in one part (``input``, ``output``, ``cache_read``); 0 when not reported."""
        return sum(n for p, m, n in self.modality_tokens if p == part and m == modality)

    def modality_dict(self) -> dict[str, dict[str, int]] | None:
        """The docs/analytics-api.md `modality_tokens` shape, e.g. ``{"input": {"text": 120, "image": 1290}}``; None if empty."""
        out: dict[str, dict[str, int]] = {}
        for part, modality, tokens in self.modality_tokens:
            if tokens > 0:
                group = out.setdefault(part, {})
                group[modality] = group.get(modality, 0) + tokens
        return out or None


def _modality_entries(part: str, details: Any) -> list[tuple[str, str, int]]:
    """(part, modality, tokens) of an OpenAI ``*_details`` object (``text_tokens``, ``audio_tokens``...)."""
    if not isinstance(details, dict):
        return []
    out = []
    for modality in ("text", "image", "audio", "video"):
        n = _int(details.get(f"{modality}_tokens"))
        if n:
            out.append((part, modality, n))
    return out


def _gemini_entries(part: str, details: Any) -> list[tuple[str, str, int]]:
    """(part, modality, tokens) of a Gemini ``*TokensDetails`` list (``[{modality: IMAGE, tokenCount}]``)."""
    if not isinstance(details, list):
        return []
    out = []
    for d in details:
        if not isinstance(d, dict) or not isinstance(d.get("modality"), str):
            continue
        modality = d["modality"].lower()
        n = _int(d.get("tokenCount"))
        if modality in MODALITY_NAMES and n:
            out.append((part, modality, n))
    return out


def normal_tier(value: Any) -> str | None:
    """A service tier as reported or requested, lower-case, without an enum prefix (``SERVICE_TIER_FLEX``)."""
    if not isinstance(value, str) or not value.strip():
        return None
    tier = value.strip().lower()
    return tier.removeprefix("service_tier_") or None


def requested_tier(api: str, request_json: Any) -> tuple[str | None, str | None]:
    """(service tier, speed) a request asked for: Gemini ``serviceTier`` (top level, as the google-genai SDK
    sends it, or in ``generationConfig``), OpenAI ``service_tier``, Anthropic ``speed``."""
    if not isinstance(request_json, dict):
        return None, None
    if api == "google":
        tier = request_json.get("serviceTier") or request_json.get("service_tier")
        if tier is None:
            tier = _get(request_json, "generationConfig", "serviceTier")
        return normal_tier(tier), None
    if api == "anthropic":
        speed = request_json.get("speed")
        return None, speed.lower() if isinstance(speed, str) and speed else None
    return normal_tier(request_json.get("service_tier")), None


def with_request_tier(usage: Usage, api: str, request_json: Any) -> Usage:
    """`usage` with the tier and speed the request asked for where the answer reported none (the answer's
    own report wins: a priority request the provider served as standard is billed as standard)."""
    tier, speed = requested_tier(api, request_json)
    changes: dict[str, Any] = {}
    if tier and tier != "auto" and not usage.service_tier:
        changes["service_tier"] = tier
    if speed and not usage.speed:
        changes["speed"] = speed
        if speed == "fast" and not usage.service_tier and not tier:
            changes["service_tier"] = "fast"
    return replace(usage, **changes) if changes else usage


@dataclass
class StreamSummary:
    """What a (possibly cut) streamed answer contained."""

    usage: Usage | None  # None when the stream carried no usage at all
    output_text: str = ""  # visible text and reasoning text streamed so far (for estimates)
    model: str | None = None  # model reported inside the stream
    complete: bool = False  # the stream reached its provider-defined end
    events: int = 0
    extra: dict[str, object] = field(default_factory=dict)
    # True when `usage` is the provider's final report (OpenAI usage chunk, Responses terminal event,
    # Anthropic message_delta, Gemini chunk with finishReason). False with a usage means only the early,
    # input-side counts arrived (Anthropic message_start, Gemini's first chunks): the output side must be
    # estimated from `output_text`.
    usage_final: bool = False


# ---- endpoint kinds ------------------------------------------------------------------------------------------

_GOOGLE_METHODS = {
    "generatecontent": "generate",
    "streamgeneratecontent": "stream_generate",
    "embedcontent": "embed",
    "batchembedcontents": "embed",
    "counttokens": "count_tokens",
}


def _openai_kind(p: str) -> EndpointKind | None:
    if p.endswith("/chat/completions"):
        return "chat"
    if p.endswith("/responses"):
        return "responses"
    if p.endswith("/embeddings"):
        return "embeddings"
    if p.endswith("/completions"):
        return "completions"
    return None


def endpoint_kind(api: str, path: str) -> EndpointKind:
    """Kind of call for an upstream path without query, e.g. ``/v1/chat/completions`` -> ``chat``.

    Google ``:countTokens`` maps to ``count_tokens`` (passed through unpriced, like Anthropic's);
    ``:batchEmbedContents`` maps to ``embed``. The providers' OpenAI-compatible endpoints (Anthropic's
    ``/v1/chat/completions``, Gemini's ``/v1beta/openai/chat/completions``) are OpenAI kinds whatever `api`
    is, and their answers are read in the OpenAI format.
    """
    p = path.split("?", 1)[0].rstrip("/").lower()
    if api == "google":
        _, sep, method = p.rpartition(":")
        if sep and "/" not in method:
            kind = _GOOGLE_METHODS.get(method)
            return kind if kind is not None else "other"  # type: ignore[return-value]
    elif api == "anthropic":
        if p.endswith("/messages/count_tokens"):
            return "count_tokens"
        if p.endswith("/messages"):
            return "messages"
    return _openai_kind(p) or "other"


OPENAI_KINDS: frozenset[str] = frozenset({"chat", "responses", "embeddings", "completions"})


def wire_format(api: str, kind: str) -> str:
    """The format an answer is written in: OpenAI for every OpenAI kind (compatible endpoints included)."""
    return "openai" if kind in OPENAI_KINDS else api


def _kind(api: str, endpoint: str) -> str:
    return endpoint if endpoint in ENDPOINT_KINDS else endpoint_kind(api, endpoint)


# ---- small readers -----------------------------------------------------------------------------------------


def _int(v: Any) -> int:
    """A non-negative token count, 0 for anything that is not one."""
    if isinstance(v, bool) or v is None:
        return 0
    if isinstance(v, int):
        return max(v, 0)
    if isinstance(v, float) and math.isfinite(v) and v >= 0:
        return int(v)
    return 0


def _opt_int(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return _int(v)


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _has_count(u: Mapping[str, Any], *keys: str) -> bool:
    """Whether a usage object carries at least one of these counts as a number (else it is not usage)."""
    return any(isinstance(u.get(k), int | float) and not isinstance(u.get(k), bool) for k in keys)


def _modality_count(details: Any, modality: str) -> int:
    """tokenCount of one modality in a Gemini `*TokensDetails` list."""
    if not isinstance(details, list):
        return 0
    return sum(
        _int(d.get("tokenCount")) for d in details if isinstance(d, dict) and d.get("modality") == modality
    )


# ---- normalisation, one function per usage shape -----------------------------------------------------------


def openai_chat_usage(u: Mapping[str, Any], service_tier: str | None = None) -> Usage:
    """OpenAI chat completions / legacy completions / embeddings ``usage`` (prompt_tokens...)."""
    ptd = u.get("prompt_tokens_details")
    ctd = u.get("completion_tokens_details")
    return Usage(
        input_tokens=_int(u.get("prompt_tokens")),
        output_tokens=_int(u.get("completion_tokens")),
        cache_read_tokens=_int(_get(ptd, "cached_tokens")),
        cache_write_tokens=_int(_get(ptd, "cache_write_tokens")),
        reasoning_tokens=_int(_get(ctd, "reasoning_tokens")),
        input_audio_tokens=_int(_get(ptd, "audio_tokens")),
        output_audio_tokens=_int(_get(ctd, "audio_tokens")),
        service_tier=service_tier,
        modality_tokens=tuple(_modality_entries("input", ptd) + _modality_entries("output", ctd)),
    )


def openai_responses_usage(
    u: Mapping[str, Any], service_tier: str | None = None, tool_usage: Any = None
) -> Usage:
    """OpenAI Responses ``usage`` (input_tokens, input_tokens_details...) and ``tool_usage``.

    Also the Realtime API's ``response.done`` usage (``input_token_details`` / ``output_token_details`` with
    ``text_tokens``, ``audio_tokens`` and ``image_tokens``, ``cached_tokens_details`` by modality): every
    modality is kept in ``modality_tokens`` (``input`` all of it, ``cache_read`` the cached part), each
    priced at its own rate (cached audio at the cached-audio rate).
    """
    itd = u.get("input_tokens_details")
    otd = u.get("output_tokens_details")
    if itd is None and otd is None:  # the Realtime API's names
        itd, otd = u.get("input_token_details"), u.get("output_token_details")
    modalities = (
        _modality_entries("input", itd)
        + _modality_entries("cache_read", _get(itd, "cached_tokens_details"))
        + _modality_entries("output", otd)
    )
    return Usage(
        input_tokens=_int(u.get("input_tokens")),
        output_tokens=_int(u.get("output_tokens")),
        cache_read_tokens=_int(_get(itd, "cached_tokens")),
        cache_write_tokens=_int(_get(itd, "cache_write_tokens")),
        reasoning_tokens=_int(_get(otd, "reasoning_tokens")),
        input_audio_tokens=_int(_get(itd, "audio_tokens")),
        output_audio_tokens=_int(_get(otd, "audio_tokens")),
        web_search_requests=_int(_get(tool_usage, "web_search", "num_requests")),
        service_tier=service_tier,
        modality_tokens=tuple(modalities),
    )


def _openai_usage(u: Mapping[str, Any], service_tier: str | None, tool_usage: Any = None) -> Usage:
    """Either OpenAI shape, told apart by its keys (OpenAI-compatible servers are not always consistent)."""
    if "prompt_tokens" not in u and "input_tokens" in u:
        return openai_responses_usage(u, service_tier, tool_usage)
    return openai_chat_usage(u, service_tier)


def anthropic_usage(u: Mapping[str, Any]) -> Usage:
    """Anthropic ``usage``: input = input_tokens + cache_creation_input_tokens + cache_read_input_tokens.

    ``service_tier`` is Anthropic's (standard / priority / batch), or ``fast`` when ``speed`` is ``fast``
    and the answer is not a batch one (fast mode has its own price variant); ``speed`` is kept apart.
    """
    uncached = _int(u.get("input_tokens"))
    cache_write = _int(u.get("cache_creation_input_tokens"))
    cache_read = _int(u.get("cache_read_input_tokens"))
    cc = u.get("cache_creation")
    w5 = _opt_int(_get(cc, "ephemeral_5m_input_tokens"))
    w1 = _opt_int(_get(cc, "ephemeral_1h_input_tokens"))
    if isinstance(cc, dict) and (w5 is not None or w1 is not None):
        w5, w1 = w5 or 0, w1 or 0
    tier = _str(u.get("service_tier"))
    speed = _str(u.get("speed"))
    if speed == "fast" and tier != "batch":
        tier = "fast"
    return Usage(
        input_tokens=uncached + cache_write + cache_read,
        output_tokens=_int(u.get("output_tokens")),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_5m_tokens=w5,
        cache_write_1h_tokens=w1,
        reasoning_tokens=_int(_get(u, "output_tokens_details", "thinking_tokens")),
        web_search_requests=_int(_get(u, "server_tool_use", "web_search_requests")),
        service_tier=tier,
        speed=speed,
    )


def gemini_usage(um: Mapping[str, Any], service_tier: Any = None) -> Usage:
    """Gemini ``usageMetadata``: input = promptTokenCount + toolUsePromptTokenCount, output =
    candidatesTokenCount + thoughtsTokenCount; cachedContentTokenCount is the cache read. Per-modality
    counts from ``promptTokensDetails`` and ``toolUsePromptTokensDetails`` (input), ``candidatesTokensDetails``
    (output) and ``cacheTokensDetails`` (cache read). The tier is the reported ``serviceTier`` (in
    ``usageMetadata`` or, as `service_tier`, the response's top level), else Vertex's ``trafficType``."""
    thoughts = _int(um.get("thoughtsTokenCount"))
    modalities = (
        _gemini_entries("input", um.get("promptTokensDetails"))
        + _gemini_entries("input", um.get("toolUsePromptTokensDetails"))
        + _gemini_entries("output", um.get("candidatesTokensDetails"))
        + _gemini_entries("cache_read", um.get("cacheTokensDetails"))
    )
    tier = normal_tier(um.get("serviceTier")) or normal_tier(service_tier)
    return Usage(
        input_tokens=_int(um.get("promptTokenCount")) + _int(um.get("toolUsePromptTokenCount")),
        output_tokens=_int(um.get("candidatesTokenCount")) + thoughts,
        cache_read_tokens=_int(um.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
        input_audio_tokens=_modality_count(um.get("promptTokensDetails"), "AUDIO")
        + _modality_count(um.get("toolUsePromptTokensDetails"), "AUDIO"),
        output_audio_tokens=_modality_count(um.get("candidatesTokensDetails"), "AUDIO"),
        service_tier=tier or _str(um.get("trafficType")),
        modality_tokens=tuple(modalities),
    )


# ---- non-streamed bodies -----------------------------------------------------------------------------------


def _loads(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, TypeError):
        return None


_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # what json.loads runs


def _loads_event(data: bytes) -> Any:
    """`_loads(data)` for one streamed event (stripped bytes), cheaper for the usual ``{...}`` in UTF-8.

    `json.loads` on such bytes detects UTF-8 (no BOM, no NUL second byte), decodes them with
    ``surrogatepass``, scans one value from offset 0 and requires it to end the text. This does exactly
    that with the same scanner and returns its value only when the value ends the text; in every other case
    (another first byte, a NUL second byte, undecodable bytes, a scanning error, trailing text) it returns
    `_loads(data)`, so the result is always the same.
    """
    if data[:1] == b"{" and data[1:2] != b"\x00":
        try:
            s = data.decode("utf-8", "surrogatepass")
            obj, end = _scan_once(s, 0)
            if end == len(s):
                return obj
        except Exception:  # noqa: S110 - decided by the full path below
            pass
    return _loads(data)


def usage_from_body(api: ApiFormat, endpoint: str, body: bytes) -> tuple[Usage | None, str | None]:
    """(usage, reported model) from a non-streamed JSON answer; (None, None) when it has none."""
    try:
        kind = _kind(api, endpoint)
        return _usage_from_body(wire_format(api, kind), kind, body)
    except Exception:  # malformed input must never break the recording of a call
        return None, None


def _usage_from_body(api: str, kind: str, body: bytes) -> tuple[Usage | None, str | None]:
    if kind == "count_tokens":
        return None, None
    obj = _loads(body)
    if isinstance(obj, list) and api == "google":
        # a streamed array given whole: merge it like a stream
        s = summarize_stream("google", "stream_generate", [body])
        return s.usage, s.model
    if not isinstance(obj, dict):
        return None, None
    if api == "google":
        um = obj.get("usageMetadata")
        if not isinstance(um, dict) or not merged_has_counts(um):
            return None, None
        return gemini_usage(um, obj.get("serviceTier")), _str(obj.get("modelVersion")) or _str(
            obj.get("model")
        )
    if api == "anthropic":
        u = obj.get("usage")
        if obj.get("type") == "error" or not isinstance(u, dict):
            return None, None
        if not _has_count(u, "input_tokens", "output_tokens"):
            return None, None
        return anthropic_usage(u), _str(obj.get("model"))
    # OpenAI format
    u = obj.get("usage")
    if not isinstance(u, dict):
        # a Responses object wrapped in an event, e.g. a stored `response.completed` payload
        resp = obj.get("response")
        if isinstance(resp, dict) and isinstance(resp.get("usage"), dict):
            obj, u = resp, resp["usage"]
        else:
            return None, None
    assert isinstance(u, dict)
    if not _has_count(u, "prompt_tokens", "input_tokens", "completion_tokens", "output_tokens"):
        return None, None
    tier = _str(obj.get("service_tier"))
    return _openai_usage(u, tier, obj.get("tool_usage")), _str(obj.get("model"))


def is_usage_only_chunk(event_data: bytes) -> bool:
    """True for the extra final OpenAI chat chunk: ``"choices": []`` with a non-null ``usage``.

    `event_data` is the payload of one ``data:`` line (with or without the ``data:`` prefix).
    """
    data = event_data.strip()
    if data.startswith(b"data:"):
        data = data[5:].strip()
    if b'"usage"' not in data or b'"choices"' not in data:  # cheap pre-check: most chunks fail here
        return False
    obj = _loads(data)
    return (
        isinstance(obj, dict)
        and obj.get("choices") == []
        and isinstance(obj.get("usage"), dict)
        and bool(obj["usage"])
    )


# ---- streams -----------------------------------------------------------------------------------------------

_STR_SPECIAL = re.compile(rb'["\\]')
_STRUCT = re.compile(rb'["{}\[\]]')
_WS = b" \t\r\n\xef\xbb\xbf"  # whitespace and a UTF-8 BOM

_RESPONSES_TEXT_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.audio.transcript.delta",
        # the Realtime API (GA, then beta names)
        "response.output_audio_transcript.delta",
        "response.text.delta",
        "response.audio_transcript.delta",
    }
)
# `response.done` ends a Realtime API response (tokenlens.websocket keeps Realtime events as such a stream).
_RESPONSES_TERMINAL = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "response.done"}
)
_ANTHROPIC_DELTA_TEXT = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "input_json_delta": "partial_json",
}


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete SSE events at the start of `buffer` (each with its blank line), and the incomplete rest."""
    events: list[bytes] = []
    start = 0
    while True:
        ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := buffer.find(sep, start)) >= 0]
        if not ends:
            return events, buffer[start:]
        end = min(ends)
        events.append(buffer[start:end])
        start = end


class StreamParser:
    """Incremental parser of one streamed answer: ``feed`` raw decoded chunks as they arrive, then
    ``summary()`` (which may be called at any time, also on a cut stream).

    The body is sniffed on its first non-blank byte: ``[`` is Gemini's streamed JSON array, ``{`` one JSON
    object (or several, newline-delimited: e.g. an error answer), anything else Server-Sent Events, of which
    only ``data:`` lines are read. Work and memory are linear in the stream size.

    The usual events take shorter paths (a chunk that is one whole event, JSON objects scanned without
    `json.loads`' wrappers, a delta with only its content) that give exactly what the general ones give;
    `_fast = False` (tests) takes the general ones everywhere.
    """

    _fast = True

    def __init__(self, api: str, endpoint: str) -> None:
        self.kind = _kind(api, endpoint)
        self.api = wire_format(api, self.kind)
        self._mode: str | None = None  # "sse" | "array" | "object"
        self.events = 0
        self.complete = False
        self.model: str | None = None
        self.extra: dict[str, object] = {}
        self._text: list[str] = []
        # SSE state
        self._line_parts: list[bytes] = []
        self._data: list[bytes] = []
        self._discard_line = False
        # JSON scanner state
        self._depth = 0
        self._in_str = False
        self._escape = False
        self._elem_parts: list[bytes] = []
        self._in_elem = False
        self._closed = False
        # usage accumulators
        self._usage_raw: dict[str, Any] | None = None  # OpenAI / Anthropic raw usage dict
        self._usage_final = False
        self._service_tier: str | None = None
        self._tool_usage: Any = None
        self._gemini_um: dict[str, Any] = {}
        self._gemini_finished = False

    # -- input --

    def feed(self, chunk: bytes) -> None:
        """Consume the next raw (already decompressed) bytes of the answer."""
        if not chunk or self._mode == "failed":
            return
        try:
            self._feed(chunk)
        except Exception:  # a parser bug must never break the proxied stream or lose the record
            self.extra["parse_error"] = True
            self._mode = "failed"

    def _feed(self, chunk: bytes) -> None:
        if self._mode is None:
            stripped = chunk.lstrip(_WS)
            if not stripped:
                return
            first = stripped[:1]
            self._mode = "array" if first == b"[" else "object" if first == b"{" else "sse"
            chunk = stripped
        if self._mode == "sse":
            self._feed_sse(chunk)
        else:
            self._feed_json(chunk)

    def _feed_sse(self, chunk: bytes) -> None:
        if (
            self._fast
            and chunk.startswith(b"data:")
            and not (self._line_parts or self._data or self._discard_line)
        ):
            # the usual chunk, one whole event of one data line: what the loop below does with it
            line, _, rest = chunk.partition(b"\n")
            if rest == b"\n" or rest == b"\r\n":
                if line.endswith(b"\r"):
                    line = line[:-1]
                v = line[5:]
                self._on_data(v[1:] if v.startswith(b" ") else v)
                return
        start = 0
        find = chunk.find
        if self._discard_line:  # the rest of a line that summary() already consumed
            nl = find(b"\n")
            if nl < 0:
                return
            self._discard_line = False
            start = nl + 1
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if self._line_parts:
                self._line_parts.append(chunk[start:nl])
                line = b"".join(self._line_parts)
                self._line_parts.clear()
            else:
                line = chunk[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._dispatch_sse()
            elif line.startswith(b"data:"):
                v = line[5:]
                self._data.append(v[1:] if v.startswith(b" ") else v)
            # event:, id:, retry: and ":" comments carry nothing we need
        if start < len(chunk):
            self._line_parts.append(chunk[start:])

    def _dispatch_sse(self) -> None:
        if not self._data:
            return
        parts = self._data
        self._data = []
        if len(parts) == 1:
            self._on_data(parts[0])
            return
        joined = b"\n".join(parts)
        if _loads(joined) is not None:
            self._on_data(joined)
        else:  # a server that forgot the blank line between events
            for p in parts:
                self._on_data(p)

    def _on_data(self, data: bytes) -> None:
        self.events += 1
        data = data.strip()
        if data == b"[DONE]":
            self.complete = True
            return
        obj = _loads_event(data) if self._fast else _loads(data)
        if isinstance(obj, dict):
            self._on_event(obj)
        else:
            self.extra["malformed_events"] = _int(self.extra.get("malformed_events")) + 1

    def _feed_json(self, chunk: bytes) -> None:
        """Scan for complete values at element depth (1 in an array, 0 otherwise) without re-reading."""
        target = 1 if self._mode == "array" else 0
        n = len(chunk)
        i = 0
        elem_start = 0 if self._in_elem else -1
        if self._escape:
            self._escape = False
            i = 1
        while i < n:
            if self._in_str:
                m = _STR_SPECIAL.search(chunk, i)
                if m is None:
                    break
                j = m.start()
                if chunk[j] == 0x5C:  # backslash: skip the escaped byte
                    if j + 1 >= n:
                        self._escape = True
                        break
                    i = j + 2
                    continue
                self._in_str = False
                i = j + 1
                continue
            m = _STRUCT.search(chunk, i)
            if m is None:
                break
            j = m.start()
            c = chunk[j]
            i = j + 1
            if c == 0x22:  # "
                self._in_str = True
            elif c == 0x7B or c == 0x5B:  # { [
                if self._depth == target and c == 0x7B and not self._in_elem:
                    self._in_elem = True
                    elem_start = j
                self._depth += 1
            else:  # } ]
                self._depth -= 1
                if self._depth == target and self._in_elem:
                    self._elem_parts.append(chunk[elem_start:i])
                    data = b"".join(self._elem_parts)
                    self._elem_parts.clear()
                    self._in_elem = False
                    elem_start = -1
                    self._on_data(data)
                elif self._depth <= 0 and self._mode == "array":
                    self._closed = True
                    self._depth = 0
        if self._in_elem and elem_start >= 0:
            self._elem_parts.append(chunk[elem_start:])

    # -- events --

    def _on_event(self, obj: Mapping[str, Any]) -> None:
        if self.api == "anthropic":
            self._anthropic(obj)
        elif self.api == "google":
            self._gemini(obj)
        else:
            t = obj.get("type")
            if isinstance(t, str) and (
                t.startswith("response.") or (t == "error" and self.kind == "responses")
            ):
                self._responses(obj, t)
            else:
                self._openai_chat(obj)

    def _add_text(self, v: Any) -> None:
        if isinstance(v, str) and v:
            self._text.append(v)

    def _openai_chat(self, obj: Mapping[str, Any]) -> None:
        get = obj.get
        error = get("error")
        if error:
            self.extra["error"] = error
        model = get("model")
        if model and isinstance(model, str):
            self.model = model
        tier = get("service_tier")
        if tier and isinstance(tier, str):
            self._service_tier = tier
        u = get("usage")
        if isinstance(u, dict) and _has_count(u, "prompt_tokens", "completion_tokens", "input_tokens"):
            self._usage_raw = dict(u)
            self._usage_final = True
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            fr = ch.get("finish_reason")
            if fr:
                self.extra["finish_reason"] = fr
            delta = ch.get("delta")
            if isinstance(delta, dict):
                n = len(delta)
                if self._fast and "content" in delta and (n == 1 or (n == 2 and "role" in delta)):
                    self._add_text(delta["content"])  # the usual delta: no other field read below
                    continue
                add = self._add_text
                add(delta.get("reasoning_content"))
                add(delta.get("reasoning"))
                add(delta.get("content"))
                add(delta.get("refusal"))
                tcs = delta.get("tool_calls")
                if isinstance(tcs, list):
                    for tc in tcs:
                        fn = _get(tc, "function")
                        add(_get(fn, "name"))
                        add(_get(fn, "arguments"))
                add(_get(delta, "function_call", "arguments"))
                add(_get(delta, "audio", "transcript"))
            else:
                self._add_text(ch.get("text"))  # legacy completions

    def _responses(self, obj: Mapping[str, Any], t: str) -> None:
        if t in _RESPONSES_TEXT_EVENTS:
            self._add_text(obj.get("delta"))
            return
        if t == "error":
            self.extra["error"] = {k: v for k, v in obj.items() if k != "type"}
            return
        resp = obj.get("response")
        if not isinstance(resp, dict):
            return
        model = _str(resp.get("model"))
        if model:
            self.model = model
        tier = _str(resp.get("service_tier"))
        if tier:
            self._service_tier = tier
        if resp.get("tool_usage") is not None:
            self._tool_usage = resp.get("tool_usage")
        u = resp.get("usage")
        if isinstance(u, dict) and u:
            self._usage_raw = dict(u)
        if t in _RESPONSES_TERMINAL:
            self.complete = True
            self._usage_final = self._usage_raw is not None
            status = resp.get("status")
            if status:
                self.extra["status"] = status
            if resp.get("error"):
                self.extra["error"] = resp["error"]
            if resp.get("incomplete_details"):
                self.extra["incomplete_details"] = resp["incomplete_details"]

    def _anthropic(self, obj: Mapping[str, Any]) -> None:
        t = obj.get("type")
        if t == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                key = _ANTHROPIC_DELTA_TEXT.get(delta.get("type"))  # type: ignore[arg-type]
                if key:
                    self._add_text(delta.get(key))
        elif t == "content_block_start":
            block = obj.get("content_block")
            if isinstance(block, dict):
                self._add_text(block.get("text"))
                self._add_text(block.get("thinking"))
                if block.get("type") in ("tool_use", "server_tool_use"):
                    self._add_text(block.get("name"))
        elif t == "message_start":
            msg = obj.get("message")
            if isinstance(msg, dict):
                model = _str(msg.get("model"))
                if model:
                    self.model = model
                u = msg.get("usage")
                if isinstance(u, dict):
                    self._usage_raw = dict(u)
        elif t == "message_delta":
            u = obj.get("usage")
            if isinstance(u, dict):
                if self._usage_raw is None:
                    self._usage_raw = {}
                for k, v in u.items():
                    if v is not None:  # cumulative values: the last non-null one wins
                        self._usage_raw[k] = v
                self._usage_final = True
            reason = _get(obj, "delta", "stop_reason")
            if reason:
                self.extra["stop_reason"] = reason
        elif t == "message_stop":
            self.complete = True
        elif t == "error":
            self.extra["error"] = obj.get("error")

    def _gemini(self, obj: Mapping[str, Any]) -> None:
        if obj.get("error"):
            self.extra["error"] = obj["error"]
        model = _str(obj.get("modelVersion"))
        if model:
            self.model = model
        tier = _str(obj.get("serviceTier"))
        if tier:
            self._service_tier = tier
        um = obj.get("usageMetadata")
        finished = False
        cands = obj.get("candidates")
        if isinstance(cands, list):
            for cand in cands:
                if not isinstance(cand, dict):
                    continue
                parts = _get(cand, "content", "parts")
                if isinstance(parts, list):
                    for part in parts:
                        if not isinstance(part, dict):
                            continue
                        self._add_text(part.get("text"))
                        fc = part.get("functionCall")
                        if isinstance(fc, dict):
                            self._add_text(_str(fc.get("name")))
                            if fc.get("args") is not None:
                                self._add_text(json.dumps(fc["args"], separators=(",", ":")))
                fr = cand.get("finishReason")
                if fr and fr != "FINISH_REASON_UNSPECIFIED":
                    finished = True
                    self.extra["finish_reason"] = fr
        block = _get(obj, "promptFeedback", "blockReason")
        if block:
            finished = True
            self.extra["block_reason"] = block
        if isinstance(um, dict):
            merged = self._gemini_um
            for k, v in um.items():
                # last non-empty value wins; a missing, null or zero value never erases a count
                if v is None or v == 0 or v == [] or v == {} or v == "":
                    continue
                merged[k] = v
        if finished:
            self._gemini_finished = True
            if merged_has_counts(self._gemini_um):
                self._usage_final = True

    # -- output --

    def _flush_tail(self) -> None:
        """Dispatch a last event that lacks its line end or blank line (a cut stream), when it is whole."""
        if self._line_parts:
            tail = b"".join(self._line_parts)
            if tail.endswith(b"\r"):
                tail = tail[:-1]
            if tail.startswith(b"data:"):
                v = tail[5:]
                v = v[1:] if v.startswith(b" ") else v
                if v.strip() == b"[DONE]" or _loads(v) is not None:
                    self._data.append(v)
                    self._line_parts.clear()
                    self._discard_line = True
        if self._data and (self._data == [b"[DONE]"] or _loads(b"\n".join(self._data)) is not None):
            self._dispatch_sse()

    def summary(self) -> StreamSummary:
        """What has been seen so far (an unterminated last SSE event or JSON element is parsed if whole)."""
        if self._mode == "sse":
            self._flush_tail()
        usage: Usage | None = None
        if self.api == "google":
            if merged_has_counts(self._gemini_um):
                usage = gemini_usage(self._gemini_um, self._service_tier)
            complete = self._gemini_finished or self._closed
        else:
            complete = self.complete
            raw = self._usage_raw
            if raw:
                if self.api == "anthropic":
                    usage = anthropic_usage(raw)
                else:
                    usage = _openai_usage(raw, self._service_tier, self._tool_usage)
        extra = dict(self.extra)
        if self._service_tier and "service_tier" not in extra:
            extra["service_tier"] = self._service_tier
        return StreamSummary(
            usage=usage,
            output_text="".join(self._text),
            model=self.model,
            complete=complete,
            events=self.events,
            extra=extra,
            usage_final=usage is not None and self._usage_final,
        )


def merged_has_counts(um: Mapping[str, Any]) -> bool:
    """Whether a (merged) Gemini usageMetadata holds any token count."""
    return any(k.endswith("TokenCount") and _opt_int(v) is not None for k, v in um.items())


def summarize_stream(api: ApiFormat, endpoint: str, chunks: Iterable[bytes]) -> StreamSummary:
    """Parse a streamed answer (SSE, or Gemini's streamed JSON array) from its raw decoded chunks."""
    parser = StreamParser(api, endpoint)
    for chunk in chunks:
        try:
            parser.feed(chunk)
        except Exception:  # pragma: no cover - defensive: a parser bug must not lose the record
            parser.extra["parse_error"] = True
            break
    return parser.summary()
