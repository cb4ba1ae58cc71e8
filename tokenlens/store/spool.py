"""The call spool: how a gateway hands its calls to the analysis process, through files in the data directory.

The gateway's spool thread (`SpoolWriter`, fed by a queue: the proxy path never waits) appends one JSON line per
call to the current segment. A call is spooled as the gateway saw it (a raw line: its exchange's fields and
bodies, nothing parsed), and the analysis process (`tokenlens.analysis`) meters and prices it, runs its record
analyses, stores it and reports what the gateway keeps itself (its budgets' ledger, its metrics, the live feed:
`tokenlens.settlement`). A call with deferred analyses that hold gateway state (`Exchange.deferred`: the
guardrails' masks of stored bodies, an answer a guardrail blocked) is metered by the spool thread instead and
spooled as a metered line; its record listeners hear of it once it is written. The analysis process reads the
segments in order, stores each call once (by id) however often it reads a line again after a crash, keeps a
cursor, and deletes a segment once it has stored every call in it. A line is written whole and flushed to the
OS before anything hears of it, so a killed gateway loses nothing it reported.

Layout, in `<data dir>/spool/` (`spool-w<N>/` for each of `daemon --workers N`): `<ns>.jsonl` segments (a new
one at each start and every `segment_bytes`), `cursor.json` (the analysis process's place) and `worker.lock`
(held by the analysis process reading the directory). A raw line: `{"exchange": {...the exchange's plain
fields, "chunk_sizes"...}, "bodies": {"request_body", "response_body", "chunks"}}` (bodies base64, those that are
None or empty left out; the streamed chunks joined, cut again by `chunk_sizes`). A metered line: `{"record":
{...every CallRecord field but the bodies...}, "call": {"api", "kind", "analyses", "input_rate"}, "bodies":
{"request_body", "response_body", "request"}}` (a line of an older release has the bodies in "record" and
"call"), where `request` is the raw request body when the record does not keep it (`storage.store_bodies:
false`) but an analysis reads it, and `input_rate` the model's input price (USD per million tokens, a decimal
string; null: unpriced) that the waste analysis costs its findings at.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from tokenlens.exchange import Exchange, run_on_recorded
from tokenlens.records import CallRecord, describe_failure
from tokenlens.store.batches import STOP, BatchQueue
from tokenlens.store.journal import record_from_dict, record_to_dict
from tokenlens.store.writer import minimal_error_record

log = logging.getLogger(__name__)

CURSOR = "cursor.json"
# ASCII with escapes: any string (a lone surrogate included) reads back exactly as it was. One encoder for every
# line (`json.dumps` with options builds one a call).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


class NotGiven:
    """The gateway gave no input rate (an older spool line, or a call without the waste analysis)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()
LOCK = "worker.lock"


def spool_dir(home: Path, worker: str | None = None) -> Path:
    return home / ("spool" if not worker else f"spool-w{worker}")


# The exchange's fields a raw line carries (plain values), besides its bodies; the rest is the proxy path's own
# state (parsed request, routing, hooks) or rebuilt from these.
RAW_FIELDS = (
    "id", "started", "provider", "api", "endpoint", "kind", "mode", "source", "tags", "session_id",
    "requested_model", "model", "stream_requested", "max_tokens", "usage_injected", "outcome", "blocked_by",
    "saved_usd", "guardrail_flags", "waste_tokens", "complexity", "attempts", "fallback_from", "details",
    "analyses", "status", "response_headers", "streamed", "stream_undecodable", "first_chunk_at", "ended",
    "error", "transport",
)  # fmt: skip


def raw_line(exchange: Exchange) -> bytes:
    """A call's raw line: its plain fields as JSON, its bodies (base64) spliced in after them."""
    fields = {name: getattr(exchange, name) for name in RAW_FIELDS}
    if exchange.chunks:
        fields["chunk_sizes"] = [len(chunk) for chunk in exchange.chunks]
    bodies = (
        ("request_body", exchange.request_body),
        ("response_body", exchange.response_body),
        ("chunks", b"".join(exchange.chunks)),
    )
    return _line_with_bodies({"exchange": fields}, [(name, body) for name, body in bodies if body])


