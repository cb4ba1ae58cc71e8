"""The analysis process's worker: it stores what the gateway spooled, with the record analyses, once each, and
only then moves its cursor; a crash between the two stores nothing twice (rows and rollups)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tokenlens.analyses import AnalysisContext
from tokenlens.analysis import AnalysisWorker, spool_lock
from tokenlens.config import SettingsHolder, parse_settings
from tokenlens.exchange import Exchange
from tokenlens.metering import RecordBuilder
from tokenlens.records import CallRecord
from tokenlens.runtime import build_runtime, spooled_not_stored
from tokenlens.settlement import FEED_FLAG, SETTLED_FIELDS
from tokenlens.store import Store, open_store
from tokenlens.store.spool import CURSOR, SpoolWriter, read_cursor, segments, spool_dir

REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Please, could you kindly    summarise     this?   Thank you so much!"},
    ],
}
ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [],
    "usage": {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50},
}
# gpt-4o-mini's published rates: $0.15 per million input tokens, $0.60 per million output tokens
COST = 40 * 0.15 / 1e6 + 10 * 0.60 / 1e6


def exchange(call_id: str, source: str = "tests") -> Exchange:
    return Exchange(
        id=call_id,
        started=time.time(),
        provider="openai",
        api="openai",
        endpoint="/v1/chat/completions",
        kind="chat",
        mode="base_url",
        source=source,
        request_json=REQUEST,
        request_body=json.dumps(REQUEST).encode(),
        requested_model="gpt-4o-mini",
        model="gpt-4o-mini",
        status=200,
        ended=time.time(),
        response_body=json.dumps(ANSWER).encode(),
        response_headers={"content-type": "application/json"},
        analyses=["conversation", "waste", "heatmap"],
    )


def spool(home: Path, count: int, settings: SettingsHolder, start: int = 0) -> None:
    writer = SpoolWriter(spool_dir(home), RecordBuilder(settings))
    for n in range(start, start + count):
        writer.submit(exchange(f"call-{n}"))
    assert writer.stop()


@pytest.fixture
def settings() -> SettingsHolder:
    return SettingsHolder(parse_settings({"timezone": "UTC"}))


def test_spooled_calls_are_stored_analysed_and_the_spool_emptied(
    tmp_path: Path, settings: SettingsHolder
) -> None:
    spool(tmp_path, 3, settings)
    store = open_store(None, tmp_path)
    worker = AnalysisWorker(settings, store, spool_dir(tmp_path))
    try:
        assert worker.drain() == 3
        spool(tmp_path, 2, settings, start=3)  # a new segment (a restarted gateway): the old one is finished
        assert worker.drain() == 2
        calls = {c.id: c for c in store.list_calls(limit=10)[0]}
        assert set(calls) == {f"call-{n}" for n in range(5)}
        record = store.get_call("call-0")
        assert record is not None and abs((record.cost_usd or 0) - COST) < 1e-12
        assert record.waste_tokens is not None and record.waste_tokens > 0  # filler and whitespace found
        assert "heatmap" in record.details and record.complexity is not None
        assert record.conversation_id is not None and record.turn == 1  # the conversation analysis ran
        assert len(segments(spool_dir(tmp_path))) == 1  # the finished segment is gone; the newest stays
    finally:
        worker.close()
        store.close()


def test_calls_are_analysed_as_they_come_and_stored_once_an_interval(
    tmp_path: Path, settings: SettingsHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tick the worker builds the records of what arrived since (the work spread out, not one burst
    beside the gateway); it stores them once an interval (each store pays for a transaction and the rollups),
    or at once when a full batch waits, and reads again without waiting while more is waiting."""
    store = open_store(None, tmp_path)
    worker = AnalysisWorker(settings, store, spool_dir(tmp_path), interval=0.5, tick=0.125, max_calls=500)
    now = [0.0]
    monkeypatch.setattr("tokenlens.analysis.time.monotonic", lambda: now[0])
    reads = iter([2, 1, 0, 3, 500, 2])
    record = CallRecord(id="x", ts=1.0, provider="openai", endpoint="/x")
    analysed_at: list[tuple[float, int]] = []
    stored_at: list[tuple[float, int]] = []

    def analyse(max_calls: int) -> int:
        count = next(reads, 0)
        worker._pending += [(record, False)] * count
        analysed_at.append((now[0], count))
        return count

    def store_pending(stopping: threading.Event | None = None) -> None:
        stored_at.append((now[0], len(worker._pending)))
        worker._pending = []

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            now[0] += timeout or 0.0
            if now[0] > 1.5:
                self.set()
            return self.is_set()

    worker.analyse = analyse  # type: ignore[method-assign]
    worker.store_pending = store_pending  # type: ignore[method-assign]
    worker.drain = lambda: 0  # type: ignore[method-assign]
    try:
        worker.run(Stop())
    finally:
        worker.close()
        store.close()
    assert analysed_at[:6] == [(0.0, 2), (0.125, 1), (0.25, 0), (0.375, 3), (0.5, 500), (0.5, 2)]
    assert stored_at == [(0.5, 506), (1.0, 2)]


