"""Prometheus metrics (`GET /metrics`) fed from committed call records, on a registry of their own.

`Metrics.observe` is a record listener (`tokenlens.runtime`): it runs in the writer thread and only updates
counters in memory. An analysis process sums its calls per series (`increments`) and the gateway adds the sums
(`Metrics.apply`). Each app gets its own `CollectorRegistry`, so several apps in one process never collide.

Label sets are bounded (docs/analytics-api.md, "Protection"): models and sources come from requests, so a client could
otherwise create a series per value. Each label keeps its first `MAX_LABEL_VALUES` distinct values (cut to
`MAX_LABEL_LENGTH` characters) and counts every later one as `other`; at most `MAX_CALL_LABEL_SETS`
(provider, model, source) combinations are kept, later ones count as (provider, `other`, `other`). Counters
cannot move between series, so the first values seen are the ones kept; totals over all labels stay exact.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from tokenlens.records import SettledFacts

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


@dataclass
class CallTotals:
    """What a batch adds to the series of one (provider, model, source): counts by outcome, tokens by kind,
    cost (None: no priced call), unpriced calls, savings, blocks by gate, latencies and times to first token
    (seconds)."""

    calls: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    cost: float | None = None
    unpriced: int = 0
    saved: float = 0.0
    blocks: dict[str, int] = field(default_factory=dict)
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)


Increments = dict[tuple[str, str | None, str], CallTotals]


def increments(records: Iterable[SettledFacts]) -> Increments:
    """A batch of metered calls summed per (provider, model, source), with raw labels (`Metrics.apply` bounds
    them): what an analysis process reports for the gateway's metrics."""
    totals: Increments = {}
    for r in records:
        key = (r.provider, r.model, r.source)
        t = totals.get(key)
        if t is None:
            t = totals[key] = CallTotals()
        t.calls[r.outcome] = t.calls.get(r.outcome, 0) + 1
        for kind in TOKEN_KINDS:
            value = getattr(r, f"{kind}_tokens") or 0
            if value > 0:  # a negative count (a bad import) would make the counter raise
                t.tokens[kind] = t.tokens.get(kind, 0) + value
        if r.cost_usd is not None:
            t.cost = (t.cost or 0.0) + max(0.0, r.cost_usd)
        elif r.outcome == "ok" or r.input_tokens or r.output_tokens:
            t.unpriced += 1
        if r.saved_usd:
            t.saved += max(0.0, r.saved_usd)
        if r.outcome == "blocked":
            blocked_by = r.blocked_by or "unknown"
            t.blocks[blocked_by] = t.blocks.get(blocked_by, 0) + 1
        if r.latency_ms is not None and r.outcome != "blocked":
            t.latency.append(r.latency_ms / 1000)
        if r.ttft_ms is not None:
            t.ttft.append(r.ttft_ms / 1000)
    return totals


def increments_to_json(totals: Increments) -> list[Any]:
    return [[*key, dataclasses.asdict(t)] for key, t in totals.items()]


def increments_from_json(data: object) -> Increments:
    """`increments_to_json`'s output read back; ValueError for anything else (counters only grow: no negative
    amount, nothing but numbers)."""
    if not isinstance(data, list):
        raise ValueError("not a list")
    totals: Increments = {}
    for item in data:
        if not isinstance(item, list) or len(item) != 4 or not isinstance(item[3], dict):
            raise ValueError("not a series' totals")
        provider, model, source, fields = item
        if not isinstance(provider, str) or not isinstance(source, str) or not isinstance(model, str | None):
            raise ValueError("labels are not strings")
        t = CallTotals(
            calls=_counts(fields.get("calls")),
            tokens={k: v for k, v in _counts(fields.get("tokens")).items() if k in TOKEN_KINDS},
            cost=None if fields.get("cost") is None else _amount(fields["cost"]),
            unpriced=int(_amount(fields.get("unpriced", 0))),
            saved=_amount(fields.get("saved", 0.0)),
            blocks=_counts(fields.get("blocks")),
            latency=[_amount(v) for v in _list(fields.get("latency"))],
            ttft=[_amount(v) for v in _list(fields.get("ttft"))],
        )
        totals[provider, model, source] = t
    return totals


def _amount(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ValueError("not an amount")
    return value


def _list(value: object) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("not a list")
    return value


def _counts(value: object) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return {str(k): int(_amount(v)) for k, v in value.items()}


class Metrics:
    """Counters and histograms of the calls recorded since start."""

    def __init__(self, registry: CollectorRegistry | None = None, bounds: LabelBounds | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.bounds = bounds or LabelBounds()
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()  # the spool thread and the settlement reader both add
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

    def observe(self, records: Sequence[SettledFacts]) -> None:
        """Count a batch of metered calls (a record listener: never blocks, no I/O)."""
        self.apply(increments(records))

    def apply(self, totals: Increments) -> None:
        """Add a batch's totals (`increments`): one `inc` a series, not one a call (each takes the series'
        lock); the labels bounded here, in the order the batches come."""
        with self._lock:
            self._apply(totals)

    def _apply(self, totals: Increments) -> None:
        bound = self.bounds.value
        child = self._child
        for (provider, model, source), t in totals.items():
            labels = self.bounds.call(provider, model, source)
            for outcome, count in t.calls.items():
                child(self.calls, *labels, bound("outcome", outcome)).inc(count)
            for kind, count in t.tokens.items():
                child(self.tokens, *labels, kind).inc(count)
            if t.cost is not None:
                child(self.cost, *labels).inc(t.cost)
            if t.unpriced:
                child(self.unpriced, *labels).inc(t.unpriced)
            if t.saved:
                child(self.saved, *labels).inc(t.saved)
            for blocked_by, count in t.blocks.items():
                child(self.blocks, bound("blocked_by", blocked_by), labels[2]).inc(count)
            if t.latency:
                observe = child(self.latency, labels[0], labels[1]).observe
                for seconds in t.latency:
                    observe(seconds)
            if t.ttft:
                observe = child(self.ttft, labels[0], labels[1]).observe
                for seconds in t.ttft:
                    observe(seconds)

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
