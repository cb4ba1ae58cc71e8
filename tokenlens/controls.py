"""Gateway controls: the spend ledger behind budget caps, quotas and kill switches (docs/controls.md).

The `Ledger` keeps, in memory, what has been spent and what is reserved by calls in flight, per period (the
calendar day and month in `settings.timezone`) and per scope: `global`, `source:<name>`, `model:<name>`.

- It is rebuilt from the store once, at start (`load`, a few GROUP BY queries), before the proxy serves.
- `admit(call_id, caps, cost)` is the request-path decision: a call is admitted only if, for every cap that
  applies, spent + reserved (calls in flight) + its own worst-case cost fits; then that cost is reserved.
  Constant time per cap, one lock, no I/O.
- `settle(records)` is a record listener (writer thread): each committed record releases its call's
  reservation and adds its real cost (and one call, for outcomes `ok` and `error`) to its buckets.
- Imported records (`POST /api/import`, `tokenlens import`) count at once: `import_counted` hands the ones it
  stores to `settle` as each batch commits, as if they had gone through the gateway.
- `end(call_id)` marks a call whose flow is over; a reservation still open `ENDED_GRACE_S` later (its record
  never committed: rejected by the database, or lost) is released then, so a reservation can never leak.
- `budget` events go on the bus when 80% and 100% of a cap is reached, once per cap and period.

A call whose worst case cannot be priced (unknown model) reserves $0 and counts as a call: it is admitted while
every USD cap still has room, and refused once a cap is used up (spent + reserved >= limit).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from tokenlens.config import Settings, SourceLimit, resolve_timezone
from tokenlens.exchange import count_from_request
from tokenlens.money import format_usd
from tokenlens.platforms.metering import adjust_price
from tokenlens.pricing import Pricer, pricer_for, undated
from tokenlens.store.queries import Store, day_bounds, month_bounds
from tokenlens.store.reads import spend_by_source_model
from tokenlens.tokens import worst_case_request_tokens
from tokenlens.usage import Usage

if TYPE_CHECKING:
    from tokenlens.config import SettingsHolder
    from tokenlens.records import SettledFacts

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Publish = Callable[[str, dict[str, Any]], None]
BucketKey = tuple[str, str, str]  # (scope, period, period key)

COUNTED_OUTCOMES = ("ok", "error")  # outcomes that reached the provider and count as calls
THRESHOLDS = (80, 100)  # percent of a cap that raises a `budget` event
ENDED_GRACE_S = 60.0  # how long an ended call's record may take to commit before its reservation is dropped
_EPSILON = 1e-12  # float tolerance when a call fills a cap exactly


@dataclass(frozen=True)
class Cap:
    """One limit that applies to a call: USD and/or calls, over a day or a month, for one scope."""

    scope: str  # "global", "source:<name>", "model:<name>"
    period: str  # "day" | "month"
    reason: str  # "budget" | "quota": x-tokenlens-blocked-by when it refuses a call
    limit_usd: float | None = None
    limit_calls: int | None = None

    def label(self) -> str:
        period = "daily" if self.period == "day" else "monthly"
        if self.scope == "global":
            return f"{period} budget"
        kind, _, name = self.scope.partition(":")
        return f"{period} {kind} quota of {name!r}"


@dataclass(frozen=True)
class Periods:
    day: str
    month: str
    day_end: float
    month_end: float

    def key(self, period: str) -> str:
        return self.day if period == "day" else self.month

    def end(self, period: str) -> float:
        return self.day_end if period == "day" else self.month_end


@dataclass
class Bucket:
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    calls: int = 0
    reserved_calls: int = 0


@dataclass
class Reservation:
    periods: Periods
    parts: dict[BucketKey, tuple[float, int]] = field(default_factory=dict)
    ended_at: float | None = None


@dataclass(frozen=True)
class Denial:
    """Why a call was refused: the cap, a message for the client, and when the cap resets."""

    cap: Cap
    message: str
    retry_after: int  # seconds until the cap resets (Retry-After)
    resets_at: float
    metric: str = "usd"  # "usd" or "calls": which limit refused the call


@dataclass(frozen=True)
class WorstCase:
    """What a call may cost at most: estimated input plus max_tokens (or the reserve) at the model's prices."""

    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: the model has no known price

    def as_details(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "estimated_input_tokens": self.input_tokens,
            "reserved_output_tokens": self.output_tokens,
            "worst_case_usd": self.cost_usd,
        }


# ---------------------------------------------------------------------------------------------- caps


def source_scope(source: str) -> str:
    return f"source:{source}"


def model_scope(model: str) -> str:
    return f"model:{model.lower()}"


