"""The single writer thread: records queued by the proxy are built and inserted in batches.

The writer knows nothing of what a record holds: it is given `build(item) -> CallRecord` (in the gateway
`tokenlens.metering.RecordBuilder`: usage, price and the per-call analyses) and calls it on its own thread,
off the proxy path. What it owns is getting every record into the store: batches, retries, the spill journal
and its replay.

datasette-style: one thread owns all writes, fed by a `queue.SimpleQueue`, so the proxy path never waits on
the database. `submit()` never blocks and never raises. A batch is written in one transaction; when the
insert fails (database locked beyond busy_timeout, PostgreSQL down) the batch is kept and retried with
backoff, never dropped. Only a record the database rejects on its own (found by writing the batch one
record at a time) is set aside, logged at ERROR level by its id and the error's type. No log line of the
writer carries a record's content (bodies, tags, details) or a driver message that could quote it.

Back-pressure without blocking: the queue is bounded (`max_queue`). When it is full, `submit()` hands the
item to a spill thread (its own unbounded queue: a put, no preparation and no file I/O on the caller's thread,
which is the proxy's event loop), which prepares it and appends it to the spill journal
(`tokenlens.store.journal`). A batch the database refuses for longer than `spill_after` seconds (or at shutdown)
goes to the journal too, so the queue keeps draining. The journal is replayed into the store when the writer
has caught up, and at start. Only when the journal cannot be written either (disk full) does the queue grow
past its bound (the spill thread moves what it prepared into it): records are never dropped.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee as pw

from tokenlens.records import CallRecord, bound_record, describe_failure, new_call_id
from tokenlens.store.batches import STOP, BatchQueue, drain_queue
from tokenlens.store.journal import Journal, default_journal_path
from tokenlens.store.queries import Store

log = logging.getLogger(__name__)

_BACKOFF_START = 0.05
_BACKOFF_MAX = 2.0
_SPLIT_AFTER = 3  # failed attempts of a whole batch before it is written record by record
_REPLAY_EVERY = 1.0  # seconds between attempts to replay the journal while it holds records
_UNSET: Any = object()


def minimal_error_record(item: object, exc: BaseException) -> CallRecord:
    """A record that keeps the fact of a call whose preparation failed (fields taken from `item` if any,
    made storable by `bound_record`)."""

    def pick(name: str, default: Any) -> Any:
        value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
        return default if value is None else value

    ts = pick("ts", None) or pick("started", None) or pick("started_at", None)
    tags = pick("tags", {})
    record = CallRecord(
        id=str(pick("id", "") or new_call_id()),
        ts=float(ts) if isinstance(ts, int | float) else time.time(),
        provider=str(pick("provider", "unknown")),
        endpoint=str(pick("endpoint", "")),
        source=str(pick("source", "unknown")),
        requested_model=pick("requested_model", None),
        model=pick("model", None),
        tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
        session_id=pick("session_id", None),
        status=pick("status", None) if isinstance(pick("status", None), int) else None,
        mode="proxy" if pick("mode", None) == "proxy" else "base_url",
        outcome="error",
        error=f"record preparation failed: {type(exc).__name__}",
    )
    return bound_record(record)


def _default_journal(store: Store, home: Path | None) -> Path | None:
    """The journal's path for `store`: `default_journal_path` with the data directory `home` (else the
    store's own); None for a stand-in store without a location (tests)."""
    location = getattr(store, "location", None)
    if location is None:
        return None
    home = home if home is not None else getattr(store, "home", None)
    if location.path is None and home is None:
        raise ValueError("the spill journal of a PostgreSQL store needs its data directory (home)")
    worker = os.environ.get("TOKENLENS_WORKER")  # set by `daemon --workers N` in each worker
    return default_journal_path(location.path, Path(home or "."), worker)


class _Prepared:
    """The records the spill thread prepared from one item and could not journal (they join the queue)."""

    __slots__ = ("records",)

    def __init__(self, records: list[CallRecord]) -> None:
        self.records = records


