"""Schema migrations: an ordered list of functions, applied in place when a store is opened (llm style).

`MIGRATIONS[i]` upgrades a database from version i to version i + 1 and is applied once, in one
transaction together with its `schema_version` row. Each migration declares the tables it creates as frozen
copies (never the live models of `tokenlens.store.models`), so that an old migration keeps producing the
schema it always produced. To change the schema: edit the models, then append a migration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SchemaMigrator, SqliteMigrator, migrate

from tokenlens.store.models import SchemaVersion, bind_model

if TYPE_CHECKING:
    from tokenlens.store.rollups import Rollup

Migration = Callable[[pw.Database, SchemaMigrator], None]


class SchemaError(RuntimeError):
    """The database schema cannot be used by this version of TokenLens."""


def _v1_create_calls(db: pw.Database, migrator: SchemaMigrator) -> None:
    """The call and call_body tables, with the indexes the list and filter queries use."""

    class Call(pw.Model):
        id = pw.TextField(primary_key=True)
        ts = pw.DoubleField(index=True)
        provider = pw.TextField()
        endpoint = pw.TextField(default="")
        source = pw.TextField(default="unknown")
        tags = pw.TextField(default="{}")
        requested_model = pw.TextField(null=True)
        model = pw.TextField(null=True)
        response_model = pw.TextField(null=True)
        stream = pw.BooleanField(default=False)
        status = pw.IntegerField(null=True)
        outcome = pw.TextField(default="ok")
        blocked_by = pw.TextField(null=True)
        error = pw.TextField(null=True)
        input_tokens = pw.BigIntegerField(default=0)
        output_tokens = pw.BigIntegerField(default=0)
        cache_read_tokens = pw.BigIntegerField(default=0)
        cache_write_tokens = pw.BigIntegerField(default=0)
        cache_write_5m_tokens = pw.BigIntegerField(null=True)
        cache_write_1h_tokens = pw.BigIntegerField(null=True)
        reasoning_tokens = pw.BigIntegerField(default=0)
        usage_source = pw.TextField(null=True)
        cost_usd = pw.DoubleField(null=True)
        input_cost_usd = pw.DoubleField(null=True)
        output_cost_usd = pw.DoubleField(null=True)
        cache_read_cost_usd = pw.DoubleField(null=True)
        cache_write_cost_usd = pw.DoubleField(null=True)
        priced = pw.BooleanField(default=False)
        session_id = pw.TextField(null=True)
        conversation_id = pw.TextField(null=True)
        turn = pw.IntegerField(null=True)
        saved_usd = pw.DoubleField(null=True)
        latency_ms = pw.DoubleField(null=True)
        ttft_ms = pw.DoubleField(null=True)
        max_tokens = pw.BigIntegerField(null=True)
        attempts = pw.IntegerField(default=1)
        fallback_from = pw.TextField(null=True)
        guardrail_flags = pw.TextField(default="[]")
        waste_tokens = pw.BigIntegerField(null=True)
        complexity = pw.IntegerField(null=True)
        mode = pw.TextField(default="base_url")
        service_tier = pw.TextField(null=True)
        request_id = pw.TextField(null=True)

        class Meta:
            database = db
            table_name = "call"
            indexes = (
                (("source", "ts"), False),
                (("model", "ts"), False),
                (("provider", "ts"), False),
                (("outcome", "ts"), False),
            )

    class CallBody(pw.Model):
        call_id = pw.TextField(primary_key=True)
        request_body = pw.BlobField(null=True)
        response_body = pw.BlobField(null=True)

        class Meta:
            database = db
            table_name = "call_body"

    db.create_tables([Call, CallBody])


def _v2_session_indexes(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Indexes for the session and conversation views."""
    migrate(
        migrator.add_index("call", ("session_id", "ts"), False),
        migrator.add_index("call", ("conversation_id", "ts"), False),
    )


