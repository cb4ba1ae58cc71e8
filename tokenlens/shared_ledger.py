"""Budgets, quotas and call caps that hold across several gateways sharing one store (issue 11, docs/storage.md).

The store keeps one `ledger_bucket` row per cap bucket (scope, day or month, period key): the spend and calls
recorded so far, and the headroom leased to gateways (`reserved_*`). A gateway takes a lease with one atomic,
conditional statement

    UPDATE ledger_bucket SET reserved_usd = reserved_usd + x ... WHERE spent_usd + reserved_usd + x <= limit

and admits calls locally against it (no database round trip while the lease lasts). A lease slice is a few
worst cases of the call that asked (`LEASE_CALLS`) but at most `LEASE_FRACTION` of the headroom last seen, and
at least what the call needs. When a call's record commits (writer thread), its worst case leaves the lease and
the row (`reserved -= worst case`) and its real cost is added (`spent += cost`). Unused lease goes back to the
row after `LEASE_IDLE_S` without use, and at shutdown.

The invariant of the single-process ledger therefore holds for the fleet: spent + every worst case in flight
(anywhere) <= limit at each admission, so recorded spend exceeds a cap only by the errors between reservation
and real cost of the calls in flight (at most the largest single call's error, as in `tokenlens.controls`).

A gateway that dies without returning its lease leaves that headroom reserved until the period ends (at most
one slice per cap). When the database cannot be reached to take a lease, `admit` raises and the gates apply
`fail_open` (false: the call gets 503 with the reason).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tokenlens.controls import (
    COUNTED_OUTCOMES,
    Bucket,
    BucketKey,
    Cap,
    Clock,
    Denial,
    Ledger,
    Periods,
    Publish,
    Reservation,
    _aggregate,
    add_cap_status,
    all_caps,
    scopes_of,
)
from tokenlens.store.ledger import LedgerRow, LedgerTable
from tokenlens.store.queries import ImportResult, LineTooLong, PricerLike, day_bounds, month_bounds

if TYPE_CHECKING:
    from tokenlens.config import SettingsHolder
    from tokenlens.records import CallRecord, SettledFacts
    from tokenlens.store import Store

log = logging.getLogger(__name__)

LEASE_CALLS = 4  # a lease slice: up to this many worst cases of the call that asks for it ...
LEASE_FRACTION = 0.25  # ... and at most this share of the headroom left in the bucket
LEASE_IDLE_S = 1.0  # unused lease goes back to the store after this long without an admission
RETURN_EVERY_S = 0.25
UNPRICED_USD = 1e-9  # what an unpriced call needs of a USD cap: the cap must not be used up
_EPSILON = 1e-12


def _bucket(row: LedgerRow | None) -> Bucket | None:
    return None if row is None else Bucket(*row)


class LedgerUnavailable(RuntimeError):
    """The shared ledger in the database cannot be reached (the gates apply fail_open)."""


@dataclass
class Lease:
    """Headroom this gateway holds in one bucket, what its calls in flight use of it, and the row last seen."""

    usd: float = 0.0
    calls: int = 0
    used_usd: float = 0.0
    used_calls: int = 0
    touched: float = 0.0
    seen: Bucket | None = None  # the row after our last statement on it (spent, reserved by the fleet)

    def free(self) -> tuple[float, int]:
        return self.usd - self.used_usd, self.calls - self.used_calls


class SharedLedger(Ledger):
    """A `Ledger` whose buckets live in the store, shared by every gateway; admission uses local leases."""

    shared = True

    admits_through_store = True

    def __init__(
        self,
        settings: SettingsHolder,
        store: Store,
        clock: Clock = time.time,
        publish: Publish | None = None,
        *,
        idle_s: float = LEASE_IDLE_S,
    ) -> None:
        super().__init__(settings, clock, publish)
        self.store = store
        self.idle_s = idle_s
        self._leases: dict[BucketKey, Lease] = {}
        self._rows: set[BucketKey] = set()  # rows known to exist
        self._admitting = threading.Lock()  # one admission (and one lease return) at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.table = LedgerTable(store)

    # -------------------------------------------------------------------------------------- lifecycle

    def load(self, store: Store) -> None:
        """Nothing to rebuild (the rows are the truth); checks that the table answers and starts the thread
        that gives unused leases back. An unreachable database is logged: admissions then fail (fail_open)."""
        try:
            self.table.check()
        except Exception as exc:
            log.error("the shared budget ledger cannot be reached yet (%s: %s)", type(exc).__name__, exc)
        self.broken, self.loaded = None, True
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tokenlens-leases", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the lease thread and give every unused lease back to the store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.return_leases(idle_s=0.0)
        except Exception:
            log.exception("unused budget leases could not be given back")

    def _run(self) -> None:
        while not self._stop.wait(RETURN_EVERY_S):
            try:
                self.return_leases()
            except Exception:
                log.exception("unused budget leases could not be given back (retrying)")

    # -------------------------------------------------------------------------------------- database

    def _create_row(self, key: BucketKey, periods: Periods) -> None:
        """The bucket's row, made from the calls already stored in its period (the first gateway wins)."""
        scope, period, _ = key
        tz = self.tz()
        ts = periods.day_end - 1 if period == "day" else periods.month_end - 1
        start, end = day_bounds(tz, ts) if period == "day" else month_bounds(tz, ts)
        usd, calls = 0.0, 0
        for source, model, spent, counted in _aggregate(self.store, start, end):
            if scope in scopes_of(source, model):
                usd += spent
                calls += counted
        self.table.create(key, usd, calls, self.clock())
        self._rows.add(key)

    def _grant(
        self,
        cap: Cap,
        key: BucketKey,
        need: tuple[float, int],
        lease: Lease,
        periods: Periods,
        unpriced: bool = False,
    ) -> tuple[float, int] | None:
        """Lease at least (usd, calls) more in `key` within `cap`; the amounts granted, None when it does not
        fit. Tries a slice first, then exactly what is needed. `unpriced`: the USD cap must not be used up
        (spent + reserved < limit). Raises LedgerUnavailable."""
        usd, calls = need
        seen = lease.seen
        attempts: list[tuple[float, int]] = []
        if seen is not None:
            slice_usd = usd
            if cap.limit_usd is not None and usd > 0:
                left = cap.limit_usd - seen.spent_usd - seen.reserved_usd
                slice_usd = max(usd, min(LEASE_CALLS * usd, LEASE_FRACTION * left))
            slice_calls = calls
            if cap.limit_calls is not None and calls > 0:
                left_calls = cap.limit_calls - seen.calls - seen.reserved_calls
                slice_calls = max(calls, min(LEASE_CALLS * calls, int(LEASE_FRACTION * left_calls)))
            if (slice_usd, slice_calls) != (usd, calls):
                attempts.append((slice_usd, slice_calls))
        attempts.append((usd, calls))
        try:
            with self.store.connection():
                if key not in self._rows:
                    self._create_row(key, periods)
                for want_usd, want_calls in attempts:
                    granted, row = self.table.lease(
                        key,
                        want_usd,
                        want_calls,
                        self.clock(),
                        limit_usd=None if cap.limit_usd is None or unpriced else cap.limit_usd + _EPSILON,
                        below_usd=cap.limit_usd if unpriced else None,
                        limit_calls=cap.limit_calls,
                    )
                    lease.seen = _bucket(row)
                    if granted:
                        return want_usd, want_calls
        except Exception as exc:
            raise LedgerUnavailable(
                f"the shared budget ledger in the database cannot be reached ({type(exc).__name__}: {exc})"
            ) from exc
        return None

    def _give_back(self, returns: dict[BucketKey, tuple[float, int]]) -> None:
        if not returns:
            return
        self.table.settle({key: (0.0, 0, usd, calls) for key, (usd, calls) in returns.items()}, self.clock())

    # -------------------------------------------------------------------------------------- request path

    def admit(self, call_id: str, caps: Sequence[Cap], cost_usd: float | None) -> Denial | None:
        """Reserve the call's worst case against this gateway's leases, taking more lease from the store
        where a cap's lease is short; refuse the call when the store cannot grant it."""
        now = self.clock()
        periods = self.periods(now)
        cost = cost_usd or 0.0
        with self._admitting:
            for cap in caps:
                key = (cap.scope, cap.period, periods.key(cap.period))
                with self._lock:
                    lease = self._leases.setdefault(key, Lease())
                    lease.touched = now
                    free_usd, free_calls = lease.free()
                need_usd = 0.0
                if cap.limit_usd is not None:
                    need_usd = max(0.0, max(cost, UNPRICED_USD) - free_usd)
                need_calls = max(0, 1 - free_calls) if cap.limit_calls is not None else 0
                if need_usd <= _EPSILON and need_calls == 0:
                    continue
                granted = self._grant(cap, key, (need_usd, need_calls), lease, periods, not cost)
                if granted is None:
                    return self._denied(cap, key, lease, cost, cost_usd is None, periods, now)
                with self._lock:
                    lease.usd += granted[0]
                    lease.calls += granted[1]
            with self._lock:
                self._roll(periods)
                self._sweep(now)
                reservation = self._reservations.get(call_id)
                if reservation is None:
                    reservation = self._reservations[call_id] = Reservation(periods)
                for cap in caps:
                    key = (cap.scope, cap.period, periods.key(cap.period))
                    lease = self._leases[key]
                    lease.used_usd += cost
                    lease.used_calls += 1
                    usd, calls = reservation.parts.get(key, (0.0, 0))
                    reservation.parts[key] = (usd + cost, calls + 1)
        return None

    def _denied(
        self,
        cap: Cap,
        key: BucketKey,
        lease: Lease,
        cost: float,
        unpriced: bool,
        periods: Periods,
        now: float,
    ) -> Denial:
        row = lease.seen or Bucket()
        denial = self._refusal(cap, row, cost, unpriced, periods, now)
        if denial is None:  # the row moved since: refuse with what was seen
            metric = "calls" if cap.limit_calls is not None and cap.limit_usd is None else "usd"
            denial = Denial(
                cap,
                f"TokenLens: {cap.label()} reached across the gateways sharing this store",
                max(1, int(periods.end(cap.period) - now) + 1),
                periods.end(cap.period),
                metric,
            )
        with self._lock:
            events = self._crossed(cap, key, row, periods, refused=denial.metric)
        self._emit(events)
        return denial

    def _release(self, call_id: str) -> Reservation | None:
        """Drop a call's local reservation (lock held): its worst case goes back to the lease."""
        reservation = self._reservations.pop(call_id, None)
        if reservation is None:
            return None
        for key, (usd, calls) in reservation.parts.items():
            lease = self._leases.get(key)
            if lease is not None:
                lease.used_usd = max(0.0, lease.used_usd - usd)
                lease.used_calls = max(0, lease.used_calls - calls)
        return reservation

    # -------------------------------------------------------------------------------------- writer thread

    def settle(self, records: Sequence[SettledFacts]) -> None:
        """Record listener: each call's worst case leaves the lease and the row; its real cost is added."""
        now = self.clock()
        deltas: dict[BucketKey, list[float]] = {}  # key -> [spent usd, calls, lease usd, lease calls]
        with self._lock:
            for record in records:
                reservation = self._release(record.id)
                if reservation is not None:
                    for key, (usd, calls) in reservation.parts.items():
                        lease = self._leases.get(key)
                        if lease is not None:
                            lease.usd = max(0.0, lease.usd - usd)
                            lease.calls = max(0, lease.calls - calls)
                        delta = deltas.setdefault(key, [0.0, 0, 0.0, 0])
                        delta[2] += usd
                        delta[3] += calls
                periods = reservation.periods if reservation is not None else self.periods(record.ts)
                cost = record.cost_usd or 0.0
                counted = record.outcome in COUNTED_OUTCOMES and record.model is not None
                if not cost and not counted:
                    continue
                for scope in scopes_of(record.source, record.model):
                    for period in ("day", "month"):
                        delta = deltas.setdefault((scope, period, periods.key(period)), [0.0, 0, 0.0, 0])
                        delta[0] += cost
                        delta[1] += int(counted)
        if not deltas:
            return
        try:
            with self.store.connection():
                self.table.settle(
                    {
                        key: (spent, int(calls), usd, int(leased))
                        for key, (spent, calls, usd, leased) in deltas.items()
                    },
                    now,
                )
                rows = self._cap_rows(now)
        except Exception:
            log.exception("spend of %d calls could not be added to the shared budget ledger", len(records))
            return
        events: list[dict[str, Any]] = []
        current = self.periods(now)
        with self._lock:
            for cap, key, row in rows:
                events += self._crossed(cap, key, row, current)
        self._emit(events)

    def _cap_rows(self, now: float) -> list[tuple[Cap, BucketKey, Bucket]]:
        """Every cap in force with its row (caps whose row does not exist yet are left out)."""
        periods = self.periods(now)
        caps = [
            (cap, (cap.scope, cap.period, periods.key(cap.period))) for cap in all_caps(self.settings.get())
        ]
        rows = self.table.rows(key for _, key in caps)
        return [(cap, key, Bucket(*rows[key])) for cap, key in caps if key in rows]

    # -------------------------------------------------------------------------------------- leases

    def return_leases(self, idle_s: float | None = None) -> dict[BucketKey, tuple[float, int]]:
        """Give back the unused part of every lease not used for `idle_s` (default the ledger's); returns it."""
        idle = self.idle_s if idle_s is None else idle_s
        now = self.clock()
        current = self.periods(now)
        returns: dict[BucketKey, tuple[float, int]] = {}
        with self._admitting, self._lock:
            for key, lease in list(self._leases.items()):
                past = key[2] != current.key(key[1])
                if not past and now - lease.touched < idle:
                    continue
                free_usd, free_calls = lease.free()
                if free_usd > 0 or free_calls > 0:
                    returns[key] = (max(0.0, free_usd), max(0, free_calls))
                    lease.usd -= max(0.0, free_usd)
                    lease.calls -= max(0, free_calls)
                if past and lease.used_usd <= 0 and lease.used_calls <= 0:
                    del self._leases[key]
        self._give_back(returns)
        return returns

    def leased(self) -> dict[BucketKey, tuple[float, int]]:
        """The headroom this gateway holds, per bucket (usd, calls)."""
        with self._lock:
            return {
                k: (lease.usd, lease.calls) for k, lease in self._leases.items() if lease.usd or lease.calls
            }

    # -------------------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """Like `Ledger.status`, from the store's rows: the spend and the reservations of the whole fleet
        (`reserved_*` includes the headroom leased to gateways and not used yet)."""
        now = self.clock()
        periods = self.periods(now)
        try:
            rows = {key: row for _, key, row in self._cap_rows(now)}
            problem = None
        except Exception as exc:
            rows, problem = {}, f"the shared budget ledger cannot be reached ({type(exc).__name__}: {exc})"
        caps: list[dict[str, Any]] = []
        call_caps: list[dict[str, Any]] = []
        for cap in all_caps(self.settings.get()):
            bucket = rows.get((cap.scope, cap.period, periods.key(cap.period))) or Bucket()
            add_cap_status(cap, bucket, self._resets_at(cap, periods), caps, call_caps)
        return {
            "caps": caps,
            "call_caps": call_caps,
            "in_flight": self.in_flight(),
            "healthy": problem is None,
            "problem": problem,
            "shared": True,
        }

    def _resets_at(self, cap: Cap, periods: Periods) -> str:
        return datetime.fromtimestamp(periods.end(cap.period), self.tz()).isoformat()


def import_counted(
    store: Store,
    lines: Iterable[str | bytes | LineTooLong],
    pricer: PricerLike | None,
    *,
    settings: SettingsHolder,
    ledger: Ledger | None,
    store_bodies: bool = True,
) -> ImportResult:
    """`Store.import_lines`, with the spend and calls of the records it stores counted toward budgets and
    quotas at once (not only after the next restart).

    Each committed batch's records of the current month go to `ledger.settle` (the running gateway's ledger:
    in memory, or the shared rows in the store). Without a ledger (`tokenlens import` straight into the store,
    no daemon up) they are added to the shared ledger's rows in the store where those exist (a fleet on
    PostgreSQL, or `--workers N`); a single gateway's in-memory ledger reads them at its next start anyway.
    Nothing goes on the live feed (imports are history); with a running ledger, a cap the import fills raises
    its `budget` event.
    """
    counter: Ledger
    if ledger is None:
        counter = SharedLedger(settings, store)  # not loaded: no lease thread, `settle` only adds spend
    else:
        counter = ledger

    def count(records: Sequence[CallRecord]) -> None:
        start, end = month_bounds(counter.tz(), counter.clock())
        current = [r for r in records if start <= r.ts < end]  # earlier periods are not enforced any more
        if not current:
            return
        try:
            counter.settle(current)
        except Exception:  # the records are stored all the same; only the running spend misses them
            log.exception("%d imported calls could not be counted toward budgets and quotas", len(current))

    return store.import_lines(lines, pricer, store_bodies=store_bodies, on_inserted=count)
