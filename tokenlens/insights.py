"""Token-intelligence aggregates over the stored calls (SPEC sections 9 and 10).

Each function reads the calls of the last `days` calendar days (today included, in `tz`) and the per-call
analysis the pipeline stored in `details` (`waste`, `heatmap`) and `complexity`. They are the data of the
`/api/usage/...` insight views and the evidence the recommendations use (`evidence`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import timedelta, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from genai_prices import data_snapshot

from tokenlens.complexity import is_simple
from tokenlens.pricing import Pricer
from tokenlens.prompt_parts import SECTIONS
from tokenlens.usage import Usage
from tokenlens.waste import WASTE_TYPES

if TYPE_CHECKING:
    from tokenlens.store import Store

MIN_CACHEABLE_PREFIX = 1024
HISTORY_BLOAT_SHARE = 0.6
OVER_ALLOCATION_UTILISATION = 0.5
SIMPLE_SHARE_TO_RECOMMEND = 0.5
MILLION = Decimal(1_000_000)
PROBE = 10_000  # tokens priced to read a model's rates (below every long-context tier)
PER_MILLION = MILLION / PROBE


def window(days: int, tz: tzinfo) -> tuple[float, float]:
    """(start, end) epoch seconds of the last `days` calendar days in `tz`, today included."""
    from tokenlens.store.queries import day_start, today

    if days < 1:
        raise ValueError("days: must be at least 1")
    current = today(tz)
    return day_start(current - timedelta(days=days - 1), tz), day_start(current + timedelta(days=1), tz)


def _rows(
    store: Store, days: int, tz: tzinfo, *fields: str, outcome: str | None = "ok"
) -> Iterator[dict[str, Any]]:
    start, end = window(days, tz)
    call = store.models.Call
    query = call.select(*(getattr(call, f) for f in fields)).where((call.ts >= start) & (call.ts < end))
    if outcome is not None:
        query = query.where(call.outcome == outcome)
    query = query.order_by(call.ts.asc())
    with store.connection():
        rows = list(query.dicts().execute())
    for row in rows:
        if "details" in row:
            try:
                row["details"] = json.loads(row["details"] or "{}")
            except ValueError:
                row["details"] = {}
        yield row


def _round(value: float, digits: int = 9) -> float:
    return round(float(value), digits)


# ---------------------------------------------------------------------------------------------- waste


def waste_summary(store: Store, days: int, tz: tzinfo) -> dict[str, Any]:
    """Waste tokens and cost by type, source and model (successful calls)."""
    by: dict[str, dict[str, dict[str, Any]]] = {"type": {}, "source": {}, "model": {}}
    total_tokens, total_cost, calls = 0, 0.0, 0
    for row in _rows(store, days, tz, "source", "model", "details", "waste_tokens"):
        waste = row["details"].get("waste")
        if not isinstance(waste, dict) or not row["waste_tokens"]:
            continue
        calls += 1
        seen: set[tuple[str, str]] = set()
        for finding in waste.get("findings") or ():
            tokens = int(finding.get("tokens") or 0)
            cost = float(finding.get("cost_usd") or 0.0)
            total_tokens += tokens
            total_cost += cost
            for dim, name in (
                ("type", finding.get("type")),
                ("source", row["source"]),
                ("model", row["model"] or "unknown"),
            ):
                item = by[dim].setdefault(
                    str(name), {dim: str(name), "tokens": 0, "cost_usd": 0.0, "calls": 0}
                )
                item["tokens"] += tokens
                item["cost_usd"] += cost
                if (dim, str(name)) not in seen:
                    seen.add((dim, str(name)))
                    item["calls"] += 1
    for waste_type in WASTE_TYPES:
        by["type"].setdefault(waste_type, {"type": waste_type, "tokens": 0, "cost_usd": 0.0, "calls": 0})

    def ranked(items: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items.values():
            item["cost_usd"] = _round(item["cost_usd"])
        return sorted(items.values(), key=lambda i: (-i["tokens"], str(next(iter(i.values())))))

    return {
        "days": days,
        "calls_with_waste": calls,
        "total_tokens": total_tokens,
        "total_cost_usd": _round(total_cost),
        "by_type": ranked(by["type"]),
        "by_source": ranked(by["source"]),
        "by_model": ranked(by["model"]),
    }


# ---------------------------------------------------------------------------------------------- heatmap


def _heatmaps(store: Store, days: int, tz: tzinfo, *fields: str) -> Iterator[dict[str, Any]]:
    for row in _rows(store, days, tz, "source", "model", "input_tokens", "details", *fields):
        heat = row["details"].get("heatmap")
        if isinstance(heat, dict) and heat.get("scaled") and row["input_tokens"]:
            row["heatmap"] = heat
            yield row


def token_heatmap(store: Store, days: int, tz: tzinfo) -> dict[str, Any]:
    """Average tokens per call and section, per source and model."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _heatmaps(store, days, tz):
        key = (row["source"], row["model"] or "unknown")
        group = groups.setdefault(key, {"calls": 0, "input_tokens": 0, **dict.fromkeys(SECTIONS, 0)})
        group["calls"] += 1
        group["input_tokens"] += row["input_tokens"]
        for section in SECTIONS:
            group[section] += int(row["heatmap"].get(section) or 0)
    items = []
    for (source, model), g in sorted(groups.items(), key=lambda kv: -kv[1]["input_tokens"]):
        n = g["calls"]
        item: dict[str, Any] = {"source": source, "model": model}
        item.update({s: round(g[s] / n, 1) for s in SECTIONS})
        item["calls"] = n
        item["input_tokens"] = round(g["input_tokens"] / n, 1)
        items.append(item)
    return {"days": days, "items": items}


