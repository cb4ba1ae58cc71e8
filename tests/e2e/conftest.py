"""Fixtures: provider simulators (one per provider) and a real `tokenlens daemon` in front of them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from harness.gateway import PROVIDERS, Clients, Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator


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
    # an OpenAI-compatible provider added by the user (served by the OpenAI simulator over plain HTTP)
    write_config(config, sims, f"  compat: {{upstream: '{sims['openai'].url}'}}\n")
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


@pytest.fixture
def clients(gateway: Gateway, source: str, proxy_env: Callable[[], None]) -> Clients:
    return Clients(gateway, source, proxy_env)
