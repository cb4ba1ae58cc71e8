"""The token-intelligence views answered from the insight rollups equal a scan of the calls themselves.

Each view is recomputed here from the crafted records (the definitions of docs/analytics-api.md#how-the-figures-are-computed and README "Token
intelligence", written independently of `tokenlens.insights`), on SQLite and PostgreSQL, in time zones whose
day boundaries fall on whole UTC days, on other whole hours, and inside an hour (:30 and :45 offsets). The
rollups built by migration 7 from calls stored before it give the same answers as the writer's.
"""

from __future__ import annotations

import math
import random
import time as _time
import zoneinfo
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

import pytest
from genai_prices import Usage as GpUsage
from genai_prices import calc_price

from published_prices import PRICES
from tokenlens import insights
from tokenlens.pricing import Pricer
from tokenlens.records import CallRecord
from tokenlens.store import Store
from tokenlens.store.rollups import sums

DAYS = 7
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"]
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-6")]
MODELS += [("anthropic", "claude-haiku-4-5")]
WASTE_TYPES = ("whitespace", "filler", "repeated_instruction", "empty_message")
SECTIONS = ("system", "tools", "context", "history", "query")


# ---------------------------------------------------------------------------------------------- the calls


def window(days: int, tz: tzinfo) -> tuple[float, float]:
    today = datetime.now(tz).date()
    start = datetime.combine(today - timedelta(days=days - 1), time.min, tz)
    end = datetime.combine(today + timedelta(days=1), time.min, tz)
    return start.timestamp(), end.timestamp()


def crafted(tz: tzinfo, count: int = 500, seed: int = 11) -> list[CallRecord]:
    """Calls around and inside the window of the last DAYS days in `tz`, with every shape of analysis."""
    rng = random.Random(seed)
    start, end = window(DAYS, tz)
    stamps = [rng.uniform(start - 3 * 86400, min(end, _time.time())) for _ in range(count)]
    stamps += [start - 1, start, start + 1, start + 1799, end - 1, end, end + 30]  # the edges
    calls = []
    for i, ts in enumerate(stamps):
        provider, model = rng.choice(MODELS)
        outcome = rng.choice(["ok"] * 7 + ["error", "blocked", "cached"])
        input_tokens = rng.choice([0, rng.randint(1, 400), rng.randint(400, 9000)])
        output_tokens = rng.choice([0, rng.randint(1, 40), rng.randint(40, 3000)])
        details: dict[str, Any] = {}
        waste_tokens = None
        shape = rng.random()
        if shape < 0.5:
            findings = []
            for _ in range(rng.randint(0, 4)):  # a type may repeat within a call
                finding: dict[str, Any] = {"type": rng.choice(WASTE_TYPES), "tokens": rng.randint(0, 90)}
                if rng.random() < 0.8:
                    finding["cost_usd"] = finding["tokens"] * 2.5e-6
                findings.append(finding)
            waste_tokens = sum(f["tokens"] for f in findings) if rng.random() < 0.9 else rng.choice([0, None])
            details["waste"] = {"tokens": waste_tokens, "findings": findings}
        elif shape < 0.55:
            details["waste"] = "not an object"
            waste_tokens = 5
        if rng.random() < 0.8:
            parts = [rng.randint(0, 3000) for _ in SECTIONS]
            heat: dict[str, Any] = dict(zip(SECTIONS, parts, strict=True))
            heat["scaled"] = rng.random() < 0.85
            if rng.random() < 0.9:
                heat["turns"] = rng.choice([0, 1, 2, 3, 5, 8])
            if rng.random() < 0.6:
                heat["prefix"] = {
                    "hash": rng.choice(["p-a", "p-b", "p-c", f"u-{i}"]),
                    "tokens": rng.choice([500, 1023, 1024, 2048, 6000]),
                    "cache_used": rng.random() < 0.2,
                }
            details["heatmap"] = heat
        max_tokens = rng.choice([None, 0, 64, 1024, 4096])
        calls.append(
            CallRecord(
                id=f"c{i:05d}",
                ts=ts,
                provider=provider,
                endpoint="/v1/x",
                source=rng.choice(["alpha", "beta", "gamma"]),
                model=rng.choice([model] * 8 + [None, ""]),
                outcome=outcome,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=input_tokens // 4 if rng.random() < 0.3 else 0,
                cache_write_tokens=input_tokens // 8 if rng.random() < 0.2 else 0,
                cost_usd=rng.choice([None, rng.uniform(0, 0.05)]),
                priced=True,
                saved_usd=rng.uniform(0, 0.01) if outcome == "cached" and rng.random() < 0.8 else None,
                max_tokens=max_tokens,
                complexity=rng.choice([None, *range(10)]),
                waste_tokens=waste_tokens,
                details=details,
            )
        )
    return calls


