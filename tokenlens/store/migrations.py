"""Schema migrations: an ordered list of named steps, applied in place when a store is opened (llm style).

Each `Migration` is applied once, in list order, in one transaction together with its `schema_migration`
row (its name). A store from before names (a numbered `schema_version` n) counts as having the first n
(`NUMBERED`). A migration creates a table from its live model in `tokenlens.store.models` as it was then
(`_table_as_of`: without the columns later migrations add), or with SQL of its own for tables that have no
model. To change the schema: edit the models, then append a migration with a new name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SchemaMigrator, SqliteMigrator, migrate

from tokenlens.store.models import (
    Call,
    CallBody,
    ConfigSection,
    LedgerBucket,
    SchemaMigration,
    SchemaVersion,
    UsageHourly,
    UsageTagHourly,
    bind_model,
)

if TYPE_CHECKING:
    from tokenlens.store.rollups import Rollup


class Migration(NamedTuple):
    """One schema change: `name` (recorded once applied; "NNNN_what", the number only for reading order)
    and the function that makes it."""

    name: str
    apply: Callable[[pw.Database, SchemaMigrator], None]


class SchemaError(RuntimeError):
    """The database schema cannot be used by this version of TokenLens."""


def _table_as_of(
    model: type[pw.Model],
    db: pw.Database,
    *,
    without: tuple[str, ...] = (),
    indexes: tuple[tuple[tuple[str, ...], bool], ...] | None = None,
) -> type[pw.Model]:
    """`model` bound to `db` as a migration created it: without the columns (`without`) and indexes that
    later migrations add. The live model is the one copy of a table's columns; a migration that adds a column
    to a table created earlier lists it in the earlier migration's `without`."""
    frozen = bind_model(model, db)
    for name in without:
        frozen._meta.remove_field(name)
    if indexes is not None:
        frozen._meta.indexes = list(indexes)
    return frozen


# `call` columns added after migration 1 (by 0003, 0010, 0011)
_CALL_ADDED_LATER = ("details", "transport", "price_source", "modality_tokens")


def _v1_create_calls(db: pw.Database, migrator: SchemaMigrator) -> None:
    """The call and call_body tables, with the indexes the list and filter queries use."""
    call = _table_as_of(
        Call,
        db,
        without=_CALL_ADDED_LATER,
        indexes=(
            (("source", "ts"), False),
            (("model", "ts"), False),
            (("provider", "ts"), False),
            (("outcome", "ts"), False),
        ),
    )
    db.create_tables([call, _table_as_of(CallBody, db)])


