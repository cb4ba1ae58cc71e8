"""Waste detection on crafted requests in the three formats (SPEC section 10)."""

from __future__ import annotations

from typing import Any

import pytest

from tokenlens.tokens import get_encoding
from tokenlens.waste import analyze_waste

# Published input prices, USD per million tokens.
GPT_4O = 2.50
CLAUDE_SONNET_4_6 = 3.00
GEMINI_25_FLASH = 0.30


def tok(text: str) -> int:
    enc = get_encoding("o200k_base")
    assert enc is not None
    return len(enc.encode_ordinary(text))


def by_type(api: str, body: dict[str, Any], model: str | None = None) -> dict[str, int]:
    return analyze_waste(api, body, model).by_type()


CLEAN = [
    (
        "openai",
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Italy?"},
            ],
        },
    ),
    ("openai", {"model": "gpt-4o", "instructions": "Be terse.", "input": "Name three prime numbers."}),
    (
        "anthropic",
        {
            "model": "claude-sonnet-4-6",
            "system": "You are terse.",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
        },
    ),
    (
        "google",
        {
            "systemInstruction": {"parts": [{"text": "Be terse."}]},
            "contents": [{"role": "user", "parts": [{"text": "Name a planet."}]}],
        },
    ),
]


@pytest.mark.parametrize(("api", "body"), CLEAN)
def test_a_clean_request_shows_zero_waste(api: str, body: dict[str, Any]) -> None:
    report = analyze_waste(api, body, body.get("model", "gemini-2.5-flash"))
    assert report.tokens == 0 and report.findings == [] and report.cost_usd == 0


def test_filler_in_any_role_is_counted_and_priced_at_the_input_rate() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Please list two fruits."},
            {"role": "assistant", "content": "Apple and pear. Thank you so much for asking!"},
            {"role": "user", "content": "Great."},
        ],
    }
    report = analyze_waste("openai", body)
    expected = tok(" Please") + tok(" Thank you so much")
    assert report.by_type()["filler"] == expected
    assert report.cost_usd == pytest.approx(expected * GPT_4O / 1e6)
    assert {f.where for f in report.findings} == {"messages[0]", "messages[1]"}


def test_filler_in_a_gemini_system_instruction() -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "Kindly answer briefly."}]},
        "contents": [{"role": "user", "parts": [{"text": "Name a planet."}]}],
    }
    report = analyze_waste("google", body, "gemini-2.5-flash")
    assert report.by_type()["filler"] == tok(" Kindly")
    assert report.cost_usd == pytest.approx(tok(" Kindly") * GEMINI_25_FLASH / 1e6)


def test_trailing_and_repeated_spaces_in_an_anthropic_request() -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "system": "Rules here.   \nNext.",
        "messages": [{"role": "user", "content": "one      two"}],
    }
    report = analyze_waste("anthropic", body)
    expected = tok("   ") + tok("     ")
    assert report.by_type()["whitespace"] == expected > 0
    assert report.cost_usd == pytest.approx(expected * CLAUDE_SONNET_4_6 / 1e6)


def test_blank_line_runs_count_only_beyond_one_blank_line() -> None:
    run = "\n \n  \n\t\n\n"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"First part.{run}Second part."}]}
    assert by_type("openai", body)["whitespace"] == tok(run) - tok("\n\n") > 0


def test_over_indented_json_tool_result() -> None:
    pretty = '{\n        "a": 1,\n        "b": [\n                2\n        ]\n}'
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Read the tool output."},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": pretty},
        ],
    }
    expected = sum(tok(run) for run in ("\n        ", "\n        ", "\n                ", "\n        ", "\n"))
    assert by_type("openai", body)["whitespace"] == expected


def test_instruction_repeated_within_a_request() -> None:
    sentence = "Always answer in formal British English."
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "system": f"You are a tutor. {sentence}",
        "messages": [{"role": "user", "content": f"{sentence} What is a verb?"}],
    }
    report = analyze_waste("anthropic", body)
    assert report.by_type()["repeated_instruction"] == tok(" " + sentence)
    assert report.by_type()["filler"] == 0


def test_repeated_instruction_in_gemini_contents_and_not_in_assistant_turns() -> None:
    sentence = "Reply with a single short sentence only."
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": sentence + " Hi."}]},
            {"role": "model", "parts": [{"text": sentence}]},  # the model quoting it is not an instruction
            {"role": "user", "parts": [{"text": sentence + " Bye."}]},
        ]
    }
    assert by_type("google", body, "gemini-2.5-flash")["repeated_instruction"] == tok(" " + sentence)


@pytest.mark.parametrize(
    ("api", "body", "empty_text"),
    [
        (
            "openai",
            {
                "model": "gpt-4o",
                "messages": [
                    {"role": "user", "content": "Hi there."},
                    {"role": "assistant", "content": "  "},
                    {"role": "user", "content": "Tell me a joke."},
                ],
            },
            "  ",
        ),
        (
            "anthropic",
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "..."}]},
                    {"role": "assistant", "content": "Yes?"},
                    {"role": "user", "content": "Tell me a joke."},
                ],
            },
            "...",
        ),
        (
            "google",
            {
                "contents": [
                    {"role": "user", "parts": [{"text": ""}]},
                    {"role": "user", "parts": [{"text": "Tell me a joke."}]},
                ]
            },
            "",
        ),
    ],
)
def test_empty_or_near_empty_messages(api: str, body: dict[str, Any], empty_text: str) -> None:
    report = analyze_waste(api, body, body.get("model", "gemini-2.5-flash"))
    assert report.by_type()["empty_message"] == 4 + tok(empty_text)  # message overhead + its text


def test_assistant_tool_call_without_text_is_not_empty() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    }
    assert analyze_waste("openai", body).tokens == 0


def test_unpriced_model_keeps_tokens_without_cost() -> None:
    report = analyze_waste(
        "openai", {"model": "my-local-model", "messages": [{"role": "user", "content": "Please help."}]}
    )
    assert report.tokens == tok(" Please") and report.cost_usd is None
