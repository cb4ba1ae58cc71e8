"""Harness: a real gateway process (`tokenlens daemon`) in front of provider simulators, for end-to-end tests.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

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


@dataclass
class Clients:
    """Official SDK clients for one test: through the gateway (in a mode) and straight to the simulator."""

    gateway: Gateway
    source: str
    proxy_env: Callable[[], None]

    def sim(self, provider: str) -> Simulator:
        return self.gateway.sims[provider]

    def _base(self, provider: str, mode: str) -> str:
        if mode == "direct":
            return self.sim(provider).base_url(provider)
        if mode == "proxy":
            self.proxy_env()
            return self.sim(provider).base_url(provider, https=True)
        return self.gateway.base_url(provider)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"X-TokenLens-Source": self.source, **(extra or {})}

    def openai(self, mode: str = "base_url", headers: dict[str, str] | None = None) -> Any:
        import openai

        return openai.OpenAI(
            base_url=self._base("openai", mode),
            api_key="sk-test",
            max_retries=0,
            default_headers=self.headers(headers),
        )

    def anthropic(self, mode: str = "base_url", headers: dict[str, str] | None = None) -> Any:
        import anthropic

        return anthropic.Anthropic(
            base_url=self._base("anthropic", mode),
            api_key="sk-ant-test",
            max_retries=0,
            default_headers=self.headers(headers),
        )

    def google(self, mode: str = "base_url", headers: dict[str, str] | None = None) -> Any:
        from google import genai
        from google.genai import types

        options = types.HttpOptions(
            base_url=self._base("google", mode), api_version="v1beta", headers=self.headers(headers)
        )
        return genai.Client(api_key="g-test", http_options=options)