def _v2_session_indexes(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Indexes for the session and conversation views."""
    migrate(
        migrator.add_index("call", ("session_id", "ts"), False),
        migrator.add_index("call", ("conversation_id", "ts"), False),
    )


def _v3_call_details(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Per-call analysis details (heatmap, waste findings, attempts, guardrail scores) as a JSON object."""
    migrate(migrator.add_column("call", "details", pw.TextField(default="{}")))


def _v4_measures() -> dict[str, str]:
    """The measures of `usage_hourly` (its columns after the key) and the SQL aggregate that sums each over
    the raw calls, as the writer defines them (`tokenlens.store.rollups.RAW_MEASURES`)."""
    from tokenlens.store.rollups import HOURLY_KEY, RAW_MEASURES

    return {name: RAW_MEASURES[name] for name in UsageHourly._meta.fields if name not in HOURLY_KEY}


def _v4_usage_rollups(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Hourly (UTC) usage rollups per source, model and provider, and per tag; built from the stored calls."""
    measures = _v4_measures()
    tag_hourly = _table_as_of(UsageTagHourly, db)
    db.create_tables([_table_as_of(UsageHourly, db), tag_hourly])
    if isinstance(db, pw.PostgresqlDatabase):
        bucket = "(FLOOR(ts / 3600) * 3600)::bigint"
    else:
        bucket = "CAST(ts / 3600 AS INTEGER) * 3600"
    names = ", ".join(f'"{m}"' for m in measures)
    db.execute_sql(
        f'INSERT INTO "usage_hourly" ("bucket", "source", "model", "provider", {names}) '
        f"SELECT {bucket}, source, COALESCE(model, ''), provider, {', '.join(measures.values())} "
        f"FROM \"call\" GROUP BY {bucket}, source, COALESCE(model, ''), provider"
    )
    tagged: dict[tuple[int, str, str], list[float]] = {}
    cursor = db.execute_sql(
        "SELECT ts, tags, cost_usd, input_tokens, output_tokens FROM \"call\" WHERE tags <> '{}'"
    )
    for ts, tags, cost, input_tokens, output_tokens in cursor:
        try:
            parsed = json.loads(tags) if tags else {}
        except ValueError:
            continue
        if not isinstance(parsed, dict):
            continue
        for key, value in parsed.items():
            text = value if isinstance(value, str) else json.dumps(value)
            row = tagged.setdefault((int(ts // 3600) * 3600, str(key), text), [0, 0.0, 0, 0])
            row[0] += 1
            row[1] += cost or 0.0
            row[2] += input_tokens or 0
            row[3] += output_tokens or 0
    rows = [
        {
            "bucket": k[0],
            "tag_key": k[1],
            "tag_value": k[2],
            "calls": v[0],
            "cost_usd": v[1],
            "input_tokens": v[2],
            "output_tokens": v[3],
        }
        for k, v in tagged.items()
    ]
    for chunk in pw.chunked(rows, 500):
        tag_hourly.insert_many(chunk).execute()


def _v5_coarser_rollups(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Two coarser copies of `usage_hourly` for fast reads: per UTC hour and source, per UTC day and
    source, model and provider; built from `usage_hourly`."""
    names = list(_v4_measures())
    columns = ", ".join(f'"{m}"' for m in names)
    typed = ", ".join(
        f'"{m}" {"DOUBLE PRECISION" if isinstance(db, pw.PostgresqlDatabase) else "REAL"} NOT NULL DEFAULT 0'
        if m.endswith("_usd")
        else f'"{m}" BIGINT NOT NULL DEFAULT 0'
        for m in names
    )
    summed = ", ".join(f'SUM("{m}")' for m in names)
    db.execute_sql(
        f'CREATE TABLE "usage_hourly_source" ("bucket" BIGINT NOT NULL, "source" TEXT NOT NULL, {typed}, '
        'PRIMARY KEY ("bucket", "source"))'
    )
    db.execute_sql(
        f'CREATE TABLE "usage_daily" ("day" BIGINT NOT NULL, "source" TEXT NOT NULL, "model" TEXT NOT NULL, '
        f'"provider" TEXT NOT NULL, {typed}, PRIMARY KEY ("day", "source", "model", "provider"))'
    )
    db.execute_sql(
        f'INSERT INTO "usage_hourly_source" ("bucket", "source", {columns}) '
        f'SELECT "bucket", "source", {summed} FROM "usage_hourly" GROUP BY "bucket", "source"'
    )
    day = '("bucket" / 86400) * 86400'
    db.execute_sql(
        f'INSERT INTO "usage_daily" ("day", "source", "model", "provider", {columns}) '
        f'SELECT {day}, "source", "model", "provider", {summed} FROM "usage_hourly" '
        f'GROUP BY {day}, "source", "model", "provider"'
    )


def _v6_shared_state(db: pw.Database, migrator: SchemaMigrator) -> None:
    """State that several gateways share through one store: spend and leased headroom per cap bucket
    (`ledger_bucket`, tokenlens.shared_ledger) and the configuration sections changed through the API
    (`config_section`, tokenlens.config_sync)."""
    db.create_tables([_table_as_of(LedgerBucket, db), _table_as_of(ConfigSection, db)])


_V7_OUTPUT_BINS = 77
_V7_ROLLUPS: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    # name: ((dimension, SQL type), ...), (measure, ...)
    "insight": (
        (("source", "TEXT"), ("model", "TEXT"), ("provider", "TEXT")),
        (
            "waste_calls",
            "waste_finding_calls",
            "heat_calls",
            "heat_input_tokens",
            "heat_system",
            "heat_tools",
            "heat_context",
            "heat_history",
            "heat_query",
            "maxtok_calls",
            "maxtok_sum",
            "maxtok_output_tokens",
            "maxtok_utilisation",
            "dedup_calls",
            "dedup_saved_usd",
            *(f"out_h{i:02d}" for i in range(_V7_OUTPUT_BINS)),
        ),
    ),
    "insight_waste": (
        (("source", "TEXT"), ("model", "TEXT"), ("provider", "TEXT"), ("waste_type", "TEXT")),
        ("calls", "tokens", "cost_usd"),
    ),
    "insight_turn": ((("source", "TEXT"), ("turn", "BIGINT")), ("calls", "input_tokens", "history_tokens")),
    "insight_complexity": (
        (("source", "TEXT"), ("model", "TEXT"), ("provider", "TEXT"), ("complexity", "BIGINT")),
        ("calls", "cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"),
    ),
    "insight_prefix": (
        (("source", "TEXT"), ("model", "TEXT"), ("provider", "TEXT"), ("prefix_hash", "TEXT")),
        ("calls", "tokens"),
    ),
}
_V7_REAL = frozenset(("cost_usd", "dedup_saved_usd", "maxtok_utilisation"))


def _create_rollups(
    db: pw.Database,
    spec: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]],
    real: frozenset[str],
) -> list[Rollup]:
    """The hourly and daily tables of each rollup of `spec` (name: (dimensions with their SQL type,
    measures)), keyed by time and dimensions; measures in `real` are floats, the others integers."""
    from tokenlens.store.rollups import Rollup

    pg = isinstance(db, pw.PostgresqlDatabase)
    float_type = "DOUBLE PRECISION" if pg else "REAL"
    created: list[Rollup] = []
    for name, (dims, measures) in spec.items():
        for suffix, time_column in (("hourly", "bucket"), ("daily", "day")):
            columns = [f'"{time_column}" BIGINT NOT NULL']
            columns += [f'"{d}" {kind} NOT NULL' for d, kind in dims]
            columns += [f'"{m}" {float_type if m in real else "BIGINT"} NOT NULL DEFAULT 0' for m in measures]
            key = ", ".join(f'"{c}"' for c in (time_column, *(d for d, _ in dims)))
            clustered = "" if pg else " WITHOUT ROWID"  # SQLite: rows stored in key order, the key once
            db.execute_sql(
                f'CREATE TABLE "{name}_{suffix}" ({", ".join(columns)}, PRIMARY KEY ({key})){clustered}'
            )
        created.append(Rollup(name, tuple(d for d, _ in dims), measures))
    return created


