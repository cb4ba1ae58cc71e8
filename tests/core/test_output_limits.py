"""The output limit a budget reserves: the largest one a request sets (docs/gateway.md#refused-and-failed-calls; issue 17, finding 6)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tokenlens.exchange import max_tokens_from_request
from tokenlens.providers import ApiFormat

CEILING = 10_000_000  # config.MAX_OUTPUT_TOKENS, written here


@pytest.mark.parametrize(
    ("api", "body", "expected"),
    [
        # the finding: max_completion_tokens read first hid a larger max_tokens
        ("openai", {"max_completion_tokens": 1, "max_tokens": 4000}, 4000),
        ("openai", {"max_tokens": 1, "max_completion_tokens": 4000}, 4000),
        ("openai", {"max_completion_tokens": 1, "max_output_tokens": 4000}, 4000),
        ("openai", {"max_output_tokens": 7, "max_tokens": 5, "max_completion_tokens": 6}, 7),
        ("anthropic", {"max_completion_tokens": 1, "max_tokens": 4000}, 4000),
        ("anthropic", {"max_tokens": 1, "max_output_tokens": 4000}, 4000),
        ("google", {"generationConfig": {"maxOutputTokens": 1, "max_output_tokens": 4000}}, 4000),
        (
            "google",
            {"generationConfig": {"maxOutputTokens": 1}, "generation_config": {"maxOutputTokens": 900}},
            900,
        ),
        ("google", {"generationConfig": {}, "generation_config": {"max_output_tokens": 900}}, 900),
        ("google", {"generationConfig": "x", "generation_config": {"maxOutputTokens": 900}}, 900),
        # Gemini's limits live in the generation config only
        ("google", {"max_tokens": 4000, "generationConfig": {"maxOutputTokens": 10}}, 10),
        # numbers a lenient upstream may accept
        ("openai", {"max_completion_tokens": 1, "max_tokens": "4000"}, 4000),
        ("openai", {"max_tokens": " 4000 "}, 4000),
        ("openai", {"max_completion_tokens": 1, "max_tokens": 4000.0}, 4000),
        ("openai", {"max_tokens": 4000.2}, 4001),
        ("openai", {"max_tokens": "1e3"}, 1000),
        ("google", {"generationConfig": {"maxOutputTokens": "4000"}}, 4000),
        # what is not a positive number never lowers the result
        ("openai", {"max_completion_tokens": -1, "max_tokens": 4000}, 4000),
        ("openai", {"max_completion_tokens": 0, "max_tokens": 4000}, 4000),
        ("openai", {"max_completion_tokens": True, "max_tokens": 4000}, 4000),
        ("openai", {"max_completion_tokens": math.nan, "max_tokens": 4000}, 4000),
        ("openai", {"max_completion_tokens": "few", "max_tokens": 4000}, 4000),
        ("openai", {"max_completion_tokens": [1], "max_tokens": 4000}, 4000),
        ("openai", {"max_completion_tokens": None, "max_tokens": 4000}, 4000),
        # no valid limit at all: the configured reserve applies (None)
        ("openai", {"max_tokens": 0}, None),
        ("openai", {"max_tokens": -5}, None),
        ("openai", {"max_tokens": False}, None),
        ("openai", {"max_tokens": "nan"}, None),
        ("openai", {}, None),
        ("google", {"generationConfig": {"maxOutputTokens": -1}}, None),
        # absurd limits count as the ceiling, never as nothing
        ("openai", {"max_completion_tokens": 1, "max_tokens": 10**29}, CEILING),
        ("openai", {"max_completion_tokens": 1, "max_tokens": math.inf}, CEILING),
        ("openai", {"max_tokens": "1e400"}, CEILING),
        ("anthropic", {"max_tokens": 1e300}, CEILING),
        ("google", {"generationConfig": {"maxOutputTokens": 10**29}}, CEILING),
    ],
)
def test_the_largest_valid_output_limit_counts(
    api: ApiFormat, body: dict[str, Any], expected: int | None
) -> None:
    assert max_tokens_from_request(api, body) == expected


def test_no_body_has_no_limit() -> None:
    assert max_tokens_from_request("openai", None) is None