def test_a_crash_before_the_cursor_is_saved_stores_nothing_twice(
    tmp_path: Path, settings: SettingsHolder
) -> None:
    spool(tmp_path, 4, settings)
    store = open_store(None, tmp_path)
    first = AnalysisWorker(settings, store, spool_dir(tmp_path))
    assert first.drain() == 4
    first.close()
    totals = store_totals(store)
    (spool_dir(tmp_path) / CURSOR).unlink()  # as if it died right after the insert, before the cursor
    again = AnalysisWorker(settings, store, spool_dir(tmp_path))
    try:
        assert again.drain() == 4  # read again...
        assert store_totals(store) == totals  # ...and stored once: rows and rollups unchanged
        assert read_cursor(spool_dir(tmp_path)).offset > 0
    finally:
        again.close()
        store.close()


def store_totals(store: object) -> tuple[int, float]:
    from tokenlens.store.rollups import sums

    with store.connection():  # type: ignore[attr-defined]
        totals = sums(store.db, [0.0, time.time() + 3600])[0].get((), {})  # type: ignore[attr-defined]
    return store.count_calls(), round(float(totals.get("cost_usd", 0.0)), 12)  # type: ignore[attr-defined]


def test_without_stored_bodies_analyses_still_read_the_request(tmp_path: Path) -> None:
    holder = SettingsHolder(parse_settings({"storage": {"store_bodies": False}}))
    spool(tmp_path, 1, holder)
    store = open_store(None, tmp_path)
    worker = AnalysisWorker(holder, store, spool_dir(tmp_path))
    try:
        worker.drain()
        record = store.get_call("call-0")
        assert record is not None and record.waste_tokens is not None and "heatmap" in record.details
        assert record.request_body is None
    finally:
        worker.close()
        store.close()


def test_at_start_the_ledger_counts_calls_spooled_but_not_stored(
    tmp_path: Path, settings: SettingsHolder
) -> None:
    spool(tmp_path, 3, settings)
    store = open_store(None, tmp_path)
    worker = AnalysisWorker(settings, store, spool_dir(tmp_path), max_calls=1)
    worker.step()  # one stored, two still in the spool (the gateway stopped before the rest)
    worker.close()
    pending = spooled_not_stored(spool_dir(tmp_path), store, RecordBuilder(settings))
    assert sorted(r.id for r in pending) == ["call-1", "call-2"]
    store.close()
    config = {"timezone": "UTC", "quotas": {"source_limits": [{"source": "tests", "daily_usd": 3 * COST}]}}
    runtime = build_runtime(parse_settings(config), tmp_path, analysis_process=True)
    try:
        status = {(c["scope"], c["period"]): c for c in runtime.deps.ledger.status()["caps"]}
        assert status[("source:tests", "day")]["spent_usd"] == pytest.approx(3 * COST, rel=1e-9)
    finally:
        runtime.close()


def test_one_reader_of_a_spool_at_a_time(tmp_path: Path) -> None:
    directory = spool_dir(tmp_path)
    with spool_lock(directory) as first:
        assert first
        with spool_lock(directory, timeout=0.2) as second:
            assert not second


