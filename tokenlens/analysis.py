"""The analysis process: stores a gateway's calls, with their record analyses, off the proxy's interpreter.

    python -m tokenlens.analysis --data-dir DIR --config FILE [--worker N]

The daemon starts one beside each gateway process (`tokenlens.runtime.Runtime.start`) and stops it with SIGTERM
once the gateway has spooled its last call; it also ends when the gateway that started it is gone. It reads the
gateway's spool (`tokenlens.store.spool`) in order, rebuilds each call's request, meters it, runs the analyses
the call was given (`tokenlens.analyses`: waste, heatmap and complexity, conversations), and stores the records
through the record writer (one transaction a batch, the usage rollups with it, retried while the database
refuses); only then does it save its cursor and delete the segments it finished. A crash anywhere repeats at
most the last batch, and the store keeps a call once (by id), so nothing is lost and nothing counted twice.
Records are visible in the API within about `interval` seconds of being spooled.

Most calls are spooled raw: this process meters and prices them (the gateway's proxy never does), and after
each stored batch it reports them on the pipe the gateway gave it (`--report-fd`, `tokenlens.settlement`):
budgets settle, metrics count and the live feed shows a call from that report. Calls the gateway metered itself
(those with deferred analyses) it settled when it spooled them.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tokenlens import price_data
from tokenlens.analyses import AnalysisContext, run_analyses
from tokenlens.config import ConfigError, SettingsHolder, load_settings
from tokenlens.config_sync import ConfigSync
from tokenlens.exchange import Exchange
from tokenlens.metering import RecordBuilder
from tokenlens.records import CallRecord, bound_record, describe_failure
from tokenlens.request_body import BodyRefused, decode_content, read_request_body
from tokenlens.settlement import feed_wanted, report_line
from tokenlens.store import RecordWriter, Store, open_store
from tokenlens.store.spool import (
    LOCK,
    NOT_GIVEN,
    RawCall,
    SpooledCall,
    read_batch,
    read_cursor,
    save_cursor,
    spool_dir,
)
from tokenlens.store.writer import minimal_error_record
from tokenlens.tokens import warm_up

log = logging.getLogger("tokenlens.analysis")

POLL_S = 0.1  # how often the records built are stored
TICK_S = 0.01  # how often the spool is read and the new calls' records built
LOCK_WAIT_S = 30.0
# The writer's SQLite page cache: SQLite's default (the gateway's connections keep 16 MiB for the API's reads).
# Inserting a batch touches the end of the table and a few index pages; the OS caches the rest of the file.
CACHE_KIB = 2000


def parse_request(body: bytes) -> dict[str, Any] | None:
    """A spooled request body parsed as the ingress parsed it (None: not a JSON object, or refused)."""
    if not body:
        return None
    try:
        read = read_request_body(decode_content(body, ""))
    except BodyRefused:
        read = None
    if read is None and body[:2] == b"\x1f\x8b":  # a gzip body the client sent compressed
        try:
            read = read_request_body(decode_content(body, "gzip"))
        except BodyRefused:
            read = None
    return read.json if read is not None else None


def record_of_raw(builder: Callable[[Exchange], CallRecord], exchange: Exchange) -> CallRecord:
    """A raw spooled call's record: its request parsed as the ingress parsed it, then built by `builder` (a
    `RecordBuilder`: metered, priced and, with an analysis context, analysed)."""
    exchange.request_json = parse_request(exchange.request_body)
    return builder(exchange)


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
        request_json=parse_request(body),
    )
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
        tick: float = TICK_S,
        max_calls: int = 500,
        home: Path | None = None,
        report: Callable[[bytes], None] | None = None,
        run_start: str = "",
        before_metering: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.directory = directory
        self.interval = interval
        self.tick = tick
        self.max_calls = max_calls
        self.context = AnalysisContext(settings)
        self.builder = RecordBuilder(settings, home, self.context)  # meters, prices and analyses raw calls
        self.cursor = read_cursor(directory)
        self.stored = 0
        # Where each stored batch of raw calls is reported (`tokenlens.settlement`; None: nowhere), and the name
        # of the first segment the gateway's current run wrote (its calls in earlier ones it settled itself).
        self.report = report
        self.run_start = run_start
        # Called before a batch with raw calls is metered: the settings and the price data in use are those of
        # the moment (a pricing override or `prices update` applies from the next call, as the gateway's do).
        self.before_metering = before_metering
        self.home = home
        self._batches = 0  # batches stored so far
        # Records built and not stored yet (each with whether its call was raw), the read position after them,
        # the segments read to their end, and the segment of their first call.
        self._pending: list[tuple[CallRecord, bool]] = []
        self._read = self.cursor
        self._done: list[Path] = []
        self._first_segment = ""
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
        """Analyse and store the next batch; the number of calls read (0: caught up)."""
        count = self.analyse(self.max_calls - len(self._pending))
        self.store_pending(stopping)
        return count

    def analyse(self, max_calls: int) -> int:
        """Read up to `max_calls` more calls and build their records (metered and analysed), kept until
        `store_pending`; the number read."""
        if max_calls <= 0:
            return 0
        batch = read_batch(self.directory, self._read, max_calls)
        if any(isinstance(call, RawCall) for call in batch.calls):
            if self.before_metering is not None:
                self.before_metering()
            price_data.refresh(self.home, every_s=0.0)
        for call in batch.calls:
            if isinstance(call, RawCall):
                self._pending.append((self.metered(call.exchange), True))
            else:
                record = analysed(self.context, call)
                self.builder.note(record)
                self._pending.append((record, False))
        if batch.calls and not self._first_segment:
            self._first_segment = batch.first_segment
        self._read = batch.cursor
        self._done += batch.done
        return len(batch.calls)

    def store_pending(self, stopping: threading.Event | None = None) -> None:
        """Store the records built so far (one transaction), report the raw calls among them, then save the
        cursor and delete the segments read to their end."""
        pending, self._pending = self._pending, []
        for record, _ in pending:
            self.writer.submit(record)
        while not self.writer.flush(timeout=1.0):  # the store refuses: wait (the spool keeps the calls)
            if stopping is not None and stopping.is_set() and not self.writer.alive:
                raise RuntimeError("the record writer stopped")
        raw = [record for record, is_raw in pending if is_raw]
        if raw and self.report is not None:
            # The batch's metric totals only when none of its calls can have been reported before: the first
            # batch a process stores may repeat its predecessor's last one, and calls of an earlier run were
            # settled by the gateway at its start.
            fresh = self._batches > 0 and self._first_segment >= self.run_start
            self.report(report_line(raw, totals=fresh, feed=feed_wanted(self.directory)))
        self._batches += bool(pending)
        self._first_segment = ""
        if self._read != self.cursor:
            save_cursor(self.directory, self._read)
            self.cursor = self._read
        done, self._done = self._done, []
        for path in done:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.stored += len(pending)

    def metered(self, exchange: Exchange) -> CallRecord:
        """A raw call's record: metered, priced and analysed (a minimal error record when that fails)."""
        try:
            return record_of_raw(self.builder, exchange)
        except Exception as exc:
            log.error(
                "metering call %s failed (%s); storing a minimal error record",
                exchange.id,
                describe_failure(exc),
            )
            return minimal_error_record(exchange, exc)

    def drain(self) -> int:
        """Store everything spooled so far."""
        total = 0
        while (count := self.step()) > 0:
            total += count
        return total

    def run(self, stop: threading.Event, parent: int | None = None) -> None:
        """Until `stop` (or the parent process is gone): every `tick` build the records of the calls spooled since
        (a few at a time: the work is spread, not done in one burst beside the gateway), every `interval` (or
        once `max_calls` are waiting) store them; then store what is left."""
        stored_at = time.monotonic()
        while not stop.is_set():
            if parent is not None and os.getppid() != parent:
                log.warning("the gateway that started the analysis process is gone; finishing")
                break
            try:
                read = self.analyse(self.max_calls - len(self._pending))
                due = time.monotonic() - stored_at >= self.interval
                if self._pending and (due or len(self._pending) >= self.max_calls):
                    self.store_pending(stop)
                    stored_at = time.monotonic()
                elif due:
                    stored_at = time.monotonic()
                if read < self.max_calls:  # caught up: let the next calls come
                    stop.wait(self.tick)
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
    """Reloads the settings when the configuration file changes (by default checked at most once a second)."""

    def __init__(self, path: Path, holder: SettingsHolder) -> None:
        self.path, self.holder = path, holder
        self.seen = self._stamp()
        self.checked = time.monotonic()
        self._lock = threading.Lock()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def check(self, every_s: float = 1.0) -> None:
        with self._lock:
            if time.monotonic() - self.checked < every_s:
                return
            self.checked = time.monotonic()
            stamp = self._stamp()
            if stamp == self.seen:
                return
            self.seen = stamp
            try:
                self.holder.replace(load_settings(self.path))
                log.info("configuration reloaded from %s", self.path)
            except ConfigError as error:
                log.warning("configuration not reloaded (%s); keeping the previous settings", error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokenlens.analysis", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--worker", default=None)
    parser.add_argument("--report-fd", type=int, default=None, help="the pipe the reports go to")
    parser.add_argument("--run-start", default="", help="the first spool segment of the gateway's run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s analysis %(levelname)s %(message)s")
    home: Path = args.data_dir
    parent = os.getppid()
    stop = threading.Event()
    stop_on_signals(stop)
    holder = SettingsHolder(load_settings(args.config))
    price_data.without_updater()
    warm_up()  # the tokenizer vocabularies the analyses count with (a few MiB): loaded here, not in the gateway
    # the prices raw calls are metered at (`tokenlens prices update`'s, else the bundled)
    price_data.load(home)
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
        report = Reporter(args.report_fd) if args.report_fd is not None else None
        worker = AnalysisWorker(
            holder,
            store,
            directory,
            home=home,
            report=report,
            run_start=args.run_start,
            before_metering=lambda: config.check(every_s=0.0),
        )
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


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`, from a thread of their own: a handler runs in the main thread, which may be
    inside `stop.wait` holding the event's lock, and setting the event there would wait on that lock forever."""

    def handler(signum: int, frame: object) -> None:
        threading.Thread(target=stop.set, name="tokenlens-stop", daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


class Reporter:
    """Writes report lines to the gateway's pipe; once the gateway is gone, nowhere."""

    def __init__(self, fd: int) -> None:
        self.pipe: IO[bytes] | None = os.fdopen(fd, "wb")

    def __call__(self, line: bytes) -> None:
        if self.pipe is None:
            return
        try:
            self.pipe.write(line)
            self.pipe.flush()
        except OSError as exc:  # BrokenPipeError: the gateway stopped reading
            log.warning("the gateway no longer reads reports (%s)", type(exc).__name__)
            self.pipe = None


def _watch_config(config: _ConfigFile, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        config.check()


if __name__ == "__main__":
    sys.exit(main())