# ---------------------------------------------------------------------------------------------- output


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[index]


def output_efficiency(store: Store, days: int, tz: tzinfo) -> dict[str, Any]:
    """Output tokens over the requested maximum, per source and model; the over-allocating ones flagged."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _rows(store, days, tz, "source", "model", "output_tokens", "max_tokens"):
        max_tokens = row["max_tokens"]
        if not max_tokens or max_tokens <= 0:
            continue
        g = groups.setdefault(
            (row["source"], row["model"] or "unknown"), {"max": [], "out": [], "ratios": []}
        )
        g["max"].append(int(max_tokens))
        g["out"].append(int(row["output_tokens"]))
        g["ratios"].append(min(1.0, row["output_tokens"] / max_tokens))
    items = []
    for (source, model), g in groups.items():
        n = len(g["max"])
        utilisation = sum(g["ratios"]) / n
        p95 = _percentile(g["out"], 0.95)
        items.append(
            {
                "source": source,
                "model": model,
                "calls": n,
                "avg_max_tokens": round(sum(g["max"]) / n, 1),
                "avg_output_tokens": round(sum(g["out"]) / n, 1),
                "utilisation": round(utilisation, 4),
                "p95_output_tokens": p95,
                "suggested_max_tokens": max(16, math.ceil(p95 * 1.25)),
                "over_allocating": utilisation < OVER_ALLOCATION_UTILISATION,
            }
        )
    items.sort(key=lambda i: (i["utilisation"], -i["calls"]))
    return {
        "days": days,
        "threshold": OVER_ALLOCATION_UTILISATION,
        "items": items,
        "over_allocating": [
            {"source": i["source"], "model": i["model"]} for i in items if i["over_allocating"]
        ],
    }


# ---------------------------------------------------------------------------------------------- history


def conversation_efficiency(store: Store, days: int, tz: tzinfo) -> dict[str, Any]:
    """Share of input spent on earlier turns per source, with its trend over the conversation's turns."""
    sources: dict[str, dict[str, Any]] = {}
    for row in _heatmaps(store, days, tz):
        s = sources.setdefault(row["source"], {"calls": 0, "input": 0, "history": 0, "turns": {}})
        history = int(row["heatmap"].get("history") or 0)
        s["calls"] += 1
        s["input"] += row["input_tokens"]
        s["history"] += history
        turn = max(1, int(row["heatmap"].get("turns") or 1))
        t = s["turns"].setdefault(turn, [0, 0, 0])
        t[0] += 1
        t[1] += row["input_tokens"]
        t[2] += history
    items = []
    for source, s in sources.items():
        share = s["history"] / s["input"] if s["input"] else 0.0
        items.append(
            {
                "source": source,
                "calls": s["calls"],
                "history_share": round(share, 4),
                "avg_input_tokens": round(s["input"] / s["calls"], 1),
                "bloated": share > HISTORY_BLOAT_SHARE,
                "trend": [
                    {
                        "turn": turn,
                        "calls": t[0],
                        "avg_input_tokens": round(t[1] / t[0], 1),
                        "history_share": round(t[2] / t[1], 4) if t[1] else 0.0,
                    }
                    for turn, t in sorted(s["turns"].items())
                ],
            }
        )
    items.sort(key=lambda i: -i["history_share"])
    return {
        "days": days,
        "threshold": HISTORY_BLOAT_SHARE,
        "items": items,
        "bloated_sources": [i["source"] for i in items if i["bloated"]],
    }


