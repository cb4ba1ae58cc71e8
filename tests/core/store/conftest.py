"""Store fixtures: every store test runs on a SQLite file and on PostgreSQL (a fresh schema per session)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.pg import UNREACHABLE, pg_schema
from tokenlens.records import CALL_FIELDS, CallRecord, new_call_id
from tokenlens.store import Store, open_store
from tokenlens.store.db import make_database
from tokenlens.store.migrations import MIGRATIONS, apply_migrations
from tokenlens.store.models import record_to_values
from tokenlens.store.rollups import ROLLUPS, SESSION_TABLES


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str | None]:
    with pg_schema() as url:
        yield url


def require_pg(url: str | None) -> str:
    if url is None:
        pytest.skip(UNREACHABLE)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty, migrated store."""
    if request.param == "sqlite":
        opened = open_store(None, tmp_path)
    else:
        url = require_pg(request.getfixturevalue("pg_url"))
        opened = open_store(url, tmp_path)
        with opened.connection():
            tables = [
                "call",
                "call_body",
                "usage_hourly",
                "usage_tag_hourly",
                "usage_hourly_source",
                "usage_daily",
            ]
            tables += [t for r in ROLLUPS for t in (r.hourly, r.daily)]
            tables += SESSION_TABLES
            opened.db.execute_sql("TRUNCATE " + ", ".join(f'"{t}"' for t in tables))
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A factory of further empty stores of the same kind (for export/import between two stores)."""
    stores: list[Store] = []
    stack = contextlib.ExitStack()

    def make() -> Store:
        if request.param == "sqlite":
            opened = open_store(None, tmp_path / f"s{len(stores)}")
        else:
            url = stack.enter_context(pg_schema())
            opened = open_store(require_pg(url), tmp_path)
        stores.append(opened)
        return opened

    yield make
    for opened in stores:
        opened.close()
    stack.close()


def call(**overrides: Any) -> CallRecord:
    """A complete record with every field set to something other than its default."""
    values: dict[str, Any] = {
        "id": new_call_id(),
        "ts": 1_790_000_000.123456,
        "provider": "openai",
        "endpoint": "/v1/chat/completions",
        "source": "my-agent",
        "tags": {"team": "core", "run": "7"},
        "requested_model": "gpt-4",
        "model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "stream": True,
        "status": 200,
        "outcome": "ok",
        "blocked_by": None,
        "error": None,
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_read_tokens": 1024,
        "cache_write_tokens": 0,
        "cache_write_5m_tokens": None,
        "cache_write_1h_tokens": None,
        "reasoning_tokens": 64,
        "usage_source": "provider",
        "cost_usd": 0.000303,
        "input_cost_usd": 0.0000264,
        "output_cost_usd": 0.00018,
        "cache_read_cost_usd": 0.0000768,
        "cache_write_cost_usd": 0.0,
        "priced": True,
        "session_id": "sess-1",
        "conversation_id": "conv-1",
        "turn": 2,
        "saved_usd": None,
        "latency_ms": 812.5,
        "ttft_ms": 120.25,
        "max_tokens": 1024,
        "attempts": 2,
        "fallback_from": "gpt-4o",
        "guardrail_flags": [{"rule": "pii.email", "action": "warn", "where": "request"}],
        "waste_tokens": 12,
        "complexity": 3,
        "mode": "proxy",
        "service_tier": "default",
        "request_id": "req_abc",
        "price_source": "gpt-4o-mini",
        "modality_tokens": {"input": {"text": 176, "image": 1024}, "cache_read": {"image": 1024}},
        "request_body": b'{"model": "gpt-4"}',
        "response_body": b'{"id": "chatcmpl-1"}',
    }
    values.update(overrides)
    return CallRecord(**values)


@pytest.fixture
def make_call() -> Any:
    return call


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A URL of its own, empty PostgreSQL schema (skips when PostgreSQL is unreachable)."""
    with pg_schema() as url:
        yield require_pg(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def upgraded_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """`upgraded_store(version, calls)`: a store made at schema `version` holding `calls` (written straight
    into the call table, as before the rollups of later versions existed), then opened (so migrated to the
    latest version)."""
    stack = contextlib.ExitStack()
    opened: list[Store] = []

    def make(version: int, calls: list[CallRecord]) -> Store:
        url = None if request.param == "sqlite" else require_pg(stack.enter_context(pg_schema()))
        db, location = make_database(url, tmp_path)
        db.connect()
        apply_migrations(db, MIGRATIONS[:version])
        columns = {c.name for c in db.get_columns("call")}  # a column added later is not there yet
        fields = [f for f in CALL_FIELDS if f in columns]
        rows = [dict(zip(CALL_FIELDS, record_to_values(r), strict=True)) for r in calls]
        with db.atomic():
            Store(db, location)._bulk_insert("call", fields, [tuple(row[f] for f in fields) for row in rows])
        db.close()
        opened.append(open_store(url, tmp_path))
        return opened[-1]

    yield make
    for store in opened:
        store.close()
    stack.close()