class RecordWriter[T](BatchQueue[T]):
    """Prepare and insert submitted items in batches, on its own thread (started at construction).

    build: turns a submitted item into a CallRecord (runs on the writer thread, or on the spill thread for an
    item that overflows the queue); the writer's `fallback` makes a minimal error record when it raises.
    on_written: called with each batch after its transaction committed (e.g. to publish on the bus).
    interval: how long the first item of a batch waits for company; max_batch: batch size cap.
    store_bodies: read per batch (the setting can change at run time).
    max_queue: items queued before `submit()` hands further items to the spill thread (which journals them);
    spill_after: seconds a failing batch is retried before it goes to the journal. journal: default next to the
    SQLite file, or in the data directory (`home`, default the one the store was opened with) for PostgreSQL
    (None: no journal and no spill thread; the queue then grows past its bound).
    """

    def __init__(
        self,
        store: Store,
        build: Callable[[T], CallRecord],
        on_written: Callable[[list[CallRecord]], None] | None = None,
        *,
        interval: float = 0.1,
        max_batch: int = 500,
        store_bodies: Callable[[], bool] = lambda: True,
        fallback: Callable[[T, BaseException], CallRecord | None] = minimal_error_record,
        name: str = "tokenlens-writer",
        max_queue: int = 20_000,
        spill_after: float = 5.0,
        journal: Journal | Path | None = _UNSET,
        home: Path | None = None,
    ) -> None:
        super().__init__(interval, max_batch)
        self.store = store
        self.build = build
        self.on_written = on_written
        self.store_bodies = store_bodies
        self.fallback = fallback
        self.written = 0  # records inserted
        self.rejected = 0  # records the database refused on their own (logged)
        self.retries = 0  # failed batch attempts
        self.max_queue = max(1, max_queue)
        self.spill_after = spill_after
        self.spilled = 0  # records appended to the journal
        self.replayed = 0  # records replayed from the journal into the store
        if journal is _UNSET:
            journal = _default_journal(store, home)
        self.journal = Journal(journal) if isinstance(journal, Path) else journal
        self._journal_dirty = False
        self._store_ok = True  # the last insert succeeded
        self._next_replay = 0.0
        self._spill_failed_logged = False
        if self.journal is not None and self.journal.has_data():
            self._journal_dirty = True
            self._replay_journal(
                budget=spill_after
            )  # before anything reads the store (e.g. the budget ledger)
        self._spill_queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._spill_thread: threading.Thread | None = None
        if self.journal is not None:
            self._spill_thread = threading.Thread(
                target=self._run_spill, args=(self.journal,), name=f"{name}-spill", daemon=True
            )
            self._spill_thread.start()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ producer side

    def submit(self, item: T) -> None:
        """Queue an item for writing; when the queue is full, hand it to the spill thread instead (it prepares
        and journals it). A queue put either way: never blocks, never raises, no file I/O here."""
        try:
            with self._count_lock:
                self._submitted += 1
                spill = (
                    self._spill_thread is not None
                    and not self._stopping
                    and self._queue.qsize() >= self.max_queue
                )
                (self._spill_queue if spill else self._queue).put(item)
            if self._stopping and not self._thread.is_alive():
                log.error(
                    "record submitted after the writer stopped; it stays queued (pending=%d)", self.pending
                )
        except Exception:  # pragma: no cover - SimpleQueue.put does not fail
            log.exception("could not queue a record")

    def _busy(self) -> bool:
        return self._journal_dirty  # flushed means in the store: the journal replayed too

    def _before_wait(self) -> None:
        self._next_replay = 0.0

    def stop(self, timeout: float = 10) -> bool:
        """Journal what waits for the spill thread, write everything queued (and replay the journal when the
        store answers), then end the threads; False when they did not finish within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._count_lock:  # from here on, submit() queues for the writer only
            first = not self._stopping
            self._stopping = True
        spill = self._spill_thread
        if spill is not None:
            if first:
                self._spill_queue.put(STOP)
            spill.join(max(0.0, deadline - time.monotonic()))
            if not spill.is_alive():
                for item in drain_queue(self._spill_queue):  # none unless the spill thread died
                    self._queue.put(item)
        if first:
            self._queue.put(STOP)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive() or (spill is not None and spill.is_alive()):
            return False
        leftovers = self._drain()  # submitted while the thread was finishing: write them here
        if leftovers:
            self._process(leftovers)
        replay = self._journal_dirty and self._store_ok  # journaled after the writer thread's last replay
        if replay:
            self._replay_journal(budget=1.0)
        if leftovers or replay:
            self._reset_connection()
        if self.journal is not None:
            self.journal.close()
        return True

    # ------------------------------------------------------------------------------------------ spill thread

    def _run_spill(self, journal: Journal) -> None:
        """Journal the items `submit()` could not queue, in batches, in the order they came."""
        while True:
            items = [self._spill_queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._spill_queue.get_nowait())
                except queue.Empty:
                    break
            work: list[T] = [i for i in items if i is not STOP]  # type: ignore[misc]
            if work:
                try:
                    self._spill(journal, work)
                except Exception:  # never let the thread die
                    log.exception("spill thread error")
            if len(work) < len(items):
                return

    def _spill(self, journal: Journal, items: list[T]) -> None:
        """Prepare the items and append them to the journal; when it cannot take them (disk full), queue the
        prepared records for the writer thread (past the bound: kept in memory, never dropped)."""
        prepared = [self._prepare_one(item) for item in items]
        records = [record for group in prepared for record in group]
        try:
            journal.append(records)
        except Exception as exc:  # OSError (disk full), or a record that cannot be written as JSON
            if not self._spill_failed_logged:
                self._spill_failed_logged = True
                log.error(
                    "the writer queue is full and the journal cannot be written (%s); queueing anyway",
                    store_error_text(exc),
                )
            for group in prepared:
                self._queue.put(_Prepared(group))
            return
        self._spill_failed_logged = False
        with self._done_cond:  # dirty before done: flush() never sees these done and the journal clean
            self.spilled += len(records)
            self._journal_dirty = True
            self._done += len(items)
            self._done_cond.notify_all()

    # ------------------------------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while True:
            try:
                batch, stop = self._collect()
                for start in range(0, len(batch), self.max_batch):
                    self._process(batch[start : start + self.max_batch])
                if stop:
                    if self._journal_dirty and self._store_ok:  # else the next start replays it
                        self._replay_journal(budget=1.0)
                    self._reset_connection()
                    return
                caught_up = self._queue.qsize() < self.max_batch
                if self._journal_dirty and caught_up and time.monotonic() >= self._next_replay:
                    self._replay_journal(budget=0.5)
            except Exception:  # never let the thread die
                log.exception("writer loop error")

    def _prepare_one(self, item: T) -> list[CallRecord]:
        """The item's record (a minimal error record when preparing it fails; none when that fails too)."""
        if isinstance(item, _Prepared):  # prepared by the spill thread already
            return item.records
        try:
            return [self.build(item)]
        except Exception as exc:
            log.error(
                "preparing call record %s failed (%s); writing a minimal error record",
                _id_of(item),
                describe_failure(exc),
            )
            error = exc
        try:
            fallback = self.fallback(item, error)
        except Exception as exc:
            log.error("could not build an error record for call %s (%s)", _id_of(item), describe_failure(exc))
            return []
        return [] if fallback is None else [fallback]

    def _prepare_all(self, items: list[T]) -> list[CallRecord]:
        return [record for item in items for record in self._prepare_one(item)]

    def _process(self, items: list[T]) -> None:
        try:
            records = self._write(self._prepare_all(items))
            if records:
                self.written += len(records)
                self._notify(records)
        finally:
            with self._done_cond:
                self._done += len(items)
                self._done_cond.notify_all()

    def _store_bodies(self) -> bool:
        try:
            return bool(self.store_bodies())
        except Exception:
            log.exception("store_bodies() failed; storing bodies")
            return True

    def _replay_journal(self, budget: float) -> None:
        """Insert the journal's records the store does not have yet; leave the rest for a later attempt."""
        journal = self.journal
        if journal is None:
            return
        self._next_replay = time.monotonic() + _REPLAY_EVERY
        for path in journal.take():
            try:
                records = list(journal.read(path))
            except OSError:
                log.exception("could not read the journal %s", path)
                return
            for start in range(0, len(records), self.max_batch):
                chunk = records[start : start + self.max_batch]
                written = self._insert_new(chunk, budget)
                if written is None:
                    return  # the store still refuses: try again later
                self.replayed += len(written)
                self.written += len(written)
                self._notify(written)
            try:
                path.unlink()
            except OSError:
                log.exception("could not remove the replayed journal %s", path)
                return
            log.info("replayed %d call records from the journal %s", len(records), path.name)
        with self._done_cond:
            self._journal_dirty = journal.has_data()
            self._done_cond.notify_all()

    def _insert_new(self, records: list[CallRecord], budget: float) -> list[CallRecord] | None:
        """Insert the records not stored yet, retrying for `budget` seconds; the ones inserted, or None."""
        deadline = time.monotonic() + budget
        delay = _BACKOFF_START
        while True:
            try:
                self.store.db.connect(reuse_if_open=True)
                known = self.store.existing_ids(r.id for r in records)
                fresh = [r for r in records if r.id not in known]
                self.store.insert_calls(fresh, store_bodies=self._store_bodies())
                return fresh
            except Exception as exc:
                self.retries += 1
                self._reset_connection()
                if time.monotonic() + delay > deadline:
                    log.warning("replaying the journal failed, will retry: %s", store_error_text(exc))
                    return None
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    def _notify(self, records: list[CallRecord]) -> None:
        if records and self.on_written is not None:
            try:
                self.on_written(records)
            except Exception:
                log.exception("on_written callback failed")

    def _spill_batch(self, records: list[CallRecord], exc: BaseException) -> bool:
        """Move a batch the store keeps refusing to the journal; False when the journal fails too."""
        if self.journal is None:
            return False
        try:
            self.journal.append(records)
        except OSError as error:
            log.error(
                "the journal cannot be written either (%s); keeping %d records in memory", error, len(records)
            )
            return False
        log.warning(
            "the store refuses writes (%s); %d call records spilled to the journal",
            store_error_text(exc),
            len(records),
        )
        self._next_replay = time.monotonic() + _REPLAY_EVERY
        with self._done_cond:
            self.spilled += len(records)
            self._journal_dirty = True
        return True

    def _write(self, records: list[CallRecord]) -> list[CallRecord]:
        """Insert with retries and backoff (never giving up on a transient error); the records written.

        A batch refused for `spill_after` seconds (at once when stopping) goes to the journal instead.
        """
        if not records:
            return records
        delay = _BACKOFF_START
        attempts = 0
        first_failure = time.monotonic()
        while True:
            try:
                # The writer keeps its connection open between batches (closing the last connection to a
                # WAL database checkpoints it, which would cost milliseconds per batch).
                self.store.db.connect(reuse_if_open=True)
                self.store.insert_calls(records, store_bodies=self._store_bodies())
                self._store_ok = True
                return records
            except Exception as exc:
                self._store_ok = False
                attempts += 1
                self.retries += 1
                self._reset_connection()
                if attempts >= _SPLIT_AFTER and not _is_transient(exc):
                    return self._write_one_by_one(records)
                overdue = time.monotonic() - first_failure >= self.spill_after
                if (overdue or self._stopping) and self._spill_batch(records, exc):
                    return []
                log.warning(
                    "writing %d call records failed (attempt %d, retrying in %.2fs): %s",
                    len(records),
                    attempts,
                    delay,
                    store_error_text(exc),
                )
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    def _write_one_by_one(self, records: list[CallRecord]) -> list[CallRecord]:
        written: list[CallRecord] = []
        for record in records:
            attempts = 0
            delay = _BACKOFF_START
            while True:
                try:
                    self.store.insert_calls([record], store_bodies=self._store_bodies())
                    written.append(record)
                    break
                except Exception as exc:
                    attempts += 1
                    self._reset_connection()
                    if not _is_transient(exc) and attempts >= _SPLIT_AFTER:
                        self.rejected += 1
                        log.error(
                            "the database rejects call record %s (%s); record set aside",
                            record.id,
                            store_error_text(exc),
                        )
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_MAX)
        return written

    def _reset_connection(self) -> None:
        """Drop a connection that may be broken (PostgreSQL restarted) so the next attempt reconnects."""
        try:
            if not self.store.db.is_closed() and not self.store.db.in_transaction():
                self.store.db.close()
        except Exception:
            try:
                self.store.db.dispose()
            except Exception:
                pass


def store_error_text(exc: BaseException) -> str:
    """What to log of a failed write: the error's type, plus the first line of the message for a connection,
    lock or file error (`database is locked`, `could not connect to server`), whose messages name no row
    data; for any other error (a value the database refuses) the type and the place it was raised only."""
    if isinstance(exc, pw.OperationalError | pw.InterfaceError | OSError):
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
    return describe_failure(exc)


def _id_of(item: object) -> str:
    """The call id of a submitted item (an Exchange or a record), for log lines."""
    value = item.get("id") if isinstance(item, dict) else getattr(item, "id", None)
    return str(value)[:64] if value is not None else "(unknown)"


def _is_transient(exc: BaseException) -> bool:
    """Locked or unreachable database (retry forever) as opposed to a record the database refuses."""
    if isinstance(exc, pw.OperationalError | pw.InterfaceError):
        return True
    text = str(exc).lower()
    return "locked" in text or "busy" in text or "connection" in text
