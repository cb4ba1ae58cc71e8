"""Pricing against hand-computed costs from published per-million-token prices.

Each price constant below is the provider's published price; `test_published_prices_match_package` checks that
the installed genai-prices snapshot carries the same numbers, so a data update that changes a price fails
loudly here instead of silently changing every expected cost.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import types as gp

from tokenlens import pricing
from tokenlens.config import PriceOverride
from tokenlens.pricing import Price, Pricer, from_settings, undated
from tokenlens.usage import Usage

M = Decimal(1_000_000)
WHEN = datetime(2026, 11, 1, 12, tzinfo=UTC)  # explicit: dated variants must not depend on the test clock

# Published prices, USD per million tokens.
GPT_4O = {"input": "2.50", "cache_read": "1.25", "output": "10"}
GPT_4O_PRIORITY = {"input": "4.25", "cache_read": "2.125", "output": "17"}
GPT_4O_2024_05_13 = {"input": "5", "output": "15"}
GPT_4O_MINI = {"input": "0.15", "cache_read": "0.075", "output": "0.60"}
SONNET_45 = {"input": "3", "output": "15", "cache_read": "0.30", "cache_write": "3.75", "cache_write_1h": "6"}
SONNET_45_OVER_200K = {
    "input": "6",
    "output": "22.50",
    "cache_read": "0.60",
    "cache_write": "7.50",
    "cache_write_1h": "12",
}
SONNET_45_BATCH = {
    "input": "1.50",
    "output": "7.50",
    "cache_read": "0.15",
    "cache_write": "1.875",
    "cache_write_1h": "3",
}
HAIKU_45 = {"input": "1", "output": "5", "cache_read": "0.10", "cache_write": "1.25", "cache_write_1h": "2"}
GEMINI_25_PRO = {"input": "1.25", "output": "10", "cache_read": "0.125"}
GEMINI_25_PRO_OVER_200K = {"input": "2.50", "output": "15", "cache_read": "0.25"}
GEMINI_25_FLASH = {"input": "0.30", "output": "2.50", "cache_read": "0.03", "input_audio": "1.00"}
ANTHROPIC_WEB_SEARCH_PER_REQUEST = Decimal("10") / 1000


def r(prices: dict[str, str], key: str) -> Decimal:
    return Decimal(prices[key])


def _base(value: Any) -> Decimal:
    return value.base if isinstance(value, gp.TieredPrices) else value


def _tier(value: Any) -> Decimal:
    assert isinstance(value, gp.TieredPrices) and value.tiers[0].start == 200_000
    return value.tiers[0].price


def _model_price(provider: str, model: str, ctx: dict[str, str] | None = None) -> gp.ModelPrice:
    snapshot = genai_prices.data_snapshot.get_snapshot()
    _, info = snapshot.find_provider_model(model, None, provider, None)
    return info.get_prices(WHEN, ctx)


def test_published_prices_match_package() -> None:
    mp = _model_price("openai", "gpt-4o")
    assert (mp.input_mtok, mp.cache_read_mtok, mp.output_mtok) == tuple(
        r(GPT_4O, k) for k in ("input", "cache_read", "output")
    )
    mp = _model_price("openai", "gpt-4o", {"service_tier": "priority"})
    assert (mp.input_mtok, mp.cache_read_mtok, mp.output_mtok) == tuple(
        r(GPT_4O_PRIORITY, k) for k in ("input", "cache_read", "output")
    )
    mp = _model_price("openai", "gpt-4o-2024-05-13")
    assert (mp.input_mtok, mp.output_mtok) == (r(GPT_4O_2024_05_13, "input"), r(GPT_4O_2024_05_13, "output"))
    mp = _model_price("openai", "gpt-4o-mini")
    assert (mp.input_mtok, mp.cache_read_mtok, mp.output_mtok) == tuple(
        r(GPT_4O_MINI, k) for k in ("input", "cache_read", "output")
    )
    keys = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
    attrs = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")
    mp = _model_price("anthropic", "claude-sonnet-4-5")
    assert [_base(getattr(mp, a)) for a in attrs] == [r(SONNET_45, k) for k in keys]
    assert [_tier(getattr(mp, a)) for a in attrs] == [r(SONNET_45_OVER_200K, k) for k in keys]
    assert mp.web_searches_kcount == Decimal("10")
    mp = _model_price("anthropic", "claude-sonnet-4-5", {"processing": "batch"})
    assert [_base(getattr(mp, a)) for a in attrs] == [r(SONNET_45_BATCH, k) for k in keys]
    mp = _model_price("anthropic", "claude-haiku-4-5")
    assert [_base(getattr(mp, a)) for a in attrs] == [r(HAIKU_45, k) for k in keys]
    mp = _model_price("google", "gemini-2.5-pro")
    gkeys, gattrs = ("input", "output", "cache_read"), ("input_mtok", "output_mtok", "cache_read_mtok")
    assert [_base(getattr(mp, a)) for a in gattrs] == [r(GEMINI_25_PRO, k) for k in gkeys]
    assert [_tier(getattr(mp, a)) for a in gattrs] == [r(GEMINI_25_PRO_OVER_200K, k) for k in gkeys]
    mp = _model_price("google", "gemini-2.5-flash")
    assert (mp.input_mtok, mp.output_mtok, mp.cache_read_mtok, mp.input_audio_mtok) == tuple(
        r(GEMINI_25_FLASH, k) for k in ("input", "output", "cache_read", "input_audio")
    )


@pytest.fixture
def pricer() -> Pricer:
    return Pricer()


def assert_parts_sum(p: Price) -> None:
    assert p.cost_usd is not None
    parts = [p.input_cost_usd, p.output_cost_usd, p.cache_read_cost_usd, p.cache_write_cost_usd]
    assert all(x is not None for x in parts)
    assert sum(parts, Decimal(0)) == p.cost_usd  # type: ignore[arg-type]


def test_openai_cached(pricer: Pricer) -> None:
    usage = Usage(input_tokens=2006, output_tokens=300, cache_read_tokens=1920)
    p = pricer.price("openai", "gpt-4o", usage, when=WHEN)
    expected_input = (2006 - 1920) * r(GPT_4O, "input") / M
    expected_cache = 1920 * r(GPT_4O, "cache_read") / M
    expected_output = 300 * r(GPT_4O, "output") / M
    assert p.cost_usd == expected_input + expected_cache + expected_output == Decimal("0.005615")
    assert p.input_cost_usd == expected_input  # uncached input only
    assert p.cache_read_cost_usd == expected_cache
    assert p.output_cost_usd == expected_output
    assert p.cache_write_cost_usd == 0
    assert p.priced and p.source == "genai-prices" and p.model_ref == "gpt-4o"
    assert_parts_sum(p)


def test_openai_mini_and_reasoning_is_output(pricer: Pricer) -> None:
    usage = Usage(input_tokens=1500, output_tokens=42, cache_read_tokens=1280, reasoning_tokens=30)
    p = pricer.price("openai", "gpt-4o-mini-2024-07-18", usage, when=WHEN)
    expected = (
        220 * r(GPT_4O_MINI, "input") + 1280 * r(GPT_4O_MINI, "cache_read") + 42 * r(GPT_4O_MINI, "output")
    ) / M
    assert p.cost_usd == expected == Decimal("0.0001542")


def test_openai_priority_tier_and_default_tier(pricer: Pricer) -> None:
    usage = Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=400, service_tier="priority")
    p = pricer.price("openai", "gpt-4o-2024-08-06", usage, when=WHEN)
    rates = GPT_4O_PRIORITY
    assert (
        p.cost_usd == (600 * r(rates, "input") + 400 * r(rates, "cache_read") + 100 * r(rates, "output")) / M
    )
    std = Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=400, service_tier="default")
    p = pricer.price("openai", "gpt-4o-2024-08-06", std, when=WHEN)
    assert (
        p.cost_usd
        == (600 * r(GPT_4O, "input") + 400 * r(GPT_4O, "cache_read") + 100 * r(GPT_4O, "output")) / M
    )


def test_dated_snapshot_with_its_own_price(pricer: Pricer) -> None:
    p = pricer.price("openai", "gpt-4o-2024-05-13", Usage(input_tokens=1000, output_tokens=1000), when=WHEN)
    assert p.cost_usd == (1000 * r(GPT_4O_2024_05_13, "input") + 1000 * r(GPT_4O_2024_05_13, "output")) / M
    assert p.model_ref == "gpt-4o-2024-05-13"


def test_unknown_dated_snapshot_falls_back_to_undated_base(pricer: Pricer) -> None:
    p = pricer.price("openai", "gpt-4o-2099-01-01", Usage(input_tokens=1000, output_tokens=10), when=WHEN)
    assert p.model_ref == "gpt-4o"
    assert p.cost_usd == (1000 * r(GPT_4O, "input") + 10 * r(GPT_4O, "output")) / M


def test_anthropic_5m_1h_split_with_web_search(pricer: Pricer) -> None:
    usage = Usage(
        input_tokens=25 + 1000 + 2000,
        output_tokens=350,
        cache_read_tokens=2000,
        cache_write_tokens=1000,
        cache_write_5m_tokens=600,
        cache_write_1h_tokens=400,
        web_search_requests=2,
    )
    p = pricer.price("anthropic", "claude-sonnet-4-5-20250929", usage, when=WHEN)
    uncached = 25 * r(SONNET_45, "input") / M
    cache_read = 2000 * r(SONNET_45, "cache_read") / M
    cache_write = (600 * r(SONNET_45, "cache_write") + 400 * r(SONNET_45, "cache_write_1h")) / M
    output = 350 * r(SONNET_45, "output") / M
    searches = 2 * ANTHROPIC_WEB_SEARCH_PER_REQUEST
    assert p.cost_usd == uncached + cache_read + cache_write + output + searches == Decimal("0.030575")
    assert p.cache_write_cost_usd == cache_write
    assert p.cache_read_cost_usd == cache_read
    assert p.output_cost_usd == output
    assert p.input_cost_usd == uncached + searches  # per-request charges go with input (documented)
    assert p.model_ref == "claude-sonnet-4-5"
    assert_parts_sum(p)


def test_anthropic_haiku_split_and_without_split(pricer: Pricer) -> None:
    usage = Usage(
        input_tokens=100 + 3000 + 5000,
        output_tokens=800,
        cache_read_tokens=5000,
        cache_write_tokens=3000,
        cache_write_5m_tokens=2000,
        cache_write_1h_tokens=1000,
    )
    p = pricer.price("anthropic", "claude-haiku-4-5-20251001", usage, when=WHEN)
    h = HAIKU_45
    expected = (
        100 * r(h, "input")
        + 2000 * r(h, "cache_write")
        + 1000 * r(h, "cache_write_1h")
        + 5000 * r(h, "cache_read")
        + 800 * r(h, "output")
    ) / M
    assert p.cost_usd == expected == Decimal("0.0091")
    # no TTL split reported: every cache write is a 5-minute write
    plain = Usage(input_tokens=8100, output_tokens=800, cache_read_tokens=5000, cache_write_tokens=3000)
    p2 = pricer.price("anthropic", "claude-haiku-4-5", plain, when=WHEN)
    assert p2.cache_write_cost_usd == 3000 * r(h, "cache_write") / M


def test_anthropic_batch_tier(pricer: Pricer) -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000, service_tier="batch")
    p = pricer.price("anthropic", "claude-sonnet-4-5", usage, when=WHEN)
    assert p.cost_usd == (1000 * r(SONNET_45_BATCH, "input") + 1000 * r(SONNET_45_BATCH, "output")) / M


def test_anthropic_over_200k_tier_counts_cached_input(pricer: Pricer) -> None:
    # 150k uncached + 60k cache read = 210k total input: the upper tier applies to every token
    usage = Usage(input_tokens=210_000, output_tokens=1000, cache_read_tokens=60_000)
    p = pricer.price("anthropic", "claude-sonnet-4-5", usage, when=WHEN)
    t = SONNET_45_OVER_200K
    assert p.cost_usd == (150_000 * r(t, "input") + 60_000 * r(t, "cache_read") + 1000 * r(t, "output")) / M


def test_gemini_250k_prompt_upper_tier(pricer: Pricer) -> None:
    usage = Usage(
        input_tokens=250_000, output_tokens=2000 + 3000, cache_read_tokens=100_000, reasoning_tokens=3000
    )
    p = pricer.price("google", "models/gemini-2.5-pro", usage, when=WHEN)
    t = GEMINI_25_PRO_OVER_200K
    expected = (150_000 * r(t, "input") + 100_000 * r(t, "cache_read") + 5000 * r(t, "output")) / M
    assert p.cost_usd == expected == Decimal("0.475")  # the figure in notes/provider-usage.md
    assert p.model_ref == "gemini-2.5-pro"
    assert_parts_sum(p)


def test_gemini_tier_boundary(pricer: Pricer) -> None:
    at = pricer.price("google", "gemini-2.5-pro", Usage(input_tokens=200_000, output_tokens=100), when=WHEN)
    assert at.cost_usd == (200_000 * r(GEMINI_25_PRO, "input") + 100 * r(GEMINI_25_PRO, "output")) / M
    over = pricer.price("google", "gemini-2.5-pro", Usage(input_tokens=200_001, output_tokens=100), when=WHEN)
    t = GEMINI_25_PRO_OVER_200K
    assert over.cost_usd == (200_001 * r(t, "input") + 100 * r(t, "output")) / M


def test_gemini_lower_tier_with_cache(pricer: Pricer) -> None:
    usage = Usage(input_tokens=150_000, output_tokens=3000, cache_read_tokens=50_000)
    p = pricer.price("google", "gemini-2.5-pro", usage, when=WHEN)
    g = GEMINI_25_PRO
    assert p.cost_usd == (100_000 * r(g, "input") + 50_000 * r(g, "cache_read") + 3000 * r(g, "output")) / M


def test_gemini_flash_audio_input(pricer: Pricer) -> None:
    usage = Usage(input_tokens=1000, output_tokens=100, input_audio_tokens=400)
    p = pricer.price("google", "gemini-2.5-flash", usage, when=WHEN)
    f = GEMINI_25_FLASH
    assert p.cost_usd == (600 * r(f, "input") + 400 * r(f, "input_audio") + 100 * r(f, "output")) / M


def test_unknown_model_is_unpriced_never_zero(pricer: Pricer) -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000)
    for provider, model in [
        ("openai", "my-finetune-xyz"),
        ("anthropic", "claude-nonexistent-9"),
        ("google", "models/not-a-model"),
        ("openai", None),
        ("ollama", "llama3.2:latest"),
    ]:
        p = pricer.price(provider, model, usage, when=WHEN)
        assert p.cost_usd is None and not p.priced and p.source == "unpriced", (provider, model)
        assert p.input_cost_usd is None and p.model_ref is None


def test_user_added_provider_is_priced_only_by_its_own_entries_or_an_override(pricer: Pricer) -> None:
    usage = Usage(input_tokens=1000, output_tokens=10)
    # a local model is not DeepSeek's cloud model, nor is a model on a user's own gateway OpenAI's
    for provider, model in [
        ("ollama", "deepseek-r1:8b"),
        ("ollama", "deepseek-r1"),
        ("my-gateway", "gpt-4o"),
    ]:
        p = pricer.price(provider, model, usage, when=WHEN)
        assert not p.priced and p.cost_usd is None and p.price_source is None, (provider, model)
    # a provider that is a genai-prices provider id is priced from that provider's own entries
    assert pricer.price("deepseek", "deepseek-chat", usage, when=WHEN).price_source == "deepseek-chat"
    local = Pricer({"deepseek-r1:8b": PriceOverride(input=0.0, output=0.0)}).price(
        "ollama", "deepseek-r1:8b", usage, when=WHEN
    )
    assert local.priced and local.cost_usd == 0 and local.price_source == "override"


def test_overrides_exact_and_family() -> None:
    p = Pricer(
        {
            "gpt-4o": PriceOverride(input=1.0, output=2.0, family=True),
            "claude-sonnet-4-5-20250929": PriceOverride(
                input=3.5, output=7.0, cache_read=0.5, cache_write=4.0
            ),
            "llama3.2:latest": PriceOverride(input=0.0, output=0.0),
        }
    )
    usage = Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=400, cache_write_tokens=100)
    exact = p.price("openai", "gpt-4o", usage, when=WHEN)
    # cache_read and cache_write default to the input price
    assert exact.cost_usd == (500 * Decimal(1) + 400 * Decimal(1) + 100 * Decimal(1) + 100 * Decimal(2)) / M
    assert exact.source == "override" and exact.model_ref == "gpt-4o" and exact.price_source == "override"
    dated = p.price("openai", "gpt-4o-2024-08-06", usage, when=WHEN)  # family: true
    assert dated.cost_usd == exact.cost_usd and dated.model_ref == "gpt-4o"
    # without family, an override prices its exact name only: gpt-4o-2024-05-13 keeps its own price
    only = Pricer({"gpt-4o": PriceOverride(input=1.0, output=2.0)})
    own = only.price("openai", "gpt-4o-2024-05-13", usage, when=WHEN)
    assert own.source == "genai-prices" and own.price_source == "gpt-4o-2024-05-13"
    expected_own = (1000 * r(GPT_4O_2024_05_13, "input") + 100 * r(GPT_4O_2024_05_13, "output")) / M
    assert own.cost_usd == expected_own
    assert p.price("openai", "gpt-4o-mini", usage, when=WHEN).source == "genai-prices"  # not a dated gpt-4o
    full = p.price("anthropic", "claude-sonnet-4-5-20250929", usage, when=WHEN)
    expected = (500 * Decimal("3.5") + 400 * Decimal("0.5") + 100 * Decimal("4.0") + 100 * Decimal("7.0")) / M
    assert full.cost_usd == expected
    assert full.cache_write_cost_usd == 100 * Decimal("4.0") / M
    assert_parts_sum(full)
    # an override on a dated name does not price the undated one
    assert p.price("anthropic", "claude-sonnet-4-5", usage, when=WHEN).source == "genai-prices"
    local = p.price("ollama", "llama3.2:latest", usage, when=WHEN)
    assert local.priced and local.cost_usd == 0


def test_exact_override_beats_dated_base() -> None:
    p = Pricer({"gpt-4o": PriceOverride(1, 1, family=True), "gpt-4o-2024-08-06": PriceOverride(2, 2)})
    u = Usage(input_tokens=1_000_000)
    assert p.price("openai", "gpt-4o-2024-08-06", u).cost_usd == 2
    assert p.price("openai", "gpt-4o-2024-11-20", u).cost_usd == 1


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash-preview"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("o3", "o3"),
    ],
)
def test_undated(name: str, base: str) -> None:
    assert undated(name) == base


def test_matches_genai_prices_calc_price_total(pricer: Pricer) -> None:
    """Our split must add up to genai-prices' own calc_price for the same lookup."""
    usages = [
        Usage(input_tokens=1234, output_tokens=567),
        Usage(input_tokens=300_000, output_tokens=9000, cache_read_tokens=120_000, reasoning_tokens=500),
        Usage(
            input_tokens=9000,
            output_tokens=10,
            cache_read_tokens=4000,
            cache_write_tokens=3000,
            cache_write_5m_tokens=1000,
            cache_write_1h_tokens=2000,
            web_search_requests=3,
        ),
        Usage(input_tokens=5000, output_tokens=700, input_audio_tokens=1000, output_audio_tokens=200),
        Usage(input_tokens=5000, output_tokens=700, service_tier="priority"),
        Usage(input_tokens=5000, output_tokens=700, service_tier="flex"),
        Usage(input_tokens=5000, output_tokens=700, service_tier="batch"),
    ]
    models = [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4.1"),
        ("openai", "gpt-5"),
        ("openai", "o3"),
        ("openai", "gpt-4o-realtime-preview"),
        ("openai", "text-embedding-3-small"),
        ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4-6"),
        ("anthropic", "claude-opus-4-1"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-3-5-haiku-20241022"),
        ("google", "gemini-2.5-pro"),
        ("google", "gemini-2.5-flash"),
        ("google", "gemini-2.5-flash-lite"),
        ("google", "gemini-2.0-flash"),
    ]
    for provider, model in models:
        for usage in usages:
            p = pricer.price(provider, model, usage, when=WHEN)
            assert p.priced, (provider, model)
            assert p.cost_usd == pricer.genai_total(provider, model, usage, when=WHEN), (
                provider,
                model,
                usage,
            )
            assert_parts_sum(p)


def test_inconsistent_usage_never_raises(pricer: Pricer) -> None:
    weird = [
        Usage(input_tokens=10, cache_read_tokens=50, cache_write_tokens=50, output_tokens=5),
        Usage(input_tokens=100, cache_write_tokens=10, cache_write_5m_tokens=30, cache_write_1h_tokens=30),
        Usage(
            input_tokens=100,
            cache_read_tokens=90,
            input_audio_tokens=80,
            output_tokens=1,
            output_audio_tokens=9,
        ),
        Usage(),
    ]
    for usage in weird:
        for provider, model in [("openai", "gpt-4o-realtime-preview"), ("anthropic", "claude-haiku-4-5")]:
            p = pricer.price(provider, model, usage, when=WHEN)
            assert p.priced and p.cost_usd is not None and p.cost_usd >= 0
            assert_parts_sum(p)


def test_resolution_is_cached(pricer: Pricer) -> None:
    pricing._resolve_in.cache_clear()
    for _ in range(50):
        pricer.price("openai", "gpt-4o-2024-11-20", Usage(input_tokens=1))
    info = pricing._resolve_in.cache_info()
    assert info.misses == 1 and info.hits == 49


def test_pricing_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    pricing._resolve_in.cache_clear()
    pricing._compiled_for.cache_clear()
    p = Pricer().price("google", "gemini-2.5-flash", Usage(input_tokens=10, output_tokens=10))
    assert p.priced
    from genai_prices import update_prices

    assert update_prices._shared_updater.thread is None  # no background price fetcher was started


def test_from_settings() -> None:
    ov = from_settings(
        {
            "gpt-4o": {"input": 2, "output": 8.5},
            "claude-x": {"input": 1, "output": 2, "cache_read": 0.1, "cache_write": 1.25},
        }
    )
    assert ov == {
        "gpt-4o": PriceOverride(input=2.0, output=8.5),
        "claude-x": PriceOverride(input=1.0, output=2.0, cache_read=0.1, cache_write=1.25),
    }
    assert from_settings({}) == {}
    # entries may be objects with the same attributes (the config's own frozen dataclass)
    from types import SimpleNamespace

    entry = SimpleNamespace(input=1, output=2, cache_read=None, cache_write=0.5)
    assert from_settings({"m": entry}) == {"m": PriceOverride(input=1.0, output=2.0, cache_write=0.5)}
    for bad in (
        {"m": {"output": 1}},
        {"m": {"input": "cheap", "output": 1}},
        {"m": {"input": -1, "output": 1}},
        {"m": {"input": 1, "output": 1, "bogus": 2}},
        {"m": {"input": True, "output": 1}},
        {"m": None},
    ):
        with pytest.raises(ValueError, match=r"pricing\.m"):
            from_settings(bad)


def test_leaf_counts_agree_with_genai_prices_on_every_model() -> None:
    """The leaf plan worked out once per compiled price gives what genai-prices' own `compute_leaf_values`
    gives, for every model price in the bundled data and usages with every key set at random (some
    inconsistent: both must then refuse)."""
    import random as random_module
    from types import SimpleNamespace

    from genai_prices.decompose import compute_leaf_values

    from tokenlens.pricing import _compile, _leaf_counts, _registry, current_snapshot

    rng = random_module.Random(22)
    keys = sorted({unit.usage_key for unit in _registry().units.values()})
    when = datetime(2026, 12, 1, 12, tzinfo=UTC)
    compared = refused = 0
    for provider in current_snapshot().providers:
        for model in provider.models:
            compiled = _compile(model.get_prices(when, None))
            for _ in range(4):
                usage = SimpleNamespace(**{key: rng.choice((0, 0, rng.randint(1, 5000))) for key in keys})
                try:
                    expected = compute_leaf_values(set(compiled.units), usage, compiled.units)
                except ValueError:
                    with pytest.raises(ValueError):
                        _leaf_counts(compiled, usage)
                    refused += 1
                    continue
                assert _leaf_counts(compiled, usage) == expected, (provider.id, model.id)
                compared += 1
    assert compared > 1000 and refused > 100
