"""Token-intelligence aggregates over the stored calls (docs/analytics-api.md and docs/analytics-api.md#how-the-figures-are-computed).

Each function sums the calls of the last `days` calendar days (today included, in `tz`): the per-call analysis
the pipeline stored in `details` (`waste`, `heatmap`) and `complexity`, as kept by the insight rollups
(`tokenlens.store.rollups`, per UTC hour and day, successful calls only), so a view costs the same with a
thousand calls or millions. They are the data of the `/api/usage/...` insight views and the evidence the
recommendations use (`evidence`).
"""

from __future__ import annotations

import functools
import math
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokenlens.complexity import INPUT_STEPS, OUTPUT_STEPS, SIMPLE_MAX, is_simple
from tokenlens.money import format_usd
from tokenlens.pricing import Pricer, current_snapshot, undated
from tokenlens.store.reads import largest_simple_call, rollup_totals, usage_sums
from tokenlens.store.rollups import (
    COMPLEXITY,
    HEAT_SECTIONS,
    INSIGHT,
    MIN_CACHEABLE_PREFIX,
    OUTPUT_BIN_LOWS,
    OUTPUT_BINS,
    PREFIXES,
    TURNS,
    WASTE,
    Rollup,
)
from tokenlens.usage import Usage
from tokenlens.waste import WASTE_TYPES

if TYPE_CHECKING:
    from tokenlens.records import CallRecord
    from tokenlens.store import Store

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


def _sums(
    store: Store,
    days: int,
    tz: tzinfo,
    rollup: Rollup,
    group: Sequence[str],
    measures: Sequence[str],
) -> list[tuple[tuple[Any, ...], dict[str, float]]]:
    """(group key, {measure: sum}) of `rollup` over the window, "" models named "unknown"."""
    start, end = window(days, tz)
    found = rollup_totals(store, rollup, start, end, group, measures)
    model_at = group.index("model") if "model" in group else None
    out = []
    for key, values in found.items():
        if model_at is not None and not key[model_at]:
            key = (*key[:model_at], "unknown", *key[model_at + 1 :])
        out.append((key, dict(zip(measures, values, strict=True))))
    return out


def _round(value: float, digits: int = 9) -> float:
    return round(float(value), digits)


# ---------------------------------------------------------------------------------------------- waste


def waste_summary(store: Store, days: int, tz: tzinfo) -> dict[str, Any]:
    """Waste tokens and cost by type, source and model (successful calls)."""
    by: dict[str, dict[str, dict[str, Any]]] = {"type": {}, "source": {}, "model": {}}
    calls = 0
    for (source, model), row in _sums(
        store, days, tz, INSIGHT, ("source", "model"), ("waste_calls", "waste_finding_calls")
    ):
        calls += int(row["waste_calls"])
        for dim, name in (("source", source), ("model", model)):
            if row["waste_finding_calls"]:
                item = by[dim].setdefault(name, {dim: name, "tokens": 0, "cost_usd": 0.0, "calls": 0})
                item["calls"] += int(row["waste_finding_calls"])
    total_tokens, total_cost = 0, 0.0
    for (source, model, waste_type), row in _sums(
        store, days, tz, WASTE, ("source", "model", "waste_type"), ("calls", "tokens", "cost_usd")
    ):
        tokens, cost = int(row["tokens"]), row["cost_usd"]
        total_tokens += tokens
        total_cost += cost
        for dim, name in (("type", waste_type), ("source", source), ("model", model)):
            item = by[dim].setdefault(name, {dim: name, "tokens": 0, "cost_usd": 0.0, "calls": 0})
            item["tokens"] += tokens
            item["cost_usd"] += cost
            if dim == "type":
                item["calls"] += int(row["calls"])
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