def _line_with_bodies(head: dict[str, Any], bodies: list[tuple[str, bytes]]) -> bytes:
    """`head` as one JSON line with `bodies` under "bodies", base64. Base64 is plain JSON string text: spliced in
    as it is, not scanned again by the encoder (an agent's 200 KB request took 0.4 ms of the interpreter that
    way)."""
    encoded = b",".join(
        b'"%s":"%s"' % (name.encode("ascii"), base64.b64encode(body)) for name, body in bodies
    )
    return _encode(head).encode("ascii")[:-1] + b',"bodies":{' + encoded + b"}}\n"


@dataclass
class RawCall:
    """A raw line read back: the exchange as the gateway saw it (its request not parsed yet)."""

    exchange: Exchange


def _raw_call(data: dict[str, Any]) -> RawCall:
    fields = data["exchange"]
    bodies = data.get("bodies") or {}
    if not isinstance(fields, dict) or not isinstance(bodies, dict):
        raise ValueError("not a raw call")
    values = {name: fields[name] for name in RAW_FIELDS if name in fields}
    sizes = fields.get("chunk_sizes") or []
    if not isinstance(sizes, list) or not all(isinstance(size, int) and size >= 0 for size in sizes):
        raise ValueError("chunk_sizes is not a list of sizes")
    joined = _body(bodies, "chunks") or b""
    chunks, start = [], 0
    for size in sizes:
        chunks.append(joined[start : start + size])
        start += size
    exchange = Exchange(
        **values,
        request_body=_body(bodies, "request_body") or b"",
        response_body=_body(bodies, "response_body"),
        chunks=chunks,
    )
    if not isinstance(exchange.id, str) or not isinstance(exchange.started, int | float):
        raise ValueError("a raw call without its id or start")
    return RawCall(exchange)


def _body(bodies: dict[str, Any], name: str) -> bytes | None:
    value = bodies.get(name)
    return base64.b64decode(value) if isinstance(value, str) else None


def parse_line(line: bytes) -> SpooledCall | RawCall:
    """A spool line read back (raises ValueError/TypeError/KeyError for a line that is not one)."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if "exchange" in data:
        return _raw_call(data)
    return SpooledCall.from_data(data)


@dataclass
class SpooledCall:
    """One line of the spool: the metered record and what the record analyses need of the call."""

    record: CallRecord
    api: str
    kind: str
    analyses: list[str]
    request: bytes | None  # the raw request body, when the record does not keep it
    # The waste analysis's input rate (None: unpriced); NOT_GIVEN when the gateway did not price it.
    input_rate: Decimal | None | NotGiven = NOT_GIVEN

    def to_line(self) -> bytes:
        """The line: the record and the call as JSON, the bodies last, under "bodies" (base64)."""
        call: dict[str, object] = {"api": self.api, "kind": self.kind, "analyses": self.analyses}
        if not isinstance(self.input_rate, NotGiven):
            call["input_rate"] = None if self.input_rate is None else str(self.input_rate)
        head = {"record": record_to_dict(self.record, bodies=False), "call": call}
        bodies = [(name, getattr(self.record, name)) for name in CallRecord.BODY_FIELDS]
        bodies.append(("request", self.request))
        return _line_with_bodies(head, [(name, body) for name, body in bodies if body is not None])

    @classmethod
    def from_line(cls, line: bytes) -> SpooledCall:
        """Raises ValueError/TypeError/KeyError for a line that is not one."""
        return cls.from_data(json.loads(line))

    @classmethod
    def from_data(cls, data: Any) -> SpooledCall:
        """A metered line's parsed JSON (raises ValueError/TypeError/KeyError for a line that is not one)."""
        call = data["call"]
        bodies = data.get("bodies")
        if bodies is not None:  # else a line of an older release: the bodies inside the record and the call
            if not isinstance(bodies, dict):
                raise ValueError("bodies is not an object")
            for name in CallRecord.BODY_FIELDS:
                data["record"][name] = bodies.get(name)
            call["request"] = bodies.get("request")
        request = call.get("request")
        return cls(
            record=record_from_dict(data["record"]),
            api=str(call["api"]),
            kind=str(call["kind"]),
            analyses=[str(name) for name in call.get("analyses") or []],
            request=base64.b64decode(request) if isinstance(request, str) else None,
            input_rate=_rate(call.get("input_rate", NOT_GIVEN)),
        )

    @property
    def request_body(self) -> bytes:
        return self.record.request_body if self.record.request_body is not None else self.request or b""


def _rate(value: object) -> Decimal | None | NotGiven:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return Decimal(value)
        except ArithmeticError:  # decimal.InvalidOperation
            pass
    return NOT_GIVEN


