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
    Cursor,
    NotGiven,
    SpooledCall,
    SpoolWriter,
    backlog,
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


def builder(store_bodies: bool = True) -> RecordBuilder:
    return RecordBuilder(SettingsHolder(parse_settings({"storage": {"store_bodies": store_bodies}})))


def test_a_call_is_metered_spooled_whole_and_only_then_reported(tmp_path: Path) -> None:
    directory = spool_dir(tmp_path)
    heard: list[tuple[list[str], int]] = []

    def on_written(records: list[CallRecord]) -> None:  # the lines are in the file by now
        lines = b"".join(path.read_bytes() for path in segments(directory)).splitlines()
        heard.append(([r.id for r in records], len(lines)))

    writer = SpoolWriter(directory, builder(), on_written)
    writer.submit(exchange("a"))
    writer.submit(exchange("b"))
    assert writer.flush() and writer.stop()
    assert [call_id for ids, _ in heard for call_id in ids] == ["a", "b"]
    told = 0
    for ids, lines_then in heard:  # every call the listeners heard of was in the spool already
        told += len(ids)
        assert lines_then >= told
    (segment,) = segments(directory)
    first = SpooledCall.from_line(segment.read_bytes().splitlines(keepends=True)[0])
    assert first.record.id == "a" and first.record.cost_usd is not None
    assert abs(first.record.cost_usd - COST) < 1e-12  # metered in the gateway: the ledger needs no analysis
    assert first.record.waste_tokens is None and "heatmap" not in first.record.details  # not analysed here
    assert (first.api, first.kind, first.analyses) == ("openai", "chat", ["waste", "heatmap"])
    assert first.request is None  # the record keeps the body, so the line does not repeat it


def test_without_stored_bodies_the_line_carries_the_request_for_the_analyses_only(tmp_path: Path) -> None:
    writer = SpoolWriter(spool_dir(tmp_path), builder(store_bodies=False))
    writer.submit(exchange("a"))
    writer.submit(exchange("b", analyses=()))
    assert writer.stop()
    a, b = backlog(spool_dir(tmp_path))
    assert a.record.request_body is None and a.request == json.dumps(REQUEST).encode()
    assert b.request is None  # no analysis reads it: not written at all


def test_segments_roll_and_are_read_in_order(tmp_path: Path) -> None:
    directory = spool_dir(tmp_path)
    writer = SpoolWriter(directory, builder(), segment_bytes=1, max_batch=1)
    for n in range(5):
        writer.submit(exchange(f"c{n}"))
    assert writer.stop()
    assert len(segments(directory)) == 5
    assert [call.record.id for call in backlog(directory)] == [f"c{n}" for n in range(5)]


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
    writer.submit(exchange("a"))
    writer.submit(exchange("b"))
    assert not writer.flush(timeout=0.3) or heard == ["a", "b"]  # not reported before it is spooled
    writer.submit(exchange("c"))
    assert writer.flush(timeout=5) and writer.stop()
    assert heard == ["a", "b", "c"]  # each once, in order, once the disk took them
    assert [call.record.id for call in backlog(spool_dir(tmp_path))] == [
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
