from __future__ import annotations

from tokenlens.complexity import complexity_score, is_simple


def test_a_short_single_question_is_simple() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert complexity_score("openai", body, 20, 10, 1) == 0 and is_simple(0)


def test_every_factor_adds_up_to_nine() -> None:
    body = {
        "model": "claude-opus-4-6",
        "tools": [{"name": "t"}],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "output_format": {"type": "json_schema", "schema": {}},
    }
    assert complexity_score("anthropic", body, 40_000, 3_000, 5) == 9
    gemini = {
        "generationConfig": {
            "responseMimeType": "application/json",
            "thinkingConfig": {"thinkingBudget": 512},
        }
    }
    assert complexity_score("google", gemini, 9_000, 600, 1) == 2 + 1 + 2
    assert not is_simple(3)
