"""Recent latency per model for latency groups, and the latency figures of `GET /api/usage/latency`.

The tracker is a record listener: the writer thread feeds it every committed call. Per model it keeps an
exponential moving average of the time to first token of streamed calls and of the total latency of the
others. A failed call (5xx, 429, no answer) counts as a slow one, so a failing member loses its traffic.

Choosing among a group's members: a member never measured is tried first; every `explore_every`-th call of a
group, and any call when a member was not tried for `refresh_s` seconds, goes to the member tried least
recently (so estimates stay fresh and a member that recovered is noticed); otherwise the call goes to one of
the members within `tie_ratio` of the lowest average (a random one of them, so equally fast members share the
load). A sample below half the average replaces it, so a recovered member gets its traffic back at once.

The figures of `GET /api/usage/latency` over a period (`latency_report`) come from the latency rollups of the
store: exact counts, percentiles from histograms within 2.2% of the exact ones (see "figures from the store").
"""

from __future__ import annotations

import math
import random
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from tokenlens.records import CallRecord, SettledFacts
from tokenlens.store.reads import latency_rollups
from tokenlens.store.rollups import LATENCY, LATENCY_BINS, bin_value, latency_increments

if TYPE_CHECKING:
    from tokenlens.store import Store

ERROR_PENALTY_MS = 5_000.0


@dataclass
class _Average:
    value: float | None = None
    samples: int = 0
    updated: float = 0.0

    def add(self, sample: float, alpha: float, now: float) -> None:
        if self.value is None or sample < self.value / 2:
            self.value = sample
        else:
            self.value = alpha * sample + (1 - alpha) * self.value
        self.samples += 1
        self.updated = now


@dataclass
class _ModelStats:
    provider: str
    ttft: _Average
    total: _Average
    errors: _Average  # moving error rate (0..1)


class LatencyTracker:
    """Moving averages per model, fed from committed records; thread-safe (the writer thread writes)."""

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        explore_every: int = 20,
        refresh_s: float = 10.0,
        tie_ratio: float = 1.2,
        tie_ms: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.alpha, self.explore_every, self.refresh_s = alpha, explore_every, refresh_s
        self.tie_ratio, self.tie_ms = tie_ratio, tie_ms
        self.clock = clock
        self._stats: dict[str, _ModelStats] = {}
        self._tried: dict[str, float] = {}
        self._calls: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    # --- feeding (writer thread) -----------------------------------------------------------------------

    def __call__(self, records: Sequence[SettledFacts]) -> None:
        for record in records:
            self.observe(record)

    def observe(self, record: SettledFacts) -> None:
        if record.outcome in ("blocked", "cached") or not record.model:
            return
        failed = record.outcome == "error" and (record.status is None or record.status >= 429)
        if record.outcome == "error" and not failed:
            return  # a client error says nothing about the model's speed
        self.add(
            record.model,
            record.provider,
            stream=bool(record.stream),
            ms=None if failed else (record.ttft_ms if record.stream else record.latency_ms),
        )

    def add(self, model: str, provider: str, *, stream: bool, ms: float | None) -> None:
        """One call's figure (None: the call failed)."""
        now = self.clock()
        with self._lock:
            stats = self._stats.get(model)
            if stats is None:
                stats = self._stats[model] = _ModelStats(provider, _Average(), _Average(), _Average())
            stats.provider = provider
            stats.errors.add(0.0 if ms is not None else 1.0, self.alpha, now)
            average = stats.ttft if stream else stats.total
            if ms is None:
                ms = max(ERROR_PENALTY_MS, 2 * (average.value or 0.0))
            average.add(ms, self.alpha, now)

    # --- reading (proxy thread) ------------------------------------------------------------------------

    def estimate(self, model: str, stream: bool) -> float | None:
        """The moving average used for a call (streamed: time to first token), in ms; None when unknown."""
        stats = self._stats.get(model)
        if stats is None:
            return None
        first, second = (stats.ttft, stats.total) if stream else (stats.total, stats.ttft)
        return first.value if first.value is not None else second.value

    def choose(self, models: Sequence[str], stream: bool, rng: random.Random) -> str:
        """The member a call of the group goes to (see the module docstring)."""
        now = self.clock()
        key = tuple(models)
        count = self._calls[key] = self._calls.get(key, 0) + 1
        tried = {m: self._tried.get(m, -math.inf) for m in models}
        estimates = [(self.estimate(m, stream), m) for m in models]
        unknown = [m for e, m in estimates if e is None and now - tried[m] > 0.5]
        known = [(e, m) for e, m in estimates if e is not None]
        if unknown:
            pick = rng.choice(unknown)
        elif not known:
            pick = rng.choice(list(models))
        elif count % self.explore_every == 0 or any(now - t > self.refresh_s for t in tried.values()):
            pick = min(models, key=lambda m: tried[m])
        else:
            best = min(e for e, _ in known)
            pick = rng.choice([m for e, m in known if e <= best * self.tie_ratio + self.tie_ms])
        self._tried[pick] = now
        return pick

    def snapshot(self) -> list[dict[str, Any]]:
        """The live figures used for routing, per model."""
        with self._lock:
            items = sorted(self._stats.items())
        return [
            {
                "model": model,
                "provider": s.provider,
                "ttft_avg_ms": _round(s.ttft.value),
                "latency_avg_ms": _round(s.total.value),
                "error_rate": _round(s.errors.value, 4),
                "samples": s.ttft.samples + s.total.samples,
            }
            for model, s in items
        ]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- figures from the store ---------------------------------------------------------------------------------
