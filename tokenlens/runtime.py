"""The composition root: every long-lived service of a gateway process, built in one function.

`build_runtime` constructs them in the order they depend on each other and registers the record listeners (what
the writer thread calls with each committed batch) in one ordered list. `Runtime.start` starts the background
services; `Runtime.close` stops everything in reverse order and flushes every queued record. The daemon, the
tests and the benchmarks all build a gateway's parts through it, so what runs is what is read here.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenlens import price_data
from tokenlens.alerts import CostWatcher
from tokenlens.app import AppDeps, PassthroughCounts
from tokenlens.bus import EventBus, RecordFanout
from tokenlens.config import Settings, SettingsHolder
from tokenlens.config_sync import ConfigSync
from tokenlens.controls import Clock, Ledger
from tokenlens.latency import LatencyTracker
from tokenlens.metering import RecordBuilder
from tokenlens.metrics import Metrics
from tokenlens.ratelimits import RateLimitBook
from tokenlens.records import CallRecord
from tokenlens.shared_ledger import SharedLedger
from tokenlens.store import RecordWriter, open_store
from tokenlens.webhooks import WebhookDispatcher

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """A built gateway process: `deps` (what the addons and the web app receive) and the services behind it."""

    deps: AppDeps
    fanout: RecordFanout
    cost_watcher: CostWatcher
    started: bool = False

    def start(self) -> Runtime:
        """Start the background services: config sync (shared stores), webhooks, the cost watcher."""
        if self.deps.config_sync is not None:
            self.deps.config_sync.start()
        self.deps.webhooks.start()
        self.cost_watcher.start()
        self.started = True
        return self

    def close(self) -> bool:
        """Stop everything in reverse order; True when every queued record was written."""
        deps = self.deps
        if deps.config_sync is not None and self.started:
            deps.config_sync.stop()
        written = deps.writer.stop()
        deps.ledger.close()  # a shared ledger gives its unused leases back
        if self.started:
            self.cost_watcher.stop()
            deps.webhooks.wait_idle(2.0)
            deps.webhooks.stop()
        deps.store.close()
        return written


def build_runtime(
    settings: Settings,
    home: Path,
    config_file: Path | None = None,
    *,
    shared: bool = False,
    web_port: int = 0,
    clock: Clock = time.time,
    prepare: Callable[[Any], CallRecord] | None = None,
    rng: random.Random | None = None,
    readonly: bool = False,
) -> Runtime:
    """Every service of one gateway process, in order. `shared`: other gateways use the same store (a
    PostgreSQL store always is). `prepare` turns what the proxy submits into a record (default: the record
    builder, which prices and analyses each call); `clock` is the budgets' clock; `readonly`: the store is
    opened read-only (SQLite's `mode=ro`) and nothing is journalled."""
    holder = SettingsHolder(settings)
    price_data.load(home)  # prices `tokenlens prices update` kept, else the bundled ones
    store = open_store(settings.storage.url, home, readonly=readonly)
    shared = shared or store.kind == "postgresql"
    config_sync = ConfigSync(store, holder) if store.kind == "postgresql" else None
    if config_sync is not None:
        config_sync.poll()  # sections changed through any gateway's API win over this file's
    bus = EventBus()
    fanout = RecordFanout(bus)
    # The spill journal lives in the data directory (beside a SQLite file); a read-only store keeps none.
    journal: dict[str, Any] = {"journal": None} if readonly else {"home": home}
    writer: RecordWriter[Any] = RecordWriter(  # replays its journal before anything reads the store
        store,
        prepare or RecordBuilder(holder, home),
        fanout,
        store_bodies=lambda: holder.get().storage.store_bodies,
        **journal,
    )
    ledger = (
        SharedLedger(holder, store, clock, publish=bus.publish)
        if shared
        else Ledger(holder, clock, publish=bus.publish)
    )
    ledger.load(store)  # spend rebuilt from the store before anything is served
    rate_limits = RateLimitBook(bus.publish)
    latency = LatencyTracker()
    passthrough = PassthroughCounts()
    metrics = Metrics()
    metrics.count_passthrough(lambda: dict(passthrough.by_reason))
    webhooks = WebhookDispatcher(bus, lambda: holder.get().webhooks)
    cost_watcher = CostWatcher(holder, store, bus, home)
    # What the writer thread calls with each committed batch, in this order, before the live feed.
    fanout.listeners = (ledger.settle, rate_limits, latency, metrics.observe, cost_watcher.notify)
    deps = AppDeps(
        settings=holder,
        store=store,
        writer=writer,
        bus=bus,
        home=home,
        config_path=config_file if config_file is not None else home / "config.yaml",
        ledger=ledger,
        rate_limits=rate_limits,
        latency=latency,
        metrics=metrics,
        webhooks=webhooks,
        config_sync=config_sync,
        passthrough=passthrough,
        shared=shared,
        web_port=web_port,
        rng=rng or random.Random(),
    )
    return Runtime(deps, fanout, cost_watcher)
