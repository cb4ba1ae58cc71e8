"""Faults with nothing lost: a hanging or garbage upstream, a database locked by another process, `kill -9` in
the middle of a burst (integrity kept, at most the last batch window missing, the journal replayed at start),
and a catastrophic custom guardrail pattern that cannot stall the gateway."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from harness.gateway import Clients, Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator
from tokenlens.records import CallRecord
from tokenlens.store.journal import Journal

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


def healthy(gateway: Gateway) -> bool:
    return httpx.get(f"{gateway.url}/healthz", timeout=5).json() == {"status": "ok"}


def test_a_hanging_upstream_times_the_client_out_and_the_call_is_recorded(
    clients: Clients, gateway: Gateway
) -> None:
    client = openai.OpenAI(
        base_url=gateway.base_url("openai"),
        api_key="sk-test",
        max_retries=0,
        timeout=1.0,
        default_headers=clients.headers({"x-sim-delay-ms": "4000"}),
    )
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(**CHAT)
    assert time.monotonic() - started < 3
    (call,) = gateway.wait_calls(clients.source, timeout=15)
    assert call["outcome"] == "error" and call["error"]
    assert healthy(gateway)


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_garbage_from_the_upstream_gets_a_502_in_the_provider_format(
    clients: Clients, gateway: Gateway, provider: str
) -> None:
    if provider == "openai":
        url, body = f"{gateway.base_url('openai')}/chat/completions", CHAT
    else:
        url = f"{gateway.base_url('google')}/v1beta/models/gemini-2.0-flash:generateContent"
        body = {"contents": [{"parts": [{"text": "hi"}]}]}
    response = httpx.post(url, json=body, headers=clients.headers({"x-sim-garbage": "1"}), timeout=10)
    assert response.status_code == 502
    error = response.json()["error"]
    assert "upstream" in error["message"]
    assert (error.get("code") == 502) if provider == "google" else (error["type"] == "server_error")
    (call,) = gateway.wait_calls(clients.source)
    assert (call["status"], call["outcome"]) == (502, "error")


LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def hold_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the SQLite write lock for `seconds` (returns once it holds it)."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    return locker


def test_database_locked_by_another_process_calls_answered_records_land_later(
    clients: Clients, gateway: Gateway
) -> None:
    locker = hold_lock(gateway.home / "tokenlens.db", 6)  # longer than busy_timeout and the spill delay
    try:
        client = clients.openai()
        slowest = 0.0
        for _ in range(10):
            started = time.monotonic()
            client.chat.completions.create(**CHAT)
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 1.0  # the proxy never waits for the database
        assert locker.poll() is None  # still locked: nothing could have been written
    finally:
        locker.wait(timeout=20)
    calls = gateway.wait_calls(clients.source, count=10, timeout=30)
    assert len(calls) == 10


def _burst(gateway: Gateway, answered: dict[int, float], stop: threading.Event, worker: int) -> None:
    with httpx.Client(timeout=5) as client:
        i = 0
        while not stop.is_set():
            n = worker * 100_000 + i
            i += 1
            try:
                response = client.post(
                    f"{gateway.base_url('openai')}/chat/completions",
                    json=CHAT,
                    headers={"X-TokenLens-Source": "burst", "X-TokenLens-Tag-N": str(n)},
                )
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                answered[n] = time.monotonic()


def stored_tags(db: Path) -> set[int]:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute("select tags from call where source = 'burst'").fetchall()
    return {int(json.loads(tags)["n"]) for (tags,) in rows}


def test_kill_9_mid_burst_loses_at_most_the_last_batch_window_and_replays_the_journal(
    tmp_path: Path, sims: dict[str, Simulator]
) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, sims)
    gateway = start_gateway(tmp_path, config, sims)
    answered: dict[int, float] = {}
    stop = threading.Event()
    workers = [threading.Thread(target=_burst, args=(gateway, answered, stop, w)) for w in range(6)]
    for w in workers:
        w.start()
    time.sleep(2.5)
    killed_at = time.monotonic()
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait(timeout=10)
    stop.set()
    for w in workers:
        w.join(timeout=10)
    assert len(answered) > 100
    # a spill left in the journal by the killed process (as when its queue was full): replayed at start
    spilled = [
        CallRecord(id=f"journal-{i}", ts=time.time(), provider="openai", endpoint="/v1/chat/completions")
        for i in range(3)
    ]
    Journal(tmp_path / "tokenlens.db.spill.jsonl").append(spilled)
    stored = stored_tags(tmp_path / "tokenlens.db")
    window = 1.0  # writer interval (0.1 s) plus one batch's write, with a wide margin for a loaded machine
    old_enough = {n for n, at in answered.items() if at < killed_at - window}
    assert old_enough <= stored, f"missing: {sorted(old_enough - stored)[:10]}"
    recent = len(answered) - len(old_enough)
    assert len(set(answered) - stored) <= recent
    restarted = start_gateway(tmp_path, config, sims)
    try:
        ids = {c["id"] for c in restarted.calls(provider="openai", limit=1000)}
        assert {r.id for r in spilled} <= ids
        assert not (tmp_path / "tokenlens.db.spill.jsonl").exists()
        ok = httpx.post(f"{restarted.base_url('openai')}/chat/completions", json=CHAT, timeout=10)
        assert ok.status_code == 200
    finally:
        assert stop_gateway(restarted) == 0
    assert stored_tags(tmp_path / "tokenlens.db") >= stored


def test_a_catastrophic_custom_rule_cannot_stall_the_gateway(
    tmp_path: Path, sims: dict[str, Simulator]
) -> None:
    """`(a|aa)+$` is refused by PUT /api/config/guardrails; written into the file by hand it runs time-bounded."""
    config = tmp_path / "config.yaml"
    write_config(config, sims)
    config.write_text(
        config.read_text()
        + "guardrails:\n  fail_open: true\n"
        + "  custom_rules: [{name: evil, pattern: '(a|aa)+$', action: block}]\n"
    )
    gateway = start_gateway(tmp_path, config, sims)
    try:
        request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a" * 40 + "!"}]}
        started = time.monotonic()
        response = httpx.post(
            f"{gateway.base_url('openai')}/chat/completions",
            json=request,
            headers={"X-TokenLens-Source": "evil-rule"},
            timeout=30,
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 200 and elapsed < 2.0
        (call,) = gateway.wait_calls("evil-rule")
        assert call["outcome"] == "ok"
        details = gateway.call(call["id"])["details"]
        assert details["guardrails"]["request"] == {"error": "RuleTimeout", "fail_open": True}
        safe = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "aaaa"}]}
        blocked = httpx.post(f"{gateway.base_url('openai')}/chat/completions", json=safe, timeout=10)
        assert blocked.status_code == 400  # the rule still works where it finishes in time
    finally:
        assert stop_gateway(gateway) == 0


def analysis_process_of(gateway: Gateway) -> int:
    """The pid of the gateway's analysis process (`python -m tokenlens.analysis --data-dir <its home>`, or
    `python -c` running that module)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        started = any(b"tokenlens.analysis" in part for part in command)  # `-m` or `-c` running it
        if started and str(gateway.home).encode() in command:
            found.append(int(entry.name))
    assert len(found) == 1, found
    return found[0]


