"""The call spool: the gateway's spool thread writes whole lines and tells the listeners only after; the reading
side takes complete lines only, in order, across segments, and skips a torn line the gateway left behind."""

from __future__ import annotations

import base64
import json
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from tokenlens.config import SettingsHolder, parse_settings
from tokenlens.exchange import Exchange
from tokenlens.metering import RecordBuilder
from tokenlens.records import CallRecord
from tokenlens.store.journal import record_to_dict
from tokenlens.store.spool import (
    NOT_GIVEN,
    RAW_FIELDS,
    Cursor,
    NotGiven,
    RawCall,
    SpooledCall,
    SpoolWriter,
    backlog,
    parse_line,
    raw_line,
    read_batch,
    segments,
    spool_dir,
)

REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello  \n\n\n  there, please"}]}
ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 30, "total_tokens": 1230},
}
# gpt-4o-mini's published rates: $0.15 per million input tokens, $0.60 per million output tokens
COST = 1200 * 0.15 / 1e6 + 30 * 0.60 / 1e6


def exchange(call_id: str, analyses: tuple[str, ...] = ("waste", "heatmap")) -> Exchange:
    body = json.dumps(REQUEST).encode()
    return Exchange(
        id=call_id,
        started=1000.0,
        provider="openai",
        api="openai",
        endpoint="/v1/chat/completions",
        kind="chat",
        mode="base_url",
        source="tests",
        request_json=REQUEST,
        request_body=body,
        requested_model="gpt-4o-mini",
        model="gpt-4o-mini",
        status=200,
        ended=1000.5,
        response_body=json.dumps(ANSWER).encode(),
        response_headers={"content-type": "application/json"},
        analyses=list(analyses),
    )


def mark(ex: Exchange, record: CallRecord) -> None:
    record.details["marked"] = True


def metered_exchange(call_id: str, analyses: tuple[str, ...] = ("waste", "heatmap")) -> Exchange:
    """A call with a deferred analysis (as a guardrail's mask of its stored bodies): metered by the spool
    thread."""
    ex = exchange(call_id, analyses)
    ex.deferred.append(mark)
    return ex


def call_id(call: SpooledCall | RawCall) -> str:
    return call.exchange.id if isinstance(call, RawCall) else call.record.id


def builder(store_bodies: bool = True) -> RecordBuilder:
    return RecordBuilder(SettingsHolder(parse_settings({"storage": {"store_bodies": store_bodies}})))


def test_a_call_is_spooled_raw_after_its_hooks_and_its_settlement_is_expected(tmp_path: Path) -> None:
    directory = spool_dir(tmp_path)
    events: list[str] = []
    heard: list[CallRecord] = []

    def expect(ex: Exchange) -> None:  # before its line is written: a report can never come first
        events.append(f"expect {ex.id}, {len(list(backlog(directory)))} lines")

    writer = SpoolWriter(directory, builder(), heard.extend, expect=expect)
    ex = exchange("a")
    ex.on_recorded.append(lambda e: events.append(f"on_recorded {e.id}"))
    costs: list[float | None] = []
    ex.on_cost.append(costs.append)
    writer.submit(ex)
    assert writer.flush() and writer.stop()
    assert events == ["on_recorded a", "expect a, 0 lines"]
    assert heard == [] and costs == []  # settled from the analysis process's report, not here
    (call,) = backlog(directory)
    assert isinstance(call, RawCall)
    again = call.exchange
    assert (again.id, again.started, again.ended, again.status) == ("a", 1000.0, 1000.5, 200)
    assert again.request_body == json.dumps(REQUEST).encode() and again.request_json is None  # parsed there
    assert again.response_body == json.dumps(ANSWER).encode() and again.analyses == ["waste", "heatmap"]


