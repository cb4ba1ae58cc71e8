"""Issue 18 pricing cases, each against a cost computed by hand from the provider's published per-million
token rates in tests/published_prices.py (the rates of the price data in use are checked against them first, so
a data change fails here loudly instead of moving every expected cost).

Cases: Gemini image, video and audio modalities (generation models, embeddings, cached audio), Gemini
service tiers requested and reported, Anthropic batch together with fast mode, OpenAI Realtime cached audio,
`price_source` (exact, inferred, override), user-added providers, and overrides that say everything a price
can (context tiers, 5-minute and 1-hour cache writes, modality rates, service tiers, family).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from published_prices import (
    EMBEDDING_2,
    FLASH,
    FLASH_31_IMAGE,
    FLASH_IMAGE,
    GPT_4O,
    GPT_4O_2024_05_13,
    O1,
    OPUS_48,
    OPUS_48_BATCH,
    OPUS_48_FAST,
    PRO_IMAGE,
    TTS,
    TTS_FLEX,
    TTS_PRIORITY,
)
from tokenlens.config import ConfigError, PriceOverride, PriceTier, parse_settings, section_to_dict
from tokenlens.pricing import Price, Pricer, from_settings, resolve
from tokenlens.usage import Usage, usage_from_body, with_request_tier

WHEN = datetime(2026, 12, 1, 12, tzinfo=UTC)  # after every dated price below took effect
M = Decimal(1_000_000)


def d(rates: dict[str, str], key: str) -> Decimal:
    return Decimal(rates[key])


def _rates(provider: str, model: str, ctx: dict[str, str] | None = None) -> Any:
    found = resolve(provider, model)
    assert found is not None, model
    return found[1].get_prices(WHEN, ctx)


def test_published_rates_are_the_data_in_use() -> None:
    mp = _rates("google", "gemini-2.5-flash-image")
    assert (mp.input_mtok, mp.output_mtok, mp.output_image_mtok) == tuple(
        d(FLASH_IMAGE, k) for k in ("input", "output", "output_image")
    )
    mp = _rates("google", "gemini-3-pro-image-preview")
    assert mp.output_image_mtok == d(PRO_IMAGE, "output_image") and mp.input_mtok == d(PRO_IMAGE, "input")
    mp = _rates("google", "gemini-3.1-flash-image-preview")
    assert mp.output_image_mtok == d(FLASH_31_IMAGE, "output_image") and mp.output_mtok == d(
        FLASH_31_IMAGE, "output"
    )
    mp = _rates("google", "gemini-embedding-2")
    assert (mp.input_mtok, mp.input_image_mtok, mp.input_video_mtok, mp.input_audio_mtok) == tuple(
        d(EMBEDDING_2, k) for k in ("input", "input_image", "input_video", "input_audio")
    )
    mp = _rates("google", "gemini-2.5-flash")
    assert (mp.cache_read_mtok, mp.input_audio_mtok, mp.cache_audio_read_mtok) == tuple(
        d(FLASH, k) for k in ("cache_read", "input_audio", "cache_read_audio")
    )
    for ctx, rates in (
        (None, TTS),
        ({"service_tier": "flex"}, TTS_FLEX),
        ({"service_tier": "priority"}, TTS_PRIORITY),
    ):
        mp = _rates("google", "gemini-3.8-flash-tts", ctx)
        assert (mp.input_mtok, mp.output_mtok) == (d(rates, "input"), d(rates, "output"))
    mp = _rates("anthropic", "claude-opus-4-8", {"processing": "batch"})
    assert (mp.input_mtok, mp.output_mtok) == (d(OPUS_48_BATCH, "input"), d(OPUS_48_BATCH, "output"))
    mp = _rates("anthropic", "claude-opus-4-8", {"speed": "fast"})
    assert (mp.input_mtok, mp.output_mtok) == (d(OPUS_48_FAST, "input"), d(OPUS_48_FAST, "output"))


def gemini_body(model: str, um: dict[str, Any], **top: Any) -> bytes:
    return json.dumps(
        {"candidates": [{"finishReason": "STOP"}], "usageMetadata": um, "modelVersion": model, **top}
    ).encode()


def price_gemini(model: str, um: dict[str, Any], request: dict[str, Any] | None = None, **top: Any) -> Price:
    usage, reported = usage_from_body("google", "generate", gemini_body(model, um, **top))
    assert usage is not None
    usage = with_request_tier(usage, "google", request or {})
    return Pricer().price("google", reported or model, usage, when=WHEN)


@pytest.mark.parametrize(
    ("model", "rates"),
    [
        ("gemini-2.5-flash-image", FLASH_IMAGE),
        ("gemini-3-pro-image-preview", PRO_IMAGE),
        ("gemini-3.1-flash-image-preview", FLASH_31_IMAGE),
    ],
)
def test_gemini_image_output_is_priced_at_the_image_rate(model: str, rates: dict[str, str]) -> None:
    um = {
        "promptTokenCount": 300,
        "candidatesTokenCount": 1290 + 25,
        "totalTokenCount": 1615,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 42},
            {"modality": "IMAGE", "tokenCount": 258},
        ],
        "candidatesTokensDetails": [
            {"modality": "TEXT", "tokenCount": 25},
            {"modality": "IMAGE", "tokenCount": 1290},
        ],
    }
    p = price_gemini(model, um)
    expected = (300 * d(rates, "input") + 25 * d(rates, "output") + 1290 * d(rates, "output_image")) / M
    assert (
        p.cost_usd == expected
        and p.output_cost_usd == (25 * d(rates, "output") + 1290 * d(rates, "output_image")) / M
    )
    assert p.price_source == model
    # text-only pricing would have charged the image at the text output rate: 88-95% less
    text_only = (300 * d(rates, "input") + 1315 * d(rates, "output")) / M
    assert text_only < expected * Decimal("0.2")


def test_gemini_embedding_2_image_video_audio_inputs() -> None:
    um = {
        "promptTokenCount": 100 + 1000 + 2000 + 300,
        "totalTokenCount": 3400,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 100},
            {"modality": "IMAGE", "tokenCount": 1000},
            {"modality": "VIDEO", "tokenCount": 2000},
            {"modality": "AUDIO", "tokenCount": 300},
        ],
    }
    usage, _ = usage_from_body(
        "google", "embed", json.dumps({"embedding": {"values": [0.1]}, "usageMetadata": um}).encode()
    )
    assert usage is not None and usage.input_tokens == 3400
    assert usage.modality_dict() == {"input": {"text": 100, "image": 1000, "video": 2000, "audio": 300}}
    p = Pricer().price("google", "gemini-embedding-2", usage, when=WHEN)
    e = EMBEDDING_2
    expected = (
        100 * d(e, "input")
        + 1000 * d(e, "input_image")
        + 2000 * d(e, "input_video")
        + 300 * d(e, "input_audio")
    ) / M
    assert p.cost_usd == expected


def test_gemini_cached_audio_at_the_cached_audio_rate() -> None:
    um = {
        "promptTokenCount": 10_000,
        "cachedContentTokenCount": 8000,
        "candidatesTokenCount": 100,
        "thoughtsTokenCount": 50,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 2000},
            {"modality": "AUDIO", "tokenCount": 8000},
        ],
        "cacheTokensDetails": [
            {"modality": "TEXT", "tokenCount": 2000},
            {"modality": "AUDIO", "tokenCount": 6000},
        ],
    }
    p = price_gemini("gemini-2.5-flash", um)
    f = FLASH
    # uncached: 0 text, 2000 audio; cached: 2000 text, 6000 audio; output 150 (thoughts at the output rate)
    expected = (
        2000 * d(f, "input_audio")
        + 2000 * d(f, "cache_read")
        + 6000 * d(f, "cache_read_audio")
        + 150 * d(f, "output")
    ) / M
    assert p.cost_usd == expected
    assert p.cache_read_cost_usd == (2000 * d(f, "cache_read") + 6000 * d(f, "cache_read_audio")) / M


@pytest.mark.parametrize(
    ("requested", "reported", "rates"),
    [
        (None, None, TTS),
        ("flex", None, TTS_FLEX),  # requested (the google-genai SDK sends serviceTier at the top level)
        ("FLEX", None, TTS_FLEX),
        ("priority", None, TTS_PRIORITY),
        (None, "priority", TTS_PRIORITY),  # reported in usageMetadata
        ("priority", "standard", TTS),  # the answer's own report wins: served as standard, billed as such
        ("standard", None, TTS),
    ],
)
def test_gemini_service_tiers(requested: str | None, reported: str | None, rates: dict[str, str]) -> None:
    um: dict[str, Any] = {"promptTokenCount": 5000, "candidatesTokenCount": 700}
    if reported:
        um["serviceTier"] = reported
    p = price_gemini("gemini-3.8-flash-tts", um, {"serviceTier": requested} if requested else None)
    expected = (5000 * d(rates, "input") + 700 * d(rates, "output")) / M
    assert p.cost_usd == expected


def test_anthropic_batch_with_fast_mode_is_billed_at_batch_rates() -> None:
    def price(usage_json: dict[str, Any]) -> Decimal | None:
        body = {"model": "claude-opus-4-8", "usage": usage_json}
        usage, _ = usage_from_body("anthropic", "messages", json.dumps(body).encode())
        assert usage is not None
        return Pricer().price("anthropic", "claude-opus-4-8", usage, when=WHEN).cost_usd

    base = {
        "input_tokens": 1000,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 400,
        "output_tokens": 300,
    }
    b, f, s = OPUS_48_BATCH, OPUS_48_FAST, OPUS_48
    both = price({**base, "service_tier": "batch", "speed": "fast"})
    assert (
        both
        == (
            1000 * d(b, "input")
            + 2000 * d(b, "cache_read")
            + 400 * d(b, "cache_write")
            + 300 * d(b, "output")
        )
        / M
    )
    fast = price({**base, "service_tier": "standard", "speed": "fast"})
    assert (
        fast
        == (
            1000 * d(f, "input")
            + 2000 * d(f, "cache_read")
            + 400 * d(f, "cache_write")
            + 300 * d(f, "output")
        )
        / M
    )
    standard = price({**base, "service_tier": "standard", "speed": "standard"})
    assert (
        standard
        == (
            1000 * d(s, "input")
            + 2000 * d(s, "cache_read")
            + 400 * d(s, "cache_write")
            + 300 * d(s, "output")
        )
        / M
    )
    assert fast is not None and both is not None and fast == 4 * both


def test_anthropic_fast_requested_without_a_reported_speed() -> None:
    usage = with_request_tier(Usage(input_tokens=1000, output_tokens=100), "anthropic", {"speed": "fast"})
    assert (usage.service_tier, usage.speed) == ("fast", "fast")
    p = Pricer().price("anthropic", "claude-opus-4-8", usage, when=WHEN)
    assert p.cost_usd == (1000 * d(OPUS_48_FAST, "input") + 100 * d(OPUS_48_FAST, "output")) / M


@pytest.mark.parametrize(
    ("provider", "model", "source", "rates"),
    [
        ("openai", "gpt-4o", "gpt-4o", GPT_4O),
        ("openai", "gpt-4o-2024-08-06", "gpt-4o", GPT_4O),  # a dated name the entry lists
        ("openai", "gpt-4o-2099-01-01", "inferred:gpt-4o", GPT_4O),  # a guess: shown as one
        ("openai", "o1-latest", "inferred:o1", O1),
        ("google", "gemini-2.5-flash-001", "inferred:gemini-2.5-flash", {"input": "0.30", "output": "2.50"}),
        ("google", "models/gemini-2.5-flash", "gemini-2.5-flash", {"input": "0.30", "output": "2.50"}),
    ],
)
def test_price_source_names_the_price_used(
    provider: str, model: str, source: str, rates: dict[str, str]
) -> None:
    p = Pricer().price(provider, model, Usage(input_tokens=1000, output_tokens=100), when=WHEN)
    assert p.price_source == source
    assert p.cost_usd == (1000 * d(rates, "input") + 100 * d(rates, "output")) / M


def test_local_models_are_never_priced_as_cloud_ones() -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    for provider, model in [("ollama", "deepseek-r1:8b"), ("ollama", "llama3.2"), ("lmstudio", "gpt-4o")]:
        p = Pricer().price(provider, model, usage, when=WHEN)
        assert (p.priced, p.cost_usd, p.price_source) == (False, None, None)
        assert not p.unknown_model  # not "newer than the price data": a local model has no cloud price
    assert Pricer().price("openai", "gpt-9-turbo", usage, when=WHEN).unknown_model


# ---- overrides -----------------------------------------------------------------------------------------


def test_override_says_everything_a_price_can() -> None:
    pricer = Pricer(
        from_settings(
            {
                "my-model": {
                    "input": 2,
                    "output": 8,
                    "cache_read": 0.2,
                    "cache_write": 2.5,
                    "cache_write_1h": 4,
                    "input_audio": 20,
                    "cache_read_audio": 1,
                    "output_image": 40,
                    "tiers": [{"above": 200_000, "input": 4, "output": 12, "cache_read": 0.4}],
                    "service_tiers": {"batch": {"input": 1, "output": 4}, "flex": {"output": 5}},
                }
            }
        )
    )
    usage = Usage(
        input_tokens=10_000,
        output_tokens=2000,
        cache_read_tokens=3000,
        cache_write_tokens=1500,
        cache_write_5m_tokens=1000,
        cache_write_1h_tokens=500,
        input_audio_tokens=4000,
        modality_tokens=(("input", "audio", 4000), ("cache_read", "audio", 1000), ("output", "image", 1500)),
    )
    p = pricer.price("openai", "my-model", usage, when=WHEN)
    # uncached 10000-3000-1500 = 5500: 3000 audio at 20, 2500 text at 2; cached: 1000 audio at 1, 2000 at 0.2;
    # writes: 1000 at 2.5 (5m), 500 at 4 (1h); output: 1500 image at 40, 500 at 8
    expected = (
        3000 * 20
        + 2500 * 2
        + 1000 * 1
        + Decimal("0.2") * 2000
        + Decimal("2.5") * 1000
        + 500 * 4
        + 1500 * 40
        + 500 * 8
    ) / M
    assert p.cost_usd == expected and p.price_source == "override"
    assert p.cache_write_cost_usd == (Decimal("2.5") * 1000 + 500 * 4) / M
    # above 200k input tokens the whole call is at the tier's rates (modality rates stay the override's)
    big = Usage(input_tokens=250_000, output_tokens=100, cache_read_tokens=50_000)
    assert (
        pricer.price("openai", "my-model", big, when=WHEN).cost_usd
        == (200_000 * 4 + 50_000 * Decimal("0.4") + 100 * 12) / M
    )
    small = Usage(input_tokens=200_000, output_tokens=100)
    assert pricer.price("openai", "my-model", small, when=WHEN).cost_usd == (200_000 * 2 + 100 * 8) / M
    # service tiers replace the rates they name
    batch = Usage(input_tokens=1000, output_tokens=100, service_tier="batch")
    assert pricer.price("openai", "my-model", batch, when=WHEN).cost_usd == (1000 * 1 + 100 * 4) / M
    flex = Usage(input_tokens=1000, output_tokens=100, service_tier="flex")
    assert pricer.price("openai", "my-model", flex, when=WHEN).cost_usd == (1000 * 2 + 100 * 5) / M


def test_override_matches_one_name_unless_family() -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    exact = Pricer({"gpt-4o": PriceOverride(input=1, output=1)})
    assert exact.price("openai", "gpt-4o", usage, when=WHEN).cost_usd == Decimal(1100) / M
    own = exact.price("openai", "gpt-4o-2024-05-13", usage, when=WHEN)
    assert own.cost_usd == (1000 * d(GPT_4O_2024_05_13, "input") + 100 * d(GPT_4O_2024_05_13, "output")) / M
    family = Pricer(from_settings({"gpt-4o": {"input": 1, "output": 1, "family": True}}))
    assert family.price("openai", "gpt-4o-2024-05-13", usage, when=WHEN).cost_usd == Decimal(1100) / M
    assert family.price("openai", "gpt-4o-mini", usage, when=WHEN).price_source == "gpt-4o-mini"


def test_override_tiers_default_cache_rates_from_the_tier_input() -> None:
    ov = PriceOverride(input=1, output=2, tiers=(PriceTier(above=1000, input=3),))
    usage = Usage(input_tokens=2000, cache_read_tokens=500, cache_write_tokens=500)
    # no cache rates given: they are the input rate, the tier's above its size
    assert Pricer({"m": ov}).price("x", "m", usage).cost_usd == Decimal(2000 * 3) / M


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ({"input": 1}, "pricing.m.output", "is required"),
        ({"input": 1, "output": 1, "input_smell": 2}, "pricing.m.input_smell", "unknown key"),
        ({"input": 1, "output": 1, "cache_write_1h": -1}, "pricing.m.cache_write_1h", ">= 0"),
        ({"input": 1, "output": 1, "tiers": [{"input": 2}]}, "pricing.m.tiers[0].above", "is required"),
        ({"input": 1, "output": 1, "tiers": [{"above": 0}]}, "pricing.m.tiers[0].above", "input tokens >= 1"),
        (
            {"input": 1, "output": 1, "tiers": [{"above": 10}, {"above": 10}]},
            "pricing.m.tiers[1].above",
            "more than once",
        ),
        (
            {"input": 1, "output": 1, "service_tiers": {"Batch!": {}}},
            "pricing.m.service_tiers.Batch!",
            "lower-case",
        ),
        (
            {"input": 1, "output": 1, "service_tiers": {"flex": {"outptu": 1}}},
            "pricing.m.service_tiers.flex.outptu",
            "did you mean",
        ),
        ({"input": 1, "output": 1, "family": "yes"}, "pricing.m.family", "true or false"),
        ({"input": 1, "output": 1e12}, "pricing.m.output", "at most"),
    ],
)
def test_config_validation_names_the_key(entry: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"pricing": {"m": entry}})
    assert err.value.field == field and message in str(err.value)


def test_config_overrides_reach_the_pricer() -> None:
    settings = parse_settings(
        {
            "pricing": {
                "m": {
                    "input": 1,
                    "output": 2,
                    "output_audio": 10,
                    "tiers": [{"above": 100, "input": 3}],
                    "service_tiers": {"priority": {"input": 5}},
                    "family": True,
                }
            }
        }
    )
    # the section reads back equal from its own plain form (GET /api/settings/pricing, the file)
    assert parse_settings({"pricing": section_to_dict(settings, "pricing")}).pricing == settings.pricing
    pricer = Pricer(from_settings(settings.pricing))
    usage = Usage(input_tokens=50, output_tokens=30, output_audio_tokens=10, service_tier="priority")
    assert pricer.price("openai", "m-2026-01-01", usage).cost_usd == Decimal(50 * 5 + 20 * 2 + 10 * 10) / M
    over = Usage(input_tokens=150, output_tokens=0)
    assert pricer.price("openai", "m", over).cost_usd == Decimal(150 * 3) / M
