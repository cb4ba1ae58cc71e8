"""Token heatmap: sections of the three formats, and scaling that adds up exactly."""

from __future__ import annotations

import random

import pytest

from tokenlens.heatmap import estimate_sections, prefix_fingerprint, scale_sections
from tokenlens.tokens import get_encoding


def tok(text: str) -> int:
    enc = get_encoding("o200k_base")
    assert enc is not None
    return len(enc.encode_ordinary(text))


def test_anthropic_sections() -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "system": "You are a weather bot.",
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris please"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "Sunny, 21 degrees"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    }
    heat = estimate_sections("anthropic", body)
    s = heat.sections
    assert s["system"] == tok("You are a weather bot.")
    assert s["tools"] == tok('[{"name":"weather","input_schema":{"type":"object"}}]')
    assert s["context"] == tok("Sunny, 21 degrees")
    assert s["query"] == tok("And tomorrow?") + 4  # the last user turn with its message overhead
    assert s["history"] == tok("Weather in Paris please") + 4 + tok('{"city":"Paris"}') + 4
    assert heat.turns == 2


def test_gemini_system_instruction_and_function_response() -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Look it up"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": "data"}}}]},
            {"role": "user", "parts": [{"text": "Thanks, summarise"}]},
        ],
    }
    s = estimate_sections("google", body, "gemini-2.5-flash").sections
    assert s["system"] == tok("Be brief.") and s["context"] > 0 and s["query"] == tok("Thanks, summarise") + 4
    assert s["tools"] == 0


def test_openai_system_documents_and_responses_input() -> None:
    chat = {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "Rules."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Summarise"},
                    {"type": "file", "file": {"file_id": "f1"}},
                ],
            },
        ],
    }
    s = estimate_sections("openai", chat).sections
    assert s["system"] == tok("Rules.") + 4 and s["context"] > 0 and s["history"] == 0
    responses = {"model": "gpt-4o", "instructions": "Be kind.", "input": "Hello"}
    r = estimate_sections("openai", responses).sections
    assert r["system"] == tok("Be kind.") and r["query"] == tok("Hello") + 4


@pytest.mark.parametrize("seed", range(20))
def test_scaled_sections_add_up_exactly(seed: int) -> None:
    rng = random.Random(seed)
    estimates = {k: rng.randint(0, 5000) for k in ("system", "tools", "context", "history", "query")}
    total = rng.randint(0, 200_000)
    scaled = scale_sections(estimates, total)
    assert sum(scaled.values()) == total
    for k, v in estimates.items():
        if sum(estimates.values()):
            assert abs(scaled[k] - v * total / sum(estimates.values())) < 1


def test_nothing_estimated_goes_to_query() -> None:
    assert scale_sections(dict.fromkeys(("system", "query"), 0), 42)["query"] == 42


def test_prefix_fingerprint_ignores_the_conversation() -> None:
    a = {"system": "S" * 50, "messages": [{"role": "user", "content": "one"}]}
    b = {"system": "S" * 50, "messages": [{"role": "user", "content": "two"}]}
    c = {"system": "T" * 50, "messages": [{"role": "user", "content": "one"}]}
    assert prefix_fingerprint("anthropic", a) == prefix_fingerprint("anthropic", b)
    assert prefix_fingerprint("anthropic", a) != prefix_fingerprint("anthropic", c)
    assert prefix_fingerprint("anthropic", {"messages": []}) is None
