from __future__ import annotations

import csv
import dataclasses
import io
import json
import threading
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tokenlens.pricing import Pricer
from tokenlens.records import CALL_FIELDS, CallRecord, iso_utc, new_call_id
from tokenlens.store import Store, csv_header, csv_line, export_lines, jsonl_line
from tokenlens.store.queries import IMPORTED_FIELDS, decode_cursor, encode_cursor


def without_bodies(record: CallRecord) -> CallRecord:
    return dataclasses.replace(record, request_body=None, response_body=None)


def test_insert_and_get_round_trip_every_field(store: Store, make_call: Any) -> None:
    record = make_call()
    store.insert_calls([record], store_bodies=True)
    assert store.get_call(record.id) == record
    assert store.get_call(record.id, bodies=False) == without_bodies(record)
    assert store.get_call("nope") is None


def test_defaults_and_nulls_round_trip(store: Store) -> None:
    record = CallRecord(id=new_call_id(), ts=1_790_000_000.0, provider="anthropic", endpoint="/v1/messages")
    store.insert_calls([record], store_bodies=True)
    assert store.get_call(record.id) == record


def test_duplicate_ids_are_ignored(store: Store, make_call: Any) -> None:
    first = make_call(id="same", source="first")
    store.insert_calls([first], store_bodies=True)
    store.insert_calls([make_call(id="same", source="second"), make_call(id="other")], store_bodies=True)
    store.insert_calls([make_call(id="twice"), make_call(id="twice")], store_bodies=True)
    assert store.count_calls() == 3
    got = store.get_call("same")
    assert got is not None and got.source == "first"


def test_bodies_not_stored_when_off(store: Store, make_call: Any) -> None:
    record = make_call()
    store.insert_calls([record], store_bodies=False)
    got = store.get_call(record.id)
    assert got is not None
    assert got.request_body is None and got.response_body is None
    assert got == without_bodies(record)


