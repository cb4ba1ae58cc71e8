"""tokenlens.latency: moving averages from records, the choice among a group's members, the store figures."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tokenlens.latency import LatencyTracker, latency_items, percentile, tracker_of
from tokenlens.records import CallRecord


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


def test_tracker_is_registered_once() -> None:
    listeners: list = []
    first = tracker_of(listeners)
    assert tracker_of(listeners) is first and listeners == [first]


def test_store_figures() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([], 50) is None
    records = [record("m", float(ms)) for ms in range(1, 101)] + [record("m", 5, status=500)]
    (item,) = latency_items(records)
    assert item["calls"] == 101 and item["error_rate"] == pytest.approx(1 / 101, abs=1e-4)
    assert item["p50_ms"] == pytest.approx(50.0) and item["p99_ms"] == pytest.approx(99.0, abs=0.1)
