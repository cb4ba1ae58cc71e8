"""peewee models of the store, and the conversion between a `CallRecord` and a `call` row.

The models here are declared without a database. Each open `Store` binds its own subclasses with
`bind_models(db)` (or `Store.bound(Model)`), so several stores (SQLite and PostgreSQL, or a source and a
target during an import) can be open in one process without rebinding shared classes.

The schema itself is created and upgraded by `tokenlens.store.migrations`, not by `create_tables` on these
classes: a change here needs a new migration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import peewee as pw

from tokenlens.records import CALL_FIELDS, CallRecord, storable_text

JSON_FIELDS = ("tags", "guardrail_flags", "details")


class BaseModel(pw.Model):
    class Meta:
        database = None
        legacy_table_names = False


class Call(BaseModel):
    """One call through the gateway (every `CallRecord` field except the bodies)."""

    id = pw.TextField(primary_key=True)
    ts = pw.DoubleField(index=True)  # epoch seconds, UTC
    provider = pw.TextField()
    endpoint = pw.TextField(default="")
    source = pw.TextField(default="unknown")
    tags = pw.TextField(default="{}")  # JSON object
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
    guardrail_flags = pw.TextField(default="[]")  # JSON list of {"rule", "action", "where"}
    details = pw.TextField(default="{}")  # JSON object: per-call analysis by stage
    waste_tokens = pw.BigIntegerField(null=True)
    complexity = pw.IntegerField(null=True)
    mode = pw.TextField(default="base_url")
    transport = pw.TextField(default="http")  # migration 10
    service_tier = pw.TextField(null=True)
    request_id = pw.TextField(null=True)
    price_source = pw.TextField(null=True)  # migration 11
    modality_tokens = pw.TextField(null=True)  # migration 11: JSON object, or null

    class Meta:
        table_name = "call"
        indexes = (
            (("source", "ts"), False),
            (("source", "model", "ts"), False),  # the calls list filtered by source and model (migration 8)
            (("model", "ts"), False),
            (("provider", "ts"), False),
            (("outcome", "ts"), False),
            (("session_id", "ts"), False),
            (("conversation_id", "ts"), False),
        )


class CallBody(BaseModel):
    """The raw request and response bodies of a call (only when `storage.store_bodies` is on)."""

    call_id = pw.TextField(primary_key=True)
    request_body = pw.BlobField(null=True)
    response_body = pw.BlobField(null=True)

    class Meta:
        table_name = "call_body"


class SchemaVersion(BaseModel):
    """The number of migrations applied (one row per step, the highest counts): how releases before named
    migrations recorded the schema; still written, so that such a release refuses a newer store."""

    version = pw.IntegerField(primary_key=True)
    applied_at = pw.DoubleField()

    class Meta:
        table_name = "schema_version"


class SchemaMigration(BaseModel):
    """One row per applied migration, by name (`tokenlens.store.migrations.MIGRATIONS`)."""

    name = pw.TextField(primary_key=True)
    applied_at = pw.DoubleField()

    class Meta:
        table_name = "schema_migration"


class UsageHourly(BaseModel):
    """Usage of one UTC hour (`bucket`, epoch seconds) per source, model ("" for none) and provider.

    Maintained by `Store.insert_calls` (see `tokenlens.store.rollups`); the measures are the names of
    `tokenlens.store.rollups.MEASURES`, all sums.
    """

    bucket = pw.BigIntegerField()
    source = pw.TextField()
    model = pw.TextField()
    provider = pw.TextField()
    calls = pw.BigIntegerField(default=0)
    unpriced_calls = pw.BigIntegerField(default=0)
    blocked_calls = pw.BigIntegerField(default=0)
    error_calls = pw.BigIntegerField(default=0)
    cached_calls = pw.BigIntegerField(default=0)
    cost_usd = pw.DoubleField(default=0)
    saved_usd = pw.DoubleField(default=0)
    input_cost_usd = pw.DoubleField(default=0)
    output_cost_usd = pw.DoubleField(default=0)
    cache_read_cost_usd = pw.DoubleField(default=0)
    cache_write_cost_usd = pw.DoubleField(default=0)
    input_tokens = pw.BigIntegerField(default=0)
    output_tokens = pw.BigIntegerField(default=0)
    cache_read_tokens = pw.BigIntegerField(default=0)
    cache_write_tokens = pw.BigIntegerField(default=0)
    reasoning_tokens = pw.BigIntegerField(default=0)
    waste_tokens = pw.BigIntegerField(default=0)
    maxtok_calls = pw.BigIntegerField(default=0)
    maxtok_sum = pw.BigIntegerField(default=0)
    maxtok_output_tokens = pw.BigIntegerField(default=0)
    rated_calls = pw.BigIntegerField(default=0)
    simple_calls = pw.BigIntegerField(default=0)
    simple_cost_usd = pw.DoubleField(default=0)
    simple_input_tokens = pw.BigIntegerField(default=0)
    simple_output_tokens = pw.BigIntegerField(default=0)
    simple_cache_read_tokens = pw.BigIntegerField(default=0)
    simple_cache_write_tokens = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "usage_hourly"
        primary_key = pw.CompositeKey("bucket", "source", "model", "provider")


class UsageTagHourly(BaseModel):
    """Usage of one UTC hour per tag key and value (a call counts once under each of its tags)."""

    bucket = pw.BigIntegerField()
    tag_key = pw.TextField()
    tag_value = pw.TextField()
    calls = pw.BigIntegerField(default=0)
    cost_usd = pw.DoubleField(default=0)
    input_tokens = pw.BigIntegerField(default=0)
    output_tokens = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "usage_tag_hourly"
        primary_key = pw.CompositeKey("tag_key", "bucket", "tag_value")


_ZERO: list[pw.Node] = [pw.SQL("DEFAULT 0")]  # in the DDL too, as the tables were first created


class LedgerBucket(BaseModel):
    """Spend and headroom leased to gateways for one cap bucket (scope, day or month, period key), shared by
    every gateway of a store (tokenlens.shared_ledger)."""

    scope = pw.TextField()
    period = pw.TextField()
    period_key = pw.TextField()
    spent_usd = pw.DoubleField(default=0, constraints=_ZERO)
    reserved_usd = pw.DoubleField(
        default=0, constraints=_ZERO
    )  # headroom leased to gateways, not yet spent or returned
    calls = pw.BigIntegerField(default=0, constraints=_ZERO)
    reserved_calls = pw.BigIntegerField(default=0, constraints=_ZERO)
    updated_at = pw.DoubleField(default=0, constraints=_ZERO)

    class Meta:
        table_name = "ledger_bucket"
        primary_key = pw.CompositeKey("scope", "period", "period_key")


class ConfigSection(BaseModel):
    """A configuration section changed through the API of one gateway; every gateway applies newer versions."""

    name = pw.TextField(primary_key=True)
    version = pw.BigIntegerField()
    data = pw.TextField()  # JSON, in the shape of the file
    updated_at = pw.DoubleField(default=0, constraints=_ZERO)

    class Meta:
        table_name = "config_section"


MODELS: tuple[type[BaseModel], ...] = (Call, CallBody, SchemaVersion, UsageHourly, UsageTagHourly)


def bind_model[M: pw.Model](model: type[M], db: pw.Database) -> type[M]:
    """A subclass of `model` bound to `db` (same table, fields and indexes)."""
    meta = type("Meta", (), {"database": db, "table_name": model._meta.table_name})
    bound: type[M] = type(model.__name__, (model,), {"Meta": meta, "__module__": model.__module__})
    return bound


@dataclass(frozen=True)
class BoundModels:
    Call: type[Call]
    CallBody: type[CallBody]
    SchemaVersion: type[SchemaVersion]


def bind_models(db: pw.Database) -> BoundModels:
    return BoundModels(bind_model(Call, db), bind_model(CallBody, db), bind_model(SchemaVersion, db))


# What json.dumps(value, ensure_ascii=..., separators=(",", ":"), sort_keys=True) builds on every call, built
# once (an encoder keeps no state between calls): the same text, without the construction (~1 us a field).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
_JSON_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode


def json_text(value: Any) -> str:
    """A JSON field's text: compact, keys sorted; lone surrogates (which no driver can encode) escaped."""
    text = _JSON(value)
    if not text.isascii() and storable_text(text) != text:
        text = _JSON_ASCII(value)
    return text