#
# The percentiles of `GET /api/usage/latency` come from the latency rollups' histograms (16 bins per doubling,
# `tokenlens.store.rollups`): the q-th percentile is interpolated, as `percentile` does between the two values
# around rank (n - 1) q / 100, between the values of the bins holding those two ranks, each bin read as its
# geometric middle. A duration is within 2^(1/32) - 1 (2.2%) of its bin's middle, so the interpolation of the
# two is within 2.2% of the exact percentile (plus the rounding to 0.001 ms); durations under about a
# nanosecond count as 0. Call, error and fallback counts are exact.


def _interpolated(count: int, q: float, value_at: Callable[[int], float]) -> float | None:
    """The linear-interpolated percentile (q in 0..100) of `count` ascending values, the i-th (from 0) being
    `value_at(i)`."""
    if count <= 0:
        return None
    k = (count - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    low = value_at(lo)
    return low + (value_at(hi) - low) * (k - lo)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of an ascending list."""
    return _interpolated(len(sorted_values), q, sorted_values.__getitem__)


def histogram_percentile(counts: Mapping[int, float], q: float) -> float | None:
    """The percentile (q in 0..100) of the durations counted per latency bin (`{bin: count}`), within 2.2% of
    the exact one (see above)."""
    ordered = sorted((b, int(n)) for b, n in counts.items() if n > 0)
    cumulative = list(accumulate(n for _, n in ordered))

    def value_at(rank: int) -> float:
        return bin_value(ordered[bisect_right(cumulative, rank)][0])

    return _interpolated(cumulative[-1] if cumulative else 0, q, value_at)


def _items(
    counts: Mapping[tuple[Any, ...], Sequence[float]], bins: Mapping[tuple[Any, ...], Sequence[float]]
) -> list[dict[str, Any]]:
    """The items of `GET /api/usage/latency` from the sums of the latency rollups by (provider, model), and by
    (provider, model, bin)."""
    histograms: dict[tuple[str, str], tuple[dict[int, float], dict[int, float]]] = {}
    for (provider, model, index), (latency_calls, ttft_calls) in bins.items():
        latencies, ttfts = histograms.setdefault((provider, model), ({}, {}))
        latencies[int(index)] = latency_calls
        ttfts[int(index)] = ttft_calls
    items = []
    for (provider, model), (calls, errors, fallbacks) in sorted(counts.items()):
        if calls <= 0:
            continue
        latencies, ttfts = histograms.get((provider, model), ({}, {}))
        items.append(
            {
                "provider": provider,
                "model": model or None,
                "calls": int(calls),
                "p50_ms": _round(histogram_percentile(latencies, 50)),
                "p95_ms": _round(histogram_percentile(latencies, 95)),
                "p99_ms": _round(histogram_percentile(latencies, 99)),
                "ttft_p50_ms": _round(histogram_percentile(ttfts, 50)),
                "ttft_p95_ms": _round(histogram_percentile(ttfts, 95)),
                "error_rate": round(errors / calls, 4),
                "fallbacks": int(fallbacks),
            }
        )
    return items


def latency_items(records: Iterable[CallRecord]) -> list[dict[str, Any]]:
    """p50/p95/p99 latency, time to first token and error rate per provider and model of some calls, as
    `latency_report` gives them (the same histograms)."""
    increments = latency_increments(records)
    sums: list[dict[tuple[Any, ...], list[float]]] = []
    for rollup in (LATENCY, LATENCY_BINS):
        summed: dict[tuple[Any, ...], list[float]] = {}
        for key, values in increments[rollup.name].items():
            row = summed.setdefault(key[1:], [0.0] * len(rollup.measures))
            for i, name in enumerate(rollup.measures):
                row[i] += values.get(name, 0.0)
        sums.append(summed)
    return _items(*sums)


def latency_report(store: Store, days: int, tz: tzinfo) -> list[dict[str, Any]]:
    """p50/p95/p99 latency, time to first token and error rate per provider and model over the last `days`
    calendar days in `tz` (today included), from the latency rollups (blocked and cached calls not counted)."""
    from tokenlens.insights import window

    start, end = window(days, tz)
    counts, bins = latency_rollups(store, start, end)
    return _items(counts, bins)
