"""Migration 11: `call.price_source` and `call.modality_tokens`, on SQLite and PostgreSQL (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokenlens.records import CallRecord
from tokenlens.store import Store, open_store
from tokenlens.store import migrations as mig
from tokenlens.store.db import make_database
from tokenlens.store.queries import export_lines

MODALITIES = {"input": {"text": 120, "image": 1290}, "output": {"image": 1120}, "cache_read": {"audio": 6000}}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_11_adds_the_columns_and_keeps_older_calls(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = None if kind == "sqlite" else request.getfixturevalue("fresh_pg_url")
    db, _ = make_database(url, tmp_path)
    db.connect()
    mig.apply_migrations(db, mig.MIGRATIONS[:10])
    db.execute_sql(
        "INSERT INTO call (id, ts, provider, endpoint, source, tags, stream, outcome, input_tokens, "
        "output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, priced, attempts, "
        "guardrail_flags, mode, details, transport) VALUES ('old', 1.5, 'openai', '/v1/x', 's', '{}', false, "
        "'ok', 1, 2, 0, 0, 0, false, 1, '[]', 'base_url', '{}', 'http')"
    )
    db.close()
    store = open_store(url, tmp_path)
    assert store.schema_version() == mig.latest_version() >= 11
    old = store.get_call("old")
    assert old is not None and old.price_source is None and old.modality_tokens is None
    new = CallRecord(
        id="new",
        ts=2.0,
        provider="google",
        endpoint="/x",
        price_source="inferred:gemini-2.5-flash",
        modality_tokens=MODALITIES,
    )
    store.insert_calls([new])
    got = store.get_call("new")
    assert got is not None and got.price_source == "inferred:gemini-2.5-flash"
    assert got.modality_tokens == MODALITIES
    store.close()


def test_round_trip_export_and_import(store: Store, make_store: Any, make_call: Any) -> None:
    record = make_call(price_source="override", modality_tokens=MODALITIES)
    store.insert_calls([record])
    (line,) = list(export_lines(store, "jsonl"))
    data = json.loads(line)
    assert data["price_source"] == "override" and data["modality_tokens"] == MODALITIES
    csv_lines = list(export_lines(store, "csv"))
    header = csv_lines[0].strip().split(",")
    assert "price_source" in header and "modality_tokens" in header
    other = make_store()
    result = other.import_lines([line], None)
    assert result.imported == 1, result.errors
    got = other.get_call(record.id)
    assert got is not None and got.modality_tokens == MODALITIES and got.price_source == "override"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"inputs": {"text": 1}}, "unknown part"),
        ({"input": {"smell": 1}}, "unknown modality"),
        ({"input": {"text": -1}}, "must not be negative"),
        ({"input": {"text": "many"}}, "expected an integer"),
        ([1, 2], "expected {part"),
    ],
)
def test_import_refuses_a_bad_modality_object(store: Store, bad: Any, message: str) -> None:
    line = json.dumps(
        {
            "ts": 1.0,
            "provider": "openai",
            "model": "m",
            "input_tokens": 1,
            "output_tokens": 1,
            "modality_tokens": bad,
        }
    )
    result = store.import_lines([line], None)
    assert result.imported == 0 and message in result.errors[0]["error"]
    assert result.errors[0]["field"] == "modality_tokens"
    assert result.errors[0]["error"].startswith("modality_tokens")


def test_import_prices_modalities_and_names_the_price(store: Store) -> None:
    from tokenlens.pricing import Pricer

    # gemini-2.5-flash-image: $0.30 input, $2.50 output, $30 output image, per million tokens
    line = json.dumps(
        {
            "ts": "2026-11-01T12:00:00Z",
            "provider": "google",
            "model": "gemini-2.5-flash-image",
            "input_tokens": 100,
            "output_tokens": 1290 + 20,
            "modality_tokens": {"input": {"text": 100}, "output": {"image": 1290, "text": 20}},
        }
    )
    result = store.import_lines([line], Pricer())
    assert result.imported == 1, result.errors
    (call,) = list(store.iter_calls())
    assert call.price_source == "gemini-2.5-flash-image"
    assert call.cost_usd == pytest.approx((100 * 0.30 + 20 * 2.50 + 1290 * 30.0) / 1e6, rel=1e-9)