def record_to_row(record: CallRecord) -> dict[str, Any]:
    """The `call` row of a record: JSON text for tags, guardrail flags and details."""
    row = {name: getattr(record, name) for name in CALL_FIELDS}
    for name in JSON_FIELDS:
        row[name] = json_text(row[name])
    row["modality_tokens"] = json_text(row["modality_tokens"]) if row["modality_tokens"] else None
    return row


def record_to_values(record: CallRecord) -> tuple[Any, ...]:
    """The `call` row of a record as a tuple in `CALL_FIELDS` order (for the bulk insert)."""
    row = record_to_row(record)
    return tuple(row[name] for name in CALL_FIELDS)


def body_row(record: CallRecord) -> dict[str, Any] | None:
    """The `call_body` row of a record, or None when it carries no body."""
    if record.request_body is None and record.response_body is None:
        return None
    return {"call_id": record.id, "request_body": record.request_body, "response_body": record.response_body}


def _as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    return bytes(value)  # psycopg2 returns memoryview for bytea


def row_to_record(row: dict[str, Any], body: dict[str, Any] | None = None) -> CallRecord:
    """A record from a `call` row (a dict as from `.dicts()`), plus the bodies when given."""
    values = {name: row[name] for name in CALL_FIELDS}
    for name in JSON_FIELDS:
        raw = values[name]
        values[name] = json.loads(raw) if raw else ([] if name == "guardrail_flags" else {})
    values["modality_tokens"] = json.loads(values["modality_tokens"]) if values["modality_tokens"] else None
    values["stream"] = bool(values["stream"])
    values["priced"] = bool(values["priced"])
    record = CallRecord(**values)
    if body is not None:
        record.request_body = _as_bytes(body.get("request_body"))
        record.response_body = _as_bytes(body.get("response_body"))
    return record
