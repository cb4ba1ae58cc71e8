"""The composition root: one function builds every service, and a committed record reaches each listener."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenlens.config import parse_settings
from tokenlens.controls import Ledger, source_caps
from tokenlens.exchange import Exchange
from tokenlens.records import CallRecord
from tokenlens.runtime import build_runtime
from tokenlens.shared_ledger import SharedLedger

SETTINGS = {"timezone": "UTC", "quotas": {"source_limits": [{"source": "agent", "daily_usd": 1.0}]}}


def a_call(call_id: str, cost: float, outcome: str = "ok") -> CallRecord:
    return CallRecord(
        id=call_id,
        ts=time.time(),
        provider="openai",
        endpoint="/v1/chat/completions",
        source="agent",
        model="gpt-4o",
        status=200,
        latency_ms=120.0,
        cost_usd=cost,
        priced=True,
        outcome=outcome,
        blocked_by="budget" if outcome == "blocked" else None,
    )


def test_every_service_is_built_and_the_deps_are_complete_and_frozen(tmp_path: Path) -> None:
    runtime = build_runtime(parse_settings(SETTINGS), tmp_path, prepare=lambda r: r)
    try:
        deps = runtime.deps
        assert all(
            getattr(deps, f.name) is not None for f in dataclasses.fields(deps) if f.name != "config_sync"
        )
        assert type(deps.ledger) is Ledger and deps.ledger.loaded and not deps.shared
        assert deps.config_sync is None  # a local store shares no configuration
        assert deps.config_path == tmp_path / "config.yaml"
        with pytest.raises(dataclasses.FrozenInstanceError):
            deps.web_port = 1  # type: ignore[misc]
    finally:
        assert runtime.close()


def test_the_record_listeners_are_one_ordered_list(tmp_path: Path) -> None:
    runtime = build_runtime(parse_settings(SETTINGS), tmp_path, prepare=lambda r: r)
    try:
        deps = runtime.deps
        assert runtime.fanout.listeners == (
            deps.ledger.settle,
            deps.rate_limits,
            deps.latency,
            deps.metrics.observe,
            runtime.cost_watcher.notify,
        )
    finally:
        runtime.close()


def test_a_committed_record_reaches_the_ledger_metrics_latency_and_the_feed(tmp_path: Path) -> None:
    runtime = build_runtime(parse_settings(SETTINGS), tmp_path, prepare=lambda r: r)
    deps = runtime.deps
    try:
        with deps.bus.subscribe() as feed:
            deps.writer.submit(a_call("a", 0.75))
            deps.writer.submit(a_call("b", 0.0, outcome="blocked"))
            assert deps.writer.flush()
            messages = [feed.get(timeout=2), feed.get(timeout=2)]
        assert [m["type"] for m in messages if m] == ["call", "block"]
        caps = source_caps(deps.settings.get(), "agent")
        denial = deps.ledger.admit("next", caps, 0.5)  # $0.75 spent of $1.00: $0.50 more does not fit
        assert denial is not None and denial.cap.scope == "source:agent"
        assert deps.latency.snapshot()[0]["model"] == "gpt-4o"
        assert 'tokenlens_calls_total{model="gpt-4o",outcome="ok",provider="openai",source="agent"} 1.0' in (
            deps.metrics.render().decode()
        )
    finally:
        assert runtime.close()


def chat_exchange(call_id: str) -> Exchange:
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    answer = {"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 20000, "completion_tokens": 5000}}
    now = time.time()
    return Exchange(
        id=call_id,
        started=now,
        provider="openai",
        api="openai",
        endpoint="/v1/chat/completions",
        kind="chat",
        mode="base_url",
        source="agent",
        request_body=json.dumps(request).encode(),
        request_json=request,
        requested_model="gpt-4o",
        model="gpt-4o",
        status=200,
        ended=now + 0.2,
        response_body=json.dumps(answer).encode(),
        response_headers={"content-type": "application/json"},
    )


def test_with_an_analysis_process_a_raw_call_settles_from_its_report(tmp_path: Path) -> None:
    """The daemon's way: the gateway spools the call raw, the analysis process (a real one) meters it, and its
    report settles the reservation, counts the spend once, and feeds the latency tracker, the metrics, the
    answer cache's cost hook and the live feed."""
    (tmp_path / "config.yaml").write_text(json.dumps(SETTINGS))
    runtime = build_runtime(
        parse_settings(SETTINGS), tmp_path, tmp_path / "config.yaml", analysis_process=True
    ).start()
    deps = runtime.deps
    cost = 20000 * 2.50 / 1e6 + 5000 * 10.00 / 1e6  # gpt-4o's published rates: $2.50 and $10 per million
    costs: list[float | None] = []
    try:
        caps = source_caps(deps.settings.get(), "agent")
        assert deps.ledger.admit("a", caps, 0.9) is None  # reserved: $0.90 of the $1.00 a day
        assert deps.ledger.admit("other", caps, 0.2) is not None  # does not fit while "a" is unsettled
        deps.ledger.release("other")
        with deps.bus.subscribe() as feed:
            call = chat_exchange("a")
            call.on_cost.append(costs.append)
            deps.writer.submit(call)
            message = feed.get(timeout=30)
        assert message is not None and message["type"] == "call" and message["data"]["id"] == "a"
        assert message["data"]["cost_usd"] == pytest.approx(cost, rel=1e-12)
        assert costs == [pytest.approx(cost, rel=1e-12)]
        status = {(c["scope"], c["period"]): c for c in deps.ledger.status()["caps"]}
        assert status[("source:agent", "day")]["spent_usd"] == pytest.approx(cost, rel=1e-12)
        assert status[("source:agent", "day")]["reserved_usd"] == 0
        assert deps.latency.snapshot()[0]["model"] == "gpt-4o"
        assert 'tokenlens_calls_total{model="gpt-4o",outcome="ok",provider="openai",source="agent"} 1.0' in (
            deps.metrics.render().decode()
        )
        assert runtime.settlements is not None and runtime.settlements.pending() == 0
    finally:
        assert runtime.close()
    assert not (tmp_path / "spool" / "feed").exists()  # nobody listens any more


