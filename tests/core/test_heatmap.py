"""Token heatmap: sections of the three formats, and scaling that adds up exactly."""

from __future__ import annotations

import random
from typing import Any

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


# Documents inside a user turn (issue 19). Each case: the pieces of the last user turn in order, each either a
# document (context) or part of the question (query); the expected counts are the tokenizer's counts of those
# pieces, written here, not taken from the code.
MANUAL = (
    "Section 3.2. To reset the router, hold the power button for ten seconds until the status light blinks "
    "twice, then release it and wait two minutes while the firmware restarts. Section 3.3. The guest network "
    "is off by default; turn it on in Settings > Wireless > Guest and choose a password of at least 12 characters."
)
CODE = "def total(prices):\n    return sum(p * 1.2 for p in prices)\n"
INLINE_CASES: dict[str, list[tuple[str, bool]]] = {
    "documents tag": [
        (f'<documents>\n<document index="1">\n{MANUAL}\n</document>\n</documents>', True),
        ("Given the manual above, how long do I hold the power button?", False),
    ],
    "doc id tags": [
        (f"<doc id=7>{MANUAL}</doc>", True),
        (f'<doc id="8" source="faq.md">{MANUAL.upper()}</doc>', True),
        ("Which document talks about the guest network?", False),
    ],
    "fenced block": [
        ("Why does this return the wrong total?", False),
        (f"```python\n{CODE}```", True),
        ("I expected 12 for [10].", False),
    ],
    "context section": [
        (f"Context: {MANUAL}", True),
        ("Question: Is the guest network on by default?", False),
    ],
    "document section": [
        (f"Document 1:\n{MANUAL}", True),
        ("Answer in one sentence: what blinks twice?", False),
    ],
    "source section": [(f"Source [manual.pdf]: {MANUAL}", True), ("What happens after ten seconds?", False)],
    "long quoted passage": [
        ("Summarise this passage:", False),
        (f'"{MANUAL} {MANUAL}"', True),
        ("in two short sentences for a customer.", False),
    ],
    "pasted file": [(f"File: router_manual.txt\n{MANUAL}", True), ("Can you summarise the file?", False)],
    "blockquote": [
        ("> " + MANUAL[:120] + "\n> " + MANUAL[120:240] + "\n> " + MANUAL[240:], True),
        ("What does this quote say about passwords?", False),
    ],
    "closing tag never finished": [
        ("Summarise this:", False),
        (f"<doc>{MANUAL}</doc \n\nwhat blinks twice", True),  # the element runs to the end of the turn
    ],
    "nothing is a document": [
        ("What does the status light mean when it blinks twice? Note: I already restarted it once.", False)
    ],
}


def _turn_text(pieces: list[tuple[str, bool]]) -> str:
    return "\n\n".join(text for text, _ in pieces)


def _bodies(
    text: str, earlier: str = "Hi, I have a router question."
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The same conversation (an earlier user turn, an answer, the last user turn) in the three formats."""
    answer = "Sure, what would you like to know?"
    return {
        "openai": (
            "openai",
            {
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": "Answer from the documents."},
                    {"role": "user", "content": earlier},
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": text},
                ],
            },
        ),
        "anthropic": (
            "anthropic",
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 100,
                "system": "Answer from the documents.",
                "messages": [
                    {"role": "user", "content": earlier},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                    {"role": "user", "content": [{"type": "text", "text": text}]},
                ],
            },
        ),
        "gemini": (
            "google",
            {
                "systemInstruction": {"parts": [{"text": "Answer from the documents."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": earlier}]},
                    {"role": "model", "parts": [{"text": answer}]},
                    {"role": "user", "parts": [{"text": text}]},
                ],
            },
        ),
    }


@pytest.mark.parametrize("shape", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("case", list(INLINE_CASES))
def test_documents_inside_the_last_user_turn_are_context(case: str, shape: str) -> None:
    pieces = INLINE_CASES[case]
    api, body = _bodies(_turn_text(pieces))[shape]
    heat = estimate_sections(api, body, "gpt-4o")
    s = heat.sections
    documents = [t for t, is_doc in pieces if is_doc]
    question = [t for t, is_doc in pieces if not is_doc]
    assert s["context"] == sum(tok(t) for t in documents)
    assert s["query"] == sum(tok(t) for t in question) + 4  # the last user turn's message overhead
    history = tok("Hi, I have a router question.") + tok("Sure, what would you like to know?") + 8
    assert s["history"] == history
    assert s["system"] == tok("Answer from the documents.") + (4 if shape == "openai" else 0)
    assert heat.turns == 2
    scaled = scale_sections(s, 5_000)
    assert sum(scaled.values()) == 5_000 and (scaled["context"] > 0) == bool(documents)


@pytest.mark.parametrize("shape", ["openai", "anthropic", "gemini"])
def test_documents_in_an_earlier_turn_are_context_too(shape: str) -> None:
    earlier = [(f"<context>{MANUAL}</context>", True), ("Please keep this manual in mind.", False)]
    api, body = _bodies("And the guest network?", earlier=_turn_text(earlier))[shape]
    s = estimate_sections(api, body, "gpt-4o").sections
    assert s["context"] == tok(f"<context>{MANUAL}</context>")
    answer = tok("Sure, what would you like to know?") + 4
    assert s["history"] == tok("Please keep this manual in mind.") + 4 + answer
    assert s["query"] == tok("And the guest network?") + 4


def test_short_tags_and_colons_in_a_question_are_not_documents() -> None:
    text = "Use <b>bold</b> for the title. Time: 10:30. Is <i>this</i> valid HTML?"
    s = estimate_sections(
        "openai", {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    ).sections
    assert s["context"] == 0 and s["query"] == tok(text) + 4