def test_a_call_with_deferred_analyses_is_metered_spooled_whole_and_only_then_reported(
    tmp_path: Path,
) -> None:
    directory = spool_dir(tmp_path)
    heard: list[tuple[list[str], int]] = []

    def on_written(records: list[CallRecord]) -> None:  # the lines are in the file by now
        lines = b"".join(path.read_bytes() for path in segments(directory)).splitlines()
        heard.append(([r.id for r in records], len(lines)))

    writer = SpoolWriter(directory, builder(), on_written)
    writer.submit(metered_exchange("a"))
    writer.submit(metered_exchange("b"))
    assert writer.flush() and writer.stop()
    assert [call_id for ids, _ in heard for call_id in ids] == ["a", "b"]
    told = 0
    for ids, lines_then in heard:  # every call the listeners heard of was in the spool already
        told += len(ids)
        assert lines_then >= told
    (segment,) = segments(directory)
    first = SpooledCall.from_line(segment.read_bytes().splitlines(keepends=True)[0])
    assert first.record.id == "a" and first.record.cost_usd is not None and first.record.details["marked"]
    assert abs(first.record.cost_usd - COST) < 1e-12  # metered in the gateway
    assert first.record.waste_tokens is None and "heatmap" not in first.record.details  # not analysed here
    assert (first.api, first.kind, first.analyses) == ("openai", "chat", ["waste", "heatmap"])
    assert first.request is None  # the record keeps the body, so the line does not repeat it


def test_a_raw_line_keeps_every_field_and_every_byte_of_the_call() -> None:
    odd = "caf\u00e9 \ud800 \u2028 \x00 \U0001f600"
    ex = exchange("a")
    ex.tags, ex.source, ex.details = {"t": odd}, odd, {"websocket": {"turn": 2}, "x": [1.5, None]}
    ex.request_body = b'{"q": "\\"\n"}' + bytes(range(256))
    ex.response_body = None
    ex.streamed, ex.chunks = True, [b"data: {}\n\n", b"", bytes(range(255, -1, -1)), b"\r\n"]
    ex.first_chunk_at, ex.transport, ex.saved_usd = 1000.25, "websocket", 0.125
    ex.guardrail_flags = [{"rule": "pii.email", "action": "warn"}]
    line = raw_line(ex)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    again = parse_line(line)
    assert isinstance(again, RawCall)
    for name in RAW_FIELDS:
        assert getattr(again.exchange, name) == getattr(ex, name), name
    assert again.exchange.chunks == ex.chunks and again.exchange.request_body == ex.request_body
    assert again.exchange.response_body is None
    assert isinstance(
        parse_line(
            SpooledCall(
                CallRecord(id="b", ts=1.0, provider="p", endpoint="/x"), "openai", "chat", [], None
            ).to_line()
        ),
        SpooledCall,
    )


@pytest.mark.parametrize(
    "line",
    [
        b'{"exchange": {"id": 1, "started": 1.0}}',
        b'{"exchange": {"id": "a"}}',
        b'{"exchange": {"id": "a", "started": 1.0, "chunk_sizes": [-1]}}',
        b'{"exchange": {"id": "a", "started": 1.0, "bogus": 1}}',
        b"[1]",
    ],
)
def test_a_raw_line_that_is_not_one_is_refused(line: bytes) -> None:
    with pytest.raises((ValueError, TypeError, KeyError)):
        call = parse_line(line)
        assert not isinstance(call, RawCall) or call.exchange.provider  # required fields missing


def test_without_stored_bodies_the_line_carries_the_request_for_the_analyses_only(tmp_path: Path) -> None:
    writer = SpoolWriter(spool_dir(tmp_path), builder(store_bodies=False))
    writer.submit(metered_exchange("a"))
    writer.submit(metered_exchange("b", analyses=()))
    writer.submit(exchange("c", analyses=()))
    assert writer.stop()
    a, b, c = backlog(spool_dir(tmp_path))
    assert isinstance(a, SpooledCall) and isinstance(b, SpooledCall) and isinstance(c, RawCall)
    assert c.exchange.request_body == json.dumps(REQUEST).encode()  # metering reads it; the store will not
    assert a.record.request_body is None and a.request == json.dumps(REQUEST).encode()
    assert b.request is None  # no analysis reads it: not written at all


