"""SettingsHolder: the current settings, compare and swap, and the one announcement of each change."""

from __future__ import annotations

import dataclasses
import gc
import threading
import weakref

from tokenlens.app import SettingsHolder as AppSettingsHolder
from tokenlens.config import Budgets, Settings, SettingsHolder, changed_sections, parse_settings

Announced = list[tuple[Settings, frozenset[str]]]


def _recording(holder: SettingsHolder) -> Announced:
    calls: Announced = []
    holder.on_change(lambda settings, updated: calls.append((settings, updated)))
    return calls


def test_the_app_module_names_the_same_class() -> None:
    assert AppSettingsHolder is SettingsHolder


def test_replace_announces_the_changed_sections_once() -> None:
    holder = SettingsHolder(Settings())
    calls = _recording(holder)
    new = parse_settings({"budgets": {"daily_usd": 5}, "pricing": {"m": {"input": 1, "output": 2}}})
    holder.replace(new)
    assert calls == [(new, frozenset({"budgets", "pricing"}))]
    assert holder.get() is new and holder.version == 1


def test_the_callback_sees_the_new_settings_already_in_place() -> None:
    holder = SettingsHolder(Settings())
    seen: list[Settings] = []
    holder.on_change(lambda settings, updated: seen.append(holder.get()))
    new = parse_settings({"timezone": "UTC"})
    holder.replace(new)
    assert seen == [new]


def test_equal_settings_are_not_announced() -> None:
    holder = SettingsHolder(parse_settings({"budgets": {"daily_usd": 5}}))
    calls = _recording(holder)
    holder.replace(parse_settings({"budgets": {"daily_usd": 5}}))  # another object, the same values
    assert calls == []
    assert holder.version == 1  # still a replacement


def test_every_callback_is_called_in_the_order_registered() -> None:
    holder = SettingsHolder(Settings())
    order: list[str] = []
    holder.on_change(lambda s, u: order.append("first"))
    holder.on_change(lambda s, u: order.append("second"))
    holder.replace(parse_settings({"dedup": {"enabled": True}}))
    assert order == ["first", "second"]


def test_a_failing_callback_does_not_stop_the_others_or_the_swap() -> None:
    holder = SettingsHolder(Settings())

    def broken(settings: Settings, updated: frozenset[str]) -> None:
        raise RuntimeError("boom")

    holder.on_change(broken)
    calls = _recording(holder)
    new = parse_settings({"alerts": {"daily_cost_threshold": 3}})
    holder.replace(new)
    assert holder.get() is new
    assert calls == [(new, frozenset({"alerts"}))]


def test_compare_and_swap_announces_only_when_it_swaps() -> None:
    holder = SettingsHolder(Settings())
    calls = _recording(holder)
    version = holder.version
    first = parse_settings({"budgets": {"daily_usd": 1}})
    assert holder.replace_if_unchanged(version, first)
    assert calls == [(first, frozenset({"budgets"}))]
    stale = parse_settings({"quotas": {"kill_switches": ["x"]}})
    assert not holder.replace_if_unchanged(version, stale)  # someone replaced them since `version`
    assert holder.get() is first and holder.version == version + 1
    assert len(calls) == 1


def test_changed_sections_compares_values_section_by_section() -> None:
    base = Settings()
    assert changed_sections(base, base) == frozenset()
    assert changed_sections(base, Settings()) == frozenset()
    budgets = dataclasses.replace(base, budgets=Budgets(daily_usd=2.0))
    assert changed_sections(base, budgets) == {"budgets"}
    both = dataclasses.replace(budgets, timezone="UTC")
    assert changed_sections(base, both) == {"budgets", "timezone"}
    assert changed_sections(both, base) == {"budgets", "timezone"}


def test_concurrent_replacements_are_announced_in_the_order_they_happened() -> None:
    holder = SettingsHolder(Settings())
    announced: list[float] = []
    holder.on_change(lambda settings, updated: announced.append(settings.budgets.daily_usd or 0.0))

    def writer(offset: int) -> None:
        for i in range(200):
            holder.replace(parse_settings({"budgets": {"daily_usd": offset + i + 1}}))

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # each announcement is of the settings in place at that moment: the last one is the current settings
    assert announced[-1] == holder.get().budgets.daily_usd
    assert holder.version == 800
    assert len(announced) == 800  # every value differs from the one before it


class _Subscriber:
    def __init__(self, holder: SettingsHolder) -> None:
        self.seen: list[frozenset[str]] = []
        holder.on_change(self.changed)

    def changed(self, settings: Settings, updated: frozenset[str]) -> None:
        self.seen.append(updated)


def test_a_bound_method_does_not_keep_its_object_alive() -> None:
    holder = SettingsHolder(Settings())
    kept = _Subscriber(holder)
    gone = _Subscriber(holder)
    witness = weakref.ref(gone)
    del gone
    gc.collect()
    assert witness() is None
    holder.replace(parse_settings({"timezone": "UTC"}))
    assert kept.seen == [frozenset({"timezone"})]
    assert len(holder._callbacks) == 1  # the collected one is forgotten