def _insert_many(store: Store, make_call: Any, n: int, **kw: Any) -> list[CallRecord]:
    base = 1_790_000_000.0
    # Groups of five calls share a timestamp, so the (ts, id) tie-break is exercised.
    records = [make_call(id=f"call-{i:04d}", ts=base + (i // 5), request_body=None, **kw) for i in range(n)]
    store.insert_calls(records, store_bodies=True)
    return records


def test_pagination_walks_every_call_once_newest_first(store: Store, make_call: Any) -> None:
    records = _insert_many(store, make_call, 250, response_body=None)
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        page, before = store.list_calls(limit=40, before=before)
        pages += 1
        seen.extend(r.id for r in page)
        if before is None:
            break
    assert pages == 7  # 6 full pages of 40 and one of 10
    expected = [r.id for r in sorted(records, key=lambda r: (r.ts, r.id), reverse=True)]
    assert seen == expected
    assert len(set(seen)) == 250


def test_last_page_exactly_full_has_no_next(store: Store, make_call: Any) -> None:
    _insert_many(store, make_call, 20)
    page, cursor = store.list_calls(limit=10)
    page2, cursor2 = store.list_calls(limit=10, before=cursor)
    assert len(page) == len(page2) == 10 and cursor2 is None


def test_limit_is_clamped(store: Store, make_call: Any) -> None:
    _insert_many(store, make_call, 3)
    assert len(store.list_calls(limit=0)[0]) == 1
    assert len(store.list_calls(limit=5000)[0]) == 3


def test_filters(store: Store, make_call: Any) -> None:
    store.insert_calls(
        [
            make_call(id="a", source="s1", model="m1", provider="openai", outcome="ok"),
            make_call(id="b", source="s2", model="m1", provider="anthropic", outcome="error"),
            make_call(id="c", source="s1", model="m2", provider="anthropic", outcome="blocked"),
        ],
        store_bodies=False,
    )

    def ids(**kw: Any) -> set[str]:
        return {r.id for r in store.list_calls(**kw)[0]}

    assert ids(source="s1") == {"a", "c"}
    assert ids(model="m1") == {"a", "b"}
    assert ids(provider="anthropic") == {"b", "c"}
    assert ids(outcome="blocked") == {"c"}
    assert ids(source="s1", provider="anthropic") == {"c"}
    assert ids(source="none") == set()


def test_bad_cursor_is_a_value_error(store: Store) -> None:
    for bad in ("garbage", "W10", encode_cursor(1.0, "x")[:-3] + "!!!"):
        with pytest.raises(ValueError, match="before"):
            store.list_calls(before=bad)


def test_cursor_round_trips_exact_floats() -> None:
    ts = 1_790_000_000.1234567
    assert decode_cursor(encode_cursor(ts, "id-1")) == (ts, "id-1")


def test_iter_calls_oldest_first_in_pages(store: Store, make_call: Any) -> None:
    records = _insert_many(store, make_call, 53)
    got = list(store.iter_calls(page_size=7))
    assert [r.id for r in got] == [r.id for r in sorted(records, key=lambda r: (r.ts, r.id))]
    assert all(r.request_body is None and r.response_body is None for r in got)
    since = 1_790_000_000.0 + 5  # from the 6th timestamp group on
    assert [r.id for r in store.iter_calls(since, page_size=4)] == [f"call-{i:04d}" for i in range(25, 53)]


def test_spend_between_sums_priced_costs(store: Store, make_call: Any) -> None:
    store.insert_calls(
        [
            make_call(ts=100.0, cost_usd=0.25),
            make_call(ts=150.0, cost_usd=0.5),
            make_call(ts=199.999, cost_usd=None, priced=False),
            make_call(ts=200.0, cost_usd=4.0),  # end is exclusive
            make_call(ts=99.0, cost_usd=8.0),
        ],
        store_bodies=False,
    )
    assert store.spend_between(100.0, 200.0) == pytest.approx(0.75)
    assert store.spend_between(1000.0, 2000.0) == 0.0


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_kpi_over_calendar_days_in_zone(store: Store, make_call: Any, zone: str) -> None:
    tz = ZoneInfo(zone)
    now = datetime.now(tz)
    today_start = datetime(now.year, now.month, now.day, tzinfo=tz)
    first_day = (today_start - timedelta(days=6)).date()
    window_start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=tz).timestamp()
    t_in = window_start + 1.0  # first second of the 7-day window
    t_out = window_start - 1.0  # last second before it
    t_today = today_start.timestamp() + 1.0
    t_tomorrow = (today_start + timedelta(days=1, hours=1)).timestamp()
    common: dict[str, Any] = {"cache_write_tokens": 0, "reasoning_tokens": 0, "saved_usd": None}
    rows = [
        make_call(ts=t_in, cost_usd=0.01, input_tokens=100, output_tokens=10, cache_read_tokens=5, **common),
        make_call(
            ts=t_today, cost_usd=0.02, input_tokens=200, output_tokens=20, cache_read_tokens=0, **common
        ),
        make_call(
            ts=t_today,
            cost_usd=None,
            priced=False,
            model="mystery",
            input_tokens=7,
            output_tokens=3,
            cache_read_tokens=0,
            **common,
        ),
        make_call(
            ts=t_today,
            outcome="blocked",
            cost_usd=None,
            priced=False,
            input_tokens=0,
            output_tokens=0,
            cache_read_tokens=0,
            **common,
        ),
        make_call(
            ts=t_today,
            outcome="error",
            cost_usd=None,
            priced=False,
            input_tokens=0,
            output_tokens=0,
            cache_read_tokens=0,
            **common,
        ),
        make_call(
            ts=t_today,
            outcome="cached",
            cost_usd=0.0,
            input_tokens=50,
            output_tokens=5,
            cache_read_tokens=0,
            cache_write_tokens=0,
            reasoning_tokens=0,
            saved_usd=0.04,
        ),
        make_call(ts=t_out, cost_usd=1.0, input_tokens=1000, output_tokens=100, **common),
        make_call(ts=t_tomorrow, cost_usd=2.0, input_tokens=1000, output_tokens=100, **common),
    ]
    for r in rows:
        r.reasoning_tokens = 1
        r.cache_write_tokens = 2
    store.insert_calls(rows, store_bodies=False)
    kpi = store.kpi(7, tz)
    assert kpi["calls"] == 6
    assert kpi["total_cost_usd"] == pytest.approx(0.03)
    assert kpi["total_saved_usd"] == pytest.approx(0.04)
    assert kpi["input_tokens"] == 100 + 200 + 7 + 50
    assert kpi["output_tokens"] == 10 + 20 + 3 + 5
    assert kpi["cache_read_tokens"] == 5
    assert kpi["cache_write_tokens"] == 12
    assert kpi["reasoning_tokens"] == 6
    assert kpi["unpriced_calls"] == 1
    assert kpi["blocked_calls"] == 1
    assert kpi["error_calls"] == 1
    assert kpi["cached_calls"] == 1
    assert kpi["since"] == first_day.isoformat()
    assert store.kpi(1, tz)["calls"] == 5
    with pytest.raises(ValueError):
        store.kpi(0, tz)


def test_kpi_of_empty_store_is_zero(store: Store) -> None:
    kpi = store.kpi(30, ZoneInfo("UTC"))
    assert kpi["calls"] == 0 and kpi["total_cost_usd"] == 0.0 and kpi["unpriced_calls"] == 0


def test_reads_from_many_threads(store: Store, make_call: Any) -> None:
    _insert_many(store, make_call, 30)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(10):
                assert len(store.list_calls(limit=30)[0]) == 30
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ---------------------------------------------------------------------------------------------- export/import


def test_jsonl_line_is_to_dict(make_call: Any) -> None:
    record = make_call()
    line = jsonl_line(record)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == record.to_dict()
    assert json.loads(line)["ts"] == iso_utc(record.ts)


def test_csv_columns(make_call: Any) -> None:
    record = make_call(error=None)
    rows = list(csv.reader(io.StringIO(csv_header() + csv_line(record))))
    assert rows[0] == list(CALL_FIELDS)
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["id"] == record.id
    assert row["ts"] == iso_utc(record.ts)
    assert json.loads(row["tags"]) == {"team": "core", "run": "7"}
    assert json.loads(row["guardrail_flags"]) == record.guardrail_flags
    assert row["stream"] == "true" and row["error"] == "" and row["input_tokens"] == "1200"


def test_every_call_field_is_importable() -> None:
    assert set(CALL_FIELDS) - IMPORTED_FIELDS == set()


def test_export_then_import_into_fresh_store_is_identical(make_store: Any, make_call: Any) -> None:
    source, target = make_store(), make_store()
    records = [
        make_call(id=f"c{i}", ts=1_790_000_000.0 + i * 0.001, request_body=None, response_body=None)
        for i in range(30)
    ]
    records.append(CallRecord(id="bare", ts=1_790_000_100.5, provider="google", endpoint="/v1beta/x"))
    records.append(make_call(id="unpriced", cost_usd=None, priced=False, input_cost_usd=None))
    source.insert_calls(records, store_bodies=False)
    exported = list(export_lines(source, "jsonl"))
    result = target.import_lines(exported, Pricer())
    assert (result.imported, result.skipped, result.errors) == (32, 0, [])
    original = {r.id: without_bodies(r) for r in source.iter_calls()}
    copied = {r.id: r for r in target.iter_calls()}
    # ts goes through ISO 8601 with milliseconds: compare at that precision, the rest exactly.
    assert copied.keys() == original.keys()
    for call_id, rec in original.items():
        assert copied[call_id].ts == pytest.approx(rec.ts, abs=0.0005)
        assert dataclasses.replace(copied[call_id], ts=rec.ts) == rec
    again = target.import_lines(exported, Pricer())
    assert (again.imported, again.skipped, again.errors) == (0, 32, [])
    assert target.count_calls() == 32


def test_import_reports_bad_lines_with_numbers(store: Store) -> None:
    good = {"ts": "2026-11-01T10:00:00Z", "provider": "openai", "model": "gpt-4o-mini"}
    lines = [
        json.dumps({**good, "input_tokens": 1, "output_tokens": 1, "id": "ok-1"}),
        json.dumps(
            {"ts": "2026-11-01T10:00:00Z", "provider": "openai", "input_tokens": 1, "output_tokens": 2}
        ),
        "",
        "{not json",
        json.dumps([1, 2]),
        json.dumps({**good, "input_tokens": "many", "output_tokens": 1}),
        json.dumps({**good, "ts": "yesterday", "input_tokens": 1, "output_tokens": 1}),
        json.dumps({**good, "input_tokens": 1, "output_tokens": 1, "outcome": "exploded"}),
        json.dumps({**good, "input_tokens": 1, "output_tokens": 1, "id": "ok-2", "unknown_field": {"x": 1}}),
        json.dumps({**good, "input_tokens": 1, "id": "no-output"}),
    ]
    result = store.import_lines(lines, Pricer())
    assert result.imported == 2 and result.skipped == 0
    assert [e["line"] for e in result.errors] == [2, 4, 5, 6, 7, 8, 10]
    assert "model" in result.errors[0]["error"]
    assert "input_tokens" in result.errors[3]["error"]
    assert "output_tokens" in result.errors[6]["error"]
    assert store.get_call("ok-2") is not None


def test_import_computes_cost_from_published_prices(store: Store) -> None:
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens (OpenAI's price list).
    line = {
        "id": "priced",
        "ts": "2026-11-01T10:00:00Z",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 10_000,
        "output_tokens": 2_000,
    }
    unknown = {**line, "id": "unknown-model", "model": "no-such-model-xyz"}
    given = {**line, "id": "given", "cost_usd": 1.5}
    result = store.import_lines([json.dumps(line), json.dumps(unknown), json.dumps(given)], Pricer())
    assert result.imported == 3, result.errors
    priced = store.get_call("priced")
    assert priced is not None and priced.priced
    assert priced.cost_usd == pytest.approx(10_000 * 0.15 / 1e6 + 2_000 * 0.60 / 1e6)
    assert priced.input_cost_usd == pytest.approx(10_000 * 0.15 / 1e6)
    assert priced.output_cost_usd == pytest.approx(2_000 * 0.60 / 1e6)
    assert priced.ts == datetime(2026, 11, 1, 10, tzinfo=ZoneInfo("UTC")).timestamp()
    assert priced.endpoint == "" and priced.source == "unknown" and priced.outcome == "ok"
    missing = store.get_call("unknown-model")
    assert missing is not None and missing.cost_usd is None and missing.priced is False
    kept = store.get_call("given")
    assert kept is not None and kept.cost_usd == 1.5 and kept.priced is True


def test_import_accepts_bytes_and_generates_ids(store: Store) -> None:
    line = b'{"ts": 1790000000.5, "provider": "anthropic", "model": "claude-x", "input_tokens": 3, "output_tokens": 4}'
    result = store.import_lines([line, line], None)
    assert result.imported == 2  # no id: two distinct calls
    assert store.count_calls() == 2
