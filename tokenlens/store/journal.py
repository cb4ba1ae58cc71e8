"""The spill journal: prepared call records the store could not take yet, kept in an append-only JSONL file.

The writer appends here when its queue is full or the database refuses a batch for too long, and replays the
journal into the store when it catches up and at start. Replay is idempotent (records whose id is already
stored are skipped), so a crash in the middle of a replay loses nothing and duplicates nothing.

Files: `<path>` is the live journal; `take()` renames it to `<path>.<ns>.replay` so new spills go to a fresh
file while the taken one is replayed; a `.replay` file is deleted once every record in it is stored.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tokenlens.records import CallRecord

log = logging.getLogger(__name__)

_FIELDS = {f.name for f in dataclasses.fields(CallRecord)}


def record_to_dict(record: CallRecord, *, bodies: bool = True) -> dict[str, Any]:
    """Every field of the record, JSON-able (bodies base64; left out with `bodies=False`)."""
    out: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(record, name)
        if name in CallRecord.BODY_FIELDS:
            if not bodies:
                continue
            if value is not None:
                value = base64.b64encode(value).decode("ascii")
        out[name] = value
    return out


def record_from_dict(data: object) -> CallRecord:
    """The record of `record_to_dict`'s output (ValueError/TypeError/KeyError when it is not one)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    fields = {k: v for k, v in data.items() if k in _FIELDS}
    for name in CallRecord.BODY_FIELDS:
        if fields.get(name) is not None:
            fields[name] = base64.b64decode(fields[name])
    return CallRecord(**fields)


def record_to_line(record: CallRecord) -> str:
    """One JSON line holding every field of the record (bodies base64)."""
    return json.dumps(record_to_dict(record), ensure_ascii=False, separators=(",", ":"), default=str) + "\n"


def record_from_line(line: str) -> CallRecord:
    """The record of a journal line (ValueError/TypeError/KeyError when the line is not one)."""
    return record_from_dict(json.loads(line))


class Journal:
    """An append-only file of prepared records, safe to append to from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None

    def append(self, records: list[CallRecord]) -> None:
        """Append records (flushed to the OS, so a killed process keeps them). Raises OSError (disk full)."""
        if not records:
            return
        text = "".join(record_to_line(r) for r in records)
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a", encoding="utf-8")
            try:
                self._handle.write(text)
                self._handle.flush()
            except OSError:
                self._close()
                raise

    def _close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass
            self._handle = None

    def replay_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(self.path.name + ".*.replay"))

    def has_data(self) -> bool:
        """Whether any record waits in the journal."""
        try:
            if self.path.exists() and self.path.stat().st_size > 0:
                return True
            return bool(self.replay_files())
        except OSError:
            return False

    def take(self) -> list[Path]:
        """Move the live journal aside for replay; every file waiting for replay, oldest first."""
        with self._lock:
            self._close()
            try:
                if self.path.exists() and self.path.stat().st_size > 0:
                    self.path.rename(self.path.with_name(f"{self.path.name}.{time.time_ns()}.replay"))
            except OSError:
                log.exception("could not move the journal %s aside for replay", self.path)
        return self.replay_files()

    @staticmethod
    def read(path: Path) -> Iterator[CallRecord]:
        """The records of a journal file; a line that cannot be read (cut by a crash) is logged and skipped."""
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield record_from_line(line)
                except (ValueError, TypeError, KeyError) as exc:
                    log.error("journal %s line %d is unreadable and skipped: %s", path, number, exc)

    def close(self) -> None:
        with self._lock:
            self._close()


def default_journal_path(location_path: Path | None, home: Path, worker: str | None = None) -> Path:
    """Next to the SQLite file (`<db>.spill.jsonl`), or in the data directory for PostgreSQL.

    Each of `daemon --workers N` (`worker` = its index) has a journal of its own (`<db>.spill-w<N>.jsonl`), so
    one worker never replays or moves a file another is appending to.
    """
    suffix = ".spill.jsonl" if not worker else f".spill-w{worker}.jsonl"
    if location_path is not None:
        return location_path.with_name(location_path.name + suffix)
    return home / f"postgresql{suffix}"
