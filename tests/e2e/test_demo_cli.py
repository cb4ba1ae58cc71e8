"""`tokenlens demo`: fills `$TOKENLENS_HOME/demo` and serves the dashboard on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness.gateway import free_port

pytestmark = pytest.mark.e2e


def test_demo_fills_a_separate_directory_and_serves_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home).mkdir()
    (home / "config.yaml").write_text("budgets: {daily_usd: 1.0}\n")  # the user's own, left alone
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["TOKENLENS_HOME"] = str(home)
    env.pop("TOKENLENS_CONFIG", None)
    log = tmp_path / "demo.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenlens", "demo", "--days", "3", "--port", str(port), "--seed", "5"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        calls = httpx.get(f"{url}/api/calls", params={"limit": 1000}, timeout=10).json()["calls"]
        assert len(calls) > 100
        assert {c["provider"] for c in calls} == {"anthropic", "openai", "google"}
        assert httpx.get(f"{url}/api/usage/kpi", timeout=10).json()["calls"] == len(calls)
        assert httpx.get(f"{url}/api/settings/budget", timeout=10).json()["monthly_usd"] == 60.0
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and "Overview" in page.text
        assert (home / "demo" / "tokenlens.db").exists()
        assert not (home / "tokenlens.db").exists()
        assert (home / "config.yaml").read_text() == "budgets: {daily_usd: 1.0}\n"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()
    assert "Demo data:" in log.read_text()
