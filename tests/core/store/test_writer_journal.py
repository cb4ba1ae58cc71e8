"""The writer falling behind: a bounded queue that spills to a journal, replayed later; disk full."""

from __future__ import annotations

import collections
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tokenlens.records import CallRecord
from tokenlens.store import RecordWriter, open_store
from tokenlens.store.journal import Journal, record_from_line, record_to_line


def prepare(item: dict[str, Any]) -> CallRecord:
    return CallRecord(
        id=item["id"],
        ts=1_790_000_000.0,
        provider="openai",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        input_tokens=item.get("tokens", 7),
        request_body=item.get("body", b'{"x": 1}'),
    )


def stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("select id from call")]


def wait_for(check: Callable[[], bool], timeout: float = 30) -> bool:
    """Poll `check` until it holds (a wait for progress, not a measure of speed)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class GatedJournal(Journal):
    """A journal that notes which thread appends what, and holds every append off `caller`'s thread until
    `gate` is set (an append on `caller`'s thread goes through at once, so the old behaviour fails, not hangs).
    """

    def __init__(self, path: Path, caller: threading.Thread) -> None:
        super().__init__(path)
        self.caller = caller
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.threads: list[threading.Thread] = []
        self.appended: list[str] = []

    def append(self, records: list[CallRecord]) -> None:
        self.threads.append(threading.current_thread())
        if threading.current_thread() is not self.caller:
            self.entered.set()
            self.gate.wait(60)
        super().append(records)
        self.appended.extend(r.id for r in records)


class FullDiskJournal(Journal):
    """A journal on a disk that is full."""

    def append(self, records: list[CallRecord]) -> None:
        raise OSError(28, "No space left on device")


class Overload:
    """A writer whose thread is stuck preparing the item "first" until `release` is set, so that its queue
    (bound 3) fills up and further submits overflow; counts how often each item is prepared."""

    def __init__(self, tmp_path: Path, journal: Journal) -> None:
        self.release = threading.Event()
        self.stuck = threading.Event()
        self.prepared: collections.Counter[str] = collections.Counter()
        self.seen: list[str] = []
        self.store = open_store(None, tmp_path)
        self.writer = RecordWriter(
            self.store,
            self.prepare,
            lambda batch: self.seen.extend(r.id for r in batch),
            max_queue=3,
            max_batch=10,
            interval=0.01,
            spill_after=60,
            journal=journal,
        )
        self.writer.submit({"id": "first"})
        assert self.stuck.wait(30)  # the writer thread holds "first" and takes nothing more
        for i in range(3):
            self.writer.submit({"id": f"queued{i}"})  # fills the queue to its bound

    def prepare(self, item: dict[str, Any]) -> CallRecord:
        self.prepared[item["id"]] += 1
        if item["id"] == "first":
            self.stuck.set()
            self.release.wait(60)
        return prepare(item)


def test_journal_line_round_trip_keeps_every_field() -> None:
    record = CallRecord(
        id="abc",
        ts=1.5,
        provider="google",
        endpoint="/v1beta/x",
        tags={"team": "é"},
        details={"waste": {"n": [1, 2]}},
        guardrail_flags=[{"rule": "email"}],
        request_body=b"\x00\xffbin",
        response_body=None,
        cost_usd=0.25,
    )
    assert record_from_line(record_to_line(record)) == record


def test_a_full_queue_spills_to_the_journal_without_blocking_and_nothing_is_lost(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    other = sqlite3.connect(tmp_path / "tokenlens.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the writer falls behind: the database is locked
    written: list[str] = []
    writer = RecordWriter(
        store,
        prepare,
        lambda batch: written.extend(r.id for r in batch),
        max_queue=5,
        max_batch=10,
        spill_after=30,
    )
    for i in range(200):
        writer.submit({"id": f"r{i:03d}"})
    # once the spill thread has journaled the overflow, in memory: at most the queue bound plus the batch the
    # writer holds
    assert wait_for(lambda: writer.pending <= 5 + 10 + 1)
    assert writer.spilled == 200 - writer.pending
    assert writer.journal is not None and writer.journal.has_data()
    other.execute("COMMIT")
    other.close()
    assert writer.flush(timeout=30)
    ids = stored_ids(tmp_path / "tokenlens.db")
    assert sorted(ids) == [f"r{i:03d}" for i in range(200)]
    assert sorted(written) == sorted(ids)  # listeners see each record exactly once
    assert writer.replayed == writer.spilled and not writer.journal.has_data()
    assert writer.stop()


def test_submit_on_a_full_queue_leaves_preparing_and_journaling_to_the_spill_thread(tmp_path: Path) -> None:
    journal = GatedJournal(tmp_path / "tokenlens.db.spill.jsonl", threading.current_thread())
    load = Overload(tmp_path, journal)
    writer = load.writer
    overflow = [f"over{i}" for i in range(7)]
    for call_id in overflow:
        writer.submit({"id": call_id})  # the queue is full: these overflow
    # submit() returned on this (the proxy's) thread without preparing or writing anything itself ...
    assert threading.current_thread() not in journal.threads
    assert all(load.prepared[call_id] <= 1 for call_id in overflow)
    # ... while the spill thread is still held in its journal append: the spill is pending, nothing is lost
    assert journal.entered.wait(30)
    assert journal.appended == [] and writer.spilled == 0
    assert writer.pending == 1 + 3 + len(overflow)
    assert {t.name for t in journal.threads} == {"tokenlens-writer-spill"}
    journal.gate.set()
    assert wait_for(lambda: writer.spilled == len(overflow))
    assert journal.appended == overflow  # journaled in the order they were submitted
    load.release.set()
    assert writer.flush(timeout=30)
    expected = sorted(["first", *(f"queued{i}" for i in range(3)), *overflow])
    assert sorted(stored_ids(tmp_path / "tokenlens.db")) == expected
    assert sorted(load.seen) == expected  # listeners see each record exactly once
    assert all(load.prepared[call_id] == 1 for call_id in expected)
    assert writer.replayed == len(overflow) and not journal.has_data()
    assert writer.stop()
    load.store.close()


def test_stop_while_a_spill_is_pending_writes_every_record(tmp_path: Path) -> None:
    journal = GatedJournal(tmp_path / "tokenlens.db.spill.jsonl", threading.current_thread())
    load = Overload(tmp_path, journal)
    writer = load.writer
    for i in range(4):
        writer.submit({"id": f"over{i}"})
    assert journal.entered.wait(30)  # the spill thread holds over0.. in its append
    for i in range(4, 8):
        writer.submit({"id": f"over{i}"})  # these wait in the spill queue behind it
    assert writer.stop(timeout=0.2) is False  # SIGTERM now: the spill cannot finish while the disk is held
    writer.submit({"id": "late"})  # after stop() began: queued for the writer, past the bound
    journal.gate.set()
    load.release.set()
    assert writer.stop(timeout=30)
    expected = sorted(["first", "late", *(f"queued{i}" for i in range(3)), *(f"over{i}" for i in range(8))])
    assert sorted(stored_ids(tmp_path / "tokenlens.db")) == expected
    assert sorted(load.seen) == expected
    assert writer.pending == 0 and not journal.has_data()
    load.store.close()


def test_a_full_disk_under_overload_keeps_the_prepared_records_in_memory_until_written(
    tmp_path: Path,
) -> None:
    load = Overload(tmp_path, FullDiskJournal(tmp_path / "tokenlens.db.spill.jsonl"))
    writer = load.writer
    overflow = [f"over{i}" for i in range(6)]
    for call_id in overflow:
        writer.submit({"id": call_id})
    assert wait_for(lambda: all(load.prepared[call_id] == 1 for call_id in overflow))
    assert writer.pending == 1 + 3 + len(overflow)  # not journaled, not dropped
    load.release.set()
    assert writer.flush(timeout=30)
    expected = sorted(["first", *(f"queued{i}" for i in range(3)), *overflow])
    assert sorted(stored_ids(tmp_path / "tokenlens.db")) == expected
    assert sorted(load.seen) == expected
    # the spill thread's preparation is used as is: each item prepared exactly once
    assert all(load.prepared[call_id] == 1 for call_id in expected)
    assert writer.spilled == 0 and writer.pending == 0
    assert writer.stop()
    load.store.close()


def test_a_batch_refused_too_long_moves_to_the_journal_and_the_queue_keeps_draining(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    other = sqlite3.connect(tmp_path / "tokenlens.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writer = RecordWriter(store, prepare, spill_after=0.3, interval=0.05)
    for i in range(30):
        writer.submit({"id": f"b{i}"})
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while writer.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.pending == 0 and writer.spilled == 30  # all out of memory, into the journal
    other.execute("COMMIT")
    other.close()
    assert writer.flush(timeout=30)
    assert len(stored_ids(tmp_path / "tokenlens.db")) == 30
    assert writer.stop()


def test_stop_while_locked_spills_and_the_next_start_replays(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    other = sqlite3.connect(tmp_path / "tokenlens.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writer = RecordWriter(store, prepare)
    for i in range(10):
        writer.submit({"id": f"s{i}"})
    started = time.monotonic()
    assert writer.stop(timeout=20)
    assert time.monotonic() - started < 8
    assert writer.spilled == 10
    other.execute("COMMIT")
    other.close()
    store.close()
    again = open_store(None, tmp_path)
    seen: list[str] = []
    restarted = RecordWriter(again, prepare, lambda batch: seen.extend(r.id for r in batch))
    assert sorted(stored_ids(tmp_path / "tokenlens.db")) == sorted(f"s{i}" for i in range(10))
    assert sorted(seen) == sorted(f"s{i}" for i in range(10))
    assert restarted.journal is not None and not restarted.journal.has_data()
    assert restarted.stop()


def test_replay_at_start_skips_stored_ids_and_a_line_cut_by_a_crash(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    store.insert_calls([prepare({"id": "already"})])
    journal_path = tmp_path / "tokenlens.db.spill.jsonl"
    Journal(journal_path).append(
        [prepare({"id": "already"}), prepare({"id": "new1"}), prepare({"id": "new2"})]
    )
    with journal_path.open("a") as handle:
        handle.write('{"id": "cut", "ts": 1.0, "provi')  # kill -9 in the middle of an append
    seen: list[str] = []
    writer = RecordWriter(store, prepare, lambda batch: seen.extend(r.id for r in batch))
    assert sorted(stored_ids(tmp_path / "tokenlens.db")) == ["already", "new1", "new2"]
    assert sorted(seen) == ["new1", "new2"]
    assert writer.replayed == 2 and not journal_path.exists()
    assert writer.stop()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MB filesystem (tmpfs; needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_keeps_records_until_space_returns(tiny_disk: Path) -> None:
    store = open_store(None, tiny_disk)
    writer = RecordWriter(store, prepare, spill_after=0.2, interval=0.05)
    writer.submit({"id": "before"})
    assert writer.flush(timeout=10)
    filler = tiny_disk / "filler"
    with filler.open("wb") as handle:  # fill the disk to the last byte
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    body = os.urandom(200_000)  # needs fresh pages: SQLite gets SQLITE_FULL
    started = time.perf_counter()
    for i in range(5):
        writer.submit({"id": f"full{i}", "body": body})
    assert time.perf_counter() - started < 0.5  # the producer never waits on the full disk
    time.sleep(1.5)
    assert (
        writer.retries > 0 and writer.pending == 5
    )  # neither written nor dropped, nor in the (full) journal
    filler.unlink()
    assert writer.flush(timeout=30)
    assert sorted(stored_ids(tiny_disk / "tokenlens.db")) == ["before", *(f"full{i}" for i in range(5))]
    with sqlite3.connect(tiny_disk / "tokenlens.db") as conn:
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    assert writer.stop()
    store.close()


def test_a_postgresql_store_spills_into_its_data_directory(
    fresh_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--data-dir` holds the journal of a PostgreSQL store too (not the default home): a writer that falls
    behind spills to `<data dir>/postgresql.spill.jsonl`, and every record reaches the database."""
    default_home = tmp_path / "default-home"
    default_home.mkdir()
    monkeypatch.setenv("TOKENLENS_HOME", str(default_home))
    monkeypatch.delenv("TOKENLENS_WORKER", raising=False)
    data_dir = tmp_path / "data-dir"
    store = open_store(fresh_pg_url, data_dir)
    release, stuck = threading.Event(), threading.Event()

    def slow(item: dict[str, Any]) -> CallRecord:
        if item["id"] == "first":
            stuck.set()
            release.wait(60)
        return prepare(item)

    writer = RecordWriter(store, slow, max_queue=2, max_batch=10, interval=0.01, spill_after=60)
    writer.submit({"id": "first"})
    assert stuck.wait(30)
    for i in range(12):
        writer.submit({"id": f"p{i:02d}"})
    assert wait_for(lambda: writer.spilled >= 10)
    assert writer.journal is not None and writer.journal.path == data_dir / "postgresql.spill.jsonl"
    assert writer.journal.path.exists()
    assert list(default_home.iterdir()) == []
    release.set()
    assert writer.flush(timeout=30)
    assert writer.stop()
    with store.connection():
        stored = sorted(r.id for r in store.iter_calls())
    assert stored == sorted(["first", *(f"p{i:02d}" for i in range(12))])
    assert writer.replayed == writer.spilled
    store.close()