def test_segments_roll_and_are_read_in_order(tmp_path: Path) -> None:
    directory = spool_dir(tmp_path)
    writer = SpoolWriter(directory, builder(), segment_bytes=1, max_batch=1)
    for n in range(5):
        writer.submit(exchange(f"c{n}"))
    assert writer.stop()
    assert len(segments(directory)) == 5
    assert [call_id(call) for call in backlog(directory)] == [f"c{n}" for n in range(5)]


def test_a_line_being_written_is_left_for_the_next_read(tmp_path: Path) -> None:
    directory = spool_dir(tmp_path)
    directory.mkdir()
    line = SpooledCall(
        CallRecord(id="a", ts=1.0, provider="openai", endpoint="/x"), "openai", "chat", [], None
    )
    segment = directory / "00000000000000000001.jsonl"
    segment.write_bytes(line.to_line() + line.to_line()[:20])
    batch = read_batch(directory, Cursor())
    assert [c.record.id for c in batch.calls] == ["a"]
    assert batch.cursor == Cursor(segment.name, len(line.to_line()))
    assert batch.done == []  # the newest segment is never finished
    with segment.open("ab") as handle:  # the rest of the line arrives
        handle.write(line.to_line()[20:])
    again = read_batch(directory, batch.cursor)
    assert [c.record.id for c in again.calls] == ["a"] and again.cursor.offset == 2 * len(line.to_line())


def test_a_torn_line_before_a_newer_segment_is_skipped_and_the_segment_finished(tmp_path: Path) -> None:
    directory = spool_dir(tmp_path)
    directory.mkdir()

    def line(call_id: str) -> bytes:
        return SpooledCall(
            CallRecord(id=call_id, ts=1.0, provider="openai", endpoint="/x"), "openai", "chat", [], None
        ).to_line()

    old = directory / "00000000000000000001.jsonl"
    old.write_bytes(line("a") + line("torn")[:15])  # the gateway was killed mid-line
    new = directory / "00000000000000000002.jsonl"
    new.write_bytes(line("b"))
    batch = read_batch(directory, Cursor())
    assert [c.record.id for c in batch.calls] == ["a", "b"]
    assert batch.done == [old] and batch.cursor == Cursor(new.name, len(line("b")))


def test_text_of_any_kind_reads_back_exactly(tmp_path: Path) -> None:
    odd = "caf\u00e9 \ud800 \u2028 \x00 \U0001f600"
    record = CallRecord(id="a", ts=1.0, provider="openai", endpoint="/x", source=odd, tags={"t": odd})
    again = SpooledCall.from_line(SpooledCall(record, "openai", "chat", [], b"\xff\x00").to_line())
    assert again.record.source == odd and again.record.tags == {"t": odd} and again.request == b"\xff\x00"


def test_bodies_of_any_bytes_read_back_exactly_from_one_json_line() -> None:
    """The bodies are spliced into the line as base64 after the rest is encoded: the line is still one JSON
    object on one line, and every byte comes back."""
    request = b'{"q": "a \\"quote\\" \\\\ and\nnewline"}\n' + bytes(range(256))
    answer = b"data: {}\n\n" + bytes(range(255, -1, -1)) + b"\r\n"
    record = CallRecord(
        id="a", ts=1.0, provider="openai", endpoint="/x", request_body=request, response_body=answer
    )
    line = SpooledCall(record, "openai", "chat", ["waste"], b"\n\x00raw").to_line()
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    data = json.loads(line)
    assert set(data) == {"record", "call", "bodies"} and "request_body" not in data["record"]
    again = SpooledCall.from_line(line)
    assert again.record.request_body == request and again.record.response_body == answer
    assert again.request == b"\n\x00raw" and again.record.id == "a" and again.analyses == ["waste"]
    bare = SpooledCall.from_line(
        SpooledCall(
            CallRecord(id="b", ts=1.0, provider="p", endpoint="/x"), "openai", "chat", [], None
        ).to_line()
    )
    assert bare.record.request_body is None and bare.record.response_body is None and bare.request is None