def _per_source_model(
    store: Store, days: int, tz: tzinfo, measures: Sequence[str], counted: str
) -> dict[tuple[str, str], dict[str, float]]:
    """The insight rollup's `measures` summed per (source, model) over the window, where `counted` > 0."""
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for key, row in _sums(store, days, tz, INSIGHT, ("source", "model"), measures):
        if row[counted]:
            group = groups.setdefault(key, dict.fromkeys(measures, 0.0))
            for name in measures:
                group[name] += row[name]
    return groups


# ---------------------------------------------------------------------------------------------- heatmap

_HEAT = ("heat_calls", "heat_input_tokens", *(f"heat_{s}" for s in HEAT_SECTIONS))


def token_heatmap(store: Store, days: int, tz: tzinfo) -> dict[str, Any]:
    """Average tokens per call and section, per source and model."""
    groups = _per_source_model(store, days, tz, _HEAT, "heat_calls")
    items = []
    for (source, model), g in sorted(groups.items(), key=lambda kv: (-kv[1]["heat_input_tokens"], kv[0])):
        n = g["heat_calls"]
        item: dict[str, Any] = {"source": source, "model": model}
        item.update({s: round(g[f"heat_{s}"] / n, 1) for s in HEAT_SECTIONS})
        item["calls"] = int(n)
        item["input_tokens"] = round(g["heat_input_tokens"] / n, 1)
        items.append(item)
    return {"days": days, "items": items}


# ---------------------------------------------------------------------------------------------- output

_OUTPUT = ("maxtok_calls", "maxtok_sum", "maxtok_output_tokens", "maxtok_utilisation", *OUTPUT_BINS)


def histogram_percentile(counts: Sequence[float], q: float) -> int:
    """The `q` quantile of the output-token histogram `counts` (bins of `OUTPUT_BIN_LOWS`), as the upper
    bound of the bin it falls in: no more than 19% above the exact value, never below it."""
    rank = max(1, math.ceil(q * sum(counts)))
    seen = 0.0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            if index + 1 < len(OUTPUT_BIN_LOWS):
                return OUTPUT_BIN_LOWS[index + 1] - 1
            return OUTPUT_BIN_LOWS[index]
    return 0


def output_efficiency(store: Store, days: int, tz: tzinfo) -> dict[str, Any]:
    """Output tokens over the requested maximum, per source and model; the over-allocating ones flagged.

    `p95_output_tokens` comes from a histogram (four bins per doubling): the upper bound of the bin holding
    the 95th percentile, within 19% above the exact value.
    """
    groups = _per_source_model(store, days, tz, _OUTPUT, "maxtok_calls")
    items: list[dict[str, Any]] = []
    for (source, model), g in groups.items():
        n = g["maxtok_calls"]
        utilisation = g["maxtok_utilisation"] / n
        p95 = histogram_percentile([g[b] for b in OUTPUT_BINS], 0.95)
        items.append(
            {
                "source": source,
                "model": model,
                "calls": int(n),
                "avg_max_tokens": round(g["maxtok_sum"] / n, 1),
                "avg_output_tokens": round(g["maxtok_output_tokens"] / n, 1),
                "utilisation": round(utilisation, 4),
                "p95_output_tokens": p95,
                "suggested_max_tokens": max(16, math.ceil(p95 * 1.25)),
                "over_allocating": utilisation < OVER_ALLOCATION_UTILISATION,
            }
        )
    items.sort(key=lambda i: (i["utilisation"], -i["calls"], i["source"], i["model"]))
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
    measures = ("calls", "input_tokens", "history_tokens")
    for (source, turn), row in _sums(store, days, tz, TURNS, ("source", "turn"), measures):
        s = sources.setdefault(source, {"calls": 0, "input": 0, "history": 0, "turns": {}})
        calls, input_tokens, history = (int(row[m]) for m in measures)
        s["calls"] += calls
        s["input"] += input_tokens
        s["history"] += history
        t = s["turns"].setdefault(int(turn), [0, 0, 0])
        t[0] += calls
        t[1] += input_tokens
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
    items.sort(key=lambda i: (-i["history_share"], i["source"]))
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


