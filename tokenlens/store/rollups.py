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
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any

import peewee as pw

from tokenlens.records import CallRecord

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
_SIMPLE = f"complexity IS NOT NULL AND complexity <= {SIMPLE_COMPLEXITY}"
RAW_MEASURES: dict[str, str] = {
    "calls": "COUNT(*)",
    "unpriced_calls": _COUNT.format(cond=_UNPRICED),
    "blocked_calls": _COUNT.format(cond="outcome = 'blocked'"),
    "error_calls": _COUNT.format(cond="outcome = 'error'"),
    "cached_calls": _COUNT.format(cond="outcome = 'cached'"),
    "cost_usd": "COALESCE(SUM(cost_usd), 0)",
    "saved_usd": "COALESCE(SUM(saved_usd), 0)",
    "input_cost_usd": "COALESCE(SUM(input_cost_usd), 0)",
    "output_cost_usd": "COALESCE(SUM(output_cost_usd), 0)",
    "cache_read_cost_usd": "COALESCE(SUM(cache_read_cost_usd), 0)",
    "cache_write_cost_usd": "COALESCE(SUM(cache_write_cost_usd), 0)",
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


# ---------------------------------------------------------------------------------------------- writes


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
        r.input_cost_usd or 0.0,
        r.output_cost_usd or 0.0,
        r.cache_read_cost_usd or 0.0,
        r.cache_write_cost_usd or 0.0,
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
        row = hourly.get(key)
        if row is None:
            hourly[key] = inc
        else:
            for i, value in enumerate(inc):
                row[i] += value
        tag_inc = [1, r.cost_usd or 0.0, r.input_tokens, r.output_tokens]
        for tag_key, tag_value in _tag_pairs(r.tags):
            tkey = (bucket, tag_key, tag_value)
            trow = tagged.get(tkey)
            if trow is None:
                tagged[tkey] = list(tag_inc)
            else:
                for i, value in enumerate(tag_inc):
                    trow[i] += value
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
    values = [(*k, *v) for k, v in rows.items()]
    cursor = db.cursor()
    if isinstance(db, pw.SqliteDatabase):
        cursor.executemany(sql, values)
        return
    for chunk in pw.chunked(values, 200):
        many = sql.replace(f"VALUES {one}", "VALUES " + ", ".join([one] * len(chunk)))
        cursor.execute(many, [v for row in chunk for v in row])


def add_to_rollups(db: pw.Database, records: Iterable[CallRecord]) -> None:
    """Add newly inserted calls to the rollups (call inside the insert's transaction)."""
    hourly, tagged = accumulate(records)
    per_source: dict[tuple[Any, ...], list[float]] = {}
    per_day: dict[tuple[Any, ...], list[float]] = {}
    for (bucket, source, model, provider), values in hourly.items():
        for target, key in (
            (per_source, (bucket, source)),
            (per_day, (bucket // DAY * DAY, source, model, provider)),
        ):
            row = target.get(key)
            if row is None:
                target[key] = list(values)
            else:
                for i, value in enumerate(values):
                    row[i] += value
    _upsert(db, HOURLY_TABLE, HOURLY_KEY, MEASURES, hourly)
    _upsert(db, SOURCE_TABLE, SOURCE_KEY, MEASURES, per_source)
    _upsert(db, DAILY_TABLE, DAILY_KEY, MEASURES, per_day)
    _upsert(db, TAG_TABLE, TAG_KEY, TAG_MEASURES, tagged)


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
) -> list[dict[tuple[Any, ...], Row]]:
    """Sums of every measure over each interval [edges[i], edges[i+1]), grouped by `dims`.

    `dims` are columns of `usage_hourly` (`source`, `model` — "" for none —, `provider`); `where` an
    equality filter on them. Answers from the hourly rollups; hours cut by a non-hour-aligned edge come from
    the raw calls. Returns one dict per interval: dims tuple -> {measure: value}.
    """
    intervals = len(edges) - 1
    out: list[dict[tuple[Any, ...], Row]] = [{} for _ in range(max(intervals, 0))]
    if intervals < 1 or edges[-1] <= edges[0]:
        return out
    p = db.param
    cut, pieces = _pieces(edges)
    first, last = -(-int(edges[0]) // HOUR) * HOUR, floor_hour(edges[-1])
    by_bucket = intervals > 1
    source_only = set(dims) <= {"source"} and set(where or {}) <= {"source"}
    # (table, time column, lo, hi): the rollup ranges read; a single range uses whole UTC days where it can
    ranges: list[tuple[str, str, int, int]] = []
    hourly = SOURCE_TABLE if source_only else HOURLY_TABLE
    if by_bucket:
        ranges.append((hourly, "bucket", first, last))
    else:
        day_lo, day_hi = -(-first // DAY) * DAY, last // DAY * DAY
        if day_lo < day_hi:
            ranges += [(hourly, "bucket", first, day_lo), (DAILY_TABLE, "day", day_lo, day_hi)]
            ranges.append((hourly, "bucket", day_hi, last))
        else:
            ranges.append((hourly, "bucket", first, last))
    width = (1 if by_bucket else 0) + len(dims)
    for table, column, lo, hi in ranges:
        if lo >= hi:
            continue
        group = ([column] if by_bucket else []) + list(dims)
        select = ", ".join([*(f'"{g}"' for g in group), *(f'SUM("{m}")' for m in MEASURES)])
        conditions = [f'"{column}" >= {p}', f'"{column}" < {p}']
        params: list[Any] = [lo, hi]
        for name, value in (where or {}).items():
            conditions.append(f'"{name}" = {p}')
            params.append(value)
        if cut and column == "bucket":
            conditions.append('"bucket" NOT IN (' + ", ".join([p] * len(cut)) + ")")
            params.extend(cut)
        sql = f'SELECT {select} FROM "{table}" WHERE {" AND ".join(conditions)}'
        if group:
            sql += " GROUP BY " + ", ".join(f'"{g}"' for g in group)
        for row in _fetch(db, sql, params):
            if row[width] is None:
                continue  # SUM over no rows (no GROUP BY)
            index = bisect_right(edges, row[0]) - 1 if by_bucket else 0
            key = tuple(row[1 if by_bucket else 0 : width])
            _merge(out[index], key, row[width:])
    if pieces:
        raw_dims = [("COALESCE(model, '')" if d == "model" else d) for d in dims]
        raw_select = ", ".join([*raw_dims, *(f"{expr}" for expr in RAW_MEASURES.values())])
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
                _merge(out[index], tuple(row[: len(dims)]), row[len(dims) :])
    return out


def _merge(into: dict[tuple[Any, ...], Row], key: tuple[Any, ...], values: Sequence[Any]) -> None:
    row = into.get(key)
    if row is None:
        row = into[key] = empty_row()
    for name, value in zip(MEASURES, values, strict=True):
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
