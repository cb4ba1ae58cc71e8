"""The analysis process: stores a gateway's calls, with their record analyses, off the proxy's interpreter.

    python -m tokenlens.analysis --data-dir DIR --config FILE [--worker N]

The daemon starts one beside each gateway process (`tokenlens.runtime.Runtime.start`) and stops it with SIGTERM
once the gateway has spooled its last call; it also ends when the gateway that started it is gone. It reads the
gateway's spool (`tokenlens.store.spool`) in order, rebuilds each call's request, runs the analyses the call was
given (`tokenlens.analyses`: waste, heatmap and complexity, conversations), and stores the records through the
record writer (one transaction a batch, the usage rollups with it, retried while the database refuses); only
then does it save its cursor and delete the segments it finished. A crash anywhere repeats at most the last
batch, and the store keeps a call once (by id), so nothing is lost and nothing counted twice. Records are
visible in the API within about `interval` seconds of being spooled.

Budgets, metrics and the live feed do not wait for this: the gateway metered each call before spooling it.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tokenlens import price_data
from tokenlens.analyses import AnalysisContext, run_analyses
from tokenlens.config import ConfigError, SettingsHolder, load_settings
from tokenlens.config_sync import ConfigSync
from tokenlens.exchange import Exchange
from tokenlens.records import CallRecord, bound_record
from tokenlens.request_body import BodyRefused, decode_content, read_request_body
from tokenlens.store import RecordWriter, Store, open_store
from tokenlens.store.spool import (
    LOCK,
    NOT_GIVEN,
    SpooledCall,
    read_batch,
    read_cursor,
    save_cursor,
    spool_dir,
)
from tokenlens.tokens import warm_up

log = logging.getLogger("tokenlens.analysis")

POLL_S = 0.1
LOCK_WAIT_S = 30.0
# The writer's SQLite page cache: SQLite's default (the gateway's connections keep 16 MiB for the API's reads).
# Inserting a batch touches the end of the table and a few index pages; the OS caches the rest of the file.
CACHE_KIB = 2000


def exchange_of(call: SpooledCall) -> Exchange:
    """The call as the analyses read it: its request (parsed as the ingress parsed it) and wire format."""
    record = call.record
    body = call.request_body
    exchange = Exchange(
        id=record.id,
        started=record.ts,
        provider=record.provider,
        api=call.api,  # type: ignore[arg-type]
        endpoint=record.endpoint,
        kind=call.kind,
        mode=record.mode,
        source=record.source,
        tags=dict(record.tags),
        session_id=record.session_id,
        request_body=body,
        requested_model=record.requested_model,
        model=record.model,
    )
    if body:
        try:
            read = read_request_body(decode_content(body, ""))
        except BodyRefused:
            read = None
        if read is None and body[:2] == b"\x1f\x8b":  # a gzip body the client sent compressed
            try:
                read = read_request_body(decode_content(body, "gzip"))
            except BodyRefused:
                read = None
        exchange.request_json = read.json if read is not None else None
    return exchange


def analysed(context: AnalysisContext, call: SpooledCall) -> CallRecord:
    """The call's record with its analyses run (a record whose request cannot be read is stored as it is)."""
    record = call.record
    if call.analyses:
        context.input_rate = call.input_rate
        try:
            run_analyses(context, call.analyses, exchange_of(call), record)
        finally:
            context.input_rate = NOT_GIVEN
        record = bound_record(record)
    if call.request is not None:  # carried for the analyses only (`storage.store_bodies` is off)
        record.request_body = None
    return record


