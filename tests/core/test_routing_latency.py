"""tokenlens.latency: moving averages from records, the choice among a group's members, the store figures
(percentiles from histograms of 16 bins per doubling)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tokenlens.latency import LatencyTracker, histogram_percentile, latency_items, percentile
from tokenlens.records import CallRecord
from tokenlens.store.rollups import bin_value, latency_bin


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    model: str, ms: float, *, stream: bool = False, status: int = 200, provider: str = "openai"
) -> CallRecord:
    ok = status < 400
    return CallRecord(
        id=f"c{random.random()}",
        ts=0.0,
        provider=provider,
        endpoint="/v1/chat/completions",
        model=model,
        stream=stream,
        status=status,
        outcome="ok" if ok else "error",
        latency_ms=ms * 3 if stream else ms,
        ttft_ms=ms if stream and ok else None,
    )


def simulate(
    tracker: LatencyTracker, clock: Clock, latency: dict[str, float], calls: int, rng: random.Random
) -> Counter[str]:
    """Calls one after the other; each call's record reaches the tracker before the next call."""
    chosen: Counter[str] = Counter()
    for _ in range(calls):
        model = tracker.choose(list(latency), False, rng)
        chosen[model] += 1
        clock.now += latency[model] / 1000
        tracker([record(model, latency[model])])
    return chosen


def test_most_calls_go_to_the_fast_member_and_return_after_recovery() -> None:
    clock, rng = Clock(), random.Random(7)
    tracker = LatencyTracker(clock=clock)
    simulate(tracker, clock, {"fast": 10, "slow": 300}, 10, rng)  # warm-up
    slowed = simulate(tracker, clock, {"fast": 10, "slow": 300}, 200, rng)
    assert slowed["fast"] / 200 >= 0.9, slowed
    simulate(tracker, clock, {"fast": 10, "slow": 10}, 40, rng)
    recovered = simulate(tracker, clock, {"fast": 10, "slow": 10}, 200, rng)
    assert recovered["slow"] / 200 >= 0.3, recovered


def test_streams_use_time_to_first_token_and_failures_count_as_slow() -> None:
    tracker = LatencyTracker()
    tracker([record("a", 50, stream=True), record("b", 400), record("b", 0, status=503)])
    assert tracker.estimate("a", stream=True) == 50 and tracker.estimate("a", stream=False) == 50
    assert tracker.estimate("b", stream=False) is not None and tracker.estimate("b", stream=False) >= 2500
    tracker([record("c", 10, status=400)])  # a client error says nothing about speed
    assert tracker.estimate("c", stream=False) is None
    live = {item["model"]: item for item in tracker.snapshot()}
    assert live["b"]["error_rate"] == pytest.approx(0.5) and live["a"]["ttft_avg_ms"] == 50


def test_unmeasured_members_are_tried_first() -> None:
    clock = Clock()
    tracker = LatencyTracker(clock=clock)
    tracker([record("a", 10)])
    assert tracker.choose(["a", "b"], False, random.Random(1)) == "b"


def test_store_figures() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([], 50) is None
    records = [record("m", float(ms)) for ms in range(1, 101)] + [record("m", 5, status=500)]
    (item,) = latency_items(records)
    assert item["calls"] == 101 and item["error_rate"] == pytest.approx(1 / 101, abs=1e-4)
    # percentiles come from histograms of 16 bins per doubling: within 2^(1/32) - 1 (2.2%) of the exact ones
    bound = 2 ** (1 / 32) - 1
    assert item["p50_ms"] == pytest.approx(50.0, rel=bound) and item["p99_ms"] == pytest.approx(
        99.0, rel=bound
    )


def test_histogram_percentiles_stay_within_the_bound() -> None:
    """Against the exact interpolated percentile (written here), on spread, clustered and gapped samples."""
    bound = 2 ** (1 / 32) - 1
    rng = random.Random(3)
    samples = [
        [rng.lognormvariate(6, 1.5) for _ in range(500)],
        [rng.uniform(200, 4000) for _ in range(97)],
        [3.0, 50_000.0],  # the median halfway across a wide gap
        [0.0, 0.0, 10.0, 1e7],
        [rng.choice([1.0, 2.0, 4.0, 1024.0]) for _ in range(64)],  # bin boundaries
        [7.5],
    ]
    for values in samples:
        ordered = sorted(values)
        counts: Counter[int] = Counter(latency_bin(v) for v in values)
        for q in (0, 1, 50, 95, 99, 100):
            rank = (len(ordered) - 1) * q / 100
            lo = int(rank)
            hi = min(lo + 1, len(ordered) - 1)
            want = ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)
            got = histogram_percentile(counts, q)
            assert got is not None and abs(got - want) <= bound * want * (1 + 1e-9), (
                values[:5],
                q,
                got,
                want,
            )
    assert histogram_percentile({}, 50) is None


def test_latency_bins_take_any_duration() -> None:
    assert latency_bin(1.0) == 0 and latency_bin(2.0) == 16 and latency_bin(0.5) == -16
    assert bin_value(0) == pytest.approx(2 ** (1 / 32)) and bin_value(latency_bin(0.0)) == 0.0
    for odd in (0.0, -5.0, float("nan"), 1e-12):
        assert bin_value(latency_bin(odd)) == 0.0
    assert bin_value(latency_bin(float("inf"))) == bin_value(latency_bin(1e15)) > 1e12
