"""Cost analytics over the hourly rollups (docs/analytics-api.md#how-the-figures-are-computed): breakdowns, forecast, anomalies, what-if, advice.

Every function reads `tokenlens.store.rollups` (never the whole call table), with days as calendar days in
the configured time zone, today included. Money is rounded to 1e-9 USD.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from tokenlens.money import format_usd
from tokenlens.store import Store
from tokenlens.store.queries import PricerLike, day_start
from tokenlens.store.reads import first_usage_bucket, tag_usage, usage_sums
from tokenlens.store.rollups import Row
from tokenlens.usage import Usage

if TYPE_CHECKING:
    from tokenlens.pricing import Pricer

FORECAST_WINDOW = 30  # complete days the trend is fitted on
ANOMALY_WINDOW = 14  # previous days of the rolling mean
ANOMALY_MIN_HISTORY = 7
ANOMALY_SIGMAS = 2.0
TREND_MATERIAL = 0.10  # fitted change over 30 days, relative to the fitted level, that counts as a trend
TREND_DAYS = 30  # the change is measured over this many days (slope x 30)
TREND_SIGMAS = 2.0  # |slope| must exceed this many standard errors of the slope (distinguishable from noise)
TREND_MIN_DAYS = 7  # fewer complete days of history: always "stable"
RANGE_SIGMAS = 2.0
RIGHT_SIZE_MIN_CALLS = 10
RIGHT_SIZE_SIMPLE_SHARE = 0.6
OVERALLOCATION_MIN_CALLS = 20
OVERALLOCATION_UTILISATION = 0.25


def money(value: float) -> float:
    return round(float(value), 9)


def now_ts(now: float | None) -> float:
    return _time.time() if now is None else now


def local_today(tz: tzinfo, now: float | None = None) -> date:
    return datetime.fromtimestamp(now_ts(now), tz).date()


def day_list(first: date, count: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(count)]


def edges_of(days: Sequence[date], tz: tzinfo) -> list[float]:
    """Epoch boundaries of consecutive local days: len(days) + 1 values."""
    return [day_start(d, tz) for d in days] + [day_start(days[-1] + timedelta(days=1), tz)]


def last_days(days: int, tz: tzinfo, now: float | None = None) -> list[date]:
    """The last `days` calendar days in `tz`, today included, oldest first."""
    today = local_today(tz, now)
    return day_list(today - timedelta(days=days - 1), days)


def _int(value: float) -> int:
    return int(round(value))


# ---------------------------------------------------------------------------------------------- breakdowns


_DAILY_MEASURES = (
    "cost_usd",
    "input_cost_usd",
    "output_cost_usd",
    "cache_read_cost_usd",
    "cache_write_cost_usd",
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "unpriced_calls",
)


COST_PARTS = ("input_cost_usd", "output_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd")


def unattributed(cost: float, parts: Sequence[float]) -> float:
    """The part of `cost` its four parts do not account for (costs imported without parts, whose model is
    unpriced or whose tokens cost nothing; see `tokenlens.store.queries._attribute_parts`): the fifth part
    of every cost breakdown, so that the parts always sum to the total. Float noise (under 1e-9) is 0."""
    rest = money(cost - sum(parts))
    return 0.0 if abs(rest) < 1e-9 else rest


def daily(store: Store, days: int, tz: tzinfo, now: float | None = None) -> dict[str, Any]:
    """docs/analytics-api.md `/daily`: one entry per day (days without calls included, as zeros)."""
    dates = last_days(days, tz, now)
    with store.connection():
        per_day = usage_sums(store, edges_of(dates, tz), measures=_DAILY_MEASURES)
    out = []
    for day, groups in zip(dates, per_day, strict=True):
        row = groups.get((), {})
        parts = [money(row.get(name, 0)) for name in COST_PARTS]
        cost = money(row.get("cost_usd", 0))
        out.append(
            {
                "date": day.isoformat(),
                "cost_usd": cost,
                **dict(zip(COST_PARTS, parts, strict=True)),
                "unattributed_cost_usd": unattributed(cost, parts),
                "calls": _int(row.get("calls", 0)),
                "input_tokens": _int(row.get("input_tokens", 0)),
                "output_tokens": _int(row.get("output_tokens", 0)),
                "cache_read_tokens": _int(row.get("cache_read_tokens", 0)),
                "cache_write_tokens": _int(row.get("cache_write_tokens", 0)),
                "unpriced_calls": _int(row.get("unpriced_calls", 0)),
            }
        )
    return {"days": out}


def _item(name: str, row: Row) -> dict[str, Any]:
    return {
        "name": name,
        "cost_usd": money(row.get("cost_usd", 0)),
        "calls": _int(row.get("calls", 0)),
        "input_tokens": _int(row.get("input_tokens", 0)),
        "output_tokens": _int(row.get("output_tokens", 0)),
    }


def _sorted(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda i: (-i["cost_usd"], -i["calls"], str(i["name"])))


def range_sums(
    store: Store, days: int, tz: tzinfo, dims: Sequence[str], now: float | None = None
) -> dict[tuple[Any, ...], Row]:
    dates = last_days(days, tz, now)
    edges = [edges_of(dates, tz)[0], edges_of(dates, tz)[-1]]
    with store.connection():
        return usage_sums(store, edges, dims)[0]


def sources(store: Store, days: int, tz: tzinfo, now: float | None = None) -> dict[str, Any]:
    """docs/analytics-api.md `/sources`: spend per source, largest first."""
    groups = range_sums(store, days, tz, ("source",), now)
    items = []
    for (name,), row in groups.items():
        item = _item(name, row)
        item["unpriced_calls"] = _int(row["unpriced_calls"])
        item["blocked_calls"] = _int(row["blocked_calls"])
        items.append(item)
    return {"items": _sorted(items)}


def models(store: Store, days: int, tz: tzinfo, now: float | None = None) -> dict[str, Any]:
    """docs/analytics-api.md `/models`: spend per model actually called (name null when no model was known)."""
    groups = range_sums(store, days, tz, ("model", "provider"), now)
    items = []
    for (name, provider), row in groups.items():
        item = _item(name or None, row)  # type: ignore[arg-type]
        item["provider"] = provider
        item["unpriced_calls"] = _int(row["unpriced_calls"])
        items.append(item)
    return {"items": _sorted(items)}


def by_tag(store: Store, days: int, tz: tzinfo, key: str, now: float | None = None) -> dict[str, Any]:
    """docs/analytics-api.md `/by-tag?key=`: spend per value of one tag key (calls without that tag are not counted)."""
    dates = last_days(days, tz, now)
    edges = edges_of(dates, tz)
    with store.connection():
        groups = tag_usage(store, edges[0], edges[-1], key)
    return {"key": key, "items": _sorted([_item(value, row) for value, row in groups.items()])}


# ---------------------------------------------------------------------------------------------- forecast


def month_days(today: date) -> list[date]:
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return day_list(first, (following - first).days)


def weighted_trend(values: Sequence[float]) -> tuple[float, float, float]:
    """(intercept, slope, residual sigma) of a weighted least-squares line through `values`.

    x is the day index (0 = oldest); weight of day i is i + 1 (recent days count more); sigma is the
    weighted RMS of the residuals.
    """
    import numpy as np  # here, not at import: the gateway imports this module for its cost watcher

    y = np.asarray(values, dtype=float)
    x = np.arange(len(y), dtype=float)
    w = x + 1.0
    slope, intercept = np.polyfit(x, y, 1, w=np.sqrt(w))  # polyfit weights multiply the residuals
    residuals = y - (intercept + slope * x)
    sigma = math.sqrt(float(np.sum(w * residuals**2) / np.sum(w)))
    return float(intercept), float(slope), sigma


@dataclass(frozen=True)
class Trend:
    """The trend label and the figures it was decided on (see `trend_of`)."""

    label: str  # "increasing" | "stable" | "decreasing"
    slope: float  # USD per day
    slope_se: float  # standard error of the slope
    level: float  # fitted daily spend at the middle of the window
    change_30d: float | None  # slope x 30 / level (None when the level is not positive)


def trend_of(values: Sequence[float]) -> Trend:
    """docs/analytics-api.md#how-the-figures-are-computed trend label for daily spends (oldest first), from the weighted fit of `weighted_trend`.

    "increasing" / "decreasing" only when both hold:
    - material: the fitted change over 30 days, `slope * 30`, is at least `TREND_MATERIAL` (10%) of the fitted
      level, the line's value at the middle of the window;
    - distinguishable from the noise: |slope| > `TREND_SIGMAS` (2) standard errors of the slope. The standard
      error is the weighted least-squares one, SE^2 = s^2 / sum(w (x - xw)^2), with s^2 = sum(w r^2) / (n - 2) the
      weighted residual variance and xw the weighted mean day (a two-sided t-test at about 95%).
    Otherwise (or with fewer than `TREND_MIN_DAYS` days, or no positive level) "stable".
    """
    n = len(values)
    if n < 2:
        return Trend("stable", 0.0, 0.0, values[0] if values else 0.0, None)
    import numpy as np

    y = np.asarray(values, dtype=float)
    x = np.arange(n, dtype=float)
    w = x + 1.0
    intercept, slope, _sigma = weighted_trend(values)
    level = intercept + slope * (n - 1) / 2
    residuals = y - (intercept + slope * x)
    centred = float(np.sum(w * (x - np.sum(w * x) / np.sum(w)) ** 2))
    se = math.sqrt(float(np.sum(w * residuals**2)) / (n - 2) / centred) if n > 2 else math.inf
    change = slope * TREND_DAYS / level if level > 0 else None
    label = "stable"
    if n >= TREND_MIN_DAYS and change is not None and abs(change) >= TREND_MATERIAL:
        if abs(slope) > TREND_SIGMAS * se:
            label = "increasing" if slope > 0 else "decreasing"
    return Trend(label, slope, se, level, change)


def forecast(
    store: Store, tz: tzinfo, budget_monthly_usd: float | None, now: float | None = None
) -> dict[str, Any]:
    """docs/analytics-api.md `/forecast`; see docs/analytics-api.md "Forecast" for the exact method."""
    today = local_today(tz, now)
    month = month_days(today)
    window = day_list(today - timedelta(days=FORECAST_WINDOW), FORECAST_WINDOW)
    span = day_list(min(window[0], month[0]), (today - min(window[0], month[0])).days + 1)
    with store.connection():
        per_day = usage_sums(store, edges_of(span, tz), measures=("cost_usd",))
        first = first_usage_bucket(store)
    spend = {d: groups.get((), {}).get("cost_usd", 0.0) for d, groups in zip(span, per_day, strict=True)}
    first_day = None if first is None else datetime.fromtimestamp(first, tz).date()
    history = [d for d in window if first_day is not None and d >= first_day]
    values = [spend[d] for d in history]
    mtd = sum(spend[d] for d in month if d <= today)
    remaining = len([d for d in month if d > today])
    slope = 0.0
    sigma = 0.0
    if len(values) >= 2:
        intercept, slope, sigma = weighted_trend(values)
        n = len(values)
        rest = sum(max(0.0, intercept + slope * (n + k)) for k in range(1, remaining + 1))
    elif len(values) == 1:
        rest = values[0] * remaining
    else:
        elapsed = (today - month[0]).days + 1
        rest = mtd / elapsed * remaining
    spread = RANGE_SIGMAS * sigma * math.sqrt(remaining)
    trend = trend_of(values)
    confidence = "low" if len(values) < 7 else "medium" if len(values) < 21 else "high"
    projected = mtd + rest
    return {
        "month": today.strftime("%Y-%m"),
        "month_to_date_usd": money(mtd),
        "projected_month_usd": money(projected),
        "low_usd": money(mtd + max(0.0, rest - spread)),
        "high_usd": money(projected + spread),
        "trend": trend.label,
        "slope_usd_per_day": money(slope),
        "slope_stderr_usd_per_day": money(trend.slope_se) if math.isfinite(trend.slope_se) else None,
        "change_30d_pct": None if trend.change_30d is None else round(trend.change_30d * 100, 1),
        "confidence": confidence,
        "days_of_history": len(values),
        "remaining_days": remaining,
        "budget_monthly_usd": budget_monthly_usd,
        "projected_over_budget": None if budget_monthly_usd is None else projected > budget_monthly_usd,
    }


# ---------------------------------------------------------------------------------------------- anomalies


def _metric_values(row: Row) -> dict[str, float]:
    return {
        "spend": row.get("cost_usd", 0.0),
        "calls": row.get("calls", 0.0),
        "tokens": row.get("input_tokens", 0.0) + row.get("output_tokens", 0.0),
    }


_ANOMALY_MEASURES = ("cost_usd", "calls", "input_tokens", "output_tokens")


def anomalies(store: Store, days: int, tz: tzinfo, now: float | None = None) -> dict[str, Any]:
    """docs/analytics-api.md `/anomalies` over the last `days` days (defined in docs/analytics-api.md "Anomalies")."""
    dates = last_days(days, tz, now)
    span = day_list(dates[0] - timedelta(days=ANOMALY_WINDOW), len(dates) + ANOMALY_WINDOW)
    with store.connection():
        per_day = usage_sums(store, edges_of(span, tz), ("source",), measures=_ANOMALY_MEASURES)
    series: dict[str | None, list[dict[str, float]]] = {}
    empty = {"spend": 0.0, "calls": 0.0, "tokens": 0.0}
    for index, groups in enumerate(per_day):
        for (source,), row in groups.items():
            for key in (source, None):
                days_of = series.setdefault(key, [dict(empty) for _ in span])
                for metric, value in _metric_values(row).items():
                    days_of[index][metric] += value
    found: list[dict[str, Any]] = []
    offset = ANOMALY_WINDOW
    for key, values in series.items():
        first = next((i for i, v in enumerate(values) if v["calls"] > 0), None)
        if first is None:
            continue
        for i in range(offset, len(span)):
            lo = max(first, i - ANOMALY_WINDOW)
            if i - lo < ANOMALY_MIN_HISTORY:
                continue
            for metric in ("spend", "calls", "tokens"):
                history = [values[j][metric] for j in range(lo, i)]
                mean = sum(history) / len(history)
                std = math.sqrt(sum((h - mean) ** 2 for h in history) / len(history))
                value = values[i][metric]
                if value > mean + ANOMALY_SIGMAS * std and value > mean:
                    found.append(
                        {
                            "date": span[i].isoformat(),
                            "source": key,
                            "metric": metric,
                            "value": money(value) if metric == "spend" else _int(value),
                            "mean": money(mean),
                            "std": money(std),
                        }
                    )
    found.sort(key=lambda a: (a["date"], a["source"] is not None, a["source"] or "", a["metric"]))
    return {"anomalies": found}


# ---------------------------------------------------------------------------------------------- what-if


@dataclass(frozen=True)
class Rates:
    """USD per token at a model's base (below long-context) tier."""

    provider: str
    model: str
    input: float
    output: float
    cache_read: float
    cache_write: float

    def cost(self, uncached: float, output: float, cache_read: float, cache_write: float) -> float:
        return (
            uncached * self.input
            + output * self.output
            + cache_read * self.cache_read
            + cache_write * self.cache_write
        )


