from __future__ import annotations

import math
import random
from dataclasses import replace
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price, data_snapshot

from published_prices import PRICES
from tokenlens.insights import (
    ModelName,
    Needs,
    base_tier_cost,
    capabilities,
    cheaper_model,
    generation,
    histogram_percentile,
    model_name,
    no_suggestion_reason,
    suggest,
)
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


# ---------------------------------------------------------------------------------------------- right-sizing pairs

ALL = Needs(tools=True, images=True, reasoning=True, context_tokens=32_500)


@pytest.mark.parametrize(
    ("provider", "model", "needs", "expected", "why_starts"),
    [
        # the examples: a smaller model of the same family and generation, not a newer line by price
        (
            "anthropic",
            "claude-sonnet-4-6",
            ALL,
            "claude-haiku-4-5",
            "Same family line (Claude 4), smaller tier: haiku instead of sonnet",
        ),
        (
            "openai",
            "gpt-4o",
            Needs(tools=True, images=True),
            "gpt-4o-mini",
            "Same family line (GPT-4o), smaller tier: mini",
        ),
        (
            "anthropic",
            "claude-opus-4-6",
            ALL,
            "claude-sonnet-4-6",
            "Same family line (Claude 4), smaller tier: sonnet instead of opus",
        ),
        (
            "google",
            "gemini-2.5-pro",
            ALL,
            "gemini-2.5-flash",
            "Same family line (Gemini 2.5), smaller tier: flash instead of pro",
        ),
        ("openai", "gpt-5", ALL, "gpt-5-mini", "Same family line (GPT-5), smaller tier: mini"),
        # gpt-4o has no smaller model: the newer GPT-4 line's smallest, said so (not gpt-6-luna)
        (
            "openai",
            "gpt-4o-mini",
            Needs(tools=True, images=True),
            "gpt-4.1-nano",
            "Newer line of the same generation (GPT-4.1 after GPT-4o)",
        ),
        # Haiku 4.5 holds 200,000 tokens: calls of 300,000 go to the next Sonnet generation, with that reason
        (
            "anthropic",
            "claude-sonnet-4-6",
            replace(ALL, context_tokens=300_000),
            "claude-sonnet-5-5",
            "Next generation (Claude 5 after Claude 4) of the same tier (sonnet)",
        ),
        # o1-mini takes no tools: calls with tools go to the next generation of o1's tier
        ("openai", "o1", Needs(), "o1-mini", "Same family line (o1), smaller tier: mini"),
        (
            "openai",
            "o1",
            Needs(tools=True),
            "o3",
            "Next generation (o3 after o1) of the same tier (base model)",
        ),
        # o3-mini takes no images: nothing else of the line or a later one is cheaper
        ("openai", "o3", Needs(), "o3-mini", "Same family line (o3), smaller tier: mini"),
        (
            "openai",
            "o3",
            Needs(images=True),
            None,
            "No cheaper model has what these calls used: o3-mini lacks image input",
        ),
    ],
)
def test_right_sizing_pairs_within_the_family_and_explains(
    provider: str, model: str, needs: Needs, expected: str | None, why_starts: str
) -> None:
    pricer = Pricer()
    found = suggest(provider, model, pricer, needs)
    assert (found.model if found else None) == expected
    why = found.why if found else no_suggestion_reason(provider, model, pricer, needs)
    assert why.startswith(why_starts), why
    if found:
        assert f"{needs.context_tokens:,} tokens" in why


def test_right_sizing_rates_and_window_in_the_explanation() -> None:
    # published: claude-sonnet-4-6 $3 / $15, claude-haiku-4-5 $1 / $5 per million: 67% cheaper both ways
    sonnet, haiku = PRICES["claude-sonnet-4-6"], PRICES["claude-haiku-4-5"]
    cut_in = round((1 - haiku["input"] / sonnet["input"]) * 100)
    cut_out = round((1 - haiku["output"] / sonnet["output"]) * 100)
    found = suggest("anthropic", "claude-sonnet-4-6", Pricer(), ALL)
    assert found is not None
    assert f"input {cut_in}% and output {cut_out}% cheaper" in found.why
    assert "keeps tools, image input and reasoning" in found.why
    assert "200,000-token window" in found.why  # genai-prices' context window of claude-haiku-4-5


def test_right_sizing_never_another_brand_an_older_generation_or_a_missing_capability() -> None:
    pricer = Pricer()
    snapshot = data_snapshot.get_snapshot()
    checked = 0
    for provider in ("anthropic", "openai", "google"):
        gp = next(p for p in snapshot.providers if p.id == provider)
        for info in gp.models:
            name = model_name(info.id)
            if name is None or not info.id[0].isalpha():
                continue
            needs = Needs(images="images" in capabilities(info.id), context_tokens=100_000)
            found = suggest(provider, info.id, pricer, needs)
            if found is None:
                continue
            checked += 1
            other = model_name(found.model)
            assert other is not None and other.brand == name.brand, (info.id, found)
            assert other.major >= name.major, (info.id, found)
            if needs.images:
                assert "images" in capabilities(found.model), (info.id, found)
            _, cand = snapshot.find_provider_model(found.model, None, provider, None)
            assert not cand.deprecated and cand.context_window and cand.context_window >= 100_000
            cand_in, cand_out = snapshot_prices(provider, found.model)
            cur_in, cur_out = snapshot_prices(provider, info.id)
            assert cand_in < cur_in and cand_out < cur_out, (info.id, found)
    assert checked >= 20


def test_model_names_read_as_lines() -> None:
    assert model_name("claude-sonnet-4-5-20250929") == ModelName("claude", 4, 5, "", "sonnet")
    assert model_name("claude-3-5-haiku-latest") == ModelName("claude", 3, 5, "", "haiku")
    assert model_name("gpt-4o-mini-2024-07-18") == ModelName("gpt", 4, 0, "o", "mini")
    assert model_name("models/gemini-2.5-flash-lite") == ModelName("gemini", 2, 5, "", "flash-lite")
    assert model_name("o4-mini") == ModelName("o", 4, 0, "", "mini")
    assert model_name("gpt-oss-120b") is None
    # Claude versions each tier on its own: the line is the major version; GPT and Gemini lines are versions
    assert model_name("claude-haiku-4-5").line == model_name("claude-sonnet-4-6").line  # type: ignore[union-attr]
    assert model_name("gpt-4.1-nano").line != model_name("gpt-4o-mini").line  # type: ignore[union-attr]