def test_the_process_stores_the_spool_and_ends_on_sigterm(tmp_path: Path, settings: SettingsHolder) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("timezone: UTC\n")
    spool(tmp_path, 5, settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenlens.analysis", "--data-dir", str(tmp_path), "--config", str(config)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 30
        store = open_store(None, tmp_path)
        while store.count_calls() < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.count_calls() == 5
        store.close()
    finally:
        process.terminate()
        assert process.wait(30) == 0


def test_the_waste_is_costed_at_the_rate_the_gateway_gave(tmp_path: Path, settings: SettingsHolder) -> None:
    """The gateway prices the model's input rate once; the analysis process costs the waste with it and gives
    what the inline writer (which prices it itself) gives."""
    builder = RecordBuilder(settings)
    writer = SpoolWriter(spool_dir(tmp_path), builder, input_rate=builder.waste_input_rate)
    writer.submit(exchange("given"))
    assert writer.stop()
    store = open_store(None, tmp_path)
    worker = AnalysisWorker(settings, store, spool_dir(tmp_path))
    try:
        worker.drain()
        record = store.get_call("given")
    finally:
        worker.close()
        store.close()
    assert record is not None and record.details["waste"]["input_rate_usd_per_mtok"] == 0.15  # published
    inline = RecordBuilder(settings, analyses=AnalysisContext(settings))(exchange("inline"))
    assert record.waste_tokens == inline.waste_tokens and record.waste_tokens
    assert record.details["waste"] == inline.details["waste"]
    finding = record.details["waste"]["findings"][0]
    assert finding["cost_usd"] == pytest.approx(finding["tokens"] * 0.15 / 1e6)


def test_the_analysis_process_loads_no_price_data_when_the_gateway_priced(
    tmp_path: Path, settings: SettingsHolder
) -> None:
    builder = RecordBuilder(settings)
    writer = SpoolWriter(spool_dir(tmp_path), builder, input_rate=builder.waste_input_rate)
    metered = exchange("a")
    metered.deferred.append(lambda ex, record: None)  # metered by the gateway, which priced its waste too
    writer.submit(metered)
    assert writer.stop()
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tokenlens.analysis import AnalysisWorker\n"
        "from tokenlens.config import SettingsHolder, parse_settings\n"
        "from tokenlens.store import open_store\n"
        "from tokenlens.store.spool import spool_dir\n"
        "home = Path(sys.argv[1])\n"
        "holder = SettingsHolder(parse_settings({}))\n"
        "store = open_store(None, home)\n"
        "worker = AnalysisWorker(holder, store, spool_dir(home))\n"
        "assert worker.drain() == 1\n"
        "worker.close()\n"
        "assert store.get_call('a').details['waste']['input_rate_usd_per_mtok'] == 0.15\n"
        "print(sorted(m for m in ('genai_prices', 'pydantic', 'tiktoken') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def reporting_worker(
    settings: SettingsHolder, store: Store, directory: Path, run_start: str = ""
) -> tuple[AnalysisWorker, list[dict[str, Any]]]:
    """A worker storing two calls a batch, and the reports it writes, parsed."""
    reports: list[dict[str, Any]] = []
    worker = AnalysisWorker(
        settings,
        store,
        directory,
        max_calls=2,
        report=lambda line: reports.append(json.loads(line)),
        run_start=run_start,
    )
    return worker, reports


def test_raw_calls_are_metered_here_and_each_stored_batch_reported(
    tmp_path: Path, settings: SettingsHolder
) -> None:
    store = open_store(None, tmp_path)
    worker, reports = reporting_worker(settings, store, spool_dir(tmp_path))
    assert worker.step() == 0  # polled before anything was spooled
    spool(tmp_path, 5, settings)
    assert worker.drain() == 5
    worker.close()
    assert store.get_call("call-0").cost_usd == pytest.approx(COST, rel=1e-12)  # the published rates
    assert [[row[0] for row in report["calls"]] for report in reports] == [
        ["call-0", "call-1"],
        ["call-2", "call-3"],
        ["call-4"],
    ]
    costs = {row[0]: row[SETTLED_FIELDS.index("cost_usd")] for report in reports for row in report["calls"]}
    assert costs == pytest.approx(dict.fromkeys(costs, COST), rel=1e-12)
    # A process's first batch may repeat what its predecessor reported: its metrics are summed by the gateway
    # from the calls it still expected; the later batches bring their totals.
    assert ["metrics" in report for report in reports] == [False, True, True]
    assert all("records" not in report for report in reports)  # nobody on the live feed
    store.close()