def in_window(calls: list[CallRecord], tz: tzinfo, outcome: str = "ok") -> list[CallRecord]:
    start, end = window(DAYS, tz)
    return [c for c in calls if start <= c.ts < end and c.outcome == outcome]


# ---------------------------------------------------------------------------------------------- the scans


def scan_waste(calls: list[CallRecord]) -> dict[str, Any]:
    by: dict[str, dict[str, list[float]]] = {"type": {}, "source": {}, "model": {}}
    counted, total_tokens, total_cost = 0, 0, 0.0
    for c in calls:
        waste = c.details.get("waste")
        if not isinstance(waste, dict) or not c.waste_tokens:
            continue
        counted += 1
        names = {"source": {c.source}, "model": {c.model or "unknown"}, "type": set()}
        for f in waste["findings"]:
            total_tokens += f["tokens"]
            total_cost += f.get("cost_usd", 0.0)
            names["type"].add(f["type"])
            for dim, name in (("type", f["type"]), ("source", c.source), ("model", c.model or "unknown")):
                item = by[dim].setdefault(name, [0, 0.0, 0])
                item[0] += f["tokens"]
                item[1] += f.get("cost_usd", 0.0)
        if waste["findings"]:
            for dim, found in names.items():
                for name in found:
                    by[dim][name][2] += 1
    for waste_type in WASTE_TYPES:
        by["type"].setdefault(waste_type, [0, 0.0, 0])

    def ranked(dim: str) -> list[dict[str, Any]]:
        items = [{dim: k, "tokens": v[0], "cost_usd": v[1], "calls": v[2]} for k, v in by[dim].items()]
        return sorted(items, key=lambda i: (-i["tokens"], i[dim]))

    return {
        "days": DAYS,
        "calls_with_waste": counted,
        "total_tokens": total_tokens,
        "total_cost_usd": total_cost,
        "by_type": ranked("type"),
        "by_source": ranked("source"),
        "by_model": ranked("model"),
    }


def heated(calls: list[CallRecord]) -> list[tuple[CallRecord, dict[str, Any]]]:
    out = []
    for c in calls:
        heat = c.details.get("heatmap")
        if isinstance(heat, dict) and heat["scaled"] and c.input_tokens:
            out.append((c, heat))
    return out


def scan_heatmap(calls: list[CallRecord]) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[CallRecord | dict[str, Any]]] = {}
    for c, heat in heated(calls):
        groups.setdefault((c.source, c.model or "unknown"), []).append((c, heat))  # type: ignore[arg-type]
    items = []
    for (source, model), members in groups.items():
        n = len(members)
        item: dict[str, Any] = {"source": source, "model": model}
        item.update({s: round(sum(h[s] for _, h in members) / n, 1) for s in SECTIONS})  # type: ignore[misc]
        item["calls"] = n
        item["input_tokens"] = round(sum(c.input_tokens for c, _ in members) / n, 1)  # type: ignore[misc]
        item["_sum"] = sum(c.input_tokens for c, _ in members)  # type: ignore[misc]
        items.append(item)
    items.sort(key=lambda i: (-i["_sum"], i["source"], i["model"]))
    for item in items:
        del item["_sum"]
    return {"days": DAYS, "items": items}