def _per_pricer[T](fn: Callable[[Pricer, str, str], T]) -> Callable[[Pricer, str, str], T]:
    """`fn(pricer, provider, model)` memoised per pricer (held weakly) and UTC day (dated prices)."""
    memo: weakref.WeakKeyDictionary[Pricer, dict[tuple[str, str, date], T]] = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    @functools.wraps(fn)
    def memoised(pricer: Pricer, provider: str, model: str) -> T:
        key = (provider, model, datetime.now(UTC).date())
        with lock:
            table = memo.setdefault(pricer, {})
            if key in table:
                return table[key]
        value = fn(pricer, provider, model)
        with lock:
            if len(table) >= 4096:
                table.clear()
            table[key] = value
        return value

    return memoised


@_per_pricer
def _rates(pricer: Pricer, provider: str, model: str) -> tuple[Decimal, Decimal] | None:
    """(input, output) USD per million tokens, or None when unpriced."""
    inp = pricer.price(provider, model, Usage(input_tokens=PROBE))
    out = pricer.price(provider, model, Usage(output_tokens=PROBE))
    if not (inp.priced and out.priced) or inp.cost_usd is None or out.cost_usd is None:
        return None
    return inp.cost_usd * PER_MILLION, out.cost_usd * PER_MILLION


def generation(model: str) -> float:
    """The model generation in its name: 4.1 for claude-opus-4-1, 3.5 for claude-3-5-haiku, 5 for gpt-5."""
    found = re.search(r"(\d+)(?:[.-](\d)(?!\d))?", model.lower().rsplit("/", 1)[-1])
    if not found:
        return 0.0
    return float(found.group(1) + ("." + found.group(2) if found.group(2) else ""))


@dataclass(frozen=True)
class ModelName:
    """A model name read as brand, version and tier: claude-sonnet-4-6 is ("claude", 4, 6, "", "sonnet"),
    gpt-4o-mini ("gpt", 4, 0, "o", "mini"), gemini-2.5-flash-lite ("gemini", 2, 5, "", "flash-lite")."""

    brand: str
    major: int
    minor: int
    variant: str  # the "o" of gpt-4o
    tier: str  # "sonnet", "mini", "flash-lite"...; "" for a line's base model (gpt-4o, gpt-5, o3)

    @property
    def line(self) -> tuple[str, int, int, str]:
        """The family line: Claude and other brands version each tier on its own, so their line is the major
        version (Claude 4: opus-4-1, sonnet-4-6, haiku-4-5); GPT and Gemini ship a line's sizes together
        under one version (GPT-4o, GPT-4.1, GPT-5.4, Gemini 2.5); the o-series by its number."""
        if self.brand in ("gpt", "gemini"):
            return (self.brand, self.major, self.minor, self.variant)
        return (self.brand, self.major, 0, "")

    @property
    def order(self) -> tuple[int, int, int]:
        """Newness of the version: gpt-4 < gpt-4o < gpt-4.1."""
        return (self.major, self.minor, 1 if self.variant else 0)

    def line_label(self) -> str:
        brand, major, minor, variant = self.line
        if brand == "gpt":
            return f"GPT-{major}{f'.{minor}' if minor else ''}{variant}"
        if brand == "o":
            return f"o{major}"
        version = f"{major}.{minor}" if minor else str(major)
        return f"{brand.capitalize()} {version}"

    def tier_label(self) -> str:
        return self.tier or "base model"


