"""Prometheus metrics: label sets stay bounded whatever models and sources the requests carry (issue 17, #7)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenlens.metrics import MAX_CALL_LABEL_SETS, MAX_LABEL_LENGTH, MAX_LABEL_VALUES, Metrics
from tokenlens.records import CallRecord

HOSTILE_CALLS = 3000


def record(index: int, model: str, source: str, **fields: object) -> CallRecord:
    values: dict[str, object] = {
        "input_tokens": 10 + index % 7,
        "output_tokens": 3,
        "cost_usd": 0.001,
        "priced": True,
        "latency_ms": 120.0,
        "ttft_ms": 40.0,
    }
    values.update(fields)
    return CallRecord(
        id=f"c{index}",
        ts=1.0,
        provider="openai",
        endpoint="/v1/chat/completions",
        model=model,
        source=source,
        **values,  # type: ignore[arg-type]
    )


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name].append((dict(sample.labels), sample.value))
    return found


def test_thousands_of_models_and_sources_keep_the_series_bounded_and_the_totals_exact() -> None:
    metrics = Metrics()
    records = [
        record(i, f"model-{i}-" + "m" * (i % 300), f"source-{i}", blocked_by=f"gate-{i}")
        if i % 3
        else record(i, f"model-{i}", f"source-{i}", outcome="blocked", blocked_by=f"gate-{i}")
        for i in range(HOSTILE_CALLS)
    ]
    for start in range(0, len(records), 100):  # the writer hands over batches
        metrics.observe(records[start : start + 100])
    text = metrics.render().decode()
    found = samples(text)

    calls = found["tokenlens_calls_total"]
    assert sum(value for _, value in calls) == HOSTILE_CALLS
    blocked = sum(1 for r in records if r.outcome == "blocked")
    assert sum(value for labels, value in calls if labels["outcome"] == "blocked") == blocked
    assert sum(value for _, value in found["tokenlens_blocks_total"]) == blocked
    inputs = sum(r.input_tokens for r in records)
    assert (
        sum(value for labels, value in found["tokenlens_tokens_total"] if labels["kind"] == "input") == inputs
    )
    cost = sum(value for _, value in found["tokenlens_cost_usd_total"])
    assert cost == pytest.approx(HOSTILE_CALLS * 0.001, rel=1e-9)
    latency_count = sum(value for _, value in found["tokenlens_latency_seconds_count"])
    assert latency_count == sum(1 for r in records if r.outcome != "blocked")

    for name in ("model", "source"):
        seen = {labels[name] for labels, _ in calls}
        assert len(seen) <= MAX_LABEL_VALUES + 1
        assert "other" in seen
        assert max(len(value) for value in seen) <= MAX_LABEL_LENGTH
    assert (
        len({labels["blocked_by"] for labels, _ in found["tokenlens_blocks_total"]}) <= MAX_LABEL_VALUES + 1
    )
    label_sets = {(labels["provider"], labels["model"], labels["source"]) for labels, _ in calls}
    assert len(label_sets) <= MAX_CALL_LABEL_SETS + 1
    assert len(calls) <= 2 * (MAX_CALL_LABEL_SETS + 1)  # ok and blocked outcomes only
    assert len(text) < 1_000_000, f"/metrics is {len(text)} bytes"


def test_the_first_values_keep_their_own_series_and_later_ones_count_as_other() -> None:
    metrics = Metrics()
    kept = [record(i, f"m{i}", "agent") for i in range(MAX_LABEL_VALUES)]
    late = [record(1000 + i, f"late-{i}", "agent") for i in range(5)]
    metrics.observe(kept + late + [record(2000, "m0", "agent")])
    calls = samples(metrics.render().decode())["tokenlens_calls_total"]
    by_model = {labels["model"]: value for labels, value in calls}
    assert by_model["m0"] == 2  # a kept value goes on being counted under its own name
    assert by_model["m1"] == 1
    assert by_model["other"] == 5
    assert not any(name.startswith("late-") for name in by_model)


def test_a_long_label_value_is_cut() -> None:
    metrics = Metrics()
    metrics.observe([record(1, "x" * 5000, "s" * 5000)])
    (labels, value), *_ = samples(metrics.render().decode())["tokenlens_calls_total"]
    assert value == 1
    assert len(labels["model"]) == len(labels["source"]) == MAX_LABEL_LENGTH
    assert labels["model"].startswith("x" * 50) and labels["model"].endswith("…")


def test_a_batch_counts_as_its_calls_one_by_one() -> None:
    """Counter increments are summed per series over a batch: the exposition must be what observing each call
    alone gives (costs that are exact in binary, so the sums cannot differ by rounding)."""
    calls = [
        record(
            n,
            ("gpt-4o", "gpt-4o-mini", "o3")[n % 3],
            ("a", "b")[n % 2],
            cost_usd=(0.5, 0.25, None)[n % 5 % 3],
        )
        for n in range(60)
    ]
    calls += [
        record(60, "gpt-4o", "a", outcome="blocked", blocked_by="budget", cost_usd=0.0, input_tokens=0),
        record(61, "gpt-4o", "b", outcome="error", cost_usd=None, input_tokens=0, output_tokens=0),
        record(62, "gpt-4o", "a", saved_usd=0.125, cache_read_tokens=64, reasoning_tokens=8),
    ]
    batched, one_by_one = Metrics(), Metrics()
    batched.observe(calls)
    for call in calls:
        one_by_one.observe([call])
    expected = samples(one_by_one.render().decode())
    found = samples(batched.render().decode())
    created = [name for name in expected if name.endswith("_created")]
    for name in created:
        del expected[name], found[name]
    assert {k: sorted(v, key=repr) for k, v in found.items()} == {
        k: sorted(v, key=repr) for k, v in expected.items()
    }  # the same series and values (the order of the series aside)
    assert sum(value for _, value in found["tokenlens_calls_total"]) == 63
