from __future__ import annotations

from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price, data_snapshot

from tokenlens.insights import cheaper_model, generation


def snapshot_prices(provider: str, model: str) -> tuple[Decimal, Decimal]:
    """Input and output cost of 10k tokens, straight from genai-prices' own calculator."""
    inp = calc_price(Usage(input_tokens=10_000), model, provider_id=provider).total_price
    out = calc_price(Usage(output_tokens=10_000), model, provider_id=provider).total_price
    return inp, out


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("anthropic", "claude-opus-4-1"),
        ("openai", "gpt-4o"),
        ("openai", "gpt-5"),
        ("google", "gemini-2.5-pro"),
    ],
)
def test_cheaper_model_is_same_provider_family_cheaper_current(provider: str, model: str) -> None:
    candidate = cheaper_model(provider, model)
    assert candidate is not None and candidate != model
    assert candidate.split("-")[0] == model.split("-")[0]
    assert generation(candidate) >= generation(model)
    cand_in, cand_out = snapshot_prices(provider, candidate)
    cur_in, cur_out = snapshot_prices(provider, model)
    assert cand_in < cur_in and cand_out < cur_out
    _, info = data_snapshot.get_snapshot().find_provider_model(candidate, None, provider, None)
    assert not info.deprecated


def test_generation_parsing() -> None:
    assert (generation("claude-opus-4-1"), generation("claude-3-5-haiku"), generation("gpt-4o")) == (
        4.1,
        3.5,
        4.0,
    )
    assert generation("gemini-2.5-flash") == 2.5 and cheaper_model("openai", "no-such-model") is None
