"""A real gateway process (`tokenlens daemon`) in front of provider simulators, for end-to-end tests.

One simulator per provider, each with its own HTTPS port, so explicit-proxy traffic can be told apart by host
as it is in real life. The gateway trusts the simulators' CA through `server.upstream_ca`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from provider_sim import Simulator

PROVIDERS = ("openai", "anthropic", "google")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    url: str
    port: int
    home: Path
    config: Path
    process: subprocess.Popen[bytes]
    sims: dict[str, Simulator]
    log: Path

    def base_url(self, provider: str) -> str:
        return {
            "openai": f"{self.url}/proxy/openai/v1",
            "anthropic": f"{self.url}/proxy/anthropic",
            "google": f"{self.url}/proxy/google",
        }[provider]

    def calls(self, **params: Any) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/calls", params=params, timeout=10)
        response.raise_for_status()
        return list(response.json()["calls"])

    def wait_calls(self, source: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The calls recorded for `source` (oldest first), once at least `count` have been written."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls(source=source, limit=1000)
            if len(calls) >= count or time.monotonic() > deadline:
                return list(reversed(calls))
            time.sleep(0.05)

    def call(self, call_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/calls/{call_id}", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def ca_bundle(self) -> Path:
        return self.home / "ca-bundle.pem"


def write_config(path: Path, sims: dict[str, Simulator], extra: str = "") -> None:
    ca = next(iter(sims.values())).ca_file
    lines = ["server:", f"  upstream_ca: {ca}", "providers:"]
    for name, sim in sims.items():
        lines.append(f"  {name}: {{upstream: {sim.https_url}}}")
    path.write_text("\n".join(lines) + "\n" + extra)


def start_gateway(home: Path, config: Path, sims: dict[str, Simulator]) -> Gateway:
    port = free_port()
    log = home / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["TOKENLENS_HOME"] = str(home)
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenlens", "daemon", "--port", str(port), "--config", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Gateway(url, port, home, config, process, sims, log)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gateway not ready in 30 s:\n{log.read_text()}")


def stop_gateway(gateway: Gateway) -> int:
    gateway.process.send_signal(signal.SIGTERM)
    try:
        return gateway.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        raise


@pytest.fixture(scope="session")
def sims() -> Iterator[dict[str, Simulator]]:
    started = {name: Simulator().start() for name in PROVIDERS}
    yield started
    for sim in started.values():
        sim.stop()


@pytest.fixture(scope="session")
def gateway(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("tokenlens-home")
    config = home / "config.yaml"
    write_config(config, sims)
    running = start_gateway(home, config, sims)
    yield running
    code = stop_gateway(running)
    assert code == 0, running.log.read_text()


@pytest.fixture
def source() -> str:
    """A source name unique to the test, so its records can be found."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def proxy_env(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Explicit-proxy mode as a user sets it up: HTTPS_PROXY plus the CA bundle from `tokenlens ca`."""

    def apply() -> None:
        monkeypatch.setenv("HTTPS_PROXY", gateway.url)
        monkeypatch.setenv("SSL_CERT_FILE", str(gateway.ca_bundle()))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)

    return apply