def test_kill_9_of_the_analysis_process_mid_burst_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, sims: dict[str, Simulator]
) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, sims)
    gateway = start_gateway(tmp_path, config, sims)
    answered: dict[int, float] = {}
    stop = threading.Event()
    workers = [threading.Thread(target=_burst, args=(gateway, answered, stop, w)) for w in range(4)]
    try:
        for w in workers:
            w.start()
        time.sleep(1.5)
        first = analysis_process_of(gateway)
        subprocess.run(["kill", "-9", str(first)], check=True)
        time.sleep(2.5)  # the gateway starts it again; the burst goes on meanwhile
        stop.set()
        for w in workers:
            w.join(timeout=10)
        assert analysis_process_of(gateway) != first
        assert len(answered) > 100
        deadline = time.monotonic() + 20
        while stored_tags(tmp_path / "tokenlens.db") != set(answered) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stored_tags(tmp_path / "tokenlens.db") == set(answered)  # every answered call, once
        with sqlite3.connect(tmp_path / "tokenlens.db") as conn:
            (rows,) = conn.execute("select count(*) from call where source = 'burst'").fetchone()
            (rolled,) = conn.execute(
                "select coalesce(sum(calls), 0) from usage_hourly where source = 'burst'"
            ).fetchone()
        assert rows == len(answered) and rolled == rows  # the rollups counted each call once too
    finally:
        stop.set()
        assert stop_gateway(gateway) == 0


def test_a_call_is_listed_within_a_second_of_its_answer(clients: Clients, gateway: Gateway) -> None:
    client = clients.openai()
    client.chat.completions.create(**CHAT)
    gateway.wait_calls(
        clients.source, 1, timeout=30
    )  # the analysis process is up (it starts with the gateway)
    for n in range(1, 6):
        client.chat.completions.create(**CHAT)
        answered = time.monotonic()
        while len(gateway.calls(source=clients.source, limit=100)) == n:
            assert time.monotonic() - answered < 1.0, "not listed within 1 s"
            time.sleep(0.02)
