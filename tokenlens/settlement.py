"""What an analysis process reports to its gateway for each batch of raw calls it stored, and the gateway's side.

A gateway spools most calls raw (`tokenlens.store.spool`): the analysis process meters and prices them. Once a
batch is stored it writes one report line to a pipe the gateway reads (`report_line`): per call the facts the
gateway's own books need (`SettledCall`: budgets' ledger, rate-limit alerts, latency, the cost watcher), the
batch's metric totals (`tokenlens.metrics.increments`), and the records, as the API shows them, of the event
types someone on the gateway's bus wants (the live feed, a `block` webhook: the gateway names them in a flag
file, `FeedFlag`).

`Settlements` is the gateway's side: the spool thread `expect`s each raw call, the reader thread `receive`s each
report. A call is settled once: only calls still expected count (a report read again after the analysis process
restarted, or one of calls an earlier run spooled, which the gateway settled from the spool when it started,
changes nothing); the batch's metric totals are used when every call of the report was expected, else the
metrics are summed again from the calls that were. Until a call is settled its budget reservation holds.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tokenlens import price_data
from tokenlens.bus import EventBus
from tokenlens.exchange import Exchange
from tokenlens.metrics import Metrics, increments, increments_from_json, increments_to_json
from tokenlens.records import CallRecord, SettledFacts

log = logging.getLogger(__name__)

FEED_FLAG = "feed"
FEED_TYPES = ("call", "block")
# Calls awaiting their report, at most (the oldest then dropped: their reservations end with the ledger's grace
# period and their spend is counted from the store at the next start).
MAX_EXPECTED = 100_000
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


class SettledCall(NamedTuple):
    """One call of a report: what `tokenlens.records.SettledFacts` reads, as a row of `SETTLED_FIELDS`."""

    id: str
    ts: float
    provider: str
    model: str | None
    source: str
    outcome: str
    status: int | None
    stream: bool
    latency_ms: float | None
    ttft_ms: float | None
    cost_usd: float | None
    saved_usd: float | None
    blocked_by: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int


SETTLED_FIELDS = SettledCall._fields


def event_type(outcome: object) -> str:
    """The live feed's event for a call: `block` for a blocked one, else `call`."""
    return "block" if outcome == "blocked" else "call"


def report_line(records: Sequence[CallRecord], *, totals: bool, feed: Collection[str] = ()) -> bytes:
    """The report of a stored batch: `calls` (one row a call), `metrics` (the batch's totals, when `totals`:
    the analysis process knows no call of it can have been reported before) and `records` (those whose event
    type is in `feed`)."""
    report: dict[str, Any] = {"calls": [[getattr(r, name) for name in SETTLED_FIELDS] for r in records]}
    if totals:
        report["metrics"] = increments_to_json(increments(records))
    if feed:
        report["records"] = [r.to_dict() for r in records if event_type(r.outcome) in feed]
    unknown = [[r.provider, r.response_model or r.model] for r in records if "pricing" in r.details]
    if unknown:  # models the price data does not know, for the gateway's `/api/status`
        report["unknown"] = unknown
    return _encode(report).encode("utf-8") + b"\n"


Listener = Callable[[Sequence[SettledFacts]], None]
CostHooks = tuple[Callable[[float | None], None], ...]


