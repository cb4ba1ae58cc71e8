"""Complexity score 0-9 of a call (docs/analytics-api.md#how-the-figures-are-computed, right-sizing).

Points: input size (0-3), output size (0-2), multi-turn conversation (1), tools (1), structured output (1),
reasoning requested (1). A call scoring at most `SIMPLE_MAX` is "simple": a cheaper model would likely do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SIMPLE_MAX = 2
INPUT_STEPS = (1_000, 8_000, 32_000)
OUTPUT_STEPS = (500, 2_000)


def _structured(api: str, body: Mapping[str, Any]) -> bool:
    if api == "google":
        config = body.get("generationConfig") or body.get("generation_config") or {}
        return isinstance(config, Mapping) and bool(
            config.get("responseSchema")
            or config.get("responseJsonSchema")
            or config.get("responseMimeType") == "application/json"
        )
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_schema", "json_object"):
        return True
    text = body.get("text")
    if isinstance(text, Mapping) and isinstance(text.get("format"), Mapping):
        return text["format"].get("type") in ("json_schema", "json_object")
    output = body.get("output_format") or body.get("output_config")
    return isinstance(output, Mapping) and bool(output)


def _reasoning(api: str, body: Mapping[str, Any]) -> bool:
    if api == "google":
        config = body.get("generationConfig") or body.get("generation_config") or {}
        thinking = config.get("thinkingConfig") if isinstance(config, Mapping) else None
        if isinstance(thinking, Mapping):
            budget = thinking.get("thinkingBudget")
            return budget != 0 and bool(thinking)
        return False
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
        return True
    if body.get("reasoning_effort") not in (None, "none", "minimal"):
        return True
    reasoning = body.get("reasoning")
    return isinstance(reasoning, Mapping) and reasoning.get("effort") not in (None, "none", "minimal")


def _tools(body: Mapping[str, Any]) -> bool:
    return bool(body.get("tools") or body.get("functions"))


def complexity_score(
    api: str, body: Mapping[str, Any] | None, input_tokens: int, output_tokens: int, turns: int
) -> int:
    """0 (trivial) to 9 (long, multi-turn, tools, structured, reasoning)."""
    score = sum(1 for step in INPUT_STEPS if input_tokens >= step)
    score += sum(1 for step in OUTPUT_STEPS if output_tokens >= step)
    score += 1 if turns >= 3 else 0
    if body is not None:
        score += 1 if _tools(body) else 0
        score += 1 if _structured(api, body) else 0
        score += 1 if _reasoning(api, body) else 0
    return min(9, score)


def is_simple(score: int | None) -> bool:
    return score is not None and score <= SIMPLE_MAX