def _batches(db: pw.Database, select: str, cursor_name: str) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of `select` in batches of 20,000: on PostgreSQL through a server-side cursor (a plain one
    would fetch every row at once)."""
    pg = isinstance(db, pw.PostgresqlDatabase)
    cursor = db.cursor()
    if pg:
        cursor.execute(f"DECLARE {cursor_name} NO SCROLL CURSOR FOR {select}")
    else:
        cursor.execute(select)
    while True:
        if pg:
            cursor.execute(f"FETCH 20000 FROM {cursor_name}")
        batch = cursor.fetchmany(20_000)
        if not batch:
            break
        yield batch
    if pg:
        cursor.execute(f"CLOSE {cursor_name}")


def _v7_insight_rollups(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Rollups of the per-call analysis the token-intelligence views read (waste by type, heatmap sections,
    history by turn, output over max_tokens with a histogram, complexity, cacheable prefixes), per UTC hour
    and per UTC day; built from the stored calls (one pass, their `details` decoded in Python).

    The tables are declared here; the per-call increments are computed by `tokenlens.store.rollups` (the
    writer's own code, so that the backfill and the writer agree), written to these columns only.
    """
    from tokenlens.store import rollups

    frozen = _create_rollups(db, _V7_ROLLUPS, _V7_REAL)
    select = "SELECT " + ", ".join(f'"{c}"' for c in rollups.FACT_COLUMNS) + ' FROM "call"'
    for batch in _batches(db, select, "tokenlens_v7"):
        increments = rollups.insight_increments(rollups.facts_of_row(row) for row in batch)
        rollups.write_increments(db, increments, frozen)