def scan_output(calls: list[CallRecord]) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[CallRecord]] = {}
    for c in calls:
        if c.max_tokens:
            groups.setdefault((c.source, c.model or "unknown"), []).append(c)
    items = []
    for (source, model), members in groups.items():
        n = len(members)
        utilisation = sum(min(1.0, c.output_tokens / c.max_tokens) for c in members) / n  # type: ignore[operator]
        outputs = sorted(c.output_tokens for c in members)
        items.append(
            {
                "source": source,
                "model": model,
                "calls": n,
                "avg_max_tokens": round(sum(c.max_tokens or 0 for c in members) / n, 1),
                "avg_output_tokens": round(sum(c.output_tokens for c in members) / n, 1),
                "utilisation": round(utilisation, 4),
                "p95_output_tokens": outputs[max(0, math.ceil(0.95 * n) - 1)],  # exact
                "over_allocating": utilisation < 0.5,
            }
        )
    items.sort(key=lambda i: (i["utilisation"], -i["calls"], i["source"], i["model"]))
    return {
        "days": DAYS,
        "threshold": 0.5,
        "items": items,
        "over_allocating": [
            {"source": i["source"], "model": i["model"]} for i in items if i["over_allocating"]
        ],
    }


def scan_history(calls: list[CallRecord]) -> dict[str, Any]:
    sources: dict[str, dict[int, list[int]]] = {}
    for c, heat in heated(calls):
        turn = max(1, heat.get("turns") or 1)
        t = sources.setdefault(c.source, {}).setdefault(turn, [0, 0, 0])
        t[0] += 1
        t[1] += c.input_tokens
        t[2] += heat["history"]
    items = []
    for source, turns in sources.items():
        calls_n = sum(t[0] for t in turns.values())
        input_n = sum(t[1] for t in turns.values())
        share = sum(t[2] for t in turns.values()) / input_n
        items.append(
            {
                "source": source,
                "calls": calls_n,
                "history_share": round(share, 4),
                "avg_input_tokens": round(input_n / calls_n, 1),
                "bloated": share > 0.6,
                "trend": [
                    {
                        "turn": turn,
                        "calls": t[0],
                        "avg_input_tokens": round(t[1] / t[0], 1),
                        "history_share": round(t[2] / t[1], 4),
                    }
                    for turn, t in sorted(turns.items())
                ],
            }
        )
    items.sort(key=lambda i: (-i["history_share"], i["source"]))
    return {
        "days": DAYS,
        "threshold": 0.6,
        "items": items,
        "bloated_sources": [i["source"] for i in items if i["bloated"]],
    }


def scan_caching(calls: list[CallRecord]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[tuple[CallRecord, int]]] = {}
    for c, heat in heated(calls):
        prefix = heat.get("prefix")
        if prefix and not prefix["cache_used"] and prefix["tokens"] >= 1024:
            key = (c.provider, c.model or "unknown", prefix["hash"])
            groups.setdefault(key, []).append((c, prefix["tokens"]))
    items = []
    for (provider, model, prefix_hash), members in groups.items():
        n = len(members)
        if n < 2:
            continue
        tokens = sum(t for _, t in members) / n
        saving = None
        if model in PRICES:  # per million: every resend read from cache, minus the premium of writing it once
            rates = PRICES[model]
            write = rates.get("cache_write_5m", rates["input"])
            value = (n - 1) * tokens * (rates["input"] - rates["cache_read"]) - tokens * max(
                0.0, write - rates["input"]
            )
            saving = max(0.0, value / 1e6)
        items.append(
            {
                "provider": provider,
                "model": model,
                "prefix_hash": prefix_hash,
                "sources": sorted({c.source for c, _ in members}),
                "calls": n,
                "prefix_tokens": round(tokens),
                "saving_usd": saving,
                "saving_per_week_usd": None if saving is None else saving * 7 / DAYS,
            }
        )
    return sorted(
        items, key=lambda i: (-(i["saving_usd"] or 0.0), i["provider"], i["model"], i["prefix_hash"])
    )


def snapshot_rate(provider: str, model: str, **usage: int) -> float:
    return float(calc_price(GpUsage(**usage), model, provider_id=provider).total_price) / 10_000


