"""`server.allowed_clients`: who may connect to the gateway port (loopback always)."""

from __future__ import annotations

import dataclasses

import pytest
from mitmproxy.test import tflow

from tokenlens.addons.ingress import Ingress, client_allowed
from tokenlens.app import AppDeps
from tokenlens.config import ConfigError, parse_settings


@pytest.mark.parametrize(
    ("peer", "allowed", "expected"),
    [
        ("127.0.0.1", (), True),
        ("127.8.9.10", (), True),
        ("::1", (), True),
        ("::ffff:127.0.0.1", (), True),
        ("192.168.1.5", (), False),
        ("8.8.8.8", (), False),
        ("192.168.1.5", ("192.168.1.0/24",), True),
        ("192.168.2.5", ("192.168.1.0/24",), False),
        ("::ffff:10.1.2.3", ("10.0.0.0/8",), True),
        ("fe80::1%eth0", ("fe80::/10",), True),
        ("not an address", ("0.0.0.0/0",), False),
    ],
)
def test_client_allowed(peer: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert client_allowed(peer, allowed) is expected


def test_a_client_not_allowed_is_disconnected_at_connect(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    outsider = tflow.tclient_conn()
    outsider.peername = ("192.0.2.7", 5555)
    ingress.client_connected(outsider)
    assert outsider.error and "allowed_clients" in outsider.error
    local = tflow.tclient_conn()
    local.peername = ("127.0.0.1", 5555)
    ingress.client_connected(local)
    assert not local.error
    current = deps.settings.get()
    server = dataclasses.replace(current.server, allowed_clients=("192.0.2.0/24",))
    deps.settings.replace(dataclasses.replace(current, server=server))
    allowed = tflow.tclient_conn()
    allowed.peername = ("192.0.2.7", 5555)
    ingress.client_connected(allowed)
    assert not allowed.error


def test_allowed_clients_config_is_validated() -> None:
    settings = parse_settings({"server": {"allowed_clients": ["10.0.0.1", "192.168.1.7/24"]}})
    assert settings.server.allowed_clients == ("10.0.0.1/32", "192.168.1.0/24")
    with pytest.raises(ConfigError) as error:
        parse_settings({"server": {"allowed_clients": ["lan"]}})
    assert error.value.field == "server.allowed_clients[0]"
