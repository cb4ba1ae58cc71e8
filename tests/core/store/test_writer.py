from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from tokenlens.records import CallRecord
from tokenlens.store import RecordWriter, Store, open_store


def prepare(item: dict[str, Any]) -> CallRecord:
    if item.get("explode"):
        raise RuntimeError("cannot prepare this one")
    return CallRecord(
        id=item["id"],
        ts=item.get("ts", 1_790_000_000.0),
        provider="openai",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        request_body=b"{}",
    )


def test_ten_thousand_items_from_several_threads_all_land(store: Store) -> None:
    batches: list[int] = []
    writer = RecordWriter(store, prepare, lambda batch: batches.append(len(batch)), max_batch=500)
    threads = [
        threading.Thread(target=lambda t=t: [writer.submit({"id": f"t{t}-{i}"}) for i in range(2000)])
        for t in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.flush(timeout=60)
    assert writer.pending == 0
    assert store.count_calls() == 10_000
    assert sum(batches) == 10_000 and max(batches) <= 500
    assert writer.stop()


def test_stop_after_submit_writes_everything(store: Store) -> None:
    writer = RecordWriter(store, prepare, interval=5.0)  # a long interval: stop() must not wait for it
    for i in range(1234):
        writer.submit({"id": f"s{i}"})
    started = time.monotonic()
    assert writer.stop(timeout=30)
    assert time.monotonic() - started < 4.5
    assert store.count_calls() == 1234
    assert writer.pending == 0 and not writer.alive


def test_failing_prepare_does_not_lose_the_others(store: Store) -> None:
    written: list[CallRecord] = []
    writer = RecordWriter(store, prepare, written.extend)
    writer.submit({"id": "a"})
    writer.submit({"id": "bad", "explode": True, "ts": 1_790_000_001.0})
    writer.submit({"id": "c"})
    assert writer.flush()
    assert {r.id for r in written} == {"a", "bad", "c"}
    bad = store.get_call("bad")
    assert bad is not None
    assert bad.outcome == "error" and bad.ts == 1_790_000_001.0
    assert bad.error is not None and "RuntimeError" in bad.error
    assert store.get_call("a") is not None and store.get_call("c") is not None
    writer.stop()


def test_on_written_errors_are_contained(store: Store) -> None:
    def boom(batch: list[CallRecord]) -> None:
        raise ValueError("subscriber bug")

    writer = RecordWriter(store, prepare, boom)
    writer.submit({"id": "x"})
    assert writer.flush()
    writer.submit({"id": "y"})
    assert writer.flush()
    assert store.count_calls() == 2 and writer.alive
    writer.stop()


def test_store_bodies_is_read_per_batch(store: Store) -> None:
    keep = {"on": False}
    writer = RecordWriter(store, prepare, store_bodies=lambda: keep["on"])
    writer.submit({"id": "no-body"})
    assert writer.flush()
    keep["on"] = True
    writer.submit({"id": "body"})
    assert writer.flush()
    first, second = store.get_call("no-body"), store.get_call("body")
    assert first is not None and first.request_body is None
    assert second is not None and second.request_body == b"{}"
    writer.stop()


class FlakyStore:
    """A store whose inserts fail the first `failures` times (as a locked or unreachable database does)."""

    def __init__(self, inner: Store, failures: int, error: Exception) -> None:
        self.inner = inner
        self.db = inner.db
        self.failures = failures
        self.error = error
        self.attempts = 0

    def insert_calls(self, records: list[CallRecord], store_bodies: bool = True) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        self.inner.insert_calls(records, store_bodies)


def test_failed_inserts_are_retried_until_written(store: Store) -> None:
    flaky = FlakyStore(store, 5, pw.OperationalError("database is locked"))
    writer = RecordWriter(flaky, prepare)  # type: ignore[arg-type]
    for i in range(20):
        writer.submit({"id": f"r{i}"})
    assert writer.flush(timeout=20)
    assert store.count_calls() == 20
    assert flaky.attempts >= 6 and writer.retries == 5
    writer.stop()


def test_a_record_the_database_refuses_does_not_block_the_rest(store: Store) -> None:
    class Picky:
        db = store.db

        def insert_calls(self, records: list[CallRecord], store_bodies: bool = True) -> None:
            if any(r.id == "poison" for r in records):
                raise pw.IntegrityError("CHECK constraint failed")
            store.insert_calls(records, store_bodies)

    writer = RecordWriter(Picky(), prepare)  # type: ignore[arg-type]
    for call_id in ("a", "poison", "b"):
        writer.submit({"id": call_id})
    assert writer.flush(timeout=20)
    assert {r.id for r in store.iter_calls()} == {"a", "b"}
    assert writer.rejected == 1
    writer.stop()


def test_waits_out_a_real_sqlite_write_lock(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    other = sqlite3.connect(tmp_path / "tokenlens.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    writer = RecordWriter(store, prepare)
    writer.submit({"id": "during-lock"})
    time.sleep(0.5)
    assert store.count_calls() == 0
    other.execute("COMMIT")
    other.close()
    assert writer.flush(timeout=10)
    assert store.count_calls() == 1
    writer.stop()
    store.close()


def test_submit_never_raises_and_flush_times_out_honestly(store: Store) -> None:
    gate = threading.Event()

    def slow(item: dict[str, Any]) -> CallRecord:
        gate.wait(5)
        return prepare(item)

    writer = RecordWriter(store, slow)
    writer.submit({"id": "slow"})
    assert writer.pending == 1
    assert writer.flush(timeout=0.2) is False
    gate.set()
    assert writer.flush(timeout=10)
    writer.stop()


@pytest.mark.parametrize("count", [1, 499, 500, 501])
def test_batch_boundaries(store: Store, count: int) -> None:
    sizes: list[int] = []
    writer = RecordWriter(store, prepare, lambda b: sizes.append(len(b)), max_batch=500, interval=0.05)
    for i in range(count):
        writer.submit({"id": f"b{i}"})
    assert writer.stop()
    assert store.count_calls() == count and sum(sizes) == count and max(sizes) <= 500