def scan_needs(calls: list[CallRecord], provider: str, source: str, model: str) -> insights.Needs:
    """What a group's calls used, read from each call: tool definitions in its heatmap, reasoning tokens (or a
    model that can reason, for Anthropic, which does not report them), images when the model takes them, and
    the largest simple call."""
    members = [c for c in calls if (c.provider, c.source, c.model) == (provider, source, model)]
    heat = [c.details.get("heatmap") or {} for c in members if c.input_tokens]
    own = insights.capabilities(model)
    simple = [c for c in members if c.complexity is not None and c.complexity <= 2]
    return insights.Needs(
        tools=any(h.get("scaled") and h.get("tools", 0) > 0 for h in heat),
        images="images" in own,
        reasoning=any(c.reasoning_tokens for c in members)
        or (provider == "anthropic" and "reasoning" in own),
        context_tokens=max((c.input_tokens + c.output_tokens for c in simple), default=0),
    )


def scan_right_sizing(
    calls: list[CallRecord], suggested: dict[tuple[str, str, str], str | None]
) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[CallRecord]] = {}
    for c in calls:
        if c.complexity is not None and c.model:
            groups.setdefault((c.provider, c.source, c.model), []).append(c)
    items = []
    for (provider, source, model), members in groups.items():
        simple = [c for c in members if c.complexity <= 2]  # type: ignore[operator]
        simple_cost = sum(c.cost_usd or 0.0 for c in simple)
        candidate = suggested[(provider, source, model)]
        what_if = None
        if candidate and simple:  # base-tier rates of the candidate, from genai-prices' own calculator
            rate_in = snapshot_rate(provider, candidate, input_tokens=10_000)
            rate_out = snapshot_rate(provider, candidate, output_tokens=10_000)
            cached = snapshot_rate(provider, candidate, input_tokens=10_000, cache_read_tokens=10_000)
            written = snapshot_rate(provider, candidate, input_tokens=10_000, cache_write_tokens=10_000)
            what_if = sum(
                (c.input_tokens - c.cache_read_tokens - c.cache_write_tokens) * rate_in
                + c.output_tokens * rate_out
                + c.cache_read_tokens * cached
                + c.cache_write_tokens * written
                for c in simple
            )
        saving = max(0.0, simple_cost - what_if) if what_if is not None else 0.0
        items.append(
            {
                "source": source,
                "provider": provider,
                "model": model,
                "calls": len(members),
                "simple_calls": len(simple),
                "simple_share": round(len(simple) / len(members), 4),
                "cost_usd": sum(c.cost_usd or 0.0 for c in members),
                "simple_cost_usd": simple_cost,
                "suggested_model": candidate,
                "simple_cost_on_suggested_usd": what_if,
                "saving_usd": saving,
                "saving_per_week_usd": saving * 7 / DAYS,
                "recommended": bool(candidate) and len(simple) / len(members) >= 0.5 and saving > 0,
            }
        )
    return sorted(items, key=lambda i: (-i["saving_per_week_usd"], i["source"], i["provider"], i["model"]))


# ---------------------------------------------------------------------------------------------- comparing