class AnalysisWorker:
    """Reads one gateway's spool into the store (see the module docstring)."""

    def __init__(
        self,
        settings: SettingsHolder,
        store: Store,
        directory: Path,
        *,
        interval: float = POLL_S,
        max_calls: int = 500,
        home: Path | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.directory = directory
        self.interval = interval
        self.max_calls = max_calls
        self.context = AnalysisContext(settings)
        self.cursor = read_cursor(directory)
        self.stored = 0
        # With the writer's spill journal in the data directory: a batch the store refuses for long goes there
        # (and so does what an earlier release left in it, replayed at start).
        self.writer: RecordWriter[CallRecord] = RecordWriter(
            store,
            lambda record: record,
            store_bodies=lambda: settings.get().storage.store_bodies,
            home=home,
            name="tokenlens-analysis-writer",
        )

    def step(self, stopping: threading.Event | None = None) -> int:
        """Store the next batch; the number of calls read (0: caught up)."""
        batch = read_batch(self.directory, self.cursor, self.max_calls)
        records = [analysed(self.context, call) for call in batch.calls]
        for record in records:
            self.writer.submit(record)
        while not self.writer.flush(timeout=1.0):  # the store refuses: wait (the spool keeps the calls)
            if stopping is not None and stopping.is_set() and not self.writer.alive:
                raise RuntimeError("the record writer stopped")
        if batch.cursor != self.cursor:
            save_cursor(self.directory, batch.cursor)
            self.cursor = batch.cursor
        for path in batch.done:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.stored += len(records)
        return len(batch.calls)

    def drain(self) -> int:
        """Store everything spooled so far."""
        total = 0
        while (count := self.step()) > 0:
            total += count
        return total

    def run(self, stop: threading.Event, parent: int | None = None) -> None:
        """Until `stop` (or the parent process is gone): poll, store; then store what is left."""
        while not stop.is_set():
            if parent is not None and os.getppid() != parent:
                log.warning("the gateway that started the analysis process is gone; finishing")
                break
            try:
                if self.step(stop) < self.max_calls:  # caught up: let the next batch gather
                    stop.wait(self.interval)
            except Exception:
                log.exception("analysis step failed; retrying")
                stop.wait(1.0)
        self.drain()

    def close(self) -> bool:
        return self.writer.stop()


@contextmanager
def spool_lock(directory: Path, timeout: float = LOCK_WAIT_S) -> Iterator[bool]:
    """Hold the spool's lock (one reader at a time); yields whether it was taken within `timeout`."""
    directory.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = (directory / LOCK).open("a")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


class _ConfigFile:
    """Reloads the settings when the configuration file changes (checked at most once a second)."""

    def __init__(self, path: Path, holder: SettingsHolder) -> None:
        self.path, self.holder = path, holder
        self.seen = self._stamp()
        self.checked = time.monotonic()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def check(self) -> None:
        if time.monotonic() - self.checked < 1.0:
            return
        self.checked = time.monotonic()
        stamp = self._stamp()
        if stamp == self.seen:
            return
        self.seen = stamp
        try:
            self.holder.replace(load_settings(self.path))
        except ConfigError as error:
            log.warning("configuration not reloaded (%s); keeping the previous settings", error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokenlens.analysis", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--worker", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s analysis %(levelname)s %(message)s")
    home: Path = args.data_dir
    parent = os.getppid()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    holder = SettingsHolder(load_settings(args.config))
    warm_up()  # the tokenizer vocabularies the analyses count with (a few MiB): loaded here, not in the gateway
    price_data.load(home)  # only read for a spool line without its input rate (written by an older release)
    store = open_store(holder.get().storage.url, home, cache_kib=CACHE_KIB)
    directory = spool_dir(home, args.worker)
    sync = ConfigSync(store, holder) if store.kind == "postgresql" else None
    with spool_lock(directory) as locked:
        if not locked:
            log.error("another analysis process holds %s; exiting", directory / LOCK)
            store.close()
            return 1
        if sync is not None:
            sync.start()
        config = _ConfigFile(args.config, holder)
        worker = AnalysisWorker(holder, store, directory, home=home)
        watcher = threading.Thread(target=_watch_config, args=(config, stop), daemon=True)
        watcher.start()
        try:
            worker.run(stop, parent)
        finally:
            if sync is not None:
                sync.stop()
            finished = worker.close()
            store.close()
    log.info("analysis process stopped (%d calls stored)", worker.stored)
    return 0 if finished else 1


def _watch_config(config: _ConfigFile, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        config.check()


if __name__ == "__main__":
    sys.exit(main())
