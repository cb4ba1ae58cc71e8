"""Prometheus metrics (`GET /metrics`) fed from committed call records, on a registry of their own.

`Metrics.observe` is a record listener (`tokenlens.runtime`): it runs in the writer thread and only updates
counters in memory. Each app gets its own `CollectorRegistry`, so several apps in one process never collide.

Label sets are bounded (docs/analytics-api.md, "Protection"): models and sources come from requests, so a client could
otherwise create a series per value. Each label keeps its first `MAX_LABEL_VALUES` distinct values (cut to
`MAX_LABEL_LENGTH` characters) and counts every later one as `other`; at most `MAX_CALL_LABEL_SETS`
(provider, model, source) combinations are kept, later ones count as (provider, `other`, `other`). Counters
cannot move between series, so the first values seen are the ones kept; totals over all labels stay exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from tokenlens.records import CallRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write", "reasoning")
OTHER = "other"
MAX_LABEL_VALUES = 50  # distinct values kept per label name; later ones are `other`
MAX_CALL_LABEL_SETS = 200  # distinct (provider, model, source) kept; later ones are (provider, other, other)
MAX_LABEL_LENGTH = 100  # characters of a label value; longer values are cut and end with "…"


@dataclass
class LabelBounds:
    """Maps label values onto a bounded set: first come, first kept; the rest is `OTHER`."""

    max_values: int = MAX_LABEL_VALUES
    max_sets: int = MAX_CALL_LABEL_SETS
    max_length: int = MAX_LABEL_LENGTH
    values: dict[str, set[str]] = field(default_factory=dict)
    sets: set[tuple[str, str, str]] = field(default_factory=set)

    def value(self, name: str, raw: str | None) -> str:
        """The label value to use for `raw` under the label `name`."""
        text = raw or ""
        if len(text) > self.max_length:
            text = text[: self.max_length - 1] + "…"
        kept = self.values.setdefault(name, set())
        if text in kept or text == OTHER:
            return text
        if len(kept) >= self.max_values:
            return OTHER
        kept.add(text)
        return text

    def call(self, provider: str, model: str | None, source: str) -> tuple[str, str, str]:
        """The (provider, model, source) labels of a call."""
        labels = (self.value("provider", provider), self.value("model", model), self.value("source", source))
        if labels in self.sets:
            return labels
        if len(self.sets) >= self.max_sets:
            return (labels[0], OTHER, OTHER)
        self.sets.add(labels)
        return labels


class Metrics:
    """Counters and histograms of the calls recorded since start."""

    def __init__(self, registry: CollectorRegistry | None = None, bounds: LabelBounds | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.bounds = bounds or LabelBounds()
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        labels = ("provider", "model", "source")
        self.calls = Counter(
            "tokenlens_calls", "Calls recorded", (*labels, "outcome"), registry=self.registry
        )
        self.tokens = Counter("tokenlens_tokens", "Tokens by kind", (*labels, "kind"), registry=self.registry)
        self.cost = Counter("tokenlens_cost_usd", "Priced cost in USD", labels, registry=self.registry)
        self.saved = Counter(
            "tokenlens_saved_usd", "Cost saved by cached answers in USD", labels, registry=self.registry
        )
        self.unpriced = Counter(
            "tokenlens_unpriced_calls", "Calls without a known price", labels, registry=self.registry
        )
        self.blocks = Counter(
            "tokenlens_blocks", "Calls blocked by a gate", ("blocked_by", "source"), registry=self.registry
        )
        self.latency = Histogram(
            "tokenlens_latency_seconds",
            "Call latency (upstream answer complete)",
            ("provider", "model"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "tokenlens_ttft_seconds",
            "Time to first token of streamed answers",
            ("provider", "model"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: the label sets are bounded, and prometheus_client checks and locks
        on every `labels` call."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, records: Sequence[CallRecord]) -> None:
        """Count a committed batch (a record listener: never blocks, no I/O). The counters' increments are
        summed over the batch first: one `inc` a series, not one a call (each takes the series' lock)."""
        bound = self.bounds.value
        child = self._child
        counts: dict[tuple[Counter, tuple[str, ...]], float] = {}

        def add(metric: Counter, labels: tuple[str, ...], amount: float = 1.0) -> None:
            counts[metric, labels] = counts.get((metric, labels), 0.0) + amount

        for r in records:
            labels = self.bounds.call(r.provider, r.model, r.source)
            model = labels[1]
            add(self.calls, (*labels, bound("outcome", r.outcome)))
            for kind in TOKEN_KINDS:
                value = getattr(r, f"{kind}_tokens") or 0
                if value > 0:  # a negative count (a bad import) would make the counter raise
                    add(self.tokens, (*labels, kind), value)
            if r.cost_usd is not None:
                add(self.cost, labels, max(0.0, r.cost_usd))
            elif r.outcome == "ok" or r.input_tokens or r.output_tokens:
                add(self.unpriced, labels)
            if r.saved_usd:
                add(self.saved, labels, max(0.0, r.saved_usd))
            if r.outcome == "blocked":
                add(self.blocks, (bound("blocked_by", r.blocked_by or "unknown"), labels[2]))
            if r.latency_ms is not None and r.outcome != "blocked":
                child(self.latency, labels[0], model).observe(r.latency_ms / 1000)
            if r.ttft_ms is not None:
                child(self.ttft, labels[0], model).observe(r.ttft_ms / 1000)
        for (metric, series), amount in counts.items():
            child(metric, *series).inc(amount)

    def count_passthrough(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export requests on provider routes that are not calls (preflights, non-API paths, WebSocket
        upgrades), by reason, read from `counts` at each scrape; the reasons are a fixed small set."""
        self.registry.register(_PassthroughCollector(counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PassthroughCollector(Collector):
    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "tokenlens_passthrough_requests",
            "Requests on provider routes that are not calls, forwarded and not recorded",
            labels=("reason",),
        )
        for reason, count in sorted(self.counts().items()):
            family.add_metric((reason,), count)
        yield family
