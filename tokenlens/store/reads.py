"""The reads of the analysis modules (analytics, insights, sessions, latency, rate limits, alerts, budgets):
each opens the store's connection for its block and answers from the rollups (`tokenlens.store.rollups`) or
the `call` model, so that no module outside `tokenlens.store` holds SQL or a database handle.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import peewee as pw

from tokenlens.store import rollups
from tokenlens.store.rollups import MEASURES, Rollup, Row

if TYPE_CHECKING:
    from tokenlens.store.queries import Store


def usage_sums(
    store: Store,
    edges: Sequence[float],
    dims: Sequence[str] = (),
    *,
    where: dict[str, str] | None = None,
    measures: Sequence[str] = MEASURES,
) -> list[dict[tuple[Any, ...], Row]]:
    """`rollups.sums` of the usage rollups: per interval between consecutive `edges`, {group: {measure: sum}}."""
    with store.connection() as db:
        return rollups.sums(db, edges, dims, where=where, measures=measures)


def tag_usage(store: Store, start: float, end: float, key: str) -> dict[str, Row]:
    """`rollups.tag_sums`: the usage of each value of tag `key` in [start, end)."""
    with store.connection() as db:
        return rollups.tag_sums(db, start, end, key)


def first_usage_bucket(store: Store, source: str | None = None) -> int | None:
    """The first hour (epoch seconds) the usage rollups hold (of `source` when given); None when empty."""
    with store.connection() as db:
        return rollups.first_bucket(db, source)


def rollup_totals(
    store: Store,
    rollup: Rollup,
    start: float,
    end: float,
    group: Sequence[str],
    measures: Sequence[str] | None = None,
) -> dict[tuple[Any, ...], list[float]]:
    """`rollups.rollup_sums`: the sums of `rollup` in [start, end) per `group`."""
    with store.connection() as db:
        return rollups.rollup_sums(db, rollup, start, end, group, measures)


def latency_rollups(
    store: Store, start: float, end: float
) -> tuple[dict[tuple[Any, ...], list[float]], dict[tuple[Any, ...], list[float]]]:
    """The latency rollups in [start, end): call counts per (provider, model), histogram bins per (provider,
    model, bin)."""
    with store.connection() as db:
        counts = rollups.rollup_sums(db, rollups.LATENCY, start, end, ("provider", "model"))
        bins = rollups.rollup_sums(db, rollups.LATENCY_BINS, start, end, ("provider", "model", "bin"))
    return counts, bins


def session_runs(
    store: Store,
    kinds: Sequence[str],
    start: float,
    end: float,
    limit: int,
    before: tuple[float, str] | None = None,
) -> dict[str, tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, int]]]:
    """Per kind of `kinds`: the runs with a call in [start, end), newest first, at most `limit` after the
    cursor `before` (`rollups.list_runs`), with the per-model parts and conversation counts of those runs
    (`rollups.run_parts`)."""
    out = {}
    with store.connection() as db:
        for kind in kinds:
            rows = rollups.list_runs(db, kind, start, end, limit, before)
            parts, conversations = rollups.run_parts(db, kind, [r["group_id"] for r in rows])
            out[kind] = (rows, parts, conversations)
    return out


def run_calls(store: Store, kind: str, group_id: str, fields: Sequence[str]) -> list[dict[str, Any]]:
    """The `fields` of the calls of one run (`kind` "session": by session id, else by conversation id), in
    time order."""
    call = store.models.Call
    column = call.session_id if kind == "session" else call.conversation_id
    query = call.select(*(getattr(call, f) for f in fields)).where(column == group_id)
    with store.connection():
        return list(query.order_by(call.ts.asc(), call.id.asc()).dicts().execute())


def provider_429s(store: Store, start: float, end: float) -> list[dict[str, Any]]:
    """The calls in [start, end) a provider answered with 429 (not blocked by the gateway), newest first: id,
    ts, provider, model, source and details (JSON text)."""
    call = store.models.Call
    query = (
        call.select(call.id, call.ts, call.provider, call.model, call.source, call.details)
        .where((call.ts >= start) & (call.ts < end) & (call.status == 429) & call.blocked_by.is_null())
        .order_by(call.ts.desc())
    )
    with store.connection():
        return list(query.dicts().execute())


def largest_simple_call(
    store: Store, start: float, end: float, provider: str, source: str, model: str, simple_max: int
) -> int | None:
    """Input plus output tokens of the largest successful call of (provider, source, model) in [start, end)
    with a complexity of at most `simple_max` (through the (source, model, ts) index); None when none."""
    call = store.models.Call
    query = call.select(pw.fn.MAX(call.input_tokens + call.output_tokens)).where(
        (call.source == source)
        & (call.model == model)
        & (call.ts >= start)
        & (call.ts < end)
        & (call.provider == provider)
        & (call.outcome == "ok")
        & call.complexity.is_null(False)
        & (call.complexity <= simple_max)
    )
    with store.connection():
        value = query.scalar()
    return None if value is None else int(value)


def spend_by_source_model(
    store: Store, start: float, end: float, counted_outcomes: Collection[str]
) -> list[tuple[str, str | None, float, int]]:
    """(source, model, spent USD, counted calls) of the calls with start <= ts < end; a call counts when its
    outcome is one of `counted_outcomes` and it has a model."""
    call = store.models.Call
    counted = pw.Case(None, [(call.outcome.in_(list(counted_outcomes)) & call.model.is_null(False), 1)], 0)
    query = (
        call.select(
            call.source,
            call.model,
            pw.fn.SUM(call.cost_usd).alias("usd"),
            pw.fn.SUM(counted).alias("calls"),
        )
        .where((call.ts >= start) & (call.ts < end))
        .group_by(call.source, call.model)
    )
    with store.connection():
        rows: list[dict[str, Any]] = list(query.dicts())  # type: ignore[arg-type]
    return [
        (str(row["source"]), row["model"], float(row["usd"] or 0.0), int(row["calls"] or 0)) for row in rows
    ]
