"""Offline analysis of one request body or prompt (`tokenlens analyze`, `POST /api/analyze`; docs/cli.md and docs/analytics-api.md).

Detects the format (OpenAI, Anthropic or Gemini request body, or plain text), then reports what the gateway
would find for the same request: the waste findings (`tokenlens.waste.analyze_waste`, the very function the
gateway runs, so the figures are the same), the token heatmap (local estimates, not scaled), the complexity
score (the output size is unknown offline, so it counts as 0), the estimated cost on the requested model and
on cheaper models of the same provider, and concrete suggestions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tokenlens.complexity import complexity_score, is_simple
from tokenlens.exchange import max_tokens_from_request
from tokenlens.heatmap import estimate_sections, uses_prompt_cache
from tokenlens.insights import HISTORY_BLOAT_SHARE, cheaper_model
from tokenlens.money import format_usd
from tokenlens.pricing import Pricer
from tokenlens.tokens import estimate_request_tokens
from tokenlens.usage import Usage
from tokenlens.waste import analyze_waste

PROVIDERS = ("openai", "anthropic", "google")
DEFAULT_OUTPUT_TOKENS = 500  # assumed answer length when the request sets no max_tokens
CACHEABLE_PREFIX_TOKENS = 1024
MAX_CANDIDATES = 2


class AnalyzeError(ValueError):
    """The input cannot be analysed (e.g. an unknown provider)."""


_MODEL_PREFIXES = (
    ("claude", "anthropic"),
    ("gemini", "google"),
    ("gemma", "google"),
    ("gpt-", "openai"),
    ("chatgpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding", "openai"),
)


def provider_of_model(model: str | None) -> str | None:
    """The provider a model name belongs to, or None when nothing says.

    First the price data (genai-prices): the provider among openai, anthropic and google that lists the name
    (or its undated base) as one of its models; then the name's prefix (claude-, gemini-/gemma-, gpt-,
    chatgpt-, o1/o3/o4, text-embedding-); then a provider whose data prices it by a looser match.
    """
    if not model or not model.strip():
        return None
    from tokenlens.pricing import resolve

    loose: str | None = None
    for provider in PROVIDERS:
        found = resolve(provider, model)
        if found is not None:
            if found[2]:
                return provider
            loose = loose or provider
    lower = model.strip().lower().rsplit("/", 1)[-1]
    for prefix, provider in _MODEL_PREFIXES:
        if lower.startswith(prefix):
            return provider
    return loose


def detect_provider(body: Mapping[str, Any], model: str | None = None) -> str:
    """Which provider's request format a body is written in: Gemini's own keys, else the provider of the
    model (`model`, else the body's), else the body's shape (Anthropic's markers), else OpenAI."""
    if any(k in body for k in ("contents", "systemInstruction", "system_instruction", "generationConfig")):
        return "google"
    named = model if model else body.get("model")
    from_model = provider_of_model(named) if isinstance(named, str) else None
    if from_model is not None:
        return from_model
    if "anthropic_version" in body or ("system" in body and "messages" in body):
        return "anthropic"
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list) and any(
            isinstance(b, Mapping) and b.get("type") in ("tool_use", "tool_result") for b in content
        ):
            return "anthropic"
    return "openai"


def openai_kind(body: Mapping[str, Any]) -> str:
    if "messages" in body:
        return "chat"
    if "input" in body:
        return "responses"
    return "completions" if "prompt" in body else "chat"


def parse_input(
    raw: bytes | str, provider: str | None = None, model: str | None = None
) -> tuple[str, dict[str, Any], str]:
    """(provider, request body, input kind "request" or "text") of a file's content."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if provider is not None and provider not in PROVIDERS:
        raise AnalyzeError(f"provider: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
    body: Any = None
    if text.lstrip().startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
    if isinstance(body, dict):
        return provider or detect_provider(body, model), body, "request"
    chosen = provider or provider_of_model(model) or "openai"
    if chosen == "google":
        return chosen, {"contents": [{"role": "user", "parts": [{"text": text}]}]}, "text"
    wrapped: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if model:
        wrapped = {"model": model, **wrapped}
    return chosen, wrapped, "text"


def _cost(pricer: Pricer, provider: str, model: str, input_tokens: int, output_tokens: int) -> float | None:
    price = pricer.price(provider, model, Usage(input_tokens=input_tokens, output_tokens=output_tokens))
    return float(price.cost_usd) if price.priced and price.cost_usd is not None else None


def _suggestions(result: dict[str, Any], body: Mapping[str, Any], max_tokens: int | None) -> list[str]:
    out: list[str] = []
    by_type = result["waste"]["by_type"]
    if by_type.get("whitespace"):
        out.append(
            f"Collapse whitespace (blank-line runs, trailing spaces, pretty-printed JSON): "
            f"{by_type['whitespace']} tokens."
        )
    if by_type.get("filler"):
        out.append(
            f"Drop polite filler (please, thank you, ...): the model does not need it; {by_type['filler']} tokens."
        )
    if by_type.get("repeated_instruction"):
        out.append(
            f"Say each instruction once: {by_type['repeated_instruction']} tokens repeat earlier sentences."
        )
    if by_type.get("empty_message"):
        out.append(f"Remove empty messages: {by_type['empty_message']} tokens.")
    sections = result["heatmap"]["sections"]
    total = result["input_tokens_estimated"] or 1
    prefix = sections["system"] + sections["tools"]
    if prefix >= CACHEABLE_PREFIX_TOKENS and not uses_prompt_cache(body):
        out.append(
            f"The system prompt and tool definitions ({prefix} tokens) are a stable prefix: enable prompt caching "
            "(Anthropic cache_control, OpenAI keeps the prefix first, Gemini cachedContent)."
        )
    if sections["history"] / total > HISTORY_BLOAT_SHARE:
        out.append(
            f"Earlier turns are {round(100 * sections['history'] / total)}% of the input: summarise or trim the "
            "history."
        )
    cost = result["cost"]
    if result["complexity"]["simple"] and cost["candidates"]:
        best = cost["candidates"][0]
        out.append(
            f"A simple request (complexity {result['complexity']['score']}): {best['model']} would cost "
            f"{best['saving_pct']}% less than {cost['model']}."
        )
    if max_tokens is None:
        out.append("Set max_tokens (or the provider's equivalent) to bound the answer's length and cost.")
    if cost["model"] is None:
        out.append("Name the model (--model or the body's model field) to price the request.")
    return out


def analyze_request(
    raw: bytes | str,
    *,
    provider: str | None = None,
    model: str | None = None,
    pricer: Pricer | None = None,
) -> dict[str, Any]:
    """The full offline analysis of a request body or a plain-text prompt, as JSON-able data."""
    pricer = pricer or Pricer()
    provider, body, input_kind = parse_input(raw, provider, model)
    if model is None and isinstance(body.get("model"), str):
        model = str(body["model"])
    api = provider  # the wire format: each provider's own
    kind = openai_kind(body) if api == "openai" else ("messages" if api == "anthropic" else "generate")
    waste = analyze_waste(api, body, model, provider=provider, pricer=pricer)
    heat = estimate_sections(api, body, model)
    input_tokens = estimate_request_tokens(api, body, endpoint=kind, model=model)
    max_tokens = max_tokens_from_request(api, body)  # type: ignore[arg-type]
    score = complexity_score(api, body, heat.total, 0, heat.turns)
    output_tokens = max_tokens if max_tokens is not None else DEFAULT_OUTPUT_TOKENS
    waste_data = waste.to_dict()
    waste_data["pct"] = round(100 * waste.tokens / input_tokens, 2) if input_tokens else 0.0
    candidates: list[dict[str, Any]] = []
    cost_usd = _cost(pricer, provider, model, input_tokens, output_tokens) if model else None
    if model and cost_usd is not None:
        current: str | None = model
        seen = {model}
        while len(candidates) < MAX_CANDIDATES and current is not None:
            current = cheaper_model(provider, current, pricer)
            if current is None or current in seen:
                break
            seen.add(current)
            other = _cost(pricer, provider, current, input_tokens, output_tokens)
            if other is None:
                continue
            candidates.append(
                {
                    "model": current,
                    "cost_usd": round(other, 9),
                    "saving_usd": round(cost_usd - other, 9),
                    "saving_pct": round(100 * (cost_usd - other) / cost_usd, 1) if cost_usd else 0.0,
                }
            )
    result: dict[str, Any] = {
        "input": input_kind,
        "provider": provider,
        "kind": kind,
        "model": model,
        "input_tokens_estimated": input_tokens,
        "waste": waste_data,
        "heatmap": {
            "sections": dict(heat.sections),
            "estimated_total": heat.total,
            "turns": heat.turns,
            "messages": heat.messages,
        },
        "complexity": {"score": score, "simple": is_simple(score)},
        "cost": {
            "model": model,
            "priced": cost_usd is not None,
            "input_tokens": input_tokens,
            "output_tokens_assumed": output_tokens,
            "cost_usd": None if cost_usd is None else round(cost_usd, 9),
            "candidates": candidates,
        },
    }
    result["suggestions"] = _suggestions(result, body, max_tokens)
    return result


def render_text(result: Mapping[str, Any]) -> str:
    """A short human report of `analyze_request`'s result."""
    waste, heat, cost = result["waste"], result["heatmap"], result["cost"]
    lines = [
        f"{result['provider']} {result['kind']} request"
        + (f" for {result['model']}" if result["model"] else "")
        + f": about {result['input_tokens_estimated']} input tokens",
        "",
        f"Waste: {waste['tokens']} tokens ({waste['pct']}% of the input)"
        + (f", {format_usd(waste['cost_usd'])}" if waste["cost_usd"] is not None else ""),
    ]
    for finding in waste["findings"]:
        example = f' ("{finding["example"]}")' if finding.get("example") else ""
        lines.append(f"  {finding['type']:<22} {finding['where']:<14} {finding['tokens']:>6} tokens{example}")
    lines += ["", "Heatmap (estimated tokens):"]
    total = heat["estimated_total"] or 1
    for section, tokens in heat["sections"].items():
        lines.append(f"  {section:<8} {tokens:>7}  {round(100 * tokens / total):>3}%")
    simple = " (simple)" if result["complexity"]["simple"] else ""
    lines += ["", f"Complexity: {result['complexity']['score']}/9{simple}", ""]
    if cost["cost_usd"] is None:
        lines.append("Cost: unknown (model not priced)")
    else:
        lines.append(
            f"Cost on {cost['model']}: {format_usd(cost['cost_usd'])} "
            f"({cost['input_tokens']} input, {cost['output_tokens_assumed']} output tokens assumed)"
        )
        for c in cost["candidates"]:
            lines.append(f"  {c['model']:<28} {format_usd(c['cost_usd'])}  -{c['saving_pct']}%")
    if result["suggestions"]:
        lines += ["", "Suggestions:", *(f"  - {s}" for s in result["suggestions"])]
    return "\n".join(lines) + "\n"