_NAME_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"claude-(?P<tier>[a-z]+)-(?P<major>\d+)(?:-(?P<minor>\d))?"), "claude"),
    (re.compile(r"claude-(?P<major>\d+)(?:-(?P<minor>\d))?-(?P<tier>[a-z]+)"), "claude"),
    (
        re.compile(r"gpt-(?P<major>\d+)(?:\.(?P<minor>\d+))?(?P<variant>o?)(?:-(?P<tier>[a-z][a-z0-9-]*))?"),
        "gpt",
    ),
    (re.compile(r"o(?P<major>\d+)(?:-(?P<tier>[a-z][a-z-]*))?"), "o"),
    (re.compile(r"gemini-(?P<major>\d+)(?:\.(?P<minor>\d+))?-(?P<tier>[a-z][a-z-]*)"), "gemini"),
    (re.compile(r"gemini-(?P<tier>[a-z]+)-(?P<major>\d+)\.(?P<minor>\d+)(?:-[a-z0-9-]+)?"), "gemini"),
    (
        re.compile(
            r"(?P<brand>[a-z]+)-(?:(?P<tier>[a-z]+)-)?(?P<major>\d+)(?:[.-](?P<minor>\d))?(?:-(?P<tail>[a-z][a-z-]*))?"
        ),
        "",
    ),
)


def model_name(model: str) -> ModelName | None:
    """`model` read as a `ModelName` (dates, "-latest" and a "-preview" tier suffix left out); None when the
    name has no version number."""
    name = undated(model.lower().rsplit("/", 1)[-1])
    for pattern, brand in _NAME_PATTERNS:
        found = pattern.fullmatch(name)
        if not found:
            continue
        groups = found.groupdict()
        tier = groups.get("tier") or groups.get("tail") or ""
        return ModelName(
            brand=brand or groups["brand"],
            major=int(groups["major"]),
            minor=int(groups.get("minor") or 0),
            variant=groups.get("variant") or "",
            tier=re.sub(r"-?preview$", "", tier),
        )
    return None


CAPABILITIES = ("tools", "images", "reasoning")


def capabilities(model: str) -> frozenset[str]:
    """What the model can be sent: "tools", "images" (image input), "reasoning" (thinking / reasoning effort).

    genai-prices has no capability data (only the context window), so this is TokenLens's own table for the
    Claude, GPT, o-series and Gemini lines: every current model of theirs takes tools and images except those
    named here; reasoning from Claude 3.7, GPT-5, every o-series model and Gemini 2.5 on. Other names: none
    known (such a model is suggested only for calls that used none of them).
    """
    name = model_name(model)
    if name is None:
        return frozenset()
    version = (name.major, name.minor)
    caps = {"tools", "images"}
    if name.brand == "claude":
        if version < (3, 0):
            return frozenset()
        if version == (3, 5) and name.tier == "haiku":
            caps.discard("images")
        if version >= (3, 7):
            caps.add("reasoning")
    elif name.brand == "gpt":
        if name.major < 4 or (version == (4, 0) and not name.variant and name.tier in ("", "32k")):
            caps.discard("images")  # gpt-3.5, gpt-4
        if name.major >= 5:
            caps.add("reasoning")
    elif name.brand == "o":
        caps.add("reasoning")
        if name.major == 1 and name.tier in ("mini", "preview"):
            caps -= {"tools", "images"}
        if name.major == 3 and name.tier == "mini":
            caps.discard("images")
    elif name.brand == "gemini":
        if version < (1, 5):
            caps.discard("images")
        if version >= (2, 5):
            caps.add("reasoning")
    else:
        return frozenset()
    return frozenset(caps)


@dataclass(frozen=True)
class Needs:
    """What the calls to move used: tools, image input, reasoning, and their largest context (input plus
    output tokens of one call)."""

    tools: bool = False
    images: bool = False
    reasoning: bool = False
    context_tokens: int = 0

    def used(self) -> frozenset[str]:
        return frozenset(c for c in CAPABILITIES if getattr(self, c))