def test_calls_an_earlier_run_spooled_are_reported_without_totals_and_with_records_when_fed(
    tmp_path: Path, settings: SettingsHolder
) -> None:
    spool(tmp_path, 4, settings)
    (spool_dir(tmp_path) / FEED_FLAG).write_text("call,block")  # someone listens to the live feed
    store = open_store(None, tmp_path)
    # the gateway started after these were spooled
    worker, reports = reporting_worker(
        settings, store, spool_dir(tmp_path), run_start=f"{time.time_ns():020d}"
    )
    assert worker.drain() == 4
    worker.close()
    store.close()
    assert len(reports) == 2 and not any("metrics" in report for report in reports)
    assert [r["id"] for report in reports for r in report["records"]] == [f"call-{n}" for n in range(4)]
    assert reports[0]["records"][0]["waste_tokens"] is not None  # the record as stored, analyses and all


def test_an_answer_from_the_cache_saves_what_its_original_cost_when_both_are_metered_here(
    tmp_path: Path, settings: SettingsHolder
) -> None:
    hit = exchange("hit")
    hit.outcome, hit.saved_usd = "cached", None  # answered before the original's cost was known
    hit.details["dedup"] = {"hit_of": "call-0", "age_s": 0.1}
    writer = SpoolWriter(spool_dir(tmp_path), RecordBuilder(settings))
    writer.submit(exchange("call-0"))
    writer.submit(hit)
    assert writer.stop()
    store = open_store(None, tmp_path)
    worker = AnalysisWorker(settings, store, spool_dir(tmp_path))
    assert worker.drain() == 2
    worker.close()
    assert store.get_call("hit").saved_usd == pytest.approx(COST, rel=1e-12)
    store.close()


def test_a_pricing_process_leaves_genai_prices_updater_out_and_prices_the_same() -> None:
    """The gateway and its analysis process never fetch prices: genai-prices' updater (and its HTTP client) is
    not loaded, and a call is priced at the published rates all the same."""
    code = (
        "import json, sys\n"
        "from tokenlens import price_data\n"
        "price_data.without_updater()\n"
        "from tokenlens.config import SettingsHolder, parse_settings\n"
        "from tokenlens.metering import RecordBuilder\n"
        "from tokenlens.exchange import Exchange\n"
        "answer = {'model': 'gpt-4o-mini', 'usage': {'prompt_tokens': 40, 'completion_tokens': 10}}\n"
        "ex = Exchange(id='a', started=1.0, provider='openai', api='openai', endpoint='/v1/chat/completions',\n"
        "    kind='chat', mode='base_url', model='gpt-4o-mini', status=200, ended=2.0,\n"
        "    response_body=json.dumps(answer).encode())\n"
        "record = RecordBuilder(SettingsHolder(parse_settings({})))(ex)\n"
        "print(json.dumps([record.cost_usd, 'httpx2' in sys.modules, 'genai_prices' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cost, http_client, genai_prices = json.loads(done.stdout)
    assert cost == pytest.approx(COST, rel=1e-12) and genai_prices and not http_client


def test_a_stop_signal_arriving_inside_the_wait_on_the_stop_event_still_stops() -> None:
    """The handler runs in the main thread, which may be inside `stop.wait` holding the event's lock (the
    worker waits 10 ms at a time): it must not set the event there, or the process never ends."""
    code = (
        "import os, signal, threading\n"
        "from tokenlens.analysis import stop_on_signals\n"
        "stop = threading.Event()\n"
        "stop_on_signals(stop)\n"
        "with stop._cond:  # where Event.wait holds the lock\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    sum(range(10000))  # the handler runs here, in this thread, the lock held\n"
        "print(stop.wait(10))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