class Settlements:
    """The gateway's side of the reports (see the module docstring)."""

    def __init__(
        self, listeners: Sequence[Listener], metrics: Metrics, bus: EventBus, home: Path | None = None
    ) -> None:
        self.listeners = tuple(listeners)
        self.metrics = metrics
        self.bus = bus
        # where `prices update` keeps newer price data (the gateway's budget estimates use it)
        self.home = home
        self.settled = 0
        self.dropped = 0  # calls no longer expected (more than MAX_EXPECTED waited)
        self._expected: dict[str, CostHooks] = {}
        self._lock = threading.Lock()

    def expect(self, exchange: Exchange) -> None:
        """The spool thread is about to spool this call raw: its report settles it (and tells its cost
        hooks)."""
        hooks, exchange.on_cost = tuple(exchange.on_cost), []
        with self._lock:
            if len(self._expected) >= MAX_EXPECTED:  # no report for this long: the analysis process is stuck
                self._expected.pop(next(iter(self._expected)))
                self.dropped += 1
                if self.dropped == 1:
                    log.error("%d calls await their report: the oldest are no longer expected", MAX_EXPECTED)
            self._expected[exchange.id] = hooks

    def pending(self) -> int:
        with self._lock:
            return len(self._expected)

    def receive(self, line: bytes) -> None:
        """One report line (a malformed one is logged and dropped: its calls stay reserved until the ledger's
        grace period ends)."""
        try:
            report = json.loads(line)
            rows = report["calls"]
            calls = [SettledCall._make(row) for row in rows]
            if not all(isinstance(call.id, str) for call in calls):
                raise ValueError("a call without its id")
            totals = increments_from_json(report["metrics"]) if "metrics" in report else None
        except (ValueError, TypeError, KeyError) as exc:
            log.error("an unreadable report from the analysis process (%s); dropped", type(exc).__name__)
            return
        price_data.refresh(self.home)  # at most once a second
        for unknown in report.get("unknown") or []:
            if isinstance(unknown, list) and len(unknown) == 2 and all(isinstance(v, str) for v in unknown):
                price_data.note_unknown(unknown[0], unknown[1])
        with self._lock:
            expected = self._expected
            settled = [(call, expected.pop(call.id)) for call in calls if call.id in expected]
        if not settled:
            return
        known = [call for call, _ in settled]
        self.settled += len(known)
        for listener in self.listeners:
            try:
                listener(known)
            except Exception:
                log.exception("settlement listener %r failed", listener)
        try:
            self.metrics.apply(
                totals if totals is not None and len(known) == len(calls) else increments(known)
            )
        except Exception:
            log.exception("metrics of %d settled calls failed", len(known))
        for call, hooks in settled:
            for hook in hooks:
                try:
                    hook(call.cost_usd)
                except Exception:
                    log.exception("cost hook of call %s failed", call.id)
        records = report.get("records")
        if isinstance(records, list):
            ids = {call.id for call in known}
            for record in records:
                if isinstance(record, dict) and record.get("id") in ids:
                    self.bus.publish(event_type(record.get("outcome")), record)


class FeedFlag:
    """The flag file that asks the analysis process for the records of the calls someone on the bus wants
    (the live feed, a webhook on `block`): there, naming the event types, while anyone wants them. `update` is
    called on every change of the subscribers, and after a change of the webhooks (`settings_changed`)."""

    def __init__(self, directory: Path, bus: EventBus) -> None:
        self.path = directory / FEED_FLAG
        self.bus = bus
        self._lock = threading.Lock()
        self._written: str | None = None
        self.update()

    def update(self) -> None:
        wanted = ",".join(kind for kind in FEED_TYPES if self.bus.wanted(kind))
        with self._lock:
            if wanted == self._written:
                return
            try:
                if wanted:
                    self.path.write_text(wanted, "ascii")
                else:
                    self.path.unlink(missing_ok=True)
                self._written = wanted
            except OSError as exc:
                log.error("the live feed's flag %s could not be changed (%s)", self.path, exc)

    def settings_changed(self, settings: object, updated: frozenset[str]) -> None:
        """A settings callback: the webhooks' events may have changed. The file is written on a thread of its
        own: the config watcher applies settings on the proxy's event loop, which never waits on a file."""
        if "webhooks" in updated:
            threading.Thread(target=self.update, name="tokenlens-feed-flag", daemon=True).start()


def feed_wanted(directory: Path) -> frozenset[str]:
    """The event types whose records the gateway wants (the analysis process asks once a batch)."""
    try:
        text = (directory / FEED_FLAG).read_text("ascii")
    except (OSError, UnicodeDecodeError):
        return frozenset()
    return frozenset(kind for kind in text.split(",") if kind in FEED_TYPES)