def spooled(
    exchange: Exchange, record: CallRecord, input_rate: Decimal | None | NotGiven = NOT_GIVEN
) -> SpooledCall:
    """What the spool keeps of a metered call (the request body again only when the record drops it)."""
    needs_body = bool(exchange.analyses) and record.request_body is None
    return SpooledCall(
        record,
        exchange.api,
        exchange.kind,
        list(exchange.analyses),
        exchange.request_body if needs_body else None,
        input_rate,
    )


class SpoolWriter(BatchQueue[Exchange]):
    """The gateway's spool thread: `submit(exchange)` never blocks. The thread spools each call raw (after its
    `on_recorded` hooks, and `expect(exchange)`: the settlement it waits for), or, when the call has deferred
    analyses, meters it (`build`) and, once it is written, calls `on_written(records)` (the record listeners and
    the live feed)."""

    def __init__(
        self,
        directory: Path,
        build: Callable[[Exchange], CallRecord],
        on_written: Callable[[list[CallRecord]], None] | None = None,
        *,
        expect: Callable[[Exchange], None] | None = None,
        input_rate: Callable[[Exchange], Decimal | None | NotGiven] | None = None,
        interval: float = 0.05,
        max_batch: int = 500,
        segment_bytes: int = 8 * 1024 * 1024,
        name: str = "tokenlens-spool",
    ) -> None:
        super().__init__(interval, max_batch)
        self.directory = directory
        self.build = build
        self.input_rate = input_rate
        self.on_written = on_written
        self.expect = expect
        self.segment_bytes = segment_bytes
        self.written = 0
        self._handle: IO[bytes] | None = None
        # lines a failed write left to write again, with the metered record of each (None: a raw line)
        self._unspooled: list[tuple[bytes, CallRecord | None]] = []
        self._size = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> bool:
        """Spool everything queued, then end the thread; False when it did not finish in time."""
        with self._count_lock:
            first = not self._stopping
            self._stopping = True
        if first:
            self._queue.put(STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            while True:
                batch, stop = self._collect()
                if batch or self._unspooled:
                    self._process(batch)
                if stop:
                    if self._unspooled:
                        log.error(
                            "%d calls could not be spooled before the gateway stopped", len(self._unspooled)
                        )
                    return
        finally:
            self._close()

    def _process(self, batch: list[Exchange]) -> None:
        """Spool the batch with any lines an earlier write could not take (a full disk: they wait in memory, in
        order, and nothing hears of them until they are in the spool)."""
        lines = [self._line(exchange) for exchange in batch]
        lost = lines.count(None)
        if lost:
            self._finished(lost)
        pending = self._unspooled + [line for line in lines if line is not None]
        if not pending:
            return
        try:
            self._append(b"".join(line for line, _ in pending))
        except (
            Exception
        ) as exc:  # OSError (disk full), or a line that cannot be written: keep them, try again
            if not self._unspooled:
                log.error("the spool cannot be written (%s); keeping calls in memory", describe_failure(exc))
            self._unspooled = pending
            self._undo_partial_write()
            return
        self._unspooled = []
        self.written += len(pending)
        records = [record for _, record in pending if record is not None]
        if records and self.on_written is not None:
            try:
                self.on_written(records)
            except Exception:
                log.exception("record listeners failed")
        self._finished(len(pending))

    def _line(self, exchange: Exchange) -> tuple[bytes, CallRecord | None] | None:
        if not exchange.deferred:
            try:
                run_on_recorded(exchange)
                line = raw_line(exchange)
            except Exception as exc:  # nothing expected yet: metered here, its cost hooks told here
                log.error(
                    "spooling call %s raw failed (%s); metering it here", exchange.id, describe_failure(exc)
                )
            else:
                if self.expect is not None:
                    self.expect(exchange)
                return line, None
        call = self._meter(exchange)
        return None if call is None else (call.to_line(), call.record)

    def _meter(self, exchange: Exchange) -> SpooledCall | None:
        try:
            record = self.build(exchange)
        except Exception as exc:
            log.error("metering call %s failed (%s); spooling a minimal error record", exchange.id, exc)
            try:
                record = minimal_error_record(exchange, exc)
            except Exception as again:
                log.error("no record at all for call %s (%s)", exchange.id, describe_failure(again))
                return None
        rate: Decimal | None | NotGiven = NOT_GIVEN
        if self.input_rate is not None:
            try:
                rate = self.input_rate(exchange)
            except Exception as exc:  # the analysis process prices it then
                log.error("pricing the waste of call %s failed (%s)", exchange.id, describe_failure(exc))
        return spooled(exchange, record, rate)

    def _append(self, data: bytes) -> None:
        """Append whole lines to the current segment (a new one past `segment_bytes`), flushed to the OS."""
        if self._handle is None or self._size >= self.segment_bytes:
            self._close()
            path = self.directory / f"{time.time_ns():020d}.jsonl"
            self._handle = path.open("ab")
            self._size = 0
        self._handle.write(data)
        self._handle.flush()
        self._size += len(data)

    def _undo_partial_write(self) -> None:
        """Cut what a failed write left at the end of the segment (its lines are written again); if even that
        fails, the segment ends there: a newer one follows, and the reader skips a torn last line."""
        if self._handle is None:
            return
        try:
            self._handle.truncate(self._size)
            self._handle.seek(self._size)
        except OSError:
            self._close()

    def _close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                log.exception("could not close a spool segment")
            self._handle = None


# ---------------------------------------------------------------------------------------------- reading side


@dataclass
class Cursor:
    """Where the analysis process is: the segment it reads and the offset of its first unread byte."""

    segment: str = ""
    offset: int = 0


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def read_cursor(directory: Path) -> Cursor:
    try:
        data = json.loads((directory / CURSOR).read_text("utf-8"))
        return Cursor(str(data["segment"]), int(data["offset"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Cursor()


def save_cursor(directory: Path, cursor: Cursor) -> None:
    """Atomically (write, fsync, rename)."""
    tmp = directory / (CURSOR + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump({"segment": cursor.segment, "offset": cursor.offset}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / CURSOR)


@dataclass
class Batch:
    """Calls read from the spool, and the cursor to save once they are stored."""

    calls: list[SpooledCall | RawCall]
    cursor: Cursor
    done: list[Path]  # segments read to their end with a newer one after them: delete once stored
    first_segment: str = ""  # the segment of the first call read


def read_batch(
    directory: Path, cursor: Cursor, max_calls: int = 500, max_bytes: int = 4 * 1024 * 1024
) -> Batch:
    """The next complete lines after `cursor` (at most `max_calls`). A segment's last line without its newline
    is being written, unless a newer segment exists (the gateway then stopped in the middle of it): such a torn
    line is logged and skipped."""
    calls: list[SpooledCall | RawCall] = []
    done: list[Path] = []
    first = ""
    found = segments(directory)
    for index, path in enumerate(found):
        if path.name < cursor.segment:
            done.append(path)  # read before (its deletion was interrupted)
            continue
        offset = cursor.offset if path.name == cursor.segment else 0
        newer = index + 1 < len(found)
        for line, end in _lines(path, offset, max_bytes):
            offset = end
            if not line.endswith(b"\n"):
                if newer:
                    log.error("spool segment %s ends in a torn line; skipped", path.name)
                    continue
                offset -= len(line)  # still being written: read it next time
                break
            try:
                calls.append(parse_line(line))
                first = first or path.name
            except (ValueError, TypeError, KeyError) as exc:
                log.error(
                    "spool segment %s has an unreadable line (%s); skipped", path.name, type(exc).__name__
                )
            if len(calls) >= max_calls:
                return Batch(calls, Cursor(path.name, offset), done, first)
        cursor = Cursor(path.name, offset)
        if newer and offset >= path.stat().st_size:
            done.append(path)
        else:
            return Batch(calls, cursor, done, first)
    return Batch(calls, cursor, done, first)


def _lines(path: Path, offset: int, max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """(line, offset after it) from `offset`, reading at most about `max_bytes`."""
    with path.open("rb") as handle:
        handle.seek(offset)
        read = 0
        for line in handle:
            offset += len(line)
            read += len(line)
            yield line, offset
            if read >= max_bytes:
                return


def backlog(directory: Path) -> Iterator[SpooledCall | RawCall]:
    """Every call in the spool after the saved cursor (read at start, before the analysis process runs)."""
    cursor = read_cursor(directory)
    while True:
        batch = read_batch(directory, cursor)
        yield from batch.calls
        if not batch.calls and batch.cursor == cursor:
            return
        cursor = batch.cursor
