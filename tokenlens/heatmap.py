"""Token heatmap (docs/analytics-api.md#how-the-figures-are-computed): where a request's input tokens go.

`estimate_sections` splits a request body into system / tools / context / history / query with the local
tokenizer; `scale_sections` scales those estimates to the provider-reported input total so that the sections
add up exactly to `input_tokens` (largest-remainder rounding). Long texts are estimated from samples of their
start, middle and end (their share is what matters once scaled), which keeps a 50 KB prompt under a
millisecond.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenlens.complexity import complexity_score
from tokenlens.exchange import Exchange
from tokenlens.prompt_parts import SECTIONS, Part, dumps, request_parts, user_turns, with_inline_documents
from tokenlens.records import CallRecord
from tokenlens.tokens import IMAGE_TOKENS, MESSAGE_OVERHEAD, count_tokens
from tokenlens.usage import wire_format

_SAMPLE = 1024  # characters per sample of a long text
_EXACT_UP_TO = 3 * _SAMPLE


def estimate_text_tokens(text: str, model: str | None = None) -> int:
    """Tokens of `text`: exact up to 3 KB, else extrapolated from three 1 KB samples."""
    n = len(text)
    if n <= _EXACT_UP_TO:
        return count_tokens(text, model)
    middle = n // 2
    samples = (text[:_SAMPLE], text[middle : middle + _SAMPLE], text[-_SAMPLE:])
    sampled = sum(count_tokens(s, model) for s in samples)
    return round(sampled * n / (3 * _SAMPLE))


@dataclass(frozen=True)
class Heatmap:
    sections: dict[str, int]  # estimated tokens per section, SECTIONS order
    turns: int  # user turns in the request
    messages: int  # messages in the request

    @property
    def total(self) -> int:
        return sum(self.sections.values())


def sections_of(parts: list[Part], api: str, model: str | None = None) -> Heatmap:
    """Estimated tokens per section; documents inside user turns (tagged, fenced, labelled, long quotes) count
    as context (`prompt_parts.with_inline_documents`)."""
    turns = user_turns(parts)
    parts = with_inline_documents(parts)
    out = dict.fromkeys(SECTIONS, 0)
    texts: dict[str, list[str]] = {section: [] for section in SECTIONS}
    image = IMAGE_TOKENS.get(api, IMAGE_TOKENS["openai"])
    overhead_in: dict[int, str] = {}  # a message's overhead goes to its turn, not to a tool result in it
    for p in parts:
        if p.message is not None and (p.message not in overhead_in or overhead_in[p.message] == "context"):
            overhead_in[p.message] = p.section
        if p.text:
            texts[p.section].append(p.text)
        out[p.section] += p.media * image
    for section in overhead_in.values():
        out[section] += MESSAGE_OVERHEAD
    for section, pieces in texts.items():
        if len(pieces) == 1 or sum(map(len, pieces)) <= _EXACT_UP_TO:
            out[section] += sum(estimate_text_tokens(t, model) for t in pieces)
        elif pieces:
            out[section] += estimate_text_tokens("\n".join(pieces), model) - (len(pieces) - 1)
    return Heatmap(out, turns, len(overhead_in))


def estimate_sections(api: str, body: Mapping[str, Any], model: str | None = None) -> Heatmap:
    """Local estimates per section of a request body (OpenAI, Anthropic or Gemini)."""
    if model is None and isinstance(body.get("model"), str):
        model = str(body["model"])
    return sections_of(request_parts(api, body), api, model)


def scale_sections(estimates: Mapping[str, int], total: int) -> dict[str, int]:
    """Estimates scaled to `total`, as integers summing to exactly `total` (largest remainder).

    When nothing was estimated, the whole total is put in `query`.
    """
    total = max(0, int(total))
    keys = [k for k in SECTIONS if k in estimates] or list(SECTIONS)
    base = sum(max(0, estimates.get(k, 0)) for k in keys)
    if base == 0:
        out = dict.fromkeys(keys, 0)
        out["query"] = total
        return {k: out.get(k, 0) for k in SECTIONS}
    exact = {k: max(0, estimates.get(k, 0)) * total / base for k in keys}
    floors = {k: int(v) for k, v in exact.items()}
    rest = total - sum(floors.values())
    for k in sorted(keys, key=lambda k: (exact[k] - floors[k], exact[k]), reverse=True)[:rest]:
        floors[k] += 1
    return {k: floors.get(k, 0) for k in SECTIONS}


def prefix_fingerprint(api: str, body: Mapping[str, Any]) -> str | None:
    """A hash of the stable prefix of a request (tool definitions and system prompt), None when it has none.

    Two calls with the same fingerprint resend the same prefix: a prompt-caching opportunity.
    """
    if api == "google":
        parts = [body.get("tools"), body.get("systemInstruction", body.get("system_instruction"))]
    elif api == "anthropic":
        parts = [body.get("tools"), body.get("system")]
    else:
        system = [
            m
            for m in body.get("messages") or ()
            if isinstance(m, Mapping) and m.get("role") in ("system", "developer")
        ]
        parts = [body.get("tools"), body.get("instructions"), system or None]
    if not any(parts):
        return None
    return hashlib.sha256(dumps(parts).encode()).hexdigest()[:24]


def uses_prompt_cache(body: Mapping[str, Any], raw: bytes | None = None) -> bool:
    """Whether the request asks for provider caching explicitly (Anthropic `cache_control`, Gemini
    `cachedContent`, OpenAI `prompt_cache_key`)."""
    if any(k in body for k in ("cachedContent", "cached_content", "prompt_cache_key", "cache_control")):
        return True
    if raw is not None:
        return b"cache_control" in raw
    return "cache_control" in dumps(body)


def record_heatmap(exchange: Exchange, record: CallRecord, parts: list[Part] | None = None) -> None:
    """Deferred: heatmap, complexity and prefix fingerprint of the call. `parts`: the request's
    `request_parts` when the caller has them already (the waste analysis reads them too)."""
    body = exchange.request_json
    if body is None:
        return
    api = wire_format(exchange.api, exchange.kind)
    heat = sections_of(request_parts(api, body) if parts is None else parts, api, exchange.model)
    measured = record.input_tokens > 0 and record.outcome in ("ok", "error")
    sections = scale_sections(heat.sections, record.input_tokens) if measured else dict(heat.sections)
    detail: dict[str, object] = {
        **sections,
        "scaled": measured,
        "estimated_total": heat.total,
        "turns": heat.turns,
        "messages": heat.messages,
    }
    prefix = prefix_fingerprint(api, body)
    if prefix is not None:
        detail["prefix"] = {
            "hash": prefix,
            "tokens": sections["system"] + sections["tools"],
            "cache_used": record.cache_read_tokens > 0
            or record.cache_write_tokens > 0
            or uses_prompt_cache(body, exchange.request_body),
        }
    record.details["heatmap"] = detail
    input_tokens = record.input_tokens if measured else heat.total
    record.complexity = complexity_score(api, body, input_tokens, record.output_tokens, heat.turns)