def _v3_call_details(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Per-call analysis details (heatmap, waste findings, attempts, guardrail scores) as a JSON object."""
    migrate(migrator.add_column("call", "details", pw.TextField(default="{}")))


_V4_COUNT = "SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)"
_V4_SIMPLE = "complexity IS NOT NULL AND complexity <= 3"
_V4_MEASURES: dict[str, str] = {
    "calls": "COUNT(*)",
    "unpriced_calls": _V4_COUNT.format(
        cond="cost_usd IS NULL AND (outcome = 'ok' OR input_tokens > 0 OR output_tokens > 0)"
    ),
    "blocked_calls": _V4_COUNT.format(cond="outcome = 'blocked'"),
    "error_calls": _V4_COUNT.format(cond="outcome = 'error'"),
    "cached_calls": _V4_COUNT.format(cond="outcome = 'cached'"),
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
    "maxtok_calls": _V4_COUNT.format(cond="max_tokens IS NOT NULL"),
    "maxtok_sum": "COALESCE(SUM(max_tokens), 0)",
    "maxtok_output_tokens": "SUM(CASE WHEN max_tokens IS NOT NULL THEN output_tokens ELSE 0 END)",
    "rated_calls": _V4_COUNT.format(cond="complexity IS NOT NULL"),
    "simple_calls": _V4_COUNT.format(cond=_V4_SIMPLE),
    "simple_cost_usd": f"SUM(CASE WHEN {_V4_SIMPLE} THEN COALESCE(cost_usd, 0) ELSE 0 END)",
    "simple_input_tokens": f"SUM(CASE WHEN {_V4_SIMPLE} THEN input_tokens ELSE 0 END)",
    "simple_output_tokens": f"SUM(CASE WHEN {_V4_SIMPLE} THEN output_tokens ELSE 0 END)",
    "simple_cache_read_tokens": f"SUM(CASE WHEN {_V4_SIMPLE} THEN cache_read_tokens ELSE 0 END)",
    "simple_cache_write_tokens": f"SUM(CASE WHEN {_V4_SIMPLE} THEN cache_write_tokens ELSE 0 END)",
}


def _v4_usage_rollups(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Hourly (UTC) usage rollups per source, model and provider, and per tag; built from the stored calls."""
    measure_fields: dict[str, pw.Field] = {
        name: pw.DoubleField(default=0) if name.endswith("_usd") else pw.BigIntegerField(default=0)
        for name in _V4_MEASURES
    }

    class Meta:
        database = db
        table_name = "usage_hourly"
        primary_key = pw.CompositeKey("bucket", "source", "model", "provider")

    hourly = type(
        "UsageHourly",
        (pw.Model,),
        {
            "bucket": pw.BigIntegerField(),
            "source": pw.TextField(),
            "model": pw.TextField(),
            "provider": pw.TextField(),
            **measure_fields,
            "Meta": Meta,
            "__module__": __name__,
        },
    )

    class UsageTagHourly(pw.Model):
        bucket = pw.BigIntegerField()
        tag_key = pw.TextField()
        tag_value = pw.TextField()
        calls = pw.BigIntegerField(default=0)
        cost_usd = pw.DoubleField(default=0)
        input_tokens = pw.BigIntegerField(default=0)
        output_tokens = pw.BigIntegerField(default=0)

        class Meta:
            database = db
            table_name = "usage_tag_hourly"
            primary_key = pw.CompositeKey("tag_key", "bucket", "tag_value")

    db.create_tables([hourly, UsageTagHourly])
    if isinstance(db, pw.PostgresqlDatabase):
        bucket = "(FLOOR(ts / 3600) * 3600)::bigint"
    else:
        bucket = "CAST(ts / 3600 AS INTEGER) * 3600"
    names = ", ".join(f'"{m}"' for m in _V4_MEASURES)
    db.execute_sql(
        f'INSERT INTO "usage_hourly" ("bucket", "source", "model", "provider", {names}) '
        f"SELECT {bucket}, source, COALESCE(model, ''), provider, {', '.join(_V4_MEASURES.values())} "
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
        UsageTagHourly.insert_many(chunk).execute()


def _v5_coarser_rollups(db: pw.Database, migrator: SchemaMigrator) -> None:
    """Two coarser copies of `usage_hourly` for fast reads: per UTC hour and source, per UTC day and
    source, model and provider; built from `usage_hourly`."""
    names = list(_V4_MEASURES)
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
    real = "DOUBLE PRECISION" if isinstance(db, pw.PostgresqlDatabase) else "REAL"
    db.execute_sql(
        'CREATE TABLE "ledger_bucket" ("scope" TEXT NOT NULL, "period" TEXT NOT NULL, '
        f'"period_key" TEXT NOT NULL, "spent_usd" {real} NOT NULL DEFAULT 0, '
        f'"reserved_usd" {real} NOT NULL DEFAULT 0, "calls" BIGINT NOT NULL DEFAULT 0, '
        f'"reserved_calls" BIGINT NOT NULL DEFAULT 0, "updated_at" {real} NOT NULL DEFAULT 0, '
        'PRIMARY KEY ("scope", "period", "period_key"))'
    )
    db.execute_sql(
        'CREATE TABLE "config_section" ("name" TEXT NOT NULL PRIMARY KEY, "version" BIGINT NOT NULL, '
        f'"data" TEXT NOT NULL, "updated_at" {real} NOT NULL DEFAULT 0)'
    )


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
        f'"{m}" {real if m.endswith("_usd") else "BIGINT"} NOT NULL DEFAULT 0'
        for m in (
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
            "input_calls",
            "tool_calls",
            "history_tokens",
            "history_cost_usd",
        )
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
        f'"{m}" {real if m.endswith("_usd") else "BIGINT"} NOT NULL DEFAULT 0'
        for m in (
            "calls",
            "cost_usd",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
        )
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
    _v1_create_calls,
    _v2_session_indexes,
    _v3_call_details,
    _v4_usage_rollups,
    _v5_coarser_rollups,
    _v6_shared_state,
    _v7_insight_rollups,
    _v8_latency_rollups,
    _v9_session_rollups,
    _v10_call_transport,
    _v11_call_price_source,
]


def latest_version(migrations: list[Migration] | None = None) -> int:
    return len(MIGRATIONS if migrations is None else migrations)


def _migrator(db: pw.Database) -> SchemaMigrator:
    if isinstance(db, pw.PostgresqlDatabase):
        return PostgresqlMigrator(db)
    if isinstance(db, pw.SqliteDatabase):
        return SqliteMigrator(db)
    return SchemaMigrator.from_database(db)


def current_version(db: pw.Database) -> int:
    """The schema version of an open database (0 when it has no schema at all)."""
    if not db.table_exists("schema_version"):
        return 0
    version = bind_model(SchemaVersion, db)
    value = version.select(pw.fn.MAX(version.version)).scalar()
    return int(value or 0)


def _write_transaction(db: pw.Database) -> pw._atomic:
    # SQLite: take the write lock at BEGIN so that two processes opening the store at once serialise here.
    return db.atomic("IMMEDIATE") if isinstance(db, pw.SqliteDatabase) else db.atomic()


def apply_migrations(db: pw.Database, migrations: list[Migration] | None = None) -> int:
    """Bring an open database up to the latest version; returns the version reached.

    Safe against several processes opening the same store at once (the version is re-read under a lock).
    Raises `SchemaError` when the database is newer than this code.
    """
    steps = MIGRATIONS if migrations is None else migrations
    version_model = bind_model(SchemaVersion, db)
    if not db.table_exists("schema_version"):
        try:
            db.create_tables([version_model], safe=True)
        except pw.IntegrityError:  # another process created it at the same moment (PostgreSQL)
            pass
    current = current_version(db)
    if current > len(steps):
        raise SchemaError(
            f"the database schema is version {current}, newer than this TokenLens understands "
            f"({len(steps)}); upgrade TokenLens"
        )
    migrator = _migrator(db)
    for version, step in enumerate(steps, start=1):
        if version <= current:
            continue
        with _write_transaction(db):
            if isinstance(db, pw.PostgresqlDatabase):
                db.execute_sql('LOCK TABLE "schema_version" IN EXCLUSIVE MODE')
            if version_model.get_or_none(version_model.version == version) is not None:
                continue
            step(db, migrator)
            version_model.insert(version=version, applied_at=time.time()).execute()
        current = version
    return current