@dataclass(frozen=True)
class Candidate:
    """A cheaper model a model's calls could move to, with how it relates to the model."""

    model: str
    rank: int  # 1 same line, 2 newer line of the same generation, 3 next generation of the same tier
    relation: str
    context_window: int | None
    capabilities: frozenset[str]
    rates: tuple[Decimal, Decimal]  # input, output USD per million tokens
    current_rates: tuple[Decimal, Decimal]  # the same of the model it replaces

    def lacks(self, needs: Needs) -> str | None:
        """Why the candidate cannot take calls with these needs, or None when it can."""
        missing = [c for c in CAPABILITIES if c in needs.used() and c not in self.capabilities]
        if missing:
            return f"{self.model} lacks {_and(_CAPABILITY_TEXT[c] for c in missing)}"
        if self.context_window is None:
            return f"{self.model}'s context window is not known"
        if needs.context_tokens > self.context_window:
            return (
                f"{self.model}'s {self.context_window:,}-token window is below these calls' "
                f"{needs.context_tokens:,} tokens"
            )
        return None


@dataclass(frozen=True)
class Suggestion:
    model: str
    why: str


_CAPABILITY_TEXT = {"tools": "tools", "images": "image input", "reasoning": "reasoning"}


def _and(words: Iterable[str]) -> str:
    items = list(words)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _percent_lower(new: Decimal, old: Decimal) -> str:
    return f"{float((old - new) / old * 100):.0f}%"


def cheaper_model(provider: str, model: str, pricer: Pricer | None = None) -> str | None:
    """The suggested cheaper model for calls that used no tools, images or reasoning (see `suggest`)."""
    found = suggest(provider, model, pricer or Pricer(), Needs())
    return found.model if found else None


def suggest(provider: str, model: str, pricer: Pricer, needs: Needs) -> Suggestion | None:
    """The cheaper model for `model`'s calls, with why it is comparable; None when there is none.

    Same provider, current (not deprecated), a chat model, cheaper on both the input and the output rate, and
    having what the calls used (`needs`: tools, image input, reasoning, a context window holding the largest
    call). Preferred in this order: (1) the same family line (`ModelName.line`: a smaller tier, or a newer
    release of the same tier); (2) a newer line of the same generation (gpt-4o -> gpt-4.1); (3) the next
    generation's model of the same tier (claude-haiku-4-5 -> claude-haiku-5-5). Never another brand or an
    older generation. Within a rank, the closest cheaper (the smallest step down), the newest on a tie.
    """
    for candidate in _candidates(pricer, provider, model):
        if candidate.lacks(needs) is None:
            return Suggestion(candidate.model, _why(candidate, needs))
    return None


def no_suggestion_reason(provider: str, model: str, pricer: Pricer, needs: Needs) -> str:
    """Why `suggest` found nothing for `model`."""
    candidates = _candidates(pricer, provider, model)
    if not candidates:
        return (
            f"No cheaper current model of {provider} in {model}'s line, a newer line of its generation or the "
            "next generation of its tier"
        )
    reasons = [c.lacks(needs) for c in candidates[:3]]
    return "No cheaper model has what these calls used: " + "; ".join(r for r in reasons if r)


def _why(candidate: Candidate, needs: Needs) -> str:
    current = candidate.current_rates
    parts = [
        candidate.relation,
        f"input {_percent_lower(candidate.rates[0], current[0])} and output "
        f"{_percent_lower(candidate.rates[1], current[1])} cheaper",
    ]
    used = needs.used()
    if used:
        parts.append(f"keeps {_and(_CAPABILITY_TEXT[c] for c in CAPABILITIES if c in used)}")
    parts.append(
        f"its {candidate.context_window or 0:,}-token window holds every simple call "
        f"(at most {needs.context_tokens:,} tokens)"
    )
    return "; ".join(parts) + "."


_DATED = re.compile(r"(?:19|20)\d{2}-?\d{2}-?\d{2}")


