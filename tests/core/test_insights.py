from __future__ import annotations

import math
import random
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price, data_snapshot

from published_prices import PRICES
from tokenlens.insights import base_tier_cost, cheaper_model, generation, histogram_percentile
from tokenlens.pricing import Pricer
from tokenlens.store.rollups import OUTPUT_BINS, output_bin


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


def test_summed_usage_is_priced_at_the_base_tier() -> None:
    # three million tokens summed over many short calls: never the long-context (above 200k) rates
    sonnet = PRICES["claude-sonnet-4-6"]
    got = base_tier_cost(Pricer(), "anthropic", "claude-sonnet-4-6", 3_000_000, 100_000, 1_000_000, 200_000)
    expected = (
        1_800_000 * sonnet["input"]
        + 100_000 * sonnet["output"]
        + 1_000_000 * sonnet["cache_read"]
        + 200_000 * sonnet["cache_write_5m"]
    ) / 1e6
    assert got == pytest.approx(expected, rel=1e-9)
    assert base_tier_cost(Pricer(), "openai", "no-such-model", 10, 10, 0, 0) is None


def test_histogram_percentile_is_an_upper_bound_within_19_percent() -> None:
    rng = random.Random(4)
    for _ in range(200):
        values = [
            rng.choice([0, rng.randint(1, 20), rng.randint(20, 200_000)]) for _ in range(rng.randint(1, 60))
        ]
        counts = [0] * len(OUTPUT_BINS)
        for value in values:
            counts[output_bin(value)] += 1
        exact = sorted(values)[max(0, math.ceil(0.95 * len(values)) - 1)]
        got = histogram_percentile(counts, 0.95)
        assert exact <= got <= max(exact * 1.19, exact + 1), (values, got)
