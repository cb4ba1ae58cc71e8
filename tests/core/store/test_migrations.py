from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from tokenlens.records import CALL_FIELDS, CallRecord
from tokenlens.store import SchemaError, open_store
from tokenlens.store import migrations as mig
from tokenlens.store.db import make_database
from tokenlens.store.models import Call, CallBody


def _indexes(db: pw.Database, table: str) -> set[str]:
    return {index.name for index in db.get_indexes(table)}


def _columns(db: pw.Database, table: str) -> set[str]:
    return {column.name for column in db.get_columns(table)}


def test_model_has_every_call_field() -> None:
    assert set(Call._meta.fields) == set(CALL_FIELDS)
    assert set(CallBody._meta.fields) == {"call_id", "request_body", "response_body"}


def test_fresh_sqlite_store_is_at_latest_version_with_wal(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    assert store.schema_version() == mig.latest_version() == len(mig.MIGRATIONS)
    assert (tmp_path / "tokenlens.db").exists()
    with store.connection() as db:
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert _columns(db, "call") == set(CALL_FIELDS)
        # The migrations produce every index the live model declares.
        expected = {index._name for index in Call._meta.fields_to_index()}
        assert expected <= _indexes(db, "call")
    store.close()


def _open_at_version(url: str | None, home: Path, version: int) -> pw.Database:
    db, _ = make_database(url, home)
    db.connect()
    mig.apply_migrations(db, mig.MIGRATIONS[:version])
    return db


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_old_database_is_upgraded_in_place(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = None if kind == "sqlite" else request.getfixturevalue("fresh_pg_url")
    db = _open_at_version(url, tmp_path, 1)
    _check_upgrade(db, url, tmp_path)


def _check_upgrade(db: pw.Database, url: str | None, home: Path) -> None:
    assert mig.current_version(db) == 1
    assert "call_session_id_ts" not in _indexes(db, "call")
    db.execute_sql(
        "INSERT INTO call (id, ts, provider, endpoint, source, tags, stream, outcome, input_tokens, "
        "output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, priced, attempts, "
        "guardrail_flags, mode) VALUES ('old-1', 1.5, 'openai', '/v1/x', 'src', '{}', false, 'ok', 1, 2, 0, 0, "
        "0, false, 1, '[]', 'base_url')"
    )
    db.close()
    store = open_store(url, home)
    assert store.schema_version() == mig.latest_version()
    with store.connection() as conn:
        assert {"call_session_id_ts", "call_conversation_id_ts"} <= _indexes(conn, "call")
    old = store.get_call("old-1")
    assert old is not None and old.source == "src" and old.output_tokens == 2
    store.close()


def test_extra_migration_applies_once_and_keeps_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(None, tmp_path)
    store.insert_calls([CallRecord(id="keep", ts=1.0, provider="openai", endpoint="")], store_bodies=True)
    store.close()
    calls: list[int] = []

    def v_next(db: pw.Database, migrator: Any) -> None:
        calls.append(1)
        from playhouse.migrate import migrate

        migrate(migrator.add_column("call", "extra_note", pw.TextField(null=True)))

    monkeypatch.setattr(mig, "MIGRATIONS", [*mig.MIGRATIONS, v_next])
    for _ in range(2):
        reopened = open_store(None, tmp_path)
        assert reopened.schema_version() == len(mig.MIGRATIONS)
        reopened.close()
    assert calls == [1]
    with sqlite3.connect(tmp_path / "tokenlens.db") as raw:
        assert raw.execute("SELECT id, extra_note FROM call").fetchall() == [("keep", None)]


def test_newer_database_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(None, tmp_path).close()
    monkeypatch.setattr(mig, "MIGRATIONS", mig.MIGRATIONS[:1])
    with pytest.raises(SchemaError, match="newer"):
        open_store(None, tmp_path)


def test_readonly_open(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_store(None, tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing" / "tokenlens.db").exists()
    db = _open_at_version(None, tmp_path, 1)
    db.close()
    with pytest.raises(SchemaError, match="start the daemon"):
        open_store(None, tmp_path, readonly=True)
    open_store(None, tmp_path).close()
    store = open_store(None, tmp_path, readonly=True)
    assert store.list_calls() == ([], None)
    with pytest.raises(pw.OperationalError):
        store.insert_calls([CallRecord(id="x", ts=1.0, provider="p", endpoint="")], store_bodies=False)
    store.close()


def test_postgresql_url_password_is_hidden(tmp_path: Path) -> None:
    _, location = make_database("postgresql://me:s3cret@db.example:5433/tl", tmp_path)
    assert location.describe() == {"kind": "postgresql", "url": "postgresql://me@db.example:5433/tl"}


def test_calls_list_by_source_and_model_uses_their_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's plan of the calls list filtered by source and model: the (source, model, ts) index of
    migration 8, newest first without a scan of the source's other calls."""
    store = open_store(None, tmp_path)
    seen: list[tuple[str, Any]] = []
    with store.connection() as db:
        execute = db.execute_sql

        def recording(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
            seen.append((sql, params))
            return execute(sql, params, *args, **kwargs)

        monkeypatch.setattr(db, "execute_sql", recording)
        store.list_calls(limit=50, source="a", model="b")
        monkeypatch.undo()
        ((sql, params),) = seen
        plan = " ".join(str(row[-1]) for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
    store.close()
    assert "USING INDEX call_source_model_ts (source=? AND model=?)" in plan, plan
