"""Access control: `server.allowed_clients` (who may connect to the gateway port; loopback always)."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from mitm_helpers import WEB_PORT, gateway_flow
from tokenlens.access import client_allowed
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.access import AccessControl
from tokenlens.addons.ingress import Ingress
from tokenlens.app import AppDeps
from tokenlens.config import ConfigError, parse_settings


class Admission:
    """Access control, then the ingress, as the pipeline runs them."""

    def __init__(self, deps: AppDeps) -> None:
        self.access, self.ingress = AccessControl(deps), Ingress(deps)

    def request(self, flow: http.HTTPFlow) -> None:
        self.access.request(flow)
        self.ingress.request(flow)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self.access.http_connect(flow)


CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "max_tokens": 50,
}


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
    access = AccessControl(deps)
    outsider = tflow.tclient_conn()
    outsider.peername = ("192.0.2.7", 5555)
    access.client_connected(outsider)
    assert outsider.error and "allowed_clients" in outsider.error
    local = tflow.tclient_conn()
    local.peername = ("127.0.0.1", 5555)
    access.client_connected(local)
    assert not local.error
    current = deps.settings.get()
    server = dataclasses.replace(current.server, allowed_clients=("192.0.2.0/24",))
    deps.settings.replace(dataclasses.replace(current, server=server))
    allowed = tflow.tclient_conn()
    allowed.peername = ("192.0.2.7", 5555)
    access.client_connected(allowed)
    assert not allowed.error


def test_allowed_clients_config_is_validated() -> None:
    settings = parse_settings({"server": {"allowed_clients": ["10.0.0.1", "192.168.1.7/24"]}})
    assert settings.server.allowed_clients == ("10.0.0.1/32", "192.168.1.0/24")
    with pytest.raises(ConfigError) as error:
        parse_settings({"server": {"allowed_clients": ["lan"]}})
    assert error.value.field == "server.allowed_clients[0]"


def test_a_foreign_host_on_the_gateway_port_is_refused(deps: AppDeps) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 reaches the gateway port with its own Host."""
    ingress = Admission(deps)
    flow = gateway_flow("/api/calls", method="GET", host="evil.example", port=8420)
    with taddons.context(ingress.access, ingress.ingress):
        ingress.request(flow)
    assert flow.response is not None and flow.response.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:9999"},
        {"Origin": "null"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"},
    ],
)
def test_a_web_page_cannot_call_through_the_proxy_routes(deps: AppDeps, headers: dict[str, str]) -> None:
    """Finding 3: a page's `fetch(..., {mode: "no-cors"})` was forwarded and spent the user's quota."""
    ingress = Admission(deps)
    flow = gateway_flow("/proxy/openai/v1/chat/completions", CHAT, headers)
    with taddons.context(ingress.access, ingress.ingress):
        ingress.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert exchange_of(flow) is None and flow.request.host == "localhost"


def test_same_origin_and_sdk_requests_are_not_browser_attacks(deps: AppDeps) -> None:
    ingress = Admission(deps)
    for headers in ({}, {"Origin": "http://localhost:8420"}, {"Sec-Fetch-Site": "same-origin"}):
        flow = gateway_flow("/proxy/openai/v1/chat/completions", CHAT, headers)
        with taddons.context(ingress.access, ingress.ingress):
            ingress.request(flow)
        assert flow.response is None and flow.request.host == "api.openai.com", headers


@pytest.mark.parametrize("host", ["127.0.0.1:9999", "evil.example", "evil.example:8420", "10.0.0.1:6379"])
def test_an_origin_form_request_is_never_forwarded_to_its_host_header(deps: AppDeps, host: str) -> None:
    """Finding 4: `Host: 127.0.0.1:<another port>` or `Host: evil.example` was forwarded to that host."""
    ingress = Admission(deps)
    flow = gateway_flow("/v1/models", method="GET", absolute=False)
    flow.request.headers["host"] = host
    flow.request.host, _, port = host.partition(":")
    flow.request.port = int(port or 80)
    with taddons.context(ingress.access, ingress.ingress):
        ingress.request(flow)
    if host.startswith("127.0.0.1"):  # the gateway's own name: its own dashboard, whatever the port says
        assert (flow.request.host, flow.request.port) == ("127.0.0.1", WEB_PORT)
    else:
        assert flow.response is not None and flow.response.status_code == 403


def lan_deps(deps: AppDeps) -> AppDeps:
    deps.settings.replace(
        parse_settings(
            {
                "server": {"host": "0.0.0.0", "api_token": "T0KEN"},
                "providers": {"openai": {"upstream": "https://api.openai.com"}},
            }
        )
    )
    return deps


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 401),
        ({"X-TokenLens-Token": "wrong"}, 401),
        ({"X-TokenLens-Token": "T0KEN"}, None),
        ({"Proxy-Authorization": "Bearer T0KEN"}, None),
        ({"Proxy-Authorization": "Basic " + base64.b64encode(b"me:T0KEN").decode()}, None),
    ],
)
def test_lan_proxy_routes_need_the_api_token(
    deps: AppDeps, headers: dict[str, str], status: int | None
) -> None:
    """Finding 8: with a non-loopback host, /api needed the token but /proxy did not."""
    ingress = Admission(lan_deps(deps))
    flow = gateway_flow("/proxy/openai/v1/chat/completions", CHAT, headers)
    with taddons.context(ingress.access, ingress.ingress):
        ingress.request(flow)
    if status is None:
        assert flow.response is None and flow.request.host == "api.openai.com"
        assert "x-tokenlens-token" not in flow.request.headers
        assert "proxy-authorization" not in flow.request.headers  # the gateway's token never goes upstream
    else:
        assert flow.response is not None and flow.response.status_code == status


def test_lan_explicit_proxy_traffic_needs_the_token(deps: AppDeps) -> None:
    ingress = Admission(lan_deps(deps))
    plain = gateway_flow("/", method="GET", host="example.com", port=80)
    with taddons.context(ingress.access, ingress.ingress):
        ingress.request(plain)
    assert plain.response is not None and plain.response.status_code == 407
    connect = tflow.tflow()
    connect.request = http.Request.make("CONNECT", "https://api.openai.com:443/", b"", {})
    connect.request.authority = "api.openai.com:443"
    ingress.http_connect(connect)
    assert connect.response is not None and connect.response.status_code == 407
    connect.response = None
    connect.request.headers["proxy-authorization"] = "Bearer T0KEN"
    ingress.http_connect(connect)
    assert connect.response is None
    inside = gateway_flow("/v1/chat/completions", CHAT, host="api.openai.com", port=443, scheme="https")
    inside.client_conn = connect.client_conn  # a request inside the authorised tunnel
    inside.client_conn.tls = True
    with taddons.context(ingress.access, ingress.ingress):
        ingress.request(inside)
    assert inside.response is None and exchange_of(inside) is not None