_V8_ROLLUPS: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    "latency": ((("provider", "TEXT"), ("model", "TEXT")), ("calls", "error_calls", "fallback_calls")),
    "latency_bin": (
        (("provider", "TEXT"), ("model", "TEXT"), ("bin", "BIGINT")),
        ("latency_calls", "ttft_calls"),
    ),
}


def _v8_latency_rollups(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Rollups of what `GET /api/usage/latency` reads, per UTC hour and per UTC day and provider and model:
    the calls it counts (not blocked, not cached), their errors and fallbacks, and one row per non-empty bin
    of the histograms of `latency_ms` and of `ttft_ms` (streamed calls); built from the stored calls. And an
    index of the calls on (source, model, ts), for the calls list filtered by both.

    As in migration 7, the increments are computed by `tokenlens.store.rollups` (the writer's own code).
    """
    from tokenlens.store import rollups

    frozen = _create_rollups(db, _V8_ROLLUPS, frozenset())
    migrate(migrator.add_index("call", ("source", "model", "ts"), False))
    columns = ", ".join(f'"{c}"' for c in rollups.LatencyFacts._fields)
    select = f"SELECT {columns} FROM \"call\" WHERE \"outcome\" NOT IN ('blocked', 'cached')"
    for batch in _batches(db, select, "tokenlens_v8"):
        increments = rollups.latency_increments(rollups.LatencyFacts._make(row) for row in batch)
        rollups.write_increments(db, increments, frozen)


def _v9_session_rollups(db: pw.Database, migrator: SchemaMigrator) -> None:
    """One row per run (a session, or a conversation of calls without a session) for the sessions list:
    `session_run` (sums, first and last call, end, turns, the context's first and last size), `session_model`
    (per source, model and provider of a run) and `session_conversation` (per conversation of a run: calls and
    its latest call's input and output, for the history the next call re-sends); built from the stored calls
    in time order. As in migration 7, the rows are computed by `tokenlens.store.rollups` (the writer's code).
    """
    from tokenlens.store import rollups

    pg = isinstance(db, pw.PostgresqlDatabase)
    real = "DOUBLE PRECISION" if pg else "REAL"
    clustered = "" if pg else " WITHOUT ROWID"
    sums = ", ".join(
        f'"{m}" {real if m.endswith("_usd") else "BIGINT"} NOT NULL DEFAULT 0' for m in rollups.RUN_SUMS
    )
    db.execute_sql(
        f'CREATE TABLE "session_run" ("kind" TEXT NOT NULL, "group_id" TEXT NOT NULL, {sums}, '
        f'"first_ts" {real} NOT NULL, "last_ts" {real} NOT NULL, "ended" {real} NOT NULL, '
        f'"turns" BIGINT NOT NULL DEFAULT 0, "first_input_ts" {real}, "first_input" BIGINT, '
        f'"last_input_ts" {real}, "last_input" BIGINT, PRIMARY KEY ("kind", "group_id")){clustered}'
    )
    db.execute_sql(
        'CREATE INDEX "session_run_kind_first_ts" ON "session_run" ("kind", "first_ts", "group_id")'
    )
    db.execute_sql('CREATE INDEX "session_run_kind_last_ts" ON "session_run" ("kind", "last_ts")')
    model_sums = ", ".join(
        f'"{m}" {real if m.endswith("_usd") else "BIGINT"} NOT NULL DEFAULT 0' for m in rollups.MODEL_SUMS
    )
    db.execute_sql(
        'CREATE TABLE "session_model" ("kind" TEXT NOT NULL, "group_id" TEXT NOT NULL, "source" TEXT NOT NULL, '
        f'"model" TEXT NOT NULL, "provider" TEXT NOT NULL, {model_sums}, '
        f'PRIMARY KEY ("kind", "group_id", "source", "model", "provider")){clustered}'
    )
    db.execute_sql(
        'CREATE TABLE "session_conversation" ("kind" TEXT NOT NULL, "group_id" TEXT NOT NULL, '
        '"conversation_id" TEXT NOT NULL, "calls" BIGINT NOT NULL DEFAULT 0, '
        f'"last_ts" {real}, "last_input" BIGINT, "last_output" BIGINT, '
        f'PRIMARY KEY ("kind", "group_id", "conversation_id")){clustered}'
    )
    columns = ", ".join(f'"{c}"' for c in rollups.SESSION_FACT_COLUMNS)
    select = (
        f'SELECT {columns} FROM "call" WHERE "session_id" IS NOT NULL OR "conversation_id" IS NOT NULL '
        'ORDER BY "ts", "id"'
    )
    for batch in _batches(db, select, "tokenlens_v9"):
        rollups.add_to_session_rollups(db, [rollups.session_facts(row) for row in batch])


def _v10_call_transport(db: pw.Database, migrator: SchemaMigrator) -> None:
    """How a call reached the provider: `http`, or `websocket` (a response on a Responses or Realtime socket)."""
    migrate(migrator.add_column("call", "transport", pw.TextField(default="http")))


def _v11_call_price_source(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Which price a call used (`price_source`) and its per-modality token counts (`modality_tokens`, JSON);
    both null for the calls recorded before (issue 18)."""
    migrate(
        migrator.add_column("call", "price_source", pw.TextField(null=True)),
        migrator.add_column("call", "modality_tokens", pw.TextField(null=True)),
    )


MIGRATIONS: list[Migration] = [
    Migration("0001_create_calls", _v1_create_calls),
    Migration("0002_session_indexes", _v2_session_indexes),
    Migration("0003_call_details", _v3_call_details),
    Migration("0004_usage_rollups", _v4_usage_rollups),
    Migration("0005_coarser_rollups", _v5_coarser_rollups),
    Migration("0006_shared_state", _v6_shared_state),
    Migration("0007_insight_rollups", _v7_insight_rollups),
    Migration("0008_latency_rollups", _v8_latency_rollups),
    Migration("0009_session_rollups", _v9_session_rollups),
    Migration("0010_call_transport", _v10_call_transport),
    Migration("0011_call_price_source", _v11_call_price_source),
]
# The migrations a numbered `schema_version` stands for (stores written before migrations had names): a
# store at version n has the first n of these.
NUMBERED: tuple[str, ...] = tuple(m.name for m in MIGRATIONS[:11])


def latest_version(migrations: list[Migration] | None = None) -> int:
    return len(MIGRATIONS if migrations is None else migrations)


def _migrator(db: pw.Database) -> SchemaMigrator:
    if isinstance(db, pw.PostgresqlDatabase):
        return PostgresqlMigrator(db)
    if isinstance(db, pw.SqliteDatabase):
        return SqliteMigrator(db)
    return SchemaMigrator.from_database(db)


def _numbered_version(db: pw.Database) -> int:
    if not db.table_exists("schema_version"):
        return 0
    version = bind_model(SchemaVersion, db)
    return int(version.select(pw.fn.MAX(version.version)).scalar() or 0)


def applied_migrations(db: pw.Database) -> list[str]:
    """The names of the migrations applied to an open database, in the order applied (a store from before
    named migrations: the first n of `NUMBERED` for its version n)."""
    if db.table_exists("schema_migration"):
        named = bind_model(SchemaMigration, db)
        names = [row.name for row in named.select().order_by(named.applied_at, named.name)]
        if names:
            return names
    version = _numbered_version(db)
    if version > len(NUMBERED):
        return [
            *NUMBERED,
            *(f"unknown numbered migration {n}" for n in range(len(NUMBERED) + 1, version + 1)),
        ]
    return list(NUMBERED[:version])


def current_version(db: pw.Database) -> int:
    """The number of migrations applied to an open database (0 when it has no schema at all)."""
    return len(applied_migrations(db))


def pending_migrations(db: pw.Database, migrations: list[Migration] | None = None) -> list[str]:
    """The names of the migrations of `migrations` (default: all) not yet applied to an open database."""
    done = set(applied_migrations(db))
    return [m.name for m in (MIGRATIONS if migrations is None else migrations) if m.name not in done]


def unknown_migrations(db: pw.Database, migrations: list[Migration] | None = None) -> list[str]:
    """The migrations applied to an open database that this code does not know (a newer TokenLens's)."""
    known = {m.name for m in (MIGRATIONS if migrations is None else migrations)}
    return [name for name in applied_migrations(db) if name not in known]


def _write_transaction(db: pw.Database) -> pw._atomic:
    # SQLite: take the write lock at BEGIN so that two processes opening the store at once serialise here.
    return db.atomic("IMMEDIATE") if isinstance(db, pw.SqliteDatabase) else db.atomic()


def _create_bookkeeping(db: pw.Database) -> None:
    """The `schema_version` and `schema_migration` tables; a numbered store's version becomes the names it
    stands for."""
    models = [bind_model(SchemaVersion, db), bind_model(SchemaMigration, db)]
    missing = [m for m in models if not db.table_exists(m._meta.table_name)]
    if not missing:
        return
    for model in missing:
        try:
            db.create_tables([model], safe=True)
        except pw.IntegrityError:  # another process created it at the same moment (PostgreSQL)
            pass
    with _write_transaction(db):
        if isinstance(db, pw.PostgresqlDatabase):
            db.execute_sql('LOCK TABLE "schema_version" IN EXCLUSIVE MODE')
        named = models[1]
        if named.select().exists():
            return
        names = NUMBERED[: _numbered_version(db)]
        now = time.time()
        named.insert_many(
            [{"name": name, "applied_at": now + i * 1e-6} for i, name in enumerate(names)]
        ).execute()


def apply_migrations(db: pw.Database, migrations: list[Migration] | None = None) -> int:
    """Bring an open database up to date: apply, in order, each migration whose name is not recorded yet,
    each in one transaction with its `schema_migration` row; returns the number applied in all.

    Safe against several processes opening the same store at once (the names are re-read under a lock).
    Raises `SchemaError` when the database has a migration this code does not know (a newer TokenLens).
    """
    steps = MIGRATIONS if migrations is None else migrations
    _create_bookkeeping(db)
    unknown = unknown_migrations(db, steps)
    if unknown:
        raise SchemaError(
            f"the database schema has migrations newer than this TokenLens understands ({', '.join(unknown)}); "
            "upgrade TokenLens"
        )
    named = bind_model(SchemaMigration, db)
    numbered = bind_model(SchemaVersion, db)
    migrator = _migrator(db)
    pending = set(pending_migrations(db, steps))
    for step in steps:
        if step.name not in pending:
            continue
        with _write_transaction(db):
            if isinstance(db, pw.PostgresqlDatabase):
                db.execute_sql('LOCK TABLE "schema_version" IN EXCLUSIVE MODE')
            if named.get_or_none(named.name == step.name) is not None:
                continue
            step.apply(db, migrator)
            now = time.time()
            named.insert(name=step.name, applied_at=now).execute()
            count = named.select().count()
            numbered.insert(version=count, applied_at=now).on_conflict_ignore().execute()
    return current_version(db)
