"""The call store: peewee models on SQLite (default) or PostgreSQL, a batching writer thread, queries.

store = open_store(settings.storage.url, home)          # migrates the schema in place
writer = RecordWriter(store, build, on_written)          # the only writer thread; build(item) -> CallRecord
writer.submit(item)                                      # never blocks
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenlens.store.db import (
    InterfaceError,
    OperationalError,
    StoreLocation,
    make_database,
    redact_url,
    sqlite_path,
)
from tokenlens.store.migrations import SchemaError, latest_version
from tokenlens.store.queries import (
    ImportResult,
    Store,
    bounded_lines,
    chunk_text,
    csv_header,
    csv_line,
    day_bounds,
    decode_cursor,
    encode_cursor,
    export_lines,
    jsonl_line,
    month_bounds,
    parse_since,
)
from tokenlens.store.writer import RecordWriter

__all__ = [
    "ImportResult",
    "InterfaceError",
    "OperationalError",
    "RecordWriter",
    "SchemaError",
    "Store",
    "StoreLocation",
    "bounded_lines",
    "chunk_text",
    "csv_header",
    "csv_line",
    "day_bounds",
    "decode_cursor",
    "encode_cursor",
    "export_lines",
    "jsonl_line",
    "month_bounds",
    "open_store",
    "parse_since",
    "redact_url",
    "sqlite_path",
]


def open_store(
    url: Any, home: Path, *, readonly: bool = False, migrate: bool = True, cache_kib: int | None = None
) -> Store:
    """Open the store of `storage.url` (None: SQLite `home/tokenlens.db`) and upgrade its schema in place.

    `url` may also be a `Settings` (its `storage.url` is used). `readonly=True` opens without writing
    anything (no migration; `SchemaError` when the schema is not the current one, `FileNotFoundError` when
    a SQLite file does not exist). `cache_kib`: the SQLite page cache of each connection (default 16 MiB).
    """
    storage = getattr(url, "storage", None)
    if storage is not None:
        url = storage.url
    db, location = make_database(url, Path(home), readonly=readonly, cache_kib=cache_kib)
    store = Store(db, location, readonly=readonly, home=Path(home))
    if readonly:
        if location.path is not None and not location.path.exists():
            raise FileNotFoundError(f"no store at {location.path}")
        version = store.schema_version()
        if not store.is_current():
            raise SchemaError(
                f"the store's schema is version {version}, this TokenLens uses {latest_version()}; "
                "start the daemon once to upgrade it"
            )
    elif migrate:
        store.migrate()
    return store
