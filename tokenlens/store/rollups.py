"""Hourly rollups of the call table, maintained in the writer's transaction, and the sums read from them.

Keying: one row per **UTC hour** (`bucket`, epoch seconds of the hour's start) and (`source`, `model`,
`provider`) in `usage_hourly`, and per UTC hour and (`tag_key`, `tag_value`) in `usage_tag_hourly`.
Hours rather than local days because the configured time zone can change at any time (and several gateways
sharing a PostgreSQL store may use different ones): a local day is a whole number of UTC hours in every zone
whose offset is a whole number of hours, so its sums are exact sums of hours. For the zones with a 30 or 45
minute offset (India, Nepal, parts of Australia...), the one hour that a day boundary cuts is summed from the
raw calls instead (indexed on `ts`), so the answer stays exact there too.

`Store.insert_calls` adds each batch's new calls (ids not yet stored) to both tables in the same transaction
as the insert, so rollups and calls never disagree; migration 4 builds them for the calls already stored.
Raw calls may later be removed by retention: rollups are kept.

The insight rollups (migration 7) keep what the token-intelligence views read from each call's `details` the
same way, per UTC hour and per UTC day; the latency rollups (last section, migration 8) the call counts and
latency histograms of `GET /api/usage/latency`. Both are read by `rollup_sums`. The session rollups
(migration 9, last section) keep one row per run (session or conversation) for the sessions list.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import peewee as pw

from tokenlens.records import MAX_COST_USD, MAX_TOKENS, CallRecord

HOUR = 3600
SIMPLE_COMPLEXITY = 3  # complexity 0..3 counts as "simple" (right-sizing evidence)
HOURLY_TABLE = "usage_hourly"
TAG_TABLE = "usage_tag_hourly"
HOURLY_KEY = ("bucket", "source", "model", "provider")
SOURCE_TABLE = "usage_hourly_source"  # the same measures per UTC hour and source
SOURCE_KEY = ("bucket", "source")
DAILY_TABLE = "usage_daily"  # the same measures per UTC day (`day`: epoch of 00:00 UTC) and dims
DAILY_KEY = ("day", "source", "model", "provider")
DAY = 86400
TAG_KEY = ("bucket", "tag_key", "tag_value")

# measure -> SQL aggregate over the raw `call` table (the same definitions as `_increments` below)
_COUNT = "SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)"
_UNPRICED = "cost_usd IS NULL AND (outcome = 'ok' OR input_tokens > 0 OR output_tokens > 0)"
_PART = "COALESCE(SUM(CASE WHEN cost_usd IS NOT NULL THEN {part} END), 0)"
_SIMPLE = f"complexity IS NOT NULL AND complexity <= {SIMPLE_COMPLEXITY}"
RAW_MEASURES: dict[str, str] = {
    "calls": "COUNT(*)",
    "unpriced_calls": _COUNT.format(cond=_UNPRICED),
    "blocked_calls": _COUNT.format(cond="outcome = 'blocked'"),
    "error_calls": _COUNT.format(cond="outcome = 'error'"),
    "cached_calls": _COUNT.format(cond="outcome = 'cached'"),
    "cost_usd": "COALESCE(SUM(cost_usd), 0)",
    "saved_usd": "COALESCE(SUM(saved_usd), 0)",
    # the parts of a call count only with its cost (an unpriced call imported with parts adds to neither)
    "input_cost_usd": _PART.format(part="input_cost_usd"),
    "output_cost_usd": _PART.format(part="output_cost_usd"),
    "cache_read_cost_usd": _PART.format(part="cache_read_cost_usd"),
    "cache_write_cost_usd": _PART.format(part="cache_write_cost_usd"),
    "input_tokens": "COALESCE(SUM(input_tokens), 0)",
    "output_tokens": "COALESCE(SUM(output_tokens), 0)",
    "cache_read_tokens": "COALESCE(SUM(cache_read_tokens), 0)",
    "cache_write_tokens": "COALESCE(SUM(cache_write_tokens), 0)",
    "reasoning_tokens": "COALESCE(SUM(reasoning_tokens), 0)",
    "waste_tokens": "COALESCE(SUM(waste_tokens), 0)",
    "maxtok_calls": _COUNT.format(cond="max_tokens IS NOT NULL"),
    "maxtok_sum": "COALESCE(SUM(max_tokens), 0)",
    "maxtok_output_tokens": "SUM(CASE WHEN max_tokens IS NOT NULL THEN output_tokens ELSE 0 END)",
    "rated_calls": _COUNT.format(cond="complexity IS NOT NULL"),
    "simple_calls": _COUNT.format(cond=_SIMPLE),
    "simple_cost_usd": f"SUM(CASE WHEN {_SIMPLE} THEN COALESCE(cost_usd, 0) ELSE 0 END)",
    "simple_input_tokens": f"SUM(CASE WHEN {_SIMPLE} THEN input_tokens ELSE 0 END)",
    "simple_output_tokens": f"SUM(CASE WHEN {_SIMPLE} THEN output_tokens ELSE 0 END)",
    "simple_cache_read_tokens": f"SUM(CASE WHEN {_SIMPLE} THEN cache_read_tokens ELSE 0 END)",
    "simple_cache_write_tokens": f"SUM(CASE WHEN {_SIMPLE} THEN cache_write_tokens ELSE 0 END)",
}
MEASURES: tuple[str, ...] = tuple(RAW_MEASURES)
FLOAT_MEASURES = frozenset(m for m in MEASURES if m.endswith("_usd"))
TAG_MEASURES: tuple[str, ...] = ("calls", "cost_usd", "input_tokens", "output_tokens")

Row = dict[str, float]


def floor_hour(ts: float) -> int:
    return int(ts // HOUR) * HOUR


def empty_row(measures: Sequence[str] = MEASURES) -> Row:
    return dict.fromkeys(measures, 0.0)


def add_row(into: Row, other: Row) -> None:
    for name, value in other.items():
        into[name] = into.get(name, 0.0) + value


def add_vector(table: dict[tuple[Any, ...], list[float]], key: tuple[Any, ...], vector: list[float]) -> None:
    """Add `vector` to the row of `table` at `key` (a copy of it when the row is new)."""
    row = table.get(key)
    if row is None:
        table[key] = list(vector)
    else:
        for i, value in enumerate(vector):
            row[i] += value


# ---------------------------------------------------------------------------------------------- writes


def parts_of(c: CallRecord | SessionFacts) -> tuple[float, float, float, float]:
    """The (input, output, cache read, cache write) cost parts a call adds to the rollups: none when it has no
    cost (so every breakdown sums to its total; see `tokenlens.store.queries._attribute_parts`)."""
    if c.cost_usd is None:
        return (0.0, 0.0, 0.0, 0.0)
    return (
        c.input_cost_usd or 0.0,
        c.output_cost_usd or 0.0,
        c.cache_read_cost_usd or 0.0,
        c.cache_write_cost_usd or 0.0,
    )


def _increments(r: CallRecord) -> list[float]:
    """One call's contribution to every measure, in `MEASURES` order."""
    cost = r.cost_usd
    simple = r.complexity is not None and r.complexity <= SIMPLE_COMPLEXITY
    has_max = r.max_tokens is not None
    unpriced = cost is None and (r.outcome == "ok" or r.input_tokens > 0 or r.output_tokens > 0)
    return [
        1,
        1 if unpriced else 0,
        1 if r.outcome == "blocked" else 0,
        1 if r.outcome == "error" else 0,
        1 if r.outcome == "cached" else 0,
        cost or 0.0,
        r.saved_usd or 0.0,
        *parts_of(r),
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
        r.waste_tokens or 0,
        1 if has_max else 0,
        r.max_tokens or 0,
        r.output_tokens if has_max else 0,
        1 if r.complexity is not None else 0,
        1 if simple else 0,
        (cost or 0.0) if simple else 0.0,
        r.input_tokens if simple else 0,
        r.output_tokens if simple else 0,
        r.cache_read_tokens if simple else 0,
        r.cache_write_tokens if simple else 0,
    ]