# ---------------------------------------------------------------------------------------------- right-sizing

_NOT_CHAT = re.compile(
    r"embed|tts|image|audio|realtime|transcribe|search|live|vision|instruct|robotics|banana|computer|codex"
    r"|preview|omni|moderation|:|ft-|-16k|-32k|whisper|dall-e"
)


def _rates(pricer: Pricer, provider: str, model: str) -> tuple[Decimal, Decimal] | None:
    """(input, output) USD per million tokens, or None when unpriced."""
    inp = pricer.price(provider, model, Usage(input_tokens=PROBE))
    out = pricer.price(provider, model, Usage(output_tokens=PROBE))
    if not (inp.priced and out.priced) or inp.cost_usd is None or out.cost_usd is None:
        return None
    return inp.cost_usd * PER_MILLION, out.cost_usd * PER_MILLION


def _family(model: str) -> str:
    found = re.match(r"[a-z]+", model.lower().rsplit("/", 1)[-1])
    return found.group() if found else ""


def generation(model: str) -> float:
    """The model generation in its name: 4.1 for claude-opus-4-1, 3.5 for claude-3-5-haiku, 5 for gpt-5."""
    found = re.search(r"(\d+)(?:[.-](\d)(?!\d))?", model.lower().rsplit("/", 1)[-1])
    if not found:
        return 0.0
    return float(found.group(1) + ("." + found.group(2) if found.group(2) else ""))


def cheaper_model(provider: str, model: str, pricer: Pricer | None = None) -> str | None:
    """The closest cheaper current model of the same provider and family, from the genai-prices snapshot.

    Cheaper on both input and output rates; not deprecated; not of an older generation; chat models only.
    Among those, the most capable by price (the smallest step down). None when there is none or the model is not priced.
    """
    pricer = pricer or Pricer()
    current = _rates(pricer, provider, model)
    if current is None:
        return None
    family, current_generation = _family(model), generation(model)
    gp_provider = next((p for p in data_snapshot.get_snapshot().providers if p.id == provider.lower()), None)
    if gp_provider is None:
        return None
    best: tuple[Decimal, Decimal, str] | None = None
    for info in gp_provider.models:
        name = info.id
        if info.deprecated or _family(name) != family or _NOT_CHAT.search(name) or name == model:
            continue
        if generation(name) < current_generation:
            continue
        rates = _rates(pricer, provider, name)
        if rates is None or not (rates[0] < current[0] and rates[1] < current[1]):
            continue
        candidate = (rates[0], rates[1], name)
        if best is None or candidate > best:
            best = candidate
    return best[2] if best else None


