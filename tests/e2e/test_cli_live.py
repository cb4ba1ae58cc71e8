"""Commands that talk to a running daemon, run as a user would (a subprocess of the installed console script)."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.gateway import Clients, Gateway


def tokenlens(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENLENS_HOME": str(gateway.home), "TOKENLENS_CONFIG": str(gateway.config)}
    return subprocess.run(
        [sys.executable, "-m", "tokenlens", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_status_shows_the_call_just_made(clients: Clients, gateway: Gateway) -> None:
    clients.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    gateway.wait_calls(clients.source)
    result = tokenlens(gateway, "status", "--port", str(gateway.port))
    assert result.returncode == 0, result.stderr
    assert (
        "is running" in result.stdout and clients.source in result.stdout and "gpt-4o-mini" in result.stdout
    )


def test_ui_prints_the_dashboard_url(gateway: Gateway) -> None:
    result = tokenlens(gateway, "ui", "--no-open", "--port", str(gateway.port))
    assert result.returncode == 0 and result.stdout.strip() == f"http://localhost:{gateway.port}/"