@_per_pricer
def _candidates(pricer: Pricer, provider: str, model: str) -> tuple[Candidate, ...]:
    """Every cheaper current chat model `suggest` may pick for `model`, best first (capabilities unchecked)."""
    current = _rates(pricer, provider, model)
    name = model_name(model)
    if current is None or name is None:
        return ()
    gp_provider = next((p for p in current_snapshot().providers if p.id == provider.lower()), None)
    if gp_provider is None:
        return ()
    found: list[tuple[tuple[Any, ...], Candidate]] = []
    for info in gp_provider.models:
        other = model_name(info.id)
        if (
            other is None
            or info.deprecated
            or _NOT_CHAT.search(info.id)
            or _DATED.search(info.id)
            or other.brand != name.brand
            or undated(info.id) == undated(model.lower().rsplit("/", 1)[-1])
        ):
            continue
        relation = _relation(name, other)
        if relation is None:
            continue
        rates = _rates(pricer, provider, info.id)
        if rates is None or not (rates[0] < current[0] and rates[1] < current[1]):
            continue
        rank, text = relation
        candidate = Candidate(info.id, rank, text, info.context_window, capabilities(info.id), rates, current)
        found.append(((rank, -rates[0], -rates[1], tuple(-v for v in other.order), info.id), candidate))
    found.sort(key=lambda item: item[0])
    return tuple(c for _, c in found)


def _relation(name: ModelName, other: ModelName) -> tuple[int, str] | None:
    """(rank, how `other` relates to `name`) when `other` may replace it, else None."""
    if other.line == name.line:
        if other.tier != name.tier:
            return 1, (
                f"Same family line ({name.line_label()}), smaller tier: {other.tier_label()} instead of "
                f"{name.tier_label()}"
            )
        if other.order > name.order:
            return (
                1,
                f"Same family line ({name.line_label()}) and tier ({name.tier_label()}), a newer release",
            )
        return None
    if other.major == name.major and other.order > name.order:
        return 2, (
            f"Newer line of the same generation ({other.line_label()} after {name.line_label()}), "
            f"{other.tier_label()} instead of {name.tier_label()}"
        )
    if other.major > name.major and other.tier == name.tier:
        return 3, (
            f"Next generation ({other.line_label()} after {name.line_label()}) of the same tier "
            f"({name.tier_label()})"
        )
    return None


def base_tier_cost(
    pricer: Pricer,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
) -> float | None:
    """The cost of usage summed over many calls at the model's base-tier (short-context) per-token rates.

    Pricing the sum as one request would apply the long-context tier (above 200k tokens or so) to every
    token. None when the model is not priced.
    """
    rates = _linear_rates(pricer, provider, model)
    if rates is None:
        return None
    uncached = max(0, input_tokens - cache_read - cache_write)
    total = uncached * rates[0] + output_tokens * rates[1] + cache_read * rates[2] + cache_write * rates[3]
    return float(total / MILLION)


@_per_pricer
def _linear_rates(pricer: Pricer, provider: str, model: str) -> tuple[Decimal, ...] | None:
    """USD per million tokens at the base tier: uncached input, output, cache read, cache write; each the total
    price of tokens of that kind alone (a kind the model does not price apart costs what the provider bills)."""
    usages = (
        Usage(input_tokens=PROBE),
        Usage(output_tokens=PROBE),
        Usage(input_tokens=PROBE, cache_read_tokens=PROBE),
        Usage(input_tokens=PROBE, cache_write_tokens=PROBE),
    )
    rates = []
    for usage in usages:
        price = pricer.price(provider, model, usage)
        if not price.priced or price.cost_usd is None:
            return None
        rates.append(price.cost_usd * PER_MILLION)
    return tuple(rates)