def right_sizing(store: Store, days: int, tz: tzinfo, pricer: Pricer) -> dict[str, Any]:
    """Per source and model: the share of simple calls and what a cheaper model would save on them."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    fields = ("provider", "source", "model", "complexity", "cost_usd", "input_tokens", "output_tokens")
    for row in _rows(store, days, tz, *fields, "cache_read_tokens", "cache_write_tokens"):
        if row["complexity"] is None or not row["model"]:
            continue
        g = groups.setdefault(
            (row["provider"], row["source"], row["model"]),
            {"calls": 0, "simple": 0, "cost": 0.0, "simple_cost": 0.0, "usage": [0, 0, 0, 0]},
        )
        g["calls"] += 1
        g["cost"] += row["cost_usd"] or 0.0
        if is_simple(row["complexity"]):
            g["simple"] += 1
            g["simple_cost"] += row["cost_usd"] or 0.0
            for i, name in enumerate(
                ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
            ):
                g["usage"][i] += int(row[name] or 0)
    items = []
    candidates: dict[tuple[str, str], str | None] = {}
    for (provider, source, model), g in groups.items():
        if (provider, model) not in candidates:
            candidates[(provider, model)] = cheaper_model(provider, model, pricer)
        candidate = candidates[(provider, model)]
        saving = 0.0
        what_if = None
        if candidate and g["simple"]:
            inp, out, cr, cw = g["usage"]
            price = pricer.price(provider, candidate, Usage(inp, out, cr, cw))
            if price.priced and price.cost_usd is not None:
                what_if = float(price.cost_usd)
                saving = max(0.0, g["simple_cost"] - what_if)
        share = g["simple"] / g["calls"]
        items.append(
            {
                "source": source,
                "provider": provider,
                "model": model,
                "calls": g["calls"],
                "simple_calls": g["simple"],
                "simple_share": round(share, 4),
                "cost_usd": _round(g["cost"]),
                "simple_cost_usd": _round(g["simple_cost"]),
                "suggested_model": candidate,
                "simple_cost_on_suggested_usd": None if what_if is None else _round(what_if),
                "saving_usd": _round(saving),
                "saving_per_week_usd": _round(saving * 7 / days),
                "recommended": bool(candidate) and share >= SIMPLE_SHARE_TO_RECOMMEND and saving > 0,
            }
        )
    items.sort(key=lambda i: -i["saving_per_week_usd"])
    return {"days": days, "simple_max_complexity": 2, "items": items}


# ---------------------------------------------------------------------------------------------- caching


def _cache_rates(pricer: Pricer, provider: str, model: str) -> tuple[Decimal, Decimal, Decimal] | None:
    """(input, cache read, cache write) USD per million tokens."""
    read = pricer.price(provider, model, Usage(input_tokens=PROBE, cache_read_tokens=PROBE))
    write = pricer.price(provider, model, Usage(input_tokens=PROBE, cache_write_tokens=PROBE))
    base = pricer.price(provider, model, Usage(input_tokens=PROBE))
    if not (read.priced and write.priced and base.priced) or base.cost_usd is None:
        return None
    return (
        base.cost_usd * PER_MILLION,
        (read.cache_read_cost_usd or Decimal(0)) * PER_MILLION,
        (write.cache_write_cost_usd or Decimal(0)) * PER_MILLION,
    )


def caching_opportunities(store: Store, days: int, tz: tzinfo, pricer: Pricer) -> dict[str, Any]:
    """Long identical prefixes (system prompt, tools) resent without the provider's cache, and the saving.

    Saving: every resend after the first read from cache instead of at the input rate, minus the premium of
    writing the prefix once.
    """
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in _heatmaps(store, days, tz, "provider"):
        prefix = row["heatmap"].get("prefix")
        if not isinstance(prefix, dict) or prefix.get("cache_used"):
            continue
        tokens = int(prefix.get("tokens") or 0)
        if tokens < MIN_CACHEABLE_PREFIX:
            continue
        key = (row["provider"], row["model"] or "unknown", str(prefix.get("hash")))
        g = groups.setdefault(key, {"calls": 0, "tokens": 0, "sources": set()})
        g["calls"] += 1
        g["tokens"] += tokens
        g["sources"].add(row["source"])
    items = []
    for (provider, model, prefix_hash), g in groups.items():
        if g["calls"] < 2:
            continue
        tokens = g["tokens"] / g["calls"]
        rates = _cache_rates(pricer, provider, model)
        saving = None
        if rates is not None:
            inp, read, write = rates
            value = (
                Decimal(g["calls"] - 1) * Decimal(tokens) * (inp - read)
                - Decimal(tokens) * max(Decimal(0), write - inp)
            ) / MILLION
            saving = max(0.0, float(value))
        items.append(
            {
                "provider": provider,
                "model": model,
                "prefix_hash": prefix_hash,
                "sources": sorted(g["sources"]),
                "calls": g["calls"],
                "prefix_tokens": round(tokens),
                "saving_usd": None if saving is None else _round(saving),
                "saving_per_week_usd": None if saving is None else _round(saving * 7 / days),
            }
        )
    items.sort(key=lambda i: -(i["saving_usd"] or 0.0))
    return {
        "days": days,
        "min_prefix_tokens": MIN_CACHEABLE_PREFIX,
        "items": items,
        "total_saving_usd": _round(sum(i["saving_usd"] or 0.0 for i in items)),
    }


def dedup_savings(store: Store, days: int, tz: tzinfo) -> dict[str, Any]:
    """Calls answered from the dedup cache and the money they saved."""
    calls, saved = 0, 0.0
    for row in _rows(store, days, tz, "saved_usd", outcome="cached"):
        calls += 1
        saved += row["saved_usd"] or 0.0
    return {"days": days, "cached_calls": calls, "saved_usd": _round(saved)}


def evidence(store: Store, days: int, tz: tzinfo, pricer: Pricer) -> dict[str, Any]:
    """Every token-intelligence view at once: the input of the recommendations."""
    return {
        "waste": waste_summary(store, days, tz),
        "heatmap": token_heatmap(store, days, tz),
        "output_efficiency": output_efficiency(store, days, tz),
        "conversation_efficiency": conversation_efficiency(store, days, tz),
        "right_sizing": right_sizing(store, days, tz, pricer),
        "caching_opportunities": caching_opportunities(store, days, tz, pricer),
        "dedup": dedup_savings(store, days, tz),
    }
