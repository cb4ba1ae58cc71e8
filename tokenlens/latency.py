"""Recent latency per model for latency groups, and the latency figures of `GET /api/usage/latency`.

The tracker is a record listener: the writer thread feeds it every committed call. Per model it keeps an
exponential moving average of the time to first token of streamed calls and of the total latency of the
others. A failed call (5xx, 429, no answer) counts as a slow one, so a failing member loses its traffic.

Choosing among a group's members: a member never measured is tried first; every `explore_every`-th call of a
group, and any call when a member was not tried for `refresh_s` seconds, goes to the member tried least
recently (so estimates stay fresh and a member that recovered is noticed); otherwise the call goes to one of
the members within `tie_ratio` of the lowest average (a random one of them, so equally fast members share the
load). A sample below half the average replaces it, so a recovered member gets its traffic back at once.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tokenlens.records import CallRecord

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

    def __call__(self, records: Sequence[CallRecord]) -> None:
        for record in records:
            self.observe(record)

    def observe(self, record: CallRecord) -> None:
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


def tracker_of(listeners: list[Callable[[Sequence[CallRecord]], None]]) -> LatencyTracker:
    """The tracker registered in `deps.record_listeners` (created and registered on first use)."""
    found = next((x for x in listeners if isinstance(x, LatencyTracker)), None)
    if found is None:
        found = LatencyTracker()
        listeners.append(found)
    return found


# --- figures from the store ---------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_items(records: Iterable[CallRecord]) -> list[dict[str, Any]]:
    """p50/p95/p99 latency, time to first token and error rate per provider and model."""
    groups: dict[tuple[str, str], list[CallRecord]] = {}
    for record in records:
        if record.outcome in ("blocked", "cached"):
            continue
        groups.setdefault((record.provider, record.model or ""), []).append(record)
    items = []
    for (provider, model), calls in sorted(groups.items()):
        latencies = sorted(c.latency_ms for c in calls if c.latency_ms is not None)
        ttfts = sorted(c.ttft_ms for c in calls if c.stream and c.ttft_ms is not None)
        errors = sum(1 for c in calls if c.outcome == "error")
        items.append(
            {
                "provider": provider,
                "model": model or None,
                "calls": len(calls),
                "p50_ms": _round(percentile(latencies, 50)),
                "p95_ms": _round(percentile(latencies, 95)),
                "p99_ms": _round(percentile(latencies, 99)),
                "ttft_p50_ms": _round(percentile(ttfts, 50)),
                "ttft_p95_ms": _round(percentile(ttfts, 95)),
                "error_rate": round(errors / len(calls), 4),
                "fallbacks": sum(1 for c in calls if c.fallback_from),
            }
        )
    return items