def model_names(model: str) -> set[str]:
    """The names a model limit may use for a model: itself and its undated base (lower-case)."""
    name = model.lower()
    return {name, undated(name)}


def budget_caps(settings: Settings) -> list[Cap]:
    """The global caps in force (`budgets.daily_usd`, `budgets.monthly_usd`)."""
    budgets = settings.budgets
    caps = []
    if budgets.daily_usd is not None:
        caps.append(Cap("global", "day", "budget", limit_usd=budgets.daily_usd))
    if budgets.monthly_usd is not None:
        caps.append(Cap("global", "month", "budget", limit_usd=budgets.monthly_usd))
    return caps


def source_caps(settings: Settings, source: str | None = None) -> list[Cap]:
    """Per-source caps (of one source, a lookup in the quotas' index, or of every source when None)."""
    if source is None:
        limits: Iterable[SourceLimit] = settings.quotas.source_limits
    else:
        one = settings.quotas.source_limit(source)
        limits = () if one is None else (one,)
    caps = []
    for limit in limits:
        scope = source_scope(limit.source)
        if limit.daily_usd is not None or limit.daily_calls is not None:
            caps.append(Cap(scope, "day", "quota", limit.daily_usd, limit.daily_calls))
        if limit.monthly_usd is not None:
            caps.append(Cap(scope, "month", "quota", limit_usd=limit.monthly_usd))
    return caps


def model_caps(settings: Settings, model: str | None = None) -> list[Cap]:
    """Per-model caps (that apply to one model, a lookup in the quotas' index, or every one when None)."""
    quotas = settings.quotas
    limits = quotas.model_limits if model is None else quotas.model_limits_of(model_names(model))
    return [
        Cap(model_scope(limit.model), "day", "quota", limit.daily_usd, limit.daily_calls) for limit in limits
    ]


def quota_caps(settings: Settings, source: str, model: str) -> list[Cap]:
    return source_caps(settings, source) + model_caps(settings, model)


def all_caps(settings: Settings) -> list[Cap]:
    return budget_caps(settings) + source_caps(settings) + model_caps(settings)


def caps_touched(settings: Settings, records: Iterable[SettledFacts]) -> list[Cap]:
    """The caps that the spend of `records` counts toward (without scanning every configured limit)."""
    caps = dict.fromkeys(budget_caps(settings))
    for source in {record.source for record in records}:
        caps.update(dict.fromkeys(source_caps(settings, source)))
    for model in {record.model for record in records if record.model}:
        caps.update(dict.fromkeys(model_caps(settings, model)))
    return list(caps)


def scopes_of(source: str, model: str | None) -> list[str]:
    """Every bucket scope a call's spend counts in."""
    scopes = ["global", source_scope(source)]
    if model:
        scopes += sorted(f"model:{name}" for name in model_names(model))
    return scopes


# ---------------------------------------------------------------------------------------------- pricing


MAX_ANSWERS = 10_000  # a request's answer count (`n`, `best_of`, `candidateCount`) counts as at most this


def answers_requested(api: str, body: Mapping[str, Any] | None) -> int:
    """How many answers a request may be billed for, each up to its output limit: the largest of OpenAI's
    `n` and `best_of` (legacy completions bill every `best_of` candidate) or Gemini's `candidateCount`.

    Read like the output limits (`tokenlens.exchange.max_tokens_from_request`): a number written as a string
    or a float counts (rounded up); what is not a positive number counts as 1; past MAX_ANSWERS, MAX_ANSWERS.
    """
    if not body:
        return 1
    values: list[Any] = []
    if api == "google":
        for name in ("generationConfig", "generation_config"):
            config = body.get(name)
            if isinstance(config, Mapping):
                values += [config.get("candidateCount"), config.get("candidate_count")]
    else:
        values = [body.get("n"), body.get("best_of")]
    return max([1, *(n for value in values if (n := count_from_request(value, MAX_ANSWERS)))])


class WorstCasePricer:
    """Prices a call's worst case with the current pricing overrides (`tokenlens.pricing.pricer_for`).

    The worst case is the input counted by `tokens.worst_case_request_tokens` (each text's UTF-8 bytes + 1:
    a bound for every provider's tokenizer that loads no vocabulary on the request path) plus the request's largest output limit (or `reserve_output_tokens`) for each
    answer it asks for, at the prices of the model that will serve it."""

    def pricer(self, settings: Settings) -> Pricer:
        return pricer_for(settings.pricing)

    def worst_case(
        self,
        settings: Settings,
        *,
        provider: str,
        api: str,
        endpoint: str,
        body: Mapping[str, Any] | None,
        model: str,
        max_tokens: int | None,
    ) -> WorstCase:
        input_tokens = worst_case_request_tokens(api, body, endpoint=endpoint, model=model) if body else 0
        per_answer = max_tokens if max_tokens is not None else settings.budgets.reserve_output_tokens
        output_tokens = per_answer * answers_requested(api, body)
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        price = adjust_price(provider, endpoint, model, self.pricer(settings).price(provider, model, usage))
        cost = float(price.cost_usd) if price.priced and price.cost_usd is not None else None
        return WorstCase(model, input_tokens, output_tokens, cost)


