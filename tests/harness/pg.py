"""A fresh PostgreSQL schema per use (127.0.0.1:5432, database `test`, trust auth), dropped afterwards."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DB = "test"
UNREACHABLE = f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} (database {PG_DB!r})"


def _connect() -> tuple[Any, str] | None:
    try:
        import psycopg2
    except ImportError:
        return None
    for user in ("postgres", "root"):
        try:
            conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=PG_DB, connect_timeout=3)
        except psycopg2.Error:
            continue
        conn.autocommit = True
        return conn, user
    return None


@contextlib.contextmanager
def pg_schema() -> Iterator[str | None]:
    """A store URL on a new schema `tl_<random>` (None when PostgreSQL is unreachable)."""
    found = _connect()
    if found is None:
        yield None
        return
    conn, user = found
    schema = f"tl_{secrets.token_hex(6)}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{PG_DB}?options=-csearch_path%3D{schema}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


@contextlib.contextmanager
def store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A shared store's URL: a SQLite file in `tmp_path` or a fresh PostgreSQL schema (skips when unreachable)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    with pg_schema() as found:
        if found is None:
            import pytest

            pytest.skip(UNREACHABLE)
        yield found
