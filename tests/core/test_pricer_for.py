"""`pricing.pricer_for`: one shared Pricer per pricing section, used by every part that prices calls."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from tokenlens import alerts, pricing
from tokenlens.config import SettingsHolder, parse_settings, replace_section
from tokenlens.controls import WorstCasePricer
from tokenlens.metering import RecordBuilder
from tokenlens.pricing import Pricer, pricer_for
from tokenlens.usage import Usage

M = Decimal(1_000_000)
USAGE = Usage(input_tokens=1000, output_tokens=500)


def test_the_same_section_gets_the_same_pricer() -> None:
    settings = parse_settings({"pricing": {"my-model": {"input": 2, "output": 8}}})
    first = pricer_for(settings.pricing)
    assert isinstance(first, Pricer)
    assert pricer_for(settings.pricing) is first
    # another section with other values is another pricer
    other = parse_settings({"pricing": {"my-model": {"input": 3, "output": 8}}})
    assert pricer_for(other.pricing) is not first


def test_the_overrides_are_applied() -> None:
    settings = parse_settings({"pricing": {"my-model": {"input": 2, "output": 8}}})
    price = pricer_for(settings.pricing).price("openai", "my-model", USAGE)
    # 1000 input tokens at $2/M and 500 output tokens at $8/M
    assert price.cost_usd == (1000 * 2 + 500 * 8) / M
    assert price.price_source == "override"


def test_a_changed_pricing_section_gets_a_new_pricer_and_an_unchanged_one_keeps_it() -> None:
    holder = SettingsHolder(parse_settings({"pricing": {"my-model": {"input": 2, "output": 8}}}))
    before = pricer_for(holder.get().pricing)
    # another section changes: the pricing section is the same object, so the same pricer
    holder.replace(replace_section(holder.get(), "budgets", {"daily_usd": 5}))
    assert pricer_for(holder.get().pricing) is before
    holder.replace(replace_section(holder.get(), "pricing", {"my-model": {"input": 4, "output": 1}}))
    after = pricer_for(holder.get().pricing)
    assert after is not before
    assert after.price("openai", "my-model", USAGE).cost_usd == (1000 * 4 + 500 * 1) / M


def test_the_cache_is_bounded_and_still_right_after_eviction() -> None:
    sections = [parse_settings({"pricing": {"m": {"input": i + 1, "output": 1}}}).pricing for i in range(30)]
    pricers = [pricer_for(section) for section in sections]
    assert len(pricing._pricers) <= pricing._PRICERS_KEPT
    assert len({id(p) for p in pricers}) == 30
    again = pricer_for(sections[0])  # evicted long ago: built again, with its own overrides
    assert again.price("x", "m", Usage(input_tokens=1_000_000)).cost_usd == Decimal(1)


def test_every_part_prices_with_the_one_pricer() -> None:
    holder = SettingsHolder(parse_settings({"pricing": {"my-model": {"input": 2, "output": 8}}}))
    shared = pricer_for(holder.get().pricing)
    assert RecordBuilder(holder).pricer() is shared
    assert WorstCasePricer().pricer(holder.get()) is shared
    assert alerts.pricer_of(holder.get()) is shared
    holder.replace(dataclasses.replace(holder.get(), pricing=parse_settings({}).pricing))
    assert RecordBuilder(holder).pricer() is pricer_for(holder.get().pricing) is not shared