# ---------------------------------------------------------------------------------------------- the ledger


def _money(value: float) -> str:
    return format_usd(value)


class Ledger:
    """Spend, call counts and reservations in memory; every operation under one lock, no I/O (but `load`)."""

    # Whether `admit` may wait on the database (the shared ledger): the gates then run it off the event loop.
    admits_through_store = False

    def __init__(
        self, settings: SettingsHolder, clock: Clock = time.time, publish: Publish | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.publish = publish
        self.broken: str | None = None  # why the ledger cannot be trusted (gates then apply fail_open)
        self.loaded = False
        self._lock = threading.Lock()
        self._buckets: dict[BucketKey, Bucket] = {}
        self._reservations: dict[str, Reservation] = {}
        self._ended: collections.deque[tuple[float, str]] = collections.deque()
        self._notified: set[tuple[BucketKey, str, int]] = set()
        self._current: tuple[str, str] = ("", "")
        self._tz: tuple[str, tzinfo] | None = None
        self._day: tuple[tzinfo, float, Periods] | None = None  # the last day `periods` answered for

    # -------------------------------------------------------------------------------------- periods

    def tz(self) -> tzinfo:
        name = self.settings.get().timezone
        if self._tz is None or self._tz[0] != name:
            self._tz = (name, resolve_timezone(name))
        return self._tz[1]

    def periods(self, ts: float | None = None) -> Periods:
        """The day and month that contain `ts` (default: now by the clock), in the configured time zone
        (the last day's answer is kept: every call of a day asks, and time zones are slow to compute with)."""
        tz = self.tz()
        ts = self.clock() if ts is None else ts
        known = self._day
        if known is not None and known[0] is tz and known[1] <= ts < known[2].day_end:
            return known[2]
        local = datetime.fromtimestamp(ts, tz)
        day_start, day_end = day_bounds(tz, ts)
        found = Periods(
            day=local.strftime("%Y-%m-%d"),
            month=local.strftime("%Y-%m"),
            day_end=day_end,
            month_end=month_bounds(tz, ts)[1],
        )
        self._day = (tz, day_start, found)
        return found

    def _roll(self, periods: Periods) -> None:
        """Drop the buckets of past periods (lock held)."""
        if (periods.day, periods.month) == self._current:
            return
        self._current = (periods.day, periods.month)

        def current(key: BucketKey) -> bool:
            return key[2] == periods.key(key[1])

        self._buckets = {k: b for k, b in self._buckets.items() if current(k)}
        self._notified = {n for n in self._notified if current(n[0])}

    # -------------------------------------------------------------------------------------- start

    def load(self, store: Store) -> None:
        """Rebuild today's and this month's spend and calls from the store (at start, off the request path).

        A failure marks the ledger broken (logged); the gates then refuse calls unless `fail_open`."""
        try:
            periods = self.periods()
            tz = self.tz()
            now = self.clock()
            month = _aggregate(store, *month_bounds(tz, now))
            day = _aggregate(store, *day_bounds(tz, now))
        except Exception as exc:
            self.broken = f"the spend ledger could not be loaded from the store ({type(exc).__name__}: {exc})"
            log.exception("budgets and quotas: %s", self.broken)
            return
        with self._lock:
            self._roll(periods)
            for rows, period in ((month, "month"), (day, "day")):
                for source, model, usd, calls in rows:
                    for scope in scopes_of(source, model):
                        bucket = self._bucket((scope, period, periods.key(period)))
                        bucket.spent_usd += usd
                        bucket.calls += calls
            self.broken, self.loaded = None, True

    # -------------------------------------------------------------------------------------- request path

    def _bucket(self, key: BucketKey) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket()
        return bucket

    def admit(self, call_id: str, caps: Sequence[Cap], cost_usd: float | None) -> Denial | None:
        """Reserve `cost_usd` (None: unpriced, $0) and one call in every cap, or refuse the call.

        Returns None when admitted, else the first cap that refuses it (nothing is reserved then)."""
        now = self.clock()
        periods = self.periods(now)
        cost = cost_usd or 0.0
        events: list[dict[str, Any]] = []
        with self._lock:
            self._roll(periods)
            self._sweep(now)
            denial = None
            for cap in caps:
                key = (cap.scope, cap.period, periods.key(cap.period))
                bucket = self._buckets.get(key) or Bucket()
                denial = self._refusal(cap, bucket, cost, cost_usd is None, periods, now)
                if denial is not None:
                    events = self._crossed(cap, key, bucket, periods, refused=denial.metric)
                    break
            if denial is None:
                reservation = self._reservations.get(call_id)
                if reservation is None:
                    reservation = self._reservations[call_id] = Reservation(periods)
                for cap in caps:
                    key = (cap.scope, cap.period, periods.key(cap.period))
                    bucket = self._bucket(key)
                    bucket.reserved_usd += cost
                    bucket.reserved_calls += 1
                    usd, calls = reservation.parts.get(key, (0.0, 0))
                    reservation.parts[key] = (usd + cost, calls + 1)
        self._emit(events)
        return denial

    def _refusal(
        self, cap: Cap, bucket: Bucket, cost: float, unpriced: bool, periods: Periods, now: float
    ) -> Denial | None:
        resets_at = periods.end(cap.period)
        retry_after = max(1, math.ceil(resets_at - now))
        when = datetime.fromtimestamp(resets_at, self.tz()).isoformat()
        if cap.limit_calls is not None and bucket.calls + bucket.reserved_calls + 1 > cap.limit_calls:
            message = (
                f"TokenLens: {cap.label()} of {cap.limit_calls} calls reached ({bucket.calls} made, "
                f"{bucket.reserved_calls} in flight); it resets at {when}"
            )
            return Denial(cap, message, retry_after, resets_at, "calls")
        if cap.limit_usd is None:
            return None
        used = bucket.spent_usd + bucket.reserved_usd
        if used >= cap.limit_usd or used + cost > cap.limit_usd + _EPSILON:
            this_call = (
                "this call has no known price" if unpriced else f"this call may cost up to {_money(cost)}"
            )
            message = (
                f"TokenLens: {cap.label()} of {_money(cap.limit_usd)} reached (spent "
                f"{_money(bucket.spent_usd)}, in flight {_money(bucket.reserved_usd)}; {this_call}); "
                f"it resets at {when}"
            )
            return Denial(cap, message, retry_after, resets_at)
        return None

    def release(self, call_id: str) -> None:
        """Drop a call's reservation without spending anything (idempotent): it will not reach the provider."""
        with self._lock:
            self._release(call_id)

    def _release(self, call_id: str) -> Reservation | None:
        reservation = self._reservations.pop(call_id, None)
        if reservation is None:
            return None
        for key, (usd, calls) in reservation.parts.items():
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.reserved_calls = max(0, bucket.reserved_calls - calls)
                # nothing left in flight means nothing reserved: no float residue of adds and subtracts
                left = bucket.reserved_usd - usd
                bucket.reserved_usd = left if bucket.reserved_calls and left > _EPSILON else 0.0
        return reservation

    def end(self, call_id: str) -> None:
        """The call's flow is over: its record should commit soon; after a grace period it is released."""
        now = self.clock()
        with self._lock:
            reservation = self._reservations.get(call_id)
            if reservation is not None and reservation.ended_at is None:
                reservation.ended_at = now
                self._ended.append((now, call_id))

    def _sweep(self, now: float) -> None:
        """Release the reservations of calls ended more than ENDED_GRACE_S ago with no record (lock held)."""
        while self._ended and self._ended[0][0] + ENDED_GRACE_S <= now:
            _, call_id = self._ended.popleft()
            if self._release(call_id) is not None:
                log.warning(
                    "call %s ended %ds ago with no record: reservation released", call_id, ENDED_GRACE_S
                )

    def close(self) -> None:
        """Nothing to give back: the in-memory ledger holds no shared state."""

    def in_flight(self) -> int:
        with self._lock:
            return len(self._reservations)

    # -------------------------------------------------------------------------------------- writer thread

    def settle(self, records: Sequence[SettledFacts]) -> None:
        """Record listener: release each call's reservation and count its real cost (and the call)."""
        now = self.clock()
        current = self.periods(now)
        settings = self.settings.get()
        events: list[dict[str, Any]] = []
        with self._lock:
            self._roll(current)
            for record in records:
                reservation = self._release(record.id)
                periods = reservation.periods if reservation is not None else self.periods(record.ts)
                cost = record.cost_usd or 0.0
                counted = record.outcome in COUNTED_OUTCOMES and record.model is not None
                if not cost and not counted:
                    continue
                for scope in scopes_of(record.source, record.model):
                    for period in ("day", "month"):
                        key = (scope, period, periods.key(period))
                        if key[2] != current.key(period):
                            continue  # a past period: nothing to enforce any more
                        bucket = self._bucket(key)
                        bucket.spent_usd += cost
                        bucket.calls += counted
            for cap in caps_touched(settings, records):
                key = (cap.scope, cap.period, current.key(cap.period))
                found = self._buckets.get(key)
                if found is not None:
                    events += self._crossed(cap, key, found, current)
            self._sweep(now)
        self._emit(events)

    # -------------------------------------------------------------------------------------- events

    def _crossed(
        self, cap: Cap, key: BucketKey, bucket: Bucket, periods: Periods, refused: str | None = None
    ) -> list[dict[str, Any]]:
        """`budget` events for the thresholds of `cap` reached and not yet announced (lock held).

        `refused`: the metric of the cap that has just refused a call; it counts as reached (100%)."""
        events = []
        for metric, limit, used in (
            ("usd", cap.limit_usd, bucket.spent_usd),
            ("calls", cap.limit_calls, bucket.calls),
        ):
            if limit is None:
                continue
            percent = 100.0 if refused == metric else (used / limit * 100 if limit > 0 else 100.0)
            for threshold in THRESHOLDS:
                mark = (key, metric, threshold)
                if percent + _EPSILON < threshold or mark in self._notified:
                    continue
                self._notified.add(mark)
                events.append(
                    {
                        "scope": cap.scope,
                        "period": cap.period,
                        "threshold": threshold,
                        "metric": metric,
                        "limit": limit,
                        "used": used,
                        "reserved_usd": bucket.reserved_usd,
                        "blocked_by": cap.reason,
                        "resets_at": datetime.fromtimestamp(periods.end(cap.period), self.tz()).isoformat(),
                        "message": f"TokenLens: {threshold}% of the {cap.label()} reached",
                    }
                )
        return events

    def _emit(self, events: Iterable[dict[str, Any]]) -> None:
        if self.publish is None:
            return
        for event in events:
            try:
                self.publish("budget", event)
            except Exception:
                log.exception("could not publish a budget event")

    # -------------------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """`GET /api/usage/budget-status`: every USD cap in force (and, apart, every call cap)."""
        settings = self.settings.get()
        now = self.clock()
        periods = self.periods(now)
        caps: list[dict[str, Any]] = []
        call_caps: list[dict[str, Any]] = []
        with self._lock:
            self._roll(periods)
            self._sweep(now)
            for cap in all_caps(settings):
                bucket = self._buckets.get((cap.scope, cap.period, periods.key(cap.period))) or Bucket()
                resets_at = datetime.fromtimestamp(periods.end(cap.period), self.tz()).isoformat()
                add_cap_status(cap, bucket, resets_at, caps, call_caps)
            in_flight = len(self._reservations)
        return {
            "caps": caps,
            "call_caps": call_caps,
            "in_flight": in_flight,
            "healthy": self.broken is None,
            "problem": self.broken,
        }


def add_cap_status(
    cap: Cap, bucket: Bucket, resets_at: str, caps: list[dict[str, Any]], call_caps: list[dict[str, Any]]
) -> None:
    """A cap's rows of `GET /api/usage/budget-status`: its USD limit to `caps`, its call limit to `call_caps`
    (a reservation below zero, a transient of the shared ledger's rows, shows as zero)."""
    if cap.limit_usd is not None:
        reserved = max(0.0, bucket.reserved_usd)
        caps.append(
            {
                "scope": cap.scope,
                "period": cap.period,
                "limit_usd": cap.limit_usd,
                "spent_usd": bucket.spent_usd,
                "reserved_usd": reserved,
                "remaining_usd": max(0.0, cap.limit_usd - bucket.spent_usd - reserved),
                "resets_at": resets_at,
            }
        )
    if cap.limit_calls is not None:
        call_caps.append(
            {
                "scope": cap.scope,
                "period": cap.period,
                "limit_calls": cap.limit_calls,
                "calls": bucket.calls,
                "reserved_calls": max(0, bucket.reserved_calls),
                "remaining_calls": max(0, cap.limit_calls - bucket.calls - bucket.reserved_calls),
                "resets_at": resets_at,
            }
        )


def _aggregate(store: Store, start: float, end: float) -> list[tuple[str, str | None, float, int]]:
    """(source, model, spent USD, counted calls) of the calls with start <= ts < end."""
    return spend_by_source_model(store, start, end, COUNTED_OUTCOMES)