def test_a_line_of_an_older_release_with_the_bodies_inside_reads_back() -> None:
    record = CallRecord(
        id="a", ts=1.0, provider="openai", endpoint="/x", request_body=b"req\xff", response_body=b"answer"
    )
    old = {
        "record": record_to_dict(record),
        "call": {
            "api": "openai",
            "kind": "chat",
            "analyses": [],
            "request": base64.b64encode(b"raw").decode(),
        },
    }
    again = SpooledCall.from_line(json.dumps(old).encode() + b"\n")
    assert again.record.request_body == b"req\xff" and again.record.response_body == b"answer"
    assert again.request == b"raw"


def test_submit_never_waits_on_the_thread(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow_build(item: Exchange) -> CallRecord:
        gate.wait(5)
        return builder()(item)

    writer = SpoolWriter(spool_dir(tmp_path), slow_build)
    for n in range(100):
        writer.submit(exchange(f"c{n}"))  # returns at once although the thread is stuck
    assert writer.pending == 100
    gate.set()
    assert writer.flush() and writer.pending == 0 and writer.stop()


def test_a_full_disk_keeps_the_calls_in_memory_in_order_until_the_spool_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heard: list[str] = []
    writer = SpoolWriter(spool_dir(tmp_path), builder(), lambda records: heard.extend(r.id for r in records))
    real_append = writer._append
    failures = iter([OSError(28, "No space left on device")] * 3)

    def full_then_fine(data: bytes) -> None:
        failure = next(failures, None)
        if failure is not None:
            before = writer._size
            real_append(data[: len(data) // 2])  # what a write failing midway leaves: bytes, not counted
            writer._size = before
            raise failure
        real_append(data)

    monkeypatch.setattr(writer, "_append", full_then_fine)
    writer.submit(metered_exchange("a"))
    writer.submit(metered_exchange("b"))
    assert not writer.flush(timeout=0.3) or heard == ["a", "b"]  # not reported before it is spooled
    writer.submit(metered_exchange("c"))
    assert writer.flush(timeout=5) and writer.stop()
    assert heard == ["a", "b", "c"]  # each once, in order, once the disk took them
    assert [call_id(call) for call in backlog(spool_dir(tmp_path))] == [
        "a",
        "b",
        "c",
    ]  # the cut lines skipped


@pytest.mark.parametrize(
    ("rate", "read"), [(Decimal("0.15"), Decimal("0.15")), (None, None), (NOT_GIVEN, NOT_GIVEN)]
)
def test_the_waste_input_rate_reads_back(rate: Decimal | None | NotGiven, read: object) -> None:
    record = CallRecord(id="a", ts=1.0, provider="openai", endpoint="/x")
    again = SpooledCall.from_line(SpooledCall(record, "openai", "chat", ["waste"], None, rate).to_line())
    assert again.input_rate == read


def test_a_line_of_an_older_release_or_an_unreadable_rate_is_priced_by_the_analysis_process() -> None:
    record = CallRecord(id="a", ts=1.0, provider="openai", endpoint="/x")
    line = json.loads(SpooledCall(record, "openai", "chat", ["waste"], None).to_line())
    assert "input_rate" not in line["call"]
    line["call"]["input_rate"] = "not a number"
    again = SpooledCall.from_line(json.dumps(line).encode())
    assert again.input_rate is NOT_GIVEN


def test_a_call_that_cannot_be_spooled_raw_is_metered_here_and_never_expected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ex: Exchange) -> bytes:
        raise ValueError("an odd field")

    monkeypatch.setattr("tokenlens.store.spool.raw_line", broken)
    expected: list[str] = []
    heard: list[CallRecord] = []
    costs: list[float | None] = []
    writer = SpoolWriter(
        spool_dir(tmp_path), builder(), heard.extend, expect=lambda ex: expected.append(ex.id)
    )
    ex = exchange("a")
    ex.on_cost.append(costs.append)
    writer.submit(ex)
    assert writer.stop()
    assert expected == [] and [r.id for r in heard] == ["a"]
    assert costs == [pytest.approx(COST, rel=1e-12)]  # gpt-4o-mini's published rates, told here
    (call,) = backlog(spool_dir(tmp_path))
    assert isinstance(call, SpooledCall) and call.record.cost_usd == pytest.approx(COST, rel=1e-12)