def test_spend_already_in_the_store_is_counted_at_start(tmp_path: Path) -> None:
    first = build_runtime(parse_settings(SETTINGS), tmp_path, prepare=lambda r: r)
    first.deps.writer.submit(a_call("a", 0.75))
    assert first.close()  # every queued record written
    again = build_runtime(parse_settings(SETTINGS), tmp_path, prepare=lambda r: r)
    try:
        caps = source_caps(again.deps.settings.get(), "agent")
        assert again.deps.ledger.admit("next", caps, 0.5) is not None
    finally:
        again.close()


def test_gateways_sharing_a_store_share_the_ledger(tmp_path: Path) -> None:
    runtime = build_runtime(parse_settings(SETTINGS), tmp_path, shared=True, prepare=lambda r: r)
    try:
        assert isinstance(runtime.deps.ledger, SharedLedger) and runtime.deps.shared
    finally:
        runtime.close()


def test_start_runs_the_background_services_and_close_stops_them(tmp_path: Path) -> None:
    runtime = build_runtime(parse_settings(SETTINGS), tmp_path, prepare=lambda r: r).start()
    assert runtime.started
    assert runtime.close()
    assert runtime.cost_watcher._thread is not None and not runtime.cost_watcher._thread.is_alive()


def _preloaded(settings: str) -> str:
    code = (
        "import sys, json\n"
        "import threading\n"
        "from tokenlens.config import parse_settings\n"
        "from tokenlens.runtime import INJECTION_MODULE, PRELOAD_THREAD, preload_injection_detector\n"
        f"settings = parse_settings(json.loads({settings!r}))\n"
        "preload_injection_detector(settings, {'pricing'})  # another section changed: nothing to do\n"
        "assert INJECTION_MODULE not in sys.modules and threading.active_count() == 1\n"
        "preload_injection_detector(settings)\n"
        "for thread in threading.enumerate():\n"
        "    if thread.name == PRELOAD_THREAD:\n"
        "        thread.join(30)\n"
        "print(INJECTION_MODULE in sys.modules)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_detector_is_loaded_in_the_background_once_it_is_on() -> None:
    """A gateway loads the detector at start (and when a change turns it on), not in the first request."""
    on = json.dumps({"guardrails": {"injection_detection": {"enabled": True}}})
    assert _preloaded(on) == "True"
    assert _preloaded(json.dumps({})) == "False"  # off: numpy and the model stay unloaded
