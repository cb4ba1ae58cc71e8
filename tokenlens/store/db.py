"""Opening the database behind a store: SQLite in the data directory by default, PostgreSQL by URL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import peewee as pw
from playhouse.db_url import connect as connect_url

# What a store raises when its database cannot be opened, read or written (for the layers above to catch).
OperationalError = pw.OperationalError
InterfaceError = pw.InterfaceError

SQLITE_FILENAME = "tokenlens.db"
SQLITE_PRAGMAS: dict[str, object] = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 5000,
    "foreign_keys": 1,
    "cache_size": -16000,  # KiB
}


@dataclass(frozen=True)
class StoreLocation:
    """Where a store lives, safe to show: `kind` is "sqlite" or "postgresql"; `url` has no password."""

    kind: str
    path: Path | None = None
    url: str | None = None

    def describe(self) -> dict[str, str]:
        if self.kind == "sqlite":
            return {"kind": "sqlite", "path": str(self.path)}
        return {"kind": self.kind, "url": self.url or ""}


def redact_url(url: str) -> str:
    """The URL without its password (`postgresql://user:secret@host/db` → `postgresql://user@host/db`)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def sqlite_path(home: Path) -> Path:
    return Path(home) / SQLITE_FILENAME


def make_database(
    url: str | None, home: Path, *, readonly: bool = False, cache_kib: int | None = None
) -> tuple[pw.Database, StoreLocation]:
    """A (not yet connected) peewee database for `storage.url` (None: SQLite file in `home`).

    Connections are per thread (peewee's default); open them with `Store.connection()`. `cache_kib`: SQLite's
    page cache of each connection, when not the 16 MiB of `SQLITE_PRAGMAS`.
    """
    if url is None or url.startswith("sqlite"):
        pragmas = SQLITE_PRAGMAS if cache_kib is None else {**SQLITE_PRAGMAS, "cache_size": -cache_kib}
        # sqlite:///relative.db or sqlite:////absolute/path.db (as playhouse.db_url reads them)
        path = sqlite_path(home) if url is None else Path(urlsplit(url).path[1:])
        if readonly:
            db: pw.Database = pw.SqliteDatabase(
                f"file:{path}?mode=ro",
                uri=True,
                timeout=5,
                pragmas={k: v for k, v in pragmas.items() if k not in ("journal_mode", "synchronous")},
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = pw.SqliteDatabase(str(path), timeout=5, pragmas=pragmas)
        return db, StoreLocation("sqlite", path=path)
    scheme = urlsplit(url).scheme
    if scheme not in ("postgres", "postgresql", "postgresql+pool", "postgres+pool"):
        raise ValueError(f"storage.url: unsupported database URL scheme {scheme!r} (use postgresql://...)")
    db = connect_url(url)
    if readonly and isinstance(db, pw.PostgresqlDatabase):
        db.connect_params.setdefault("options", "")
        db.connect_params["options"] = (
            str(db.connect_params["options"]) + " -c default_transaction_read_only=on"
        ).strip()
    return db, StoreLocation("postgresql", url=redact_url(url))
