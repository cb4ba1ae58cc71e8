"""Team scale (issue 11): several real gateway processes on one PostgreSQL store, one simulator.

Skipped, with the reason, when no PostgreSQL server answers at 127.0.0.1:5432 (database `test`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.gateway import Gateway, free_port, start_gateway, stop_gateway, write_config
from harness.pg import UNREACHABLE, pg_schema
from provider_sim import Simulator
from published_prices import expected_cost

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with pg_schema() as url:
        if url is None:
            pytest.skip(UNREACHABLE)
        yield url


@pytest.fixture(scope="module")
def fleet(
    sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory, pg_url: str
) -> Iterator[list[Gateway]]:
    """Three gateways, each with its own data directory and YAML file, sharing the PostgreSQL store."""
    running: list[Gateway] = []
    try:
        for index in range(3):
            home = tmp_path_factory.mktemp(f"fleet-{index}")
            config = home / "config.yaml"
            write_config(config, sims, f"timezone: UTC\nstorage: {{url: '{pg_url}'}}\n")
            running.append(start_gateway(home, config, sims))
        yield running
    finally:
        for gateway in running:
            assert stop_gateway(gateway) == 0, gateway.log.read_text()


def body(source: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 12,
        "messages": [{"role": "user", "content": f"please answer briefly marker {source}"}],
    }


def put(gateway: Gateway, path: str, data: Any) -> None:
    response = httpx.put(f"{gateway.url}{path}", json=data, timeout=10)
    assert response.status_code == 200, response.text


def global_day(gateway: Gateway) -> dict[str, Any]:
    caps = httpx.get(f"{gateway.url}/api/usage/budget-status", timeout=10).json()["caps"]
    found: dict[str, Any] = next((c for c in caps if (c["scope"], c["period"]) == ("global", "day")), {})
    return found


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_three_gateways_hold_one_budget_and_lose_no_record(fleet: list[Gateway]) -> None:
    a = fleet[0]
    source = f"fleet-{uuid.uuid4().hex[:10]}"
    usage = a.sims["openai"].expected_usage("openai", "chat", body(source))
    cost = expected_cost(MODEL, usage)
    put(a, "/api/settings/budget", {"daily_usd": 1000.0})
    baseline = wait_for(lambda: global_day(a)["spent_usd"] is not None and global_day(a))["spent_usd"]
    room = 6.5 * cost
    put(a, "/api/settings/budget", {"daily_usd": baseline + room})  # applies to every gateway
    limit = baseline + room
    for gateway in fleet[1:]:
        assert wait_for(lambda g=gateway: global_day(g).get("limit_usd") == limit, 2.0)
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(60)
    headers = {"X-TokenLens-Source": source, "x-sim-delay-ms": "300"}

    def one(i: int) -> None:
        gateway = fleet[i % 3]
        barrier.wait()
        response = httpx.post(
            f"{gateway.base_url('openai')}/chat/completions", json=body(source), headers=headers, timeout=30
        )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 60 and set(statuses) <= {200, 429}, statuses
    # every gateway's records are in the one store: any gateway lists all 60 (the team's dashboard)
    calls = a.wait_calls(source, 60)
    assert len(calls) == 60
    ok = [c for c in calls if c["outcome"] == "ok"]
    assert len(ok) == statuses.count(200) >= 1
    assert all(c["blocked_by"] == "budget" for c in calls if c["outcome"] == "blocked")
    marker = f"marker {source}".encode()
    assert sum(marker in r.body for r in a.sims["openai"].requests) == len(ok)
    spent = sum(c["cost_usd"] for c in ok)
    assert spent == pytest.approx(len(ok) * cost, rel=1e-9)
    worst = [a.call(c["id"])["details"]["controls"]["worst_case"]["worst_case_usd"] for c in ok]
    largest_error = max(abs(w - cost) for w in worst)
    assert spent <= room + largest_error + 1e-12  # the overshoot bound, for the fleet
    # the unused leases go back: the store's row shows the fleet's spend and nothing reserved
    assert wait_for(lambda: global_day(fleet[1])["reserved_usd"] < 1e-9, 5.0)
    assert global_day(fleet[2])["spent_usd"] == pytest.approx(baseline + spent, rel=1e-9)
    # the rollups behind the dashboard see the whole team's calls too
    sources = httpx.get(f"{fleet[2].url}/api/usage/sources", timeout=10).json()["items"]
    mine = next(item for item in sources if item["name"] == source)
    assert mine["cost_usd"] == pytest.approx(spent, rel=1e-9) and mine["blocked_calls"] == 60 - len(ok)
    put(a, "/api/settings/budget", {})


def test_a_config_put_on_one_gateway_applies_on_another_within_a_second(fleet: list[Gateway]) -> None:
    a, b = fleet[0], fleet[1]
    source = f"fleet-{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    put(a, "/api/config/quotas", {"kill_switches": [source]})

    def switched_off() -> bool:
        quotas = httpx.get(f"{b.url}/api/config/quotas", timeout=5).json()
        return source in quotas["kill_switches"]

    assert wait_for(switched_off, 1.0), "gateway B did not apply the change within a second"
    assert time.monotonic() - started <= 1.0
    response = httpx.post(
        f"{b.base_url('openai')}/chat/completions",
        json=body(source),
        headers={"X-TokenLens-Source": source},
        timeout=10,
    )
    assert response.status_code == 403 and response.headers["x-tokenlens-blocked-by"] == "kill_switch"
    assert source not in b.config.read_text()  # B's file is its initial values; the store carries the change
    put(a, "/api/config/quotas", {})
    assert wait_for(lambda: not switched_off(), 1.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the SQLite file in the data directory) or a fresh PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield None
        return
    with pg_schema() as url:
        if url is None:
            pytest.skip(UNREACHABLE)
        yield url


def test_workers_share_the_port_and_the_budget(
    sims: dict[str, Simulator], tmp_path: Path, store_url: str | None
) -> None:
    """`tokenlens daemon --workers 3`: one port, three processes, one budget."""
    extra = "timezone: UTC\n"
    if store_url is not None:
        extra += f"storage: {{url: '{store_url}'}}\n"
    source = f"workers-{uuid.uuid4().hex[:10]}"
    usage = sims["openai"].expected_usage("openai", "chat", body(source))
    cost = expected_cost(MODEL, usage)
    room = 5.5 * cost
    config = tmp_path / "config.yaml"
    write_config(
        config, sims, extra + f"quotas: {{source_limits: [{{source: {source}, daily_usd: {room}}}]}}\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["TOKENLENS_HOME"] = str(tmp_path)
    log = tmp_path / "daemon.log"
    command = [sys.executable, "-m", "tokenlens", "daemon", "--port", str(port), "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--workers", "3"], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_for(ready, 30), log.read_text()
        workers = wait_for(lambda: len(_worker_pids(process.pid)) == 3 and _worker_pids(process.pid), 10)
        assert workers, log.read_text()
        statuses: list[int] = []
        lock = threading.Lock()
        barrier = threading.Barrier(40)

        def one() -> None:
            barrier.wait()
            with httpx.Client() as client:  # a connection of its own: the kernel picks a worker
                response = client.post(
                    f"{url}/proxy/openai/v1/chat/completions",
                    json=body(source),
                    headers={"X-TokenLens-Source": source, "x-sim-delay-ms": "300"},
                    timeout=30,
                )
            with lock:
                statuses.append(response.status_code)

        threads = [threading.Thread(target=one) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = statuses.count(200)
        assert ok + statuses.count(429) == 40 and ok >= 1, statuses

        def recorded() -> list[dict[str, Any]]:
            found = httpx.get(f"{url}/api/calls", params={"source": source, "limit": 1000}, timeout=10)
            calls: list[dict[str, Any]] = found.json()["calls"]
            return calls if len(calls) >= 40 else []

        calls = wait_for(recorded, 10)
        assert len(calls) == 40
        spent = sum(c["cost_usd"] or 0 for c in calls if c["outcome"] == "ok")
        assert spent == pytest.approx(ok * cost, rel=1e-9)
        worst = max(
            httpx.get(f"{url}/api/calls/{c['id']}", timeout=10).json()["details"]["controls"]["worst_case"][
                "worst_case_usd"
            ]
            for c in calls
            if c["outcome"] == "ok"
        )
        assert spent <= room + abs(worst - cost) + 1e-12
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, log.read_text()
    assert not _worker_pids(process.pid)


def _worker_pids(parent: int) -> list[int]:
    """The live child processes of `parent` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found