def right_sizing(store: Store, days: int, tz: tzinfo, pricer: Pricer) -> dict[str, Any]:
    """Per source and model: the share of simple calls, the cheaper model `suggest` finds for them (with
    `why` it is comparable, or why there is none) and what it would save on them."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    group = ("provider", "source", "model", "complexity")
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    for (provider, source, model, complexity), row in _sums(
        store, days, tz, COMPLEXITY, group, ("calls", "cost_usd", *tokens)
    ):
        g = groups.setdefault(
            (provider, source, model),
            {"calls": 0, "simple": 0, "cost": 0.0, "simple_cost": 0.0, "usage": [0, 0, 0, 0], "top_out": 0},
        )
        g["calls"] += int(row["calls"])
        g["cost"] += row["cost_usd"]
        if is_simple(int(complexity)):
            g["simple"] += int(row["calls"])
            g["simple_cost"] += row["cost_usd"]
            for i, name in enumerate(tokens):
                g["usage"][i] += int(row[name])
            if int(complexity) == SIMPLE_MAX:
                g["top_out"] += int(row["output_tokens"])
    used = _capabilities_used(store, days, tz)
    items = []
    for (provider, source, model), g in groups.items():
        needs = _needs(provider, model, used.get((provider, source, model), set()), g["top_out"])
        found = suggest(provider, model, pricer, needs) if g["simple"] else None
        unbounded = (
            suggest(provider, model, pricer, replace(needs, context_tokens=0)) if g["simple"] else None
        )
        if unbounded is not None and (found is None or unbounded.model != found.model):
            # the bound from the scores ruled a candidate out: read the largest simple call itself
            exact = _largest_simple_call(store, days, tz, provider, source, model)
            if exact is not None and exact < needs.context_tokens:
                needs = replace(needs, context_tokens=exact)
                found = suggest(provider, model, pricer, needs)
        candidate = found.model if found else None
        saving = 0.0
        what_if = None
        if candidate and g["simple"]:
            what_if = base_tier_cost(pricer, provider, candidate, *g["usage"])
            if what_if is not None:
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
                "why": found.why if found else no_suggestion_reason(provider, model, pricer, needs),
                "needs": {
                    "tools": needs.tools,
                    "images": needs.images,
                    "reasoning": needs.reasoning,
                    "context_tokens": needs.context_tokens,
                },
                "simple_cost_on_suggested_usd": None if what_if is None else _round(what_if),
                "saving_usd": _round(saving),
                "saving_per_week_usd": _round(saving * 7 / days),
                "recommended": bool(candidate) and share >= SIMPLE_SHARE_TO_RECOMMEND and saving > 0,
            }
        )
    items.sort(key=lambda i: (-i["saving_per_week_usd"], i["source"], i["provider"], i["model"]))
    return {"days": days, "simple_max_complexity": SIMPLE_MAX, "items": items}


# providers whose usage does not report reasoning tokens apart: reasoning counts as used when the model can
_REASONING_UNREPORTED = frozenset({"anthropic"})


def _capabilities_used(store: Store, days: int, tz: tzinfo) -> dict[tuple[str, str, str], set[str]]:
    """Per (provider, source, model): "tools" when calls sent tool definitions (the heatmap's tools section),
    "reasoning" when calls reported reasoning tokens (the usage rollups)."""
    used: dict[tuple[str, str, str], set[str]] = {}
    for (provider, source, model), row in _sums(
        store, days, tz, INSIGHT, ("provider", "source", "model"), ("heat_tools",)
    ):
        if row["heat_tools"] > 0:
            used.setdefault((provider, source, model), set()).add("tools")
    start, end = window(days, tz)
    found = usage_sums(store, [start, end], ("provider", "source", "model"), measures=("reasoning_tokens",))[
        0
    ]
    for (provider, source, model), row in found.items():
        if row["reasoning_tokens"] > 0:
            used.setdefault((provider, source, model or "unknown"), set()).add("reasoning")
    return used


def _needs(provider: str, model: str, used: set[str], top_output: int) -> Needs:
    """What a group's simple calls need. Image input is not told apart in the rollups, so a model that takes
    images is only replaced by one that does too. The context: a simple call (score <= 2) has under 1,000
    input tokens, under 8,000 with under 2,000 output, or under 32,000 with under 500 output; one with under
    1,000 input tokens may have any output, at most the summed output of the calls scoring 2."""
    own = capabilities(model)
    bound = max(
        INPUT_STEPS[-1] + OUTPUT_STEPS[0],
        INPUT_STEPS[1] + OUTPUT_STEPS[1],
        INPUT_STEPS[0] + max(OUTPUT_STEPS[1], top_output),
    )
    return Needs(
        tools="tools" in used,
        images="images" in own,
        reasoning="reasoning" in used or (provider in _REASONING_UNREPORTED and "reasoning" in own),
        context_tokens=bound,
    )


def _largest_simple_call(
    store: Store, days: int, tz: tzinfo, provider: str, source: str, model: str
) -> int | None:
    """Input plus output tokens of the largest successful simple call of the group in the window (read from
    the raw calls through their (source, model, ts) index); None when none is kept."""
    start, end = window(days, tz)
    return largest_simple_call(store, start, end, provider, source, model, SIMPLE_MAX)


# ---------------------------------------------------------------------------------------------- caching


@_per_pricer
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
    for (provider, model, prefix_hash, source), row in _sums(
        store, days, tz, PREFIXES, ("provider", "model", "prefix_hash", "source"), ("calls", "tokens")
    ):
        g = groups.setdefault((provider, model, prefix_hash), {"calls": 0, "tokens": 0, "sources": set()})
        g["calls"] += int(row["calls"])
        g["tokens"] += int(row["tokens"])
        g["sources"].add(source)
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
    items.sort(key=lambda i: (-(i["saving_usd"] or 0.0), i["provider"], i["model"], i["prefix_hash"]))
    return {
        "days": days,
        "min_prefix_tokens": MIN_CACHEABLE_PREFIX,
        "items": items,
        "total_saving_usd": _round(sum(i["saving_usd"] or 0.0 for i in items)),
    }


def prefix_cache_message(record: CallRecord, pricer: Pricer) -> str | None:
    """What the call detail says about the call's repeated prefix (system prompt and tools), true to its
    usage: "prompt cache used" only when the provider reported cache reads or writes; otherwise that the
    prefix was not cached and what reading it from the cache would save on each later call that resends it
    (at the model's input and cache-read rates, the one-time write premium said apart). None without a
    prefix."""
    heat = record.details.get("heatmap") if isinstance(record.details, dict) else None
    prefix = heat.get("prefix") if isinstance(heat, dict) else None
    if not isinstance(prefix, dict):
        return None
    try:
        tokens = max(0, int(prefix.get("tokens") or 0))
    except (TypeError, ValueError):
        tokens = 0
    head = f"Repeated prefix of {tokens:,} tokens"
    read, written = record.cache_read_tokens or 0, record.cache_write_tokens or 0
    if read > 0 or written > 0:
        return f"{head}; prompt cache used ({read:,} tokens read from it, {written:,} written to it)."
    head += "; not cached (cache read 0, cache write 0)"
    if tokens < MIN_CACHEABLE_PREFIX:
        return f"{head}: below the {MIN_CACHEABLE_PREFIX:,} tokens providers start caching at."
    rates = _cache_rates(pricer, record.provider, record.model) if record.model else None
    if rates is None or rates[1] >= rates[0]:
        return f"{head}; no cache price is known for {record.model or 'this model'}."
    inp, cached, write = rates
    saving = Decimal(tokens) * (inp - cached) / MILLION
    premium = Decimal(tokens) * max(Decimal(0), write - inp) / MILLION
    text = (
        f"{head}: caching it would save about {format_usd(float(saving))} on each later call that resends it"
    )
    if premium > 0:
        text += f" (writing it to the cache once costs {format_usd(float(premium))} more)"
    return text + "."


def dedup_savings(store: Store, days: int, tz: tzinfo) -> dict[str, Any]:
    """Calls answered from the dedup cache and the money they saved."""
    measures = ("dedup_calls", "dedup_saved_usd")
    rows = _sums(store, days, tz, INSIGHT, (), measures)
    calls = sum(int(row["dedup_calls"]) for _, row in rows)
    saved = sum(row["dedup_saved_usd"] for _, row in rows)
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