_PROBE = 100_000  # tokens: below every long-context tier


def linear_rates(pricer: PricerLike, provider: str, model: str) -> Rates | None:
    """Per-token rates of a model from the Pricer (None when it cannot price the model)."""

    def per_token(usage: Usage) -> float | None:
        price = pricer.price(provider, model, usage)
        cost = getattr(price, "cost_usd", None)
        if not getattr(price, "priced", False) or cost is None:
            return None
        return float(Decimal(cost) / _PROBE)

    found = [
        per_token(Usage(input_tokens=_PROBE)),
        per_token(Usage(output_tokens=_PROBE)),
        per_token(Usage(input_tokens=_PROBE, cache_read_tokens=_PROBE)),
        per_token(Usage(input_tokens=_PROBE, cache_write_tokens=_PROBE)),
    ]
    if any(v is None for v in found):
        return None
    i, o, r, w = (float(v or 0.0) for v in found)
    return Rates(provider, model, i, o, r, w)


def rates_for(pricer: PricerLike, model: str, provider: str | None = None) -> Rates | None:
    """Rates of `model` with `provider`, else the first of openai, anthropic, google that prices it."""
    for candidate in [provider] if provider else ["openai", "anthropic", "google"]:
        if candidate is None:
            continue
        found = linear_rates(pricer, candidate, model)
        if found is not None:
            return found
    return None


