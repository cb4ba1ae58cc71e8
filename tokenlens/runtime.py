"""The composition root: every long-lived service of a gateway process, built in one function.

`build_runtime` constructs them in the order they depend on each other and registers the record listeners (what
the writer thread calls with each committed batch) in one ordered list. `Runtime.start` starts the background
services; `Runtime.close` stops everything in reverse order and flushes every queued record. The daemon, the
tests and the benchmarks all build a gateway's parts through it, so what runs is what is read here.

Two ways to store calls: inline (the writer thread builds each record with its analyses and inserts it: tests
and tools), or, for the daemon (`analysis_process=True`), a spool thread that only meters each call and appends
it to the spool, and an analysis process (`tokenlens.analysis`) that analyses and stores it, so the proxy's
interpreter never runs the per-call analysis, the inserts or the rollups.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenlens import price_data
from tokenlens.alerts import CostWatcher
from tokenlens.analyses import AnalysisContext
from tokenlens.analysis import record_of_raw, spool_lock
from tokenlens.app import AppDeps, CallSink, PassthroughCounts
from tokenlens.bus import EventBus, RecordFanout
from tokenlens.config import Settings, SettingsHolder
from tokenlens.config_sync import ConfigSync
from tokenlens.controls import Clock, Ledger
from tokenlens.exchange import Exchange
from tokenlens.latency import LatencyTracker
from tokenlens.metering import RecordBuilder
from tokenlens.metrics import Metrics
from tokenlens.ratelimits import RateLimitBook
from tokenlens.records import CallRecord, describe_failure
from tokenlens.settlement import FeedFlag, Settlements
from tokenlens.shared_ledger import SharedLedger
from tokenlens.store import RecordWriter, Store, open_store
from tokenlens.store.spool import RawCall, SpoolWriter, backlog, spool_dir
from tokenlens.webhooks import WebhookDispatcher

log = logging.getLogger(__name__)


_WITHOUT_PSYCOPG2 = (
    "import runpy, sys; sys.modules['psycopg2'] = None; "
    "runpy.run_module('tokenlens.analysis', run_name='__main__', alter_sys=True)"
)


class AnalysisProcess:
    """The analysis process of one gateway process (`python -m tokenlens.analysis`), started again if it ends
    before it is asked to stop (what it had not stored is still in the spool). Its reports come back on a pipe
    (`tokenlens.settlement`), each line handed to `receive` by a reader thread."""

    def __init__(
        self,
        home: Path,
        config_file: Path,
        worker: str | None,
        *,
        postgresql: bool = True,
        receive: Callable[[bytes], None] | None = None,
        run_start: str = "",
    ) -> None:
        # With a SQLite store, psycopg2 (which peewee imports when it can: ~10 MiB of libpq and its libraries)
        # is kept out of the process.
        start = ["-m", "tokenlens.analysis"] if postgresql else ["-c", _WITHOUT_PSYCOPG2]
        self.command = [sys.executable, *start, "--data-dir", str(home)]
        self.command += ["--config", str(config_file)] + (["--worker", worker] if worker else [])
        self.command += ["--run-start", run_start] if run_start else []
        # Two malloc arenas instead of one per thread and core: a few MiB less of freed memory kept back.
        self.env = {"MALLOC_ARENA_MAX": "2", **os.environ}
        self.receive = receive
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._readers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the process, with a pipe for its reports when someone receives them (lock held)."""
        if self.receive is None:
            return subprocess.Popen(self.command, env=self.env)
        read_end, write_end = os.pipe()
        try:
            process = subprocess.Popen(
                [*self.command, "--report-fd", str(write_end)], env=self.env, pass_fds=(write_end,)
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        reader = threading.Thread(
            target=self._read, args=(read_end,), name="tokenlens-settlement", daemon=True
        )
        reader.start()
        self._readers.append(reader)
        return process

    def _read(self, fd: int) -> None:
        assert self.receive is not None
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                try:
                    self.receive(line)
                except Exception:
                    log.exception("a report of the analysis process could not be taken in")

    def start(self) -> None:
        with self._lock:
            self.process = self._spawn()
        threading.Thread(target=self._watch, name="tokenlens-analysis-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                process = self.process
            if process is None:
                return
            code = process.wait()
            if self._stopping.wait(1.0):
                return
            log.error("the analysis process ended (code %s); starting it again", code)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                self.process = self._spawn()

    def stop(self, timeout: float = 60.0) -> bool:
        """Ask it to store what is left and end; True when it did within `timeout` (its last reports taken
        in)."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is None:
            return True
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            finished = process.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            log.error(
                "the analysis process did not finish in %.0f s; the spool is read at the next start", timeout
            )
            process.kill()
            process.wait()
            finished = False
        for reader in self._readers:
            reader.join(5.0)
        return finished


@dataclass
class Runtime:
    """A built gateway process: `deps` (what the addons and the web app receive) and the services behind it."""

    deps: AppDeps
    fanout: RecordFanout
    cost_watcher: CostWatcher
    analysis: AnalysisProcess | None = None
    settlements: Settlements | None = None
    started: bool = False

    def start(self) -> Runtime:
        """Start the background services: the analysis process, config sync (shared stores), webhooks, the
        cost watcher."""
        if self.analysis is not None:
            self.analysis.start()
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
        if self.analysis is not None:
            written = self.analysis.stop() and written
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
    analysis_process: bool = False,
    worker: str | None = None,
) -> Runtime:
    """Every service of one gateway process, in order. `shared`: other gateways use the same store (a
    PostgreSQL store always is). `prepare` turns what the proxy submits into a record (default: the record
    builder, which prices and analyses each call); `clock` is the budgets' clock; `readonly`: the store is
    opened read-only (SQLite's `mode=ro`) and nothing is journalled; `analysis_process`: calls go through the
    spool to an analysis process (the daemon), else they are analysed and stored by the writer thread;
    `worker`: this process's index among `daemon --workers N` (each has a spool of its own)."""
    if analysis_process:
        _fewer_malloc_arenas()
    holder = SettingsHolder(settings)
    price_data.load(home)  # prices `tokenlens prices update` kept, else the bundled ones
    store = open_store(settings.storage.url, home, readonly=readonly)
    shared = shared or store.kind == "postgresql"
    config_sync = ConfigSync(store, holder) if store.kind == "postgresql" else None
    if config_sync is not None:
        config_sync.poll()  # sections changed through any gateway's API win over this file's
    bus = EventBus()
    fanout = RecordFanout(bus)
    spool = spool_dir(home, worker)
    run_start = f"{time.time_ns():020d}"  # the spool segments this run writes are named from here on
    builder: RecordBuilder | None = None  # with an analysis process: meters the calls with deferred analyses
    writer: CallSink | None = None  # else the writer thread builds and stores every record
    if analysis_process:
        # What a writer left in its spill journal (the store refused it for long) is stored before anything
        # reads the store (the ledger); a writer replays it when it starts.
        RecordWriter(store, lambda record: record, home=home).stop()
        builder = RecordBuilder(holder, home)
    else:
        # The spill journal lives in the data directory (beside a SQLite file); a read-only store keeps none.
        journal: dict[str, Any] = {"journal": None} if readonly else {"home": home}
        writer = RecordWriter(  # replays its journal before anything reads the store
            store,
            prepare or RecordBuilder(holder, home, AnalysisContext(holder)),
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
    if builder is not None:  # and from calls the last run spooled but did not store
        ledger.settle(spooled_not_stored(spool, store, builder))
    rate_limits = RateLimitBook(bus.publish)
    latency = LatencyTracker()
    passthrough = PassthroughCounts()
    metrics = Metrics()
    metrics.count_passthrough(lambda: dict(passthrough.by_reason))
    webhooks = WebhookDispatcher(bus, lambda: holder.get().webhooks)
    cost_watcher = CostWatcher(holder, store, bus, home)
    # What the writer thread calls with each committed batch, in this order, before the live feed; with an
    # analysis process, the calls it meters are settled from its reports (all but the metrics listener, the
    # metrics summed there).
    fanout.listeners = (ledger.settle, rate_limits, latency, metrics.observe, cost_watcher.notify)
    settlements: Settlements | None = None
    if builder is not None:
        settlements = Settlements(
            (ledger.settle, rate_limits, latency, cost_watcher.notify), metrics, bus, home
        )
        feed = FeedFlag(spool, bus)
        bus.on_subscribers = feed.update
        holder.on_change(feed.settings_changed)  # a webhook on `block` events
        writer = SpoolWriter(
            spool, builder, fanout, expect=settlements.expect, input_rate=builder.waste_input_rate
        )
    assert writer is not None
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
    analysis = (
        AnalysisProcess(
            home,
            deps.config_path,
            worker,
            postgresql=store.kind == "postgresql",
            receive=settlements.receive,
            run_start=run_start,
        )
        if settlements is not None
        else None
    )
    return Runtime(deps, fanout, cost_watcher, analysis, settlements)


INJECTION_MODULE = "tokenlens.guardrails.injection"
PRELOAD_THREAD = "tokenlens-preload"


def preload_injection_detector(settings: Settings, updated: Set[str] | None = None) -> None:
    """Load the injection detector (numpy, its model and compiled rules: about half a second) in a thread of
    its own (`PRELOAD_THREAD`) as soon as it is on, instead of in the first request it scans. The gateway calls
    this at start and on every change of the settings (`updated`: the sections that changed)."""
    if updated is not None and "guardrails" not in updated:
        return
    if not settings.guardrails.injection_detection.enabled or INJECTION_MODULE in sys.modules:
        return
    threading.Thread(
        target=importlib.import_module, args=(INJECTION_MODULE,), name=PRELOAD_THREAD, daemon=True
    ).start()


M_ARENA_MAX = -8  # glibc's mallopt parameter


def _fewer_malloc_arenas(arenas: int = 2) -> None:
    """At most `arenas` malloc arenas for the threads started from now on (glibc: one per thread and core by
    default, each keeping memory its thread freed): the daemon's gateway process, as MALLOC_ARENA_MAX does for
    its analysis process. Elsewhere nothing."""
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas)
    except (AttributeError, OSError):
        pass


def spooled_not_stored(
    directory: Path, store: Store, builder: Callable[[Exchange], CallRecord]
) -> list[CallRecord]:
    """The metered records of the calls in the spool that the store does not hold yet (at start, once no
    analysis process reads the spool: an earlier one still finishing is waited for); raw calls are metered
    here with `builder`."""
    with spool_lock(directory) as free:
        if not free:
            log.error(
                "an analysis process still reads %s; its calls may be counted late in budgets", directory
            )
            return []
        calls = {
            call.exchange.id if isinstance(call, RawCall) else call.record.id: call
            for call in backlog(directory)
        }  # a line read twice counts once
    stored = store.existing_ids(calls)
    records = []
    for call_id, call in calls.items():
        if call_id in stored:
            continue
        if isinstance(call, RawCall):
            try:
                records.append(record_of_raw(builder, call.exchange))
            except Exception as exc:
                log.error("metering spooled call %s failed (%s)", call_id, describe_failure(exc))
        else:
            records.append(call.record)
    return records
