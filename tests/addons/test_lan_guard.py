"""LAN guard: other machines' clients never reach this host's own services."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from mitm_helpers import WEB_PORT
from tokenlens.addons.lan_guard import LanGuard
from tokenlens.app import AppDeps


@pytest.mark.parametrize(
    "peer, address, refused",
    [
        ("192.0.2.7", ("127.0.0.1", 6379), True),
        ("192.0.2.7", ("169.254.169.254", 80), True),
        ("192.0.2.7", ("localhost", 6379), True),
        ("192.0.2.7", ("127.0.0.1", WEB_PORT), False),  # the dashboard
        ("192.0.2.7", ("localhost", 11434), False),  # a configured upstream (ollama)
        ("127.0.0.1", ("127.0.0.1", 6379), False),  # a local client can reach local services anyway
    ],
)
def test_other_machines_are_not_forwarded_to_local_services(
    deps: AppDeps, peer: str, address: tuple[str, int], refused: bool
) -> None:
    guard = LanGuard(deps)
    client = tflow.tclient_conn()
    client.peername = (peer, 50000)
    server = tflow.tserver_conn()
    server.address = address
    server.error = None
    asyncio.run(guard.server_connect(server_hooks.ServerConnectionHookData(server=server, client=client)))
    assert (server.error is not None) == refused