def _tag_pairs(tags: Any) -> Iterable[tuple[str, str]]:
    if isinstance(tags, str):
        try:
            tags = json.loads(tags) if tags else {}
        except ValueError:
            return ()
    if not isinstance(tags, dict):
        return ()
    return ((str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in tags.items())


def accumulate(
    records: Iterable[CallRecord],
) -> tuple[dict[tuple[Any, ...], list[float]], dict[tuple[Any, ...], list[float]]]:
    """The rollup increments of some calls: (hourly rows, tag rows), keyed like the tables."""
    hourly: dict[tuple[Any, ...], list[float]] = {}
    tagged: dict[tuple[Any, ...], list[float]] = {}
    for r in records:
        bucket = floor_hour(r.ts)
        inc = _increments(r)
        key = (bucket, r.source or "unknown", r.model or "", r.provider)
        add_vector(hourly, key, inc)
        tag_inc = [1, r.cost_usd or 0.0, r.input_tokens, r.output_tokens]
        for tag_key, tag_value in _tag_pairs(r.tags):
            add_vector(tagged, (bucket, tag_key, tag_value), tag_inc)
    return hourly, tagged


def _upsert(
    db: pw.Database,
    table: str,
    key: Sequence[str],
    measures: Sequence[str],
    rows: dict[tuple[Any, ...], list[float]],
) -> None:
    if not rows:
        return
    columns = (*key, *measures)
    names = ", ".join(f'"{c}"' for c in columns)
    one = "(" + ", ".join([db.param] * len(columns)) + ")"
    updates = ", ".join(f'"{m}" = "{table}"."{m}" + excluded."{m}"' for m in measures)
    conflict = ", ".join(f'"{c}"' for c in key)
    sql = f'INSERT INTO "{table}" ({names}) VALUES {one} ON CONFLICT ({conflict}) DO UPDATE SET {updates}'
    # in key order: gateways sharing a PostgreSQL store then lock rows in the same order (no deadlock)
    values = [(*k, *v) for k, v in sorted(rows.items())]
    cursor = db.cursor()
    if isinstance(db, pw.SqliteDatabase):
        cursor.executemany(sql, values)
        return
    for chunk in pw.chunked(values, 200):
        many = sql.replace(f"VALUES {one}", "VALUES " + ", ".join([one] * len(chunk)))
        cursor.execute(many, [v for row in chunk for v in row])


def add_to_rollups(db: pw.Database, records: Iterable[CallRecord]) -> None:
    """Add newly inserted calls to the rollups (call inside the insert's transaction)."""
    records = list(records)
    hourly, tagged = accumulate(records)
    per_source: dict[tuple[Any, ...], list[float]] = {}
    per_day: dict[tuple[Any, ...], list[float]] = {}
    for (bucket, source, model, provider), values in hourly.items():
        for target, key in (
            (per_source, (bucket, source)),
            (per_day, (bucket // DAY * DAY, source, model, provider)),
        ):
            add_vector(target, key, values)
    _upsert(db, HOURLY_TABLE, HOURLY_KEY, MEASURES, hourly)
    _upsert(db, SOURCE_TABLE, SOURCE_KEY, MEASURES, per_source)
    _upsert(db, DAILY_TABLE, DAILY_KEY, MEASURES, per_day)
    _upsert(db, TAG_TABLE, TAG_KEY, TAG_MEASURES, tagged)
    write_increments(db, call_increments(records))
    add_to_session_rollups(
        db, [session_facts(r) for r in records if r.session_id is not None or r.conversation_id is not None]
    )


# ---------------------------------------------------------------------------------------------- reads


def _pieces(edges: Sequence[float]) -> tuple[list[int], list[tuple[float, float, int]]]:
    """The hours cut by an edge (summed from raw calls) and the raw pieces [a, b) with their interval."""
    lo, hi = edges[0], edges[-1]
    cut = sorted({floor_hour(e) for e in edges if e % HOUR})
    pieces: list[tuple[float, float, int]] = []
    for hour in cut:
        points = sorted({float(hour), float(hour + HOUR), *(e for e in edges if hour < e < hour + HOUR)})
        for a, b in zip(points, points[1:], strict=False):
            a, b = max(a, lo), min(b, hi)
            if a < b:
                pieces.append((a, b, bisect_right(edges, a) - 1))
    return cut, pieces


def _fetch(db: pw.Database, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return list(db.execute_sql(sql, list(params)).fetchall())


def sums(
    db: pw.Database,
    edges: Sequence[float],
    dims: Sequence[str] = (),
    *,
    where: dict[str, str] | None = None,
    measures: Sequence[str] = MEASURES,
) -> list[dict[tuple[Any, ...], Row]]:
    """Sums of `measures` (default: every measure) over each interval [edges[i], edges[i+1]), grouped by `dims`.

    `dims` are columns of `usage_hourly` (`source`, `model` — "" for none —, `provider`); `where` an
    equality filter on them. Answers from the hourly rollups (several intervals are summed in SQL, one row per
    interval and group, the interval of an hour found by a CASE on the edges); hours cut by a non-hour-aligned
    edge come from the raw calls. Returns one dict per interval: dims tuple -> {measure: value}.
    """
    intervals = len(edges) - 1
    out: list[dict[tuple[Any, ...], Row]] = [{} for _ in range(max(intervals, 0))]
    if intervals < 1 or edges[-1] <= edges[0]:
        return out
    measures = tuple(measures)
    p = db.param
    cut, pieces = _pieces(edges)
    first, last = -(-int(edges[0]) // HOUR) * HOUR, floor_hour(edges[-1])
    by_interval = intervals > 1
    source_only = set(dims) <= {"source"} and set(where or {}) <= {"source"}
    hourly = SOURCE_TABLE if source_only else HOURLY_TABLE
    # (table, time column, lo, hi): the rollup ranges read; a single range uses whole UTC days where it can
    ranges: list[tuple[str, str, int, int]] = []
    day_lo, day_hi = -(-first // DAY) * DAY, last // DAY * DAY
    if not by_interval and day_lo < day_hi:
        ranges += [(hourly, "bucket", first, day_lo), (DAILY_TABLE, "day", day_lo, day_hi)]
        ranges.append((hourly, "bucket", day_hi, last))
    else:
        ranges.append((hourly, "bucket", first, last))
    summed = ", ".join(f'SUM("t"."{m}")' for m in measures)
    dim_columns = [f'"t"."{d}"' for d in dims]
    for table, column, lo, hi in ranges:
        if lo >= hi:
            continue
        params: list[Any] = []
        conditions = [f'"t"."{column}" >= {p}', f'"t"."{column}" < {p}']
        if by_interval:  # the interval of each hour, in SQL: one row per interval and group
            case, case_params = _interval_case(f'"t"."{column}"', edges, 0, intervals, p)
            params += case_params
            group = [case, *dim_columns]
        else:
            group = dim_columns
        params += [lo, hi]
        for name, value in (where or {}).items():
            conditions.append(f'"t"."{name}" = {p}')
            params.append(value)
        if cut and column == "bucket":
            conditions.append('"t"."bucket" NOT IN (' + ", ".join([p] * len(cut)) + ")")
            params.extend(cut)
        select = ", ".join([*group, summed])
        sql = f'SELECT {select} FROM "{table}" AS "t" WHERE {" AND ".join(conditions)}'
        if group:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(group)))
        width = len(group)
        for row in _fetch(db, sql, params):
            if row[width] is None:
                continue  # SUM over no rows (no GROUP BY)
            index = int(row[0]) if by_interval else 0
            key = tuple(row[1 if by_interval else 0 : width])
            _merge(out[index], key, row[width:], measures)
    if pieces:
        raw_dims = [("COALESCE(model, '')" if d == "model" else d) for d in dims]
        raw_select = ", ".join([*raw_dims, RAW_MEASURES["calls"], *(RAW_MEASURES[m] for m in measures)])
        raw_where = ["ts >= " + p, "ts < " + p]
        raw_params: list[Any] = []
        for column, value in (where or {}).items():
            raw_where.append(("COALESCE(model, '')" if column == "model" else column) + f" = {p}")
            raw_params.append(value)
        raw_sql = f'SELECT {raw_select} FROM "call" WHERE {" AND ".join(raw_where)}'
        if dims:
            raw_sql += " GROUP BY " + ", ".join(raw_dims)
        for a, b, index in pieces:
            for row in _fetch(db, raw_sql, [a, b, *raw_params]):
                if row[len(dims)] in (None, 0):
                    continue
                _merge(out[index], tuple(row[: len(dims)]), row[len(dims) + 1 :], measures)
    return out


def _interval_case(
    column: str, edges: Sequence[float], lo: int, hi: int, param: str
) -> tuple[str, list[float]]:
    """A SQL expression of the index i (lo <= i < hi) of the interval [edges[i], edges[i+1]) holding `column`
    (a value known to lie in [edges[lo], edges[hi])), as a binary search of nested CASEs, and its parameters."""
    if hi - lo == 1:
        return str(lo), []
    mid = (lo + hi) // 2
    below, below_params = _interval_case(column, edges, lo, mid, param)
    above, above_params = _interval_case(column, edges, mid, hi, param)
    sql = f"(CASE WHEN {column} < {param} THEN {below} ELSE {above} END)"
    return sql, [edges[mid], *below_params, *above_params]


def _merge(
    into: dict[tuple[Any, ...], Row],
    key: tuple[Any, ...],
    values: Sequence[Any],
    measures: Sequence[str] = MEASURES,
) -> None:
    row = into.get(key)
    if row is None:
        row = into[key] = empty_row(measures)
    for name, value in zip(measures, values, strict=True):
        row[name] += float(value or 0)


def tag_sums(db: pw.Database, start: float, end: float, key: str) -> dict[str, Row]:
    """Sums of `TAG_MEASURES` per value of tag `key` over [start, end) (rollups; cut hours from raw calls)."""
    out: dict[str, Row] = {}
    if end <= start:
        return out
    p = db.param
    first, last = -(-int(start) // HOUR) * HOUR, floor_hour(end)
    select = ", ".join(f'SUM("{m}")' for m in TAG_MEASURES)
    if first < last:
        sql = (
            f'SELECT "tag_value", {select} FROM "{TAG_TABLE}" WHERE "tag_key" = {p} '
            f'AND "bucket" >= {p} AND "bucket" < {p} GROUP BY "tag_value"'
        )
        for value, *measures in _fetch(db, sql, [key, first, last]):
            row = out.setdefault(str(value), empty_row(TAG_MEASURES))
            for name, amount in zip(TAG_MEASURES, measures, strict=True):
                row[name] += float(amount or 0)
    raw: list[tuple[float, float]] = []
    if start % HOUR:
        raw.append((start, min(end, first)))
    if end % HOUR and floor_hour(end) >= first:
        raw.append((max(start, float(floor_hour(end))), end))
    for a, b in raw:
        if a >= b:
            continue
        sql = f'SELECT tags, cost_usd, input_tokens, output_tokens FROM "call" WHERE ts >= {p} AND ts < {p}'
        for tags, cost, input_tokens, output_tokens in _fetch(db, sql, [a, b]):
            for tag_key, tag_value in _tag_pairs(tags):
                if tag_key == key:
                    row = out.setdefault(tag_value, empty_row(TAG_MEASURES))
                    row["calls"] += 1
                    row["cost_usd"] += float(cost or 0)
                    row["input_tokens"] += float(input_tokens or 0)
                    row["output_tokens"] += float(output_tokens or 0)
    return out


def first_bucket(db: pw.Database, source: str | None = None) -> int | None:
    """The first hour with any call (of `source`), or None for an empty store."""
    sql = f'SELECT MIN("bucket") FROM "{HOURLY_TABLE}"'
    params: list[Any] = []
    if source is not None:
        sql += f' WHERE "source" = {db.param}'
        params.append(source)
    rows = _fetch(db, sql, params)
    return None if not rows or rows[0][0] is None else int(rows[0][0])


# ---------------------------------------------------------------------------------------------- insight rollups
#
# The token-intelligence views (tokenlens.insights) read the per-call analysis in `details` (`waste`,
# `heatmap`) and `complexity`. These rollups keep what they need, per UTC hour (`<name>_hourly`, `bucket`) and
# per UTC day (`<name>_daily`, `day`), filled from the same calls in the same transaction as `usage_hourly`
# (migration 7 builds them for the calls already stored). Every measure counts successful calls
# (outcome "ok") only, except `dedup_*` (outcome "cached").

MIN_CACHEABLE_PREFIX = 1024  # prefix tokens below which a resent prefix is not a caching opportunity
HEAT_SECTIONS = ("system", "tools", "context", "history", "query")
# Histogram of the output tokens of calls that set a maximum: bin i holds OUTPUT_BIN_LOWS[i] up to the next
# bound (excluded); four bins per doubling above 8 tokens (a p95 read from it is within 19% of the exact one).
OUTPUT_BIN_LOWS: tuple[int, ...] = tuple(sorted({0} | {math.ceil(2 ** (k / 4)) for k in range(81)}))
OUTPUT_BINS: tuple[str, ...] = tuple(f"out_h{i:02d}" for i in range(len(OUTPUT_BIN_LOWS)))


@dataclass(frozen=True)
class Rollup:
    """A rollup table pair: sums of `measures` per UTC hour (or day) and `dims`."""

    name: str
    dims: tuple[str, ...]
    measures: tuple[str, ...]

    @property
    def hourly(self) -> str:
        return f"{self.name}_hourly"

    @property
    def daily(self) -> str:
        return f"{self.name}_daily"


INSIGHT = Rollup(
    "insight",
    ("source", "model", "provider"),
    (
        "waste_calls",  # calls with a waste report and waste_tokens > 0
        "waste_finding_calls",  # ... of which with at least one finding
        "heat_calls",  # calls with a scaled heatmap and input tokens
        "heat_input_tokens",
        *(f"heat_{s}" for s in HEAT_SECTIONS),
        "maxtok_calls",  # calls with max_tokens > 0
        "maxtok_sum",
        "maxtok_output_tokens",
        "maxtok_utilisation",  # sum over those calls of min(1, output_tokens / max_tokens)
        "dedup_calls",  # outcome "cached"
        "dedup_saved_usd",
        *OUTPUT_BINS,
    ),
)
WASTE = Rollup(
    "insight_waste", ("source", "model", "provider", "waste_type"), ("calls", "tokens", "cost_usd")
)
TURNS = Rollup("insight_turn", ("source", "turn"), ("calls", "input_tokens", "history_tokens"))
COMPLEXITY = Rollup(
    "insight_complexity",
    ("source", "model", "provider", "complexity"),
    ("calls", "cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"),
)
PREFIXES = Rollup("insight_prefix", ("source", "model", "provider", "prefix_hash"), ("calls", "tokens"))
INSIGHT_ROLLUPS: tuple[Rollup, ...] = (INSIGHT, WASTE, TURNS, COMPLEXITY, PREFIXES)

# rollup name -> key (bucket, *dims) -> {measure: sum}; sparse: a measure a call does not touch is absent
Increments = dict[str, dict[tuple[Any, ...], dict[str, float]]]


class CallFacts(NamedTuple):
    """The fields of a call the insight and latency rollups read (a `call` row with `details` decoded)."""

    ts: float
    source: str
    model: str | None
    provider: str
    outcome: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float | None
    saved_usd: float | None
    max_tokens: int | None
    complexity: int | None
    waste_tokens: int | None
    stream: bool
    latency_ms: float | None
    ttft_ms: float | None
    fallback_from: str | None
    details: Any


# the `call` columns the increments are computed from (the raw pieces of a read; migration 7 reads them too,
# so only columns that exist from schema version 3 on), `details` last
FACT_COLUMNS: tuple[str, ...] = CallFacts._fields


def facts_of_row(row: Sequence[Any]) -> CallFacts:
    """`CallFacts` of a row selected with `FACT_COLUMNS` (details as JSON text)."""
    try:
        details = json.loads(row[-1] or "{}")
    except (ValueError, TypeError):
        details = {}
    return CallFacts._make([*row[:-1], details])


def _int(value: Any) -> int:
    """A count read from `details`, within 0..MAX_TOKENS (0 when it is not a number)."""
    try:
        return min(max(int(value or 0), 0), MAX_TOKENS)
    except (ValueError, TypeError, OverflowError):
        return 0


def _num(value: Any) -> float:
    """An amount read from `details`, within 0..MAX_COST_USD (0.0 when it is not a finite number)."""
    try:
        number = float(value or 0.0)
    except (ValueError, TypeError, OverflowError):
        return 0.0
    return min(max(number, 0.0), MAX_COST_USD) if math.isfinite(number) else 0.0


def output_bin(tokens: int) -> int:
    return max(0, bisect_right(OUTPUT_BIN_LOWS, tokens) - 1)


def _bump(table: dict[tuple[Any, ...], dict[str, float]], key: tuple[Any, ...], **values: float) -> None:
    row = table.get(key)
    if row is None:
        table[key] = dict(values)
        return
    for name, value in values.items():
        row[name] = row.get(name, 0) + value


def insight_increments(calls: Iterable[CallRecord | CallFacts]) -> Increments:
    """What some calls add to the insight rollups, per UTC hour. Never raises on odd `details`."""
    out: Increments = {r.name: {} for r in INSIGHT_ROLLUPS}
    insight, waste_rows, turn_rows = out[INSIGHT.name], out[WASTE.name], out[TURNS.name]
    complexity_rows, prefix_rows = out[COMPLEXITY.name], out[PREFIXES.name]
    for c in calls:
        key = (floor_hour(c.ts), c.source, c.model or "", c.provider)
        if c.outcome == "cached":
            _bump(insight, key, dedup_calls=1, dedup_saved_usd=c.saved_usd or 0.0)
            continue
        if c.outcome != "ok":
            continue
        details = c.details if isinstance(c.details, dict) else {}
        waste = details.get("waste")
        if isinstance(waste, dict) and c.waste_tokens:
            found: set[str] = set()
            findings = waste.get("findings")
            for finding in findings if isinstance(findings, list) else ():
                if not isinstance(finding, dict):
                    continue
                waste_type = str(finding.get("type"))
                first = waste_type not in found
                found.add(waste_type)
                _bump(
                    waste_rows,
                    (*key, waste_type),
                    calls=1 if first else 0,
                    tokens=_int(finding.get("tokens")),
                    cost_usd=_num(finding.get("cost_usd")),
                )
            _bump(insight, key, waste_calls=1, waste_finding_calls=1 if found else 0)
        heat = details.get("heatmap")
        if isinstance(heat, dict) and heat.get("scaled") and c.input_tokens:
            sections = {f"heat_{s}": _int(heat.get(s)) for s in HEAT_SECTIONS}
            _bump(insight, key, heat_calls=1, heat_input_tokens=c.input_tokens, **sections)
            turn = max(1, _int(heat.get("turns")) or 1)
            _bump(
                turn_rows,
                (key[0], c.source, turn),
                calls=1,
                input_tokens=c.input_tokens,
                history_tokens=sections["heat_history"],
            )
            prefix = heat.get("prefix")
            if isinstance(prefix, dict) and not prefix.get("cache_used"):
                tokens = _int(prefix.get("tokens"))
                if tokens >= MIN_CACHEABLE_PREFIX:
                    _bump(prefix_rows, (*key, str(prefix.get("hash"))), calls=1, tokens=tokens)
        if c.max_tokens and c.max_tokens > 0:
            _bump(
                insight,
                key,
                maxtok_calls=1,
                maxtok_sum=c.max_tokens,
                maxtok_output_tokens=c.output_tokens,
                maxtok_utilisation=min(1.0, c.output_tokens / c.max_tokens),
                **{OUTPUT_BINS[output_bin(c.output_tokens)]: 1},
            )
        if c.complexity is not None and c.model:
            _bump(
                complexity_rows,
                (*key, c.complexity),
                calls=1,
                cost_usd=c.cost_usd or 0.0,
                input_tokens=c.input_tokens or 0,
                output_tokens=c.output_tokens or 0,
                cache_read_tokens=c.cache_read_tokens or 0,
                cache_write_tokens=c.cache_write_tokens or 0,
            )
    return out


# ---------------------------------------------------------------------------------------------- latency rollups
#
# `GET /api/usage/latency` (tokenlens.latency) reads, per UTC hour (`latency_hourly`) and UTC day
# (`latency_daily`) and (`provider`, `model`), the calls it counts (every outcome but "blocked" and "cached"),
# their errors and fallbacks; and, in `latency_bin_hourly` / `latency_bin_daily`, one row per non-empty bin of
# two histograms: `latency_ms` (`latency_calls`) and `ttft_ms` of streamed calls (`ttft_calls`). Bin b holds
# the durations in [2^(b/16), 2^((b+1)/16)) ms (16 bins per doubling, each 4.4% wide), for any duration from
# about a nanosecond (2^-20 ms; shorter ones, zero and negative ones go to `ZERO_BIN`, read as 0) to about 35
# years (2^40 ms; longer ones go to the last bin). Rows rather than columns: only the bins a call falls in
# are stored. Filled with the other rollups; migration 8 builds them for the calls already stored.

BINS_PER_DOUBLING = 16
FIRST_BIN = -20 * BINS_PER_DOUBLING  # 2^-20 ms
LAST_BIN = 40 * BINS_PER_DOUBLING  # from 2^40 ms on
ZERO_BIN = FIRST_BIN - 1
LATENCY = Rollup("latency", ("provider", "model"), ("calls", "error_calls", "fallback_calls"))
LATENCY_BINS = Rollup("latency_bin", ("provider", "model", "bin"), ("latency_calls", "ttft_calls"))
LATENCY_ROLLUPS: tuple[Rollup, ...] = (LATENCY, LATENCY_BINS)
ROLLUPS: tuple[Rollup, ...] = (*INSIGHT_ROLLUPS, *LATENCY_ROLLUPS)  # every rollup `write_increments` fills


class LatencyFacts(NamedTuple):
    """The fields of a call the latency rollups read (migration 8 selects these columns only)."""

    ts: float
    provider: str
    model: str | None
    outcome: str
    stream: bool
    latency_ms: float | None
    ttft_ms: float | None
    fallback_from: str | None


def latency_bin(ms: float) -> int:
    """The histogram bin of a duration in milliseconds (see above)."""
    if not ms >= 2.0 ** (FIRST_BIN / BINS_PER_DOUBLING):  # NaN too
        return ZERO_BIN
    if ms >= 2.0 ** (LAST_BIN / BINS_PER_DOUBLING):
        return LAST_BIN
    return math.floor(BINS_PER_DOUBLING * math.log2(ms))


def bin_value(index: int) -> float:
    """The value a bin stands for: its geometric middle 2^((b + 0.5)/16) ms, within 2^(1/32) - 1 (2.2%) of
    every duration in the bin; 0 for `ZERO_BIN`."""
    return 0.0 if index <= ZERO_BIN else 2.0 ** ((index + 0.5) / BINS_PER_DOUBLING)


def latency_increments(calls: Iterable[CallRecord | CallFacts | LatencyFacts]) -> Increments:
    """What some calls add to the latency rollups, per UTC hour."""
    counts: dict[tuple[Any, ...], dict[str, float]] = {}
    bins: dict[tuple[Any, ...], dict[str, float]] = {}
    for c in calls:
        if c.outcome in ("blocked", "cached"):
            continue
        key = (floor_hour(c.ts), c.provider, c.model or "")
        error, fallback = int(c.outcome == "error"), int(bool(c.fallback_from))
        _bump(counts, key, calls=1, error_calls=error, fallback_calls=fallback)
        if c.latency_ms is not None:
            _bump(bins, (*key, latency_bin(c.latency_ms)), latency_calls=1)
        if c.stream and c.ttft_ms is not None:
            _bump(bins, (*key, latency_bin(c.ttft_ms)), ttft_calls=1)
    return {LATENCY.name: counts, LATENCY_BINS.name: bins}


def call_increments(calls: Iterable[CallRecord | CallFacts]) -> Increments:
    """What some calls add to every rollup of `ROLLUPS`, per UTC hour."""
    calls = list(calls)
    return {**insight_increments(calls), **latency_increments(calls)}


def write_increments(db: pw.Database, increments: Increments, rollups: Sequence[Rollup] = ROLLUPS) -> None:
    """Add per-hour increments to the hourly and daily tables of `rollups`.

    Only the measures of `rollups` that these increments touch are written (the others keep their value).
    """
    for rollup in rollups:
        rows = increments.get(rollup.name) or {}
        known = set(rollup.measures)
        touched = {name for values in rows.values() for name in values if name in known}
        measures = tuple(m for m in rollup.measures if m in touched)
        if not measures:
            continue
        position = {name: i for i, name in enumerate(measures)}
        hourly: dict[tuple[Any, ...], list[float]] = {}
        daily: dict[tuple[Any, ...], list[float]] = {}
        for key, values in rows.items():
            vector = [0.0] * len(measures)
            for name, value in values.items():
                if name in position:
                    vector[position[name]] = value
            hourly[key] = vector
            add_vector(daily, (key[0] // DAY * DAY, *key[1:]), vector)
        _upsert(db, rollup.hourly, ("bucket", *rollup.dims), measures, hourly)
        _upsert(db, rollup.daily, ("day", *rollup.dims), measures, daily)


def raw_facts(db: pw.Database, start: float, end: float) -> list[CallFacts]:
    """The calls with start <= ts < end, as `CallFacts` (for the pieces of hours a read cuts)."""
    p = db.param
    columns = ", ".join(f'"{c}"' for c in FACT_COLUMNS)
    sql = f'SELECT {columns} FROM "call" WHERE "ts" >= {p} AND "ts" < {p}'
    return [facts_of_row(row) for row in _fetch(db, sql, [start, end])]


def rollup_sums(
    db: pw.Database,
    rollup: Rollup,
    start: float,
    end: float,
    group: Sequence[str],
    measures: Sequence[str] | None = None,
) -> dict[tuple[Any, ...], list[float]]:
    """Sums of `measures` (default all) of `rollup` over the calls with start <= ts < end, by `group` (dims).

    Whole UTC days come from the daily table, the other whole hours from the hourly one, and the pieces of
    hours cut by `start` or `end` (time zones with a :30 or :45 offset) from the raw calls.
    """
    measures = tuple(rollup.measures if measures is None else measures)
    out: dict[tuple[Any, ...], list[float]] = {}
    if end <= start:
        return out

    def add(key: tuple[Any, ...], values: Sequence[Any]) -> None:
        row = out.get(key)
        if row is None:
            out[key] = [float(v or 0) for v in values]
        else:
            for i, value in enumerate(values):
                row[i] += float(value or 0)

    p = db.param
    first, last = -(-int(start) // HOUR) * HOUR, floor_hour(end)
    raw: list[tuple[float, float]] = []
    ranges: list[tuple[str, str, int, int]] = []
    if first >= last:
        raw.append((start, end))
    else:
        raw += [(start, first), (last, end)]
        day_lo, day_hi = -(-first // DAY) * DAY, last // DAY * DAY
        if day_lo < day_hi:
            ranges += [(rollup.hourly, "bucket", first, day_lo), (rollup.daily, "day", day_lo, day_hi)]
            ranges.append((rollup.hourly, "bucket", day_hi, last))
        else:
            ranges.append((rollup.hourly, "bucket", first, last))
    names = ", ".join([*(f'"{g}"' for g in group), *(f'SUM("{m}")' for m in measures)])
    for table, column, lo, hi in ranges:
        if lo >= hi:
            continue
        sql = f'SELECT {names} FROM "{table}" WHERE "{column}" >= {p} AND "{column}" < {p}'
        if group:
            sql += " GROUP BY " + ", ".join(f'"{g}"' for g in group)
        for row in _fetch(db, sql, [lo, hi]):
            if row[len(group)] is not None:
                add(tuple(row[: len(group)]), row[len(group) :])
    positions = [1 + rollup.dims.index(g) for g in group]
    for a, b in raw:
        if a >= b:
            continue
        rows = call_increments(raw_facts(db, a, b))[rollup.name]
        for key, values in rows.items():
            add(tuple(key[i] for i in positions), [values.get(m, 0) for m in measures])
    return out


# ---------------------------------------------------------------------------------------------- session rollups
#
# The sessions list (`GET /api/usage/sessions`, tokenlens.sessions) reads one row per run rather than the
# calls: a **run** is a session (calls with `session_id`, kind "session") or an inferred conversation of calls
# without a session (kind "conversation"). Three tables (migration 9), kept by the writer with the other
# rollups, in the same transaction:
# - `session_run` (kind, group_id): sums of the run's calls (tokens, cost and its split, outcomes, tool calls,
#   re-sent history), its first and last call time, end (last call time plus latency), highest turn, and the
#   input tokens of its first and last call with input (the context's growth);
# - `session_model` (kind, group_id, source, model, provider): calls, cost and tokens (sources, models and
#   where the money went, per run);
# - `session_conversation` (kind, group_id, conversation_id): the calls of each conversation of a run and the
#   input and output tokens of its latest call with input, from which the history re-sent by the next call
#   of that conversation is computed (`min(input, previous input + previous output)`, as in
#   `tokenlens.sessions`).
# Each row is keyed by run, not by hour: a run's figures are those of all its calls, and the list reads at most
# `limit` rows of `session_run` through its indexes on (kind, first_ts) and (kind, last_ts), however many
# calls and runs the store holds.

SESSION_RUN = "session_run"
SESSION_MODEL = "session_model"
SESSION_CONVERSATION = "session_conversation"
SESSION_TABLES: tuple[str, ...] = (SESSION_RUN, SESSION_MODEL, SESSION_CONVERSATION)
# summed measures of `session_run` (floats: the `_usd` ones)
RUN_SUMS: tuple[str, ...] = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "input_cost_usd",
    "output_cost_usd",
    "cache_read_cost_usd",
    "cache_write_cost_usd",
    "unpriced_calls",
    "error_calls",
    "blocked_calls",
    "cached_calls",
    "input_calls",  # calls with input tokens (the context's growth is measured over them)
    "tool_calls",
    "history_tokens",
    "history_cost_usd",
)
MODEL_SUMS: tuple[str, ...] = (
    "calls",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


class SessionFacts(NamedTuple):
    """The fields of a call the session rollups read (`tool_calls` from `details`, see `tool_calls_of`)."""

    id: str
    ts: float
    source: str
    model: str | None
    provider: str
    outcome: str
    session_id: str | None
    conversation_id: str | None
    turn: int | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: float | None
    input_cost_usd: float | None
    output_cost_usd: float | None
    cache_read_cost_usd: float | None
    cache_write_cost_usd: float | None
    latency_ms: float | None
    tool_calls: int


# the `call` columns a `SessionFacts` is read from (migration 9), `details` last
SESSION_FACT_COLUMNS: tuple[str, ...] = (*SessionFacts._fields[:-1], "details")


def tools_called(details: Any) -> list[str]:
    """The names of the tool calls a call's request answers (`details["tools"]["called"]`, set by
    tokenlens.sessions), from `details` as a dict or as its stored JSON text."""
    if isinstance(details, str):
        if '"called"' not in details:
            return []
        try:
            details = json.loads(details)
        except ValueError:
            return []
    tools = details.get("tools") if isinstance(details, dict) else None
    called = tools.get("called") if isinstance(tools, dict) else None
    return [str(n) for n in called] if isinstance(called, list) else []


def tool_calls_of(details: Any) -> int:
    """How many tool calls a call's request answers (`tools_called`), within MAX_TOKENS."""
    return min(len(tools_called(details)), MAX_TOKENS)


def session_facts(call: CallRecord | Sequence[Any]) -> SessionFacts:
    """`SessionFacts` of a record, or of a row selected with `SESSION_FACT_COLUMNS`."""
    if isinstance(call, CallRecord):
        c = call
        return SessionFacts(
            c.id,
            c.ts,
            c.source,
            c.model,
            c.provider,
            c.outcome,
            c.session_id,
            c.conversation_id,
            c.turn,
            c.input_tokens,
            c.output_tokens,
            c.cache_read_tokens,
            c.cache_write_tokens,
            c.reasoning_tokens,
            c.cost_usd,
            c.input_cost_usd,
            c.output_cost_usd,
            c.cache_read_cost_usd,
            c.cache_write_cost_usd,
            c.latency_ms,
            tool_calls_of(c.details) if c.details else 0,
        )
    return SessionFacts._make([*call[:-1], tool_calls_of(call[-1])])


def run_of(c: SessionFacts | CallRecord) -> tuple[str, str] | None:
    """The run a call belongs to: ("session", id), ("conversation", id) for a call without a session, or None."""
    if c.session_id is not None:
        return "session", c.session_id
    if c.conversation_id is not None:
        return "conversation", c.conversation_id
    return None


def history_of(c: SessionFacts, previous: tuple[int, int] | None) -> tuple[int, float]:
    """(tokens, cost) of the history a call re-sends: the part of its input that repeats the previous call of
    its conversation (its input plus its answer, `previous`), priced at the call's own input-side rate."""
    inp = int(c.input_tokens or 0)
    if previous is None or not inp:
        return 0, 0.0
    tokens = min(inp, previous[0] + previous[1])
    uncached, _output, read, write = parts_of(c)
    side = uncached + read + write
    return tokens, side * tokens / inp


def unpriced(c: SessionFacts) -> bool:
    """An unpriced call, as the usage rollups count them (a call that used tokens, or succeeded, with no cost)."""
    return c.cost_usd is None and (c.outcome == "ok" or c.input_tokens > 0 or c.output_tokens > 0)


@dataclass
class _RunRow:
    sums: list[float]  # in RUN_SUMS order
    first_ts: float
    last_ts: float
    ended: float
    turns: int
    first_input: tuple[float, int] | None = None  # (ts, input tokens) of the first call with input
    last_input: tuple[float, int] | None = None


def _conversation_state(
    db: pw.Database, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], tuple[float, int, int]]:
    """The stored (last_ts, last input, last output) of some conversations of runs (read through the primary
    key: the runs' rows by kind and group id, the conversations wanted picked here)."""
    out: dict[tuple[str, str, str], tuple[float, int, int]] = {}
    wanted = set(keys)
    p = db.param
    for kind in sorted({k[0] for k in wanted}):
        groups = sorted({k[1] for k in wanted if k[0] == kind})
        for chunk in pw.chunked(groups, 300):
            sql = (
                f'SELECT "group_id", "conversation_id", "last_ts", "last_input", "last_output" '
                f'FROM "{SESSION_CONVERSATION}" WHERE "kind" = {p} AND "group_id" IN ({", ".join([p] * len(chunk))}) '
                'AND "last_ts" IS NOT NULL'
            )
            for group, conversation, ts, inp, out_tokens in _fetch(db, sql, [kind, *chunk]):
                key = (kind, group, conversation)
                if key in wanted:
                    out[key] = (float(ts), int(inp or 0), int(out_tokens or 0))
    return out


@dataclass
class RunTotals:
    """What some calls add to the session rollups: per run, per (run, source, model, provider), per (run,
    conversation) [calls, last_ts, last input, last output], and the (tokens, cost) of history each call
    re-sends, in the order of the calls."""

    runs: dict[tuple[str, str], _RunRow]
    models: dict[tuple[Any, ...], list[float]]
    conversations: dict[tuple[str, str, str], list[Any]]
    history: list[tuple[int, float]]


def accumulate_runs(
    facts: Sequence[SessionFacts],
    state: dict[tuple[str, str, str], tuple[float, int, int]],
    run: Callable[[SessionFacts], tuple[str, str] | None] = run_of,
) -> RunTotals:
    """The session-rollup increments of calls in time order (`state`: the conversations' latest call
    (last_ts, input, output) before them, updated in place). `run` names each call's run."""
    totals = RunTotals({}, {}, {}, [])
    for c in facts:
        key = run(c)
        if key is None:
            totals.history.append((0, 0.0))
            continue
        inp = int(c.input_tokens or 0)
        history = (0, 0.0)
        if c.conversation_id is not None:
            conversation = (*key, c.conversation_id)
            previous = state.get(conversation)
            history = history_of(c, None if previous is None else (previous[1], previous[2]))
            row = totals.conversations.setdefault(conversation, [0, None, None, None])
            row[0] += 1
            if inp:
                state[conversation] = (c.ts, inp, int(c.output_tokens or 0))
                row[1:] = [c.ts, inp, int(c.output_tokens or 0)]
        totals.history.append(history)
        increments = (  # in RUN_SUMS order
            1,
            inp,
            c.output_tokens or 0,
            c.cache_read_tokens or 0,
            c.cache_write_tokens or 0,
            c.reasoning_tokens or 0,
            c.cost_usd or 0.0,
            *parts_of(c),
            int(unpriced(c)),
            int(c.outcome == "error"),
            int(c.outcome == "blocked"),
            int(c.outcome == "cached"),
            int(inp > 0),
            c.tool_calls if c.outcome == "ok" else 0,
            history[0],
            history[1],
        )
        ended = c.ts + max(0.0, float(c.latency_ms or 0.0)) / 1000
        found = totals.runs.get(key)
        if found is None:
            found = totals.runs[key] = _RunRow([0.0] * len(RUN_SUMS), c.ts, c.ts, ended, 0)
        sums = found.sums
        for i, value in enumerate(increments):
            sums[i] += value
        found.first_ts, found.last_ts = min(found.first_ts, c.ts), max(found.last_ts, c.ts)
        found.ended, found.turns = max(found.ended, ended), max(found.turns, int(c.turn or 0))
        if inp:
            if found.first_input is None:
                found.first_input = (c.ts, inp)
            found.last_input = (c.ts, inp)
        add_vector(
            totals.models,
            (*key, c.source or "unknown", c.model or "", c.provider),
            [
                1,
                c.cost_usd or 0.0,
                inp,
                c.output_tokens or 0,
                c.cache_read_tokens or 0,
                c.cache_write_tokens or 0,
            ],
        )
    return totals


def run_row(kind: str, group_id: str, row: _RunRow) -> dict[str, Any]:
    """A run's totals as a `list_runs` row."""
    return {
        "kind": kind,
        "group_id": group_id,
        **{m: v if m in FLOAT_RUN_SUMS else int(v) for m, v in zip(RUN_SUMS, row.sums, strict=True)},
        "first_ts": row.first_ts,
        "last_ts": row.last_ts,
        "ended": row.ended,
        "turns": row.turns,
        "first_input": row.first_input[1] if row.first_input else None,
        "last_input": row.last_input[1] if row.last_input else None,
    }


def add_to_session_rollups(db: pw.Database, calls: Iterable[SessionFacts]) -> None:
    """Add newly stored calls to the session rollups (inside the insert's transaction; in time order when
    they come from several batches, as the writer and migration 9 give them)."""
    facts = sorted((c for c in calls if run_of(c) is not None), key=lambda c: (c.ts, c.id))
    if not facts:
        return
    keys = {(*run, c.conversation_id) for c in facts if c.conversation_id is not None and (run := run_of(c))}
    totals = accumulate_runs(facts, _conversation_state(db, list(keys)))
    _write_runs(db, totals.runs)
    _upsert(db, SESSION_MODEL, ("kind", "group_id", "source", "model", "provider"), MODEL_SUMS, totals.models)
    _write_conversations(db, totals.conversations)


def _least(db: pw.Database, a: str, b: str, largest: bool = False) -> str:
    if isinstance(db, pw.PostgresqlDatabase):
        return f"{'GREATEST' if largest else 'LEAST'}({a}, {b})"
    return f"{'MAX' if largest else 'MIN'}({a}, {b})"


def _upsert_rows(
    db: pw.Database,
    table: str,
    key: Sequence[str],
    columns: Sequence[str],
    updates: Sequence[str],
    values: Sequence[tuple[Any, ...]],
) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET updates, of rows of (key..., columns...) in key order."""
    if not values:
        return
    names = ", ".join(f'"{c}"' for c in (*key, *columns))
    one = "(" + ", ".join([db.param] * (len(key) + len(columns))) + ")"
    conflict = ", ".join(f'"{c}"' for c in key)
    sql = f'INSERT INTO "{table}" ({names}) VALUES {one} ON CONFLICT ({conflict}) DO UPDATE SET {", ".join(updates)}'
    ordered = sorted(values, key=lambda row: tuple(row[: len(key)]))
    cursor = db.cursor()
    if isinstance(db, pw.SqliteDatabase):
        cursor.executemany(sql, ordered)
        return
    for chunk in pw.chunked(ordered, 200):
        many = sql.replace(f"VALUES {one}", "VALUES " + ", ".join([one] * len(chunk)))
        cursor.execute(many, [v for row in chunk for v in row])


def _pick(table: str, value: str, when: str, later: bool) -> str:
    """SET value = the incoming one when its time column `when` is set and earlier (later) than the stored."""
    cmp = ">=" if later else "<"
    return (
        f'"{value}" = CASE WHEN excluded."{when}" IS NOT NULL AND ("{table}"."{when}" IS NULL OR '
        f'excluded."{when}" {cmp} "{table}"."{when}") THEN excluded."{value}" ELSE "{table}"."{value}" END'
    )


def _write_runs(db: pw.Database, runs: dict[tuple[str, str], _RunRow]) -> None:
    t = SESSION_RUN
    columns = (
        *RUN_SUMS,
        "first_ts",
        "last_ts",
        "ended",
        "turns",
        "first_input_ts",
        "first_input",
        "last_input_ts",
        "last_input",
    )
    updates = [f'"{m}" = "{t}"."{m}" + excluded."{m}"' for m in RUN_SUMS]
    updates += [
        f'"first_ts" = {_least(db, f'"{t}"."first_ts"', 'excluded."first_ts"')}',
        f'"last_ts" = {_least(db, f'"{t}"."last_ts"', 'excluded."last_ts"', largest=True)}',
        f'"ended" = {_least(db, f'"{t}"."ended"', 'excluded."ended"', largest=True)}',
        f'"turns" = {_least(db, f'"{t}"."turns"', 'excluded."turns"', largest=True)}',
        _pick(t, "first_input", "first_input_ts", later=False),
        _pick(t, "first_input_ts", "first_input_ts", later=False),
        _pick(t, "last_input", "last_input_ts", later=True),
        _pick(t, "last_input_ts", "last_input_ts", later=True),
    ]
    values = []
    for (kind, group), row in runs.items():
        first, last = row.first_input or (None, None), row.last_input or (None, None)
        sums = [v if m in FLOAT_RUN_SUMS else int(v) for m, v in zip(RUN_SUMS, row.sums, strict=True)]
        values.append((kind, group, *sums, row.first_ts, row.last_ts, row.ended, row.turns, *first, *last))
    _upsert_rows(db, t, ("kind", "group_id"), columns, updates, values)


FLOAT_RUN_SUMS = frozenset(m for m in RUN_SUMS if m.endswith("_usd"))


def _write_conversations(db: pw.Database, rows: dict[tuple[str, str, str], list[Any]]) -> None:
    t = SESSION_CONVERSATION
    updates = [
        f'"calls" = "{t}"."calls" + excluded."calls"',
        _pick(t, "last_input", "last_ts", later=True),
        _pick(t, "last_output", "last_ts", later=True),
        _pick(t, "last_ts", "last_ts", later=True),
    ]
    values = [(*key, *row) for key, row in rows.items()]
    columns = ("calls", "last_ts", "last_input", "last_output")
    _upsert_rows(db, t, ("kind", "group_id", "conversation_id"), columns, updates, values)


RUN_COLUMNS: tuple[str, ...] = (
    "kind",
    "group_id",
    *RUN_SUMS,
    "first_ts",
    "last_ts",
    "ended",
    "turns",
    "first_input",
    "last_input",
)


def list_runs(
    db: pw.Database,
    kind: str,
    start: float,
    end: float,
    limit: int,
    before: tuple[float, str] | None = None,
) -> list[dict[str, Any]]:
    """The runs of `kind` with a call in [start, end) (first call before `end`, last call from `start` on),
    newest first (by first call, then id), at most `limit`, after the cursor `before` (first_ts, group_id).

    Two index range reads: the runs that started in the period (`first_ts` index), then, when they are fewer
    than `limit`, the runs that started earlier and went on into it (`last_ts` index; the `+` keeps SQLite
    from reading the `first_ts` index instead)."""
    p = db.param
    select = ", ".join(f'"{c}"' for c in RUN_COLUMNS)
    after, after_params = "", []
    if before is not None:
        after = f' AND ("first_ts" < {p} OR ("first_ts" = {p} AND "group_id" < {p}))'
        after_params = [before[0], before[0], before[1]]
    order = f' ORDER BY "first_ts" DESC, "group_id" DESC LIMIT {p}'
    sql = (
        f'SELECT {select} FROM "{SESSION_RUN}" WHERE "kind" = {p} AND "first_ts" >= {p} AND "first_ts" < {p}'
        + after
        + order
    )
    rows = _fetch(db, sql, [kind, start, end, *after_params, limit])
    if len(rows) < limit:
        sql = (
            f'SELECT {select} FROM "{SESSION_RUN}" WHERE "kind" = {p} AND "last_ts" >= {p} '
            f'AND +"first_ts" < {p}' + after + order
        )
        rows += _fetch(db, sql, [kind, start, start, *after_params, limit - len(rows)])
    return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in rows]


def run_parts(
    db: pw.Database, kind: str, groups: Sequence[str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """For some runs of `kind`: their (source, model, provider) rows of `session_model`, most expensive first,
    and their number of conversations."""
    models: dict[str, list[dict[str, Any]]] = {}
    conversations: dict[str, int] = {}
    p = db.param
    names = ("group_id", "source", "model", "provider", *MODEL_SUMS)
    for chunk in pw.chunked(list(groups), 300):
        marks = ", ".join([p] * len(chunk))
        sql = (
            f'SELECT {", ".join(f'"{n}"' for n in names)} FROM "{SESSION_MODEL}" '
            f'WHERE "kind" = {p} AND "group_id" IN ({marks})'
        )
        for row in _fetch(db, sql, [kind, *chunk]):
            item = dict(zip(names, row, strict=True))
            models.setdefault(str(item.pop("group_id")), []).append(item)
        sql = (
            f'SELECT "group_id", COUNT(*) FROM "{SESSION_CONVERSATION}" '
            f'WHERE "kind" = {p} AND "group_id" IN ({marks}) GROUP BY "group_id"'
        )
        for group, count in _fetch(db, sql, [kind, *chunk]):
            conversations[str(group)] = int(count)
    for items in models.values():
        items.sort(key=lambda i: (-float(i["cost_usd"] or 0), -int(i["calls"] or 0), i["model"]))
    return models, conversations