def _tokens(row: Row, prefix: str = "") -> tuple[float, float, float, float]:
    read = row.get(f"{prefix}cache_read_tokens", 0.0)
    write = row.get(f"{prefix}cache_write_tokens", 0.0)
    uncached = max(0.0, row.get(f"{prefix}input_tokens", 0.0) - read - write)
    return uncached, row.get(f"{prefix}output_tokens", 0.0), read, write


def compare(
    store: Store,
    days: int,
    tz: tzinfo,
    pricer: PricerLike,
    from_model: str,
    to_model: str,
    *,
    to_provider: str | None = None,
    source: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """docs/analytics-api.md `/compare`: the calls of `from_model` (and `source`) over `days`, re-priced at `to_model`.

    Raises LookupError when `to_model` has no price. `what_if_usd` uses the base-tier rates of `to_model`
    (long-context surcharges are not modelled); `actual_usd` is the recorded cost.
    """
    groups = range_sums(store, days, tz, ("model", "provider", "source"), now)
    total = {"calls": 0.0, "cost_usd": 0.0, "unpriced_calls": 0.0}
    tokens = [0.0, 0.0, 0.0, 0.0]
    from_provider = None
    for (model, provider, src), row in groups.items():
        if model != from_model or (source is not None and src != source):
            continue
        from_provider = from_provider or provider
        for name in total:
            total[name] += row[name]
        for i, value in enumerate(_tokens(row)):
            tokens[i] += value
    rates = rates_for(pricer, to_model, to_provider or from_provider)
    if rates is None and to_provider is None:
        rates = rates_for(pricer, to_model)
    if rates is None:
        raise LookupError(f"to_model: no price known for {to_model!r}")
    what_if = rates.cost(*tokens)
    return {
        "from_model": from_model,
        "to_model": to_model,
        "to_provider": rates.provider,
        "source": source,
        "days": days,
        "calls": _int(total["calls"]),
        "unpriced_calls": _int(total["unpriced_calls"]),
        "input_tokens": _int(tokens[0] + tokens[2] + tokens[3]),
        "output_tokens": _int(tokens[1]),
        "actual_usd": money(total["cost_usd"]),
        "what_if_usd": money(what_if),
        "delta_usd": money(what_if - total["cost_usd"]),
    }


# ---------------------------------------------------------------------------------------------- recommendations


def recommendations(
    store: Store, days: int, tz: tzinfo, pricer: PricerLike, now: float | None = None
) -> dict[str, Any]:
    """Advice from the rollups, ranked by estimated monthly saving (each kind in docs/intelligence.md "Recommendations")."""
    groups = range_sums(store, days, tz, ("source", "model", "provider"), now)
    scale = 30.0 / days
    found: list[dict[str, Any]] = []
    rate_cache: dict[tuple[str, str], Rates | None] = {}

    def rates(provider: str, model: str) -> Rates | None:
        if (provider, model) not in rate_cache:
            rate_cache[(provider, model)] = linear_rates(pricer, provider, model)
        return rate_cache[(provider, model)]

    found.extend(_right_sizing_advice(store, days, tz, pricer, scale))
    for (source, model, provider), row in groups.items():
        if not model:
            continue
        waste = row["waste_tokens"]
        model_rates = rates(provider, model)
        if waste > 0 and model_rates is not None:
            cost = waste * model_rates.input
            found.append(
                {
                    "kind": "waste",
                    "source": source,
                    "model": model,
                    "provider": provider,
                    "title": f"Trim whitespace, filler and repeated instructions in {source}'s prompts to {model} "
                    f"({_int(waste):,} tokens in {days} days)",
                    "saving_usd_month": money(cost * scale),
                    "evidence": {"waste_tokens": _int(waste), "waste_usd": money(cost), "days": days},
                    "link": "/api/calls?" + urlencode({"source": source, "model": model}),
                }
            )
    found.extend(_overallocation_advice(store, days, tz))
    found.extend(_token_intelligence_advice(store, days, tz, pricer, groups, scale))
    found.sort(key=lambda r: (-r["saving_usd_month"], r["kind"], r["source"] or "", r["model"] or ""))
    _name_apart(found)
    return {"days": days, "recommendations": found}


def recommendation_text(r: dict[str, Any]) -> str:
    """The line a person reads for a recommendation: its title (what, for which source and model) and the
    amount a month, written by `format_usd`."""
    if r["kind"] == "output_overallocation":
        return f"{r['title']}: {format_usd(0.0)} a month (billing is on actual output; frees budget headroom)"
    return f"{r['title']}: about {format_usd(r['saving_usd_month'])} a month"


def _name_apart(found: list[dict[str, Any]]) -> None:
    """Give each recommendation its `summary` (`recommendation_text`); two that would read alike (the same
    source and model under two providers, say) get the provider, then their rank, in the title."""
    for step in ("provider", "rank"):
        seen: dict[str, list[dict[str, Any]]] = {}
        for r in found:
            seen.setdefault(recommendation_text(r), []).append(r)
        clashes = [group for group in seen.values() if len(group) > 1]
        if not clashes:
            break
        for group in clashes:
            for r in group:
                extra = r.get("provider") if step == "provider" else f"#{found.index(r) + 1}"
                if extra:
                    r["title"] += f" [{extra}]"
    for r in found:
        r["summary"] = recommendation_text(r)


def _as_pricer(pricer: PricerLike) -> Pricer:
    """A `tokenlens.pricing.Pricer` (what the token-intelligence views need): `pricer` or the default one."""
    from tokenlens.pricing import Pricer

    return pricer if isinstance(pricer, Pricer) else Pricer()


def _right_sizing_advice(
    store: Store, days: int, tz: tzinfo, pricer: PricerLike, scale: float
) -> list[dict[str, Any]]:
    """Right-sizing advice from the `/right-sizing` view (same simple calls, cheaper model and what-if cost),
    for a source and model with enough rated calls that are mostly simple."""
    from tokenlens import insights

    found: list[dict[str, Any]] = []
    for item in insights.right_sizing(store, days, tz, _as_pricer(pricer))["items"]:
        rated, simple, to_model = item["calls"], item["simple_calls"], item["suggested_model"]
        what_if = item["simple_cost_on_suggested_usd"]
        if to_model is None or what_if is None or item["saving_usd"] <= 0:
            continue
        if rated < RIGHT_SIZE_MIN_CALLS or simple / rated < RIGHT_SIZE_SIMPLE_SHARE:
            continue
        source, model = item["source"], item["model"]
        found.append(
            {
                "kind": "right_sizing",
                "source": source,
                "model": model,
                "provider": item["provider"],
                "title": f"Route simple calls of {source} from {model} to {to_model} ({simple} of {rated} calls "
                "simple)",
                "why": item["why"],
                "saving_usd_month": money(item["saving_usd"] * scale),
                "evidence": {
                    "simple_calls": simple,
                    "rated_calls": rated,
                    "simple_share": item["simple_share"],
                    "simple_cost_usd": item["simple_cost_usd"],
                    "what_if_usd": what_if,
                    "to_model": to_model,
                    "why": item["why"],
                    "days": days,
                },
                "link": "/api/usage/compare?"
                + urlencode({"from_model": model, "to_model": to_model, "source": source, "days": days}),
            }
        )
    return found


def _overallocation_advice(store: Store, days: int, tz: tzinfo) -> list[dict[str, Any]]:
    """Lower-max_tokens advice from the `/output-efficiency` view (the same calls and figures), for a source and
    model with enough calls that use under OVERALLOCATION_UTILISATION of what they ask for."""
    from tokenlens import insights

    found: list[dict[str, Any]] = []
    for item in insights.output_efficiency(store, days, tz)["items"]:
        if item["calls"] < OVERALLOCATION_MIN_CALLS or item["utilisation"] >= OVERALLOCATION_UTILISATION:
            continue
        source, model = item["source"], item["model"]
        found.append(
            {
                "kind": "output_overallocation",
                "source": source,
                "model": model,
                "title": f"Lower max_tokens for {source} on {model}",
                # billed on actual output: the gain is budget headroom (reservations), not spend
                "saving_usd_month": 0.0,
                "evidence": {
                    **{k: item[k] for k in ("calls", "avg_max_tokens", "avg_output_tokens", "utilisation")},
                    "suggested_max_tokens": item["suggested_max_tokens"],
                    "days": days,
                },
                "link": "/api/calls?" + urlencode({"source": source, "model": model}),
            }
        )
    return found


def _token_intelligence_advice(
    store: Store, days: int, tz: tzinfo, pricer: PricerLike, groups: dict[Any, Row], scale: float
) -> list[dict[str, Any]]:
    """Prompt-caching opportunities and history bloat, from the per-call analysis (tokenlens.insights)."""
    from tokenlens import insights

    found: list[dict[str, Any]] = []
    caching = insights.caching_opportunities(store, days, tz, _as_pricer(pricer))
    for item in caching["items"]:
        if not item.get("saving_usd"):
            continue
        sources = item["sources"]
        found.append(
            {
                "kind": "prompt_caching",
                "source": sources[0] if len(sources) == 1 else None,
                "model": item["model"],
                "provider": item["provider"],
                "title": f"Cache the {item['prefix_tokens']:,}-token prefix resent by {', '.join(sources)} "
                f"on {item['model']}",
                "saving_usd_month": money(item["saving_usd"] * scale),
                "evidence": {**item, "days": days},
                "link": f"/api/usage/caching-opportunities?days={days}",
            }
        )
    input_cost: dict[str, float] = {}
    models_of: dict[str, dict[str, float]] = {}
    for (source, model, _provider), row in groups.items():
        input_cost[source] = input_cost.get(source, 0.0) + row.get("input_cost_usd", 0.0)
        if model:
            spent = models_of.setdefault(source, {})
            spent[model] = spent.get(model, 0.0) + row.get("input_cost_usd", 0.0)
    history = insights.conversation_efficiency(store, days, tz)
    for item in history["items"]:
        if not item["bloated"]:
            continue
        # trimming history down to the bloat threshold saves that share of the source's input spend
        excess = item["history_share"] - history["threshold"]
        spent = models_of.get(item["source"], {})
        models = sorted(spent, key=lambda m: (-spent[m], m))
        shown = ", ".join(models[:3]) + (f" and {len(models) - 3} more" if len(models) > 3 else "")
        found.append(
            {
                "kind": "history_bloat",
                "source": item["source"],
                "model": models[0] if len(models) == 1 else None,
                "models": models,
                "title": f"Summarise or trim the conversation history {item['source']} resends"
                + (f" to {shown}" if shown else "")
                + f" ({item['history_share']:.0%} of its input)",
                "saving_usd_month": money(excess * input_cost.get(item["source"], 0.0) * scale),
                "evidence": {k: item[k] for k in ("calls", "history_share", "avg_input_tokens")}
                | {"days": days},
                "link": f"/api/usage/conversation-efficiency?days={days}",
            }
        )
    return found


# ---------------------------------------------------------------------------------------------- digest


def digest(
    store: Store,
    tz: tzinfo,
    pricer: PricerLike,
    budget_monthly_usd: float | None,
    now: float | None = None,
    top: int = 5,
) -> dict[str, Any]:
    """The weekly digest: the 7 complete days ending yesterday, compared with the 7 before."""
    today = local_today(tz, now)
    week = day_list(today - timedelta(days=7), 7)
    before = day_list(today - timedelta(days=14), 7)
    with store.connection():
        this_week = usage_sums(store, [day_start(week[0], tz), day_start(today, tz)], ("source", "model"))[0]
        last_week = usage_sums(store, [day_start(before[0], tz), day_start(week[0], tz)])[0]
    by_source: dict[str, Row] = {}
    by_model: dict[str, Row] = {}
    total: Row = {}
    for (source, model), row in this_week.items():
        for target in (by_source.setdefault(source, {}), by_model.setdefault(model, {}), total):
            for name, value in row.items():
                target[name] = target.get(name, 0.0) + value
    spend = total.get("cost_usd", 0.0)
    previous = last_week.get((), {}).get("cost_usd", 0.0)
    waste_usd = 0.0
    waste_by: list[dict[str, Any]] = []
    for (source, model), row in this_week.items():
        if row.get("waste_tokens") and model:
            found = rates_for(pricer, model)
            cost = row["waste_tokens"] * (found.input if found else 0.0)
            waste_usd += cost
            waste_by.append(
                {"source": source, "model": model, "tokens": _int(row["waste_tokens"]), "usd": money(cost)}
            )
    waste_by.sort(key=lambda w: (-w["tokens"], -w["usd"], w["source"], w["model"]))
    now_value = now_ts(now)
    week_anomalies = [
        a
        for a in anomalies(store, 8, tz, now)["anomalies"]
        if week[0].isoformat() <= a["date"] <= week[-1].isoformat()
    ]
    return {
        "week_start": week[0].isoformat(),
        "week_end": week[-1].isoformat(),
        "generated_at": datetime.fromtimestamp(now_value, tz).isoformat(timespec="seconds"),
        "spend_usd": money(spend),
        "previous_week_usd": money(previous),
        "change_pct": None if previous <= 0 else round((spend - previous) / previous * 100, 1),
        "calls": _int(total.get("calls", 0)),
        "top_sources": _sorted([_item(k, v) for k, v in by_source.items()])[:top],
        "top_models": _sorted([_item(k or "", v) for k, v in by_model.items()])[:top],
        "waste": {"tokens": _int(total.get("waste_tokens", 0)), "usd": money(waste_usd), "top": waste_by[:3]},
        "forecast": forecast(store, tz, budget_monthly_usd, now),
        "anomalies": week_anomalies,
        "recommendations": recommendations(store, 30, tz, pricer, now)["recommendations"][:3],
    }
