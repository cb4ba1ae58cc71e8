"""Schema migrations: an ordered list of functions, applied in place when a store is opened (llm style).

`MIGRATIONS[i]` upgrades a database from version i to version i + 1 and is applied once, in one
transaction together with its `schema_version` row. Each migration declares the tables it creates as frozen
copies (never the live models of `tokenlens.store.models`), so that an old migration keeps producing the
schema it always produced. To change the schema: edit the models, then append a migration.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SchemaMigrator, SqliteMigrator, migrate

from tokenlens.store.models import SchemaVersion, bind_model

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


MIGRATIONS: list[Migration] = [_v1_create_calls, _v2_session_indexes, _v3_call_details]


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