def assert_close(got: Any, expected: Any, path: str = "") -> None:
    """Equal, floats within 1e-9 (absolute) or 1e-9 (relative)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), (path, got, expected)
        for key in expected:
            assert_close(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), (path, got, expected)
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_close(g, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), path
    else:
        assert got == expected, (path, got, expected)


def check_views(store: Store, calls: list[CallRecord], tz: tzinfo) -> None:
    ok = in_window(calls, tz)
    assert ok, "the crafted calls must reach the window"
    assert_close(insights.waste_summary(store, DAYS, tz), scan_waste(ok))
    assert_close(insights.token_heatmap(store, DAYS, tz), scan_heatmap(ok))
    assert_close(insights.conversation_efficiency(store, DAYS, tz), scan_history(ok))

    output = insights.output_efficiency(store, DAYS, tz)
    expected = scan_output(ok)
    for item, want in zip(output["items"], expected["items"], strict=True):
        exact = want.pop("p95_output_tokens")
        # the p95 comes from a histogram of four bins per doubling: never below, at most 19% above
        assert exact <= item.pop("p95_output_tokens") <= max(exact * 1.19 + 1, 8)
        assert item.pop("suggested_max_tokens") >= max(16, math.ceil(exact * 1.25))
    assert_close(output, expected)

    pricer = Pricer()
    caching = insights.caching_opportunities(store, DAYS, tz, pricer)
    assert caching["min_prefix_tokens"] == 1024
    assert_close(caching["items"], scan_caching(ok))

    sizing = insights.right_sizing(store, DAYS, tz, pricer)
    suggested: dict[tuple[str, str, str], str | None] = {}
    for item in sizing["items"]:
        key = (item["provider"], item["source"], item["model"])
        needs = scan_needs(ok, *key)
        found = insights.suggest(key[0], key[2], pricer, needs)
        suggested[key] = found.model if found else None
        why, shown = item.pop("why"), item.pop("needs")
        assert why and shown["context_tokens"] >= needs.context_tokens  # the exact size or a bound above it
        assert (shown["tools"], shown["images"], shown["reasoning"]) == (
            needs.tools,
            needs.images,
            needs.reasoning,
        )
    assert_close(sizing["items"], scan_right_sizing(ok, suggested))

    cached = in_window(calls, tz, "cached")
    assert_close(
        insights.dedup_savings(store, DAYS, tz),
        {"days": DAYS, "cached_calls": len(cached), "saved_usd": sum(c.saved_usd or 0.0 for c in cached)},
    )


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("zone", ZONES)
def test_views_equal_a_scan_of_the_calls(store: Store, zone: str) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    calls = crafted(tz)
    store.insert_calls(calls[:300], store_bodies=False)
    store.insert_calls(
        calls[250:] + calls[:20], store_bodies=False
    )  # ids already stored are not counted twice
    check_views(store, calls, tz)


def test_migration_builds_insight_rollups_of_stored_calls(upgraded_store: Any) -> None:
    calls = crafted(zoneinfo.ZoneInfo("Asia/Kolkata"), count=400, seed=5)
    store = upgraded_store(6, calls[:350])  # calls written before the insight rollups existed
    store.insert_calls(calls[350:], store_bodies=False)  # and the writer adds to what the migration built
    check_views(store, calls, zoneinfo.ZoneInfo("Asia/Kolkata"))


def test_odd_details_never_fail_a_write(store: Store, make_call: Callable[..., CallRecord]) -> None:
    odd: list[dict[str, Any]] = [
        {"waste": {"findings": "text"}, "heatmap": []},
        {"waste": {"findings": [1, None, {"type": None, "tokens": "many", "cost_usd": "x"}]}},
        {"heatmap": {"scaled": True, "turns": "two", "history": None, "prefix": {"tokens": "big"}}},
        {"heatmap": {"scaled": True, "prefix": {"hash": None, "tokens": 5000, "cache_used": False}}},
    ]
    calls = [make_call(outcome="ok", waste_tokens=3, max_tokens=50, details=d) for d in odd]
    store.insert_calls(calls, store_bodies=False)
    assert store.count_calls() == len(odd)


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/St_Johns"])
def test_daily_sums_of_a_few_measures_and_spend(
    store: Store, make_call: Callable[..., CallRecord], zone: str
) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    rng = random.Random(3)
    base = datetime(2026, 3, 1, tzinfo=tz).timestamp()
    calls = [
        make_call(ts=base + rng.uniform(-86400, 5 * 86400), cost_usd=rng.uniform(0, 1), input_tokens=i)
        for i in range(300)
    ]
    store.insert_calls(calls, store_bodies=False)
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(4)]
    edges = [datetime.combine(d, time.min, tz).timestamp() for d in [*days, days[-1] + timedelta(days=1)]]
    with store.connection():
        got = sums(store.db, edges, ("source",), measures=("cost_usd", "calls"))
    for i, groups in enumerate(got):
        inside = [c for c in calls if edges[i] <= c.ts < edges[i + 1]]
        assert set(groups) == {("my-agent",)} and set(groups[("my-agent",)]) == {"cost_usd", "calls"}
        assert groups[("my-agent",)]["calls"] == len(inside)
        assert groups[("my-agent",)]["cost_usd"] == pytest.approx(sum(c.cost_usd or 0 for c in inside))
    inside = [c for c in calls if edges[0] <= c.ts < edges[-1]]
    assert store.spend_between(edges[0], edges[-1]) == pytest.approx(sum(c.cost_usd or 0 for c in inside))
