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

    monkeypatch.setattr(mig, "MIGRATIONS", [*mig.MIGRATIONS, mig.Migration("0099_extra_note", v_next)])
    for _ in range(2):
        reopened = open_store(None, tmp_path)
        assert reopened.schema_version() == len(mig.MIGRATIONS)
        reopened.close()
    assert calls == [1]
    with sqlite3.connect(tmp_path / "tokenlens.db") as raw:
        assert raw.execute("SELECT id, extra_note FROM call").fetchall() == [("keep", None)]
        assert raw.execute("SELECT name FROM schema_migration WHERE name LIKE '0099%'").fetchall() == [
            ("0099_extra_note",)
        ]


def _numbered_store(url: str | None, home: Path, version: int) -> pw.Database:
    """A store as a TokenLens before named migrations left it: the first `version` steps applied and only
    the numbered `schema_version` rows (1..version) to say so."""
    db = _open_at_version(url, home, version)
    db.execute_sql('DROP TABLE "schema_migration"')
    assert [r[0] for r in db.execute_sql('SELECT version FROM "schema_version" ORDER BY 1')] == list(
        range(1, version + 1)
    )
    return db


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_numbered_store_counts_as_its_first_named_migrations(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store at numbered version 9 has the first nine migrations by name; opening it applies only the
    others (each once), in order, and records them by name."""
    url = None if kind == "sqlite" else request.getfixturevalue("fresh_pg_url")
    db = _numbered_store(url, tmp_path, 9)
    assert mig.current_version(db) == 9
    db.close()
    ran: list[str] = []

    def recorded(step: mig.Migration) -> mig.Migration:
        def apply(db: pw.Database, migrator: Any) -> None:
            ran.append(step.name)
            step.apply(db, migrator)

        return mig.Migration(step.name, apply)

    wrapped = [recorded(m) for m in mig.MIGRATIONS]
    monkeypatch.setattr(mig, "MIGRATIONS", wrapped)
    store = open_store(url, tmp_path)
    assert ran == ["0010_call_transport", "0011_call_price_source"]
    with store.connection() as conn:
        assert mig.applied_migrations(conn) == [m.name for m in wrapped]
        assert {"transport", "price_source", "modality_tokens"} <= _columns(conn, "call")
        # still numbered too, for a release from before names
        assert conn.execute_sql('SELECT MAX(version) FROM "schema_version"').fetchone()[0] == 11
    store.close()
    open_store(url, tmp_path).close()
    assert len(ran) == 2


def test_numbered_store_opens_readonly_without_writing(tmp_path: Path) -> None:
    _numbered_store(None, tmp_path, len(mig.NUMBERED)).close()
    store = open_store(None, tmp_path, readonly=True)
    assert store.is_current() and store.list_calls() == ([], None)
    store.close()
    with sqlite3.connect(tmp_path / "tokenlens.db") as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "schema_migration" not in tables


def test_a_migration_inserted_before_others_is_applied_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names, not positions: a store that has every other migration gets the one it lacks, wherever it
    sits in the list."""
    open_store(None, tmp_path).close()

    def add_note(db: pw.Database, migrator: Any) -> None:
        from playhouse.migrate import migrate

        migrate(migrator.add_column("call", "note", pw.TextField(null=True)))

    steps = [*mig.MIGRATIONS]
    steps.insert(5, mig.Migration("0005b_note", add_note))
    monkeypatch.setattr(mig, "MIGRATIONS", steps)
    store = open_store(None, tmp_path)
    with store.connection() as conn:
        assert "note" in _columns(conn, "call")
        assert mig.pending_migrations(conn) == []
    assert store.schema_version() == len(steps)
    store.close()


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
