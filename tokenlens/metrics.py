"""Prometheus metrics (`GET /metrics`) fed from committed call records, on a registry of their own.

`Metrics.observe` is a `deps.record_listeners` callable (runs in the writer thread, only updates counters in
memory). Each app gets its own `CollectorRegistry`, so several apps in one process never collide.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tokenlens.records import CallRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write", "reasoning")


class Metrics:
    """Counters and histograms of the calls recorded since start."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
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

    def observe(self, records: Sequence[CallRecord]) -> None:
        """Count a committed batch (a record listener: never blocks, no I/O)."""
        for r in records:
            model = r.model or ""
            labels = (r.provider, model, r.source)
            self.calls.labels(*labels, r.outcome).inc()
            for kind in TOKEN_KINDS:
                value = getattr(r, f"{kind}_tokens") or 0
                if value:
                    self.tokens.labels(*labels, kind).inc(value)
            if r.cost_usd is not None:
                self.cost.labels(*labels).inc(max(0.0, r.cost_usd))
            elif r.outcome == "ok" or r.input_tokens or r.output_tokens:
                self.unpriced.labels(*labels).inc()
            if r.saved_usd:
                self.saved.labels(*labels).inc(max(0.0, r.saved_usd))
            if r.outcome == "blocked":
                self.blocks.labels(r.blocked_by or "unknown", r.source).inc()
            if r.latency_ms is not None and r.outcome != "blocked":
                self.latency.labels(r.provider, model).observe(r.latency_ms / 1000)
            if r.ttft_ms is not None:
                self.ttft.labels(r.provider, model).observe(r.ttft_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
