"""A gateway on the LAN (issue 17, finding 8): with a non-loopback `server.host` and `server.api_token`, proxy
traffic needs the token like the API does, and clients on other machines are not forwarded to this host's
loopback services. The "other machine" is this machine's own LAN address, which is not loopback."""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest

from harness.gateway import Gateway, start_gateway, stop_gateway, write_config
from harness.network import lan_address
from provider_sim import Simulator

LAN = lan_address() or "192.0.2.2"
TOKEN = "lan-token-" + uuid.uuid4().hex
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


pytestmark = pytest.mark.skipif(lan_address() is None, reason="this machine has no non-loopback address")


@pytest.fixture(scope="module")
def lan(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("lan")
    config = home / "config.yaml"
    write_config(config, sims)
    text = config.read_text().replace(
        "server:\n",
        f"server:\n  host: 0.0.0.0\n  api_token: {TOKEN}\n  allowed_clients: ['{LAN}/32']\n"
        f"  allowed_hosts: ['{LAN}']\n",
        1,
    )
    config.write_text(text)
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


def outsider() -> httpx.Client:
    """A client connecting from the LAN address, to the gateway's LAN address."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=LAN), timeout=10)


def test_proxy_routes_need_the_token(lan: Gateway, sims: dict[str, Simulator]) -> None:
    url = f"http://{LAN}:{lan.port}/proxy/openai/v1/chat/completions"
    seen = len(sims["openai"].requests)
    with outsider() as client:
        assert client.post(url, json=CHAT).status_code == 401
        assert client.post(url, json=CHAT, headers={"X-TokenLens-Token": "wrong"}).status_code == 401
        assert len(sims["openai"].requests) == seen
        ok = client.post(url, json=CHAT, headers={"X-TokenLens-Token": TOKEN})
        assert ok.status_code == 200, ok.text
        assert "x-tokenlens-token" not in sims["openai"].requests[-1].headers
        assert client.get(f"http://{LAN}:{lan.port}/api/calls").status_code == 401
        calls = client.get(f"http://{LAN}:{lan.port}/api/calls", headers={"Authorization": f"Bearer {TOKEN}"})
        assert calls.status_code == 200


def test_proxy_mode_needs_the_token_and_never_reaches_local_services(
    lan: Gateway, sims: dict[str, Simulator]
) -> None:
    local_service = sims["openai"].url  # a plain-HTTP service listening on this host's loopback only
    assert local_service.startswith("http://127.0.0.1:")
    credentials = base64.b64encode(f"me:{TOKEN}".encode()).decode()
    seen = len(sims["openai"].requests)
    with socket.create_connection((LAN, lan.port), source_address=(LAN, 0), timeout=10) as s:
        s.sendall(f"GET {local_service}/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        first = s.recv(2000)
        assert first.split(b" ")[1] == b"407", first  # no token
    with socket.create_connection((LAN, lan.port), source_address=(LAN, 0), timeout=10) as s:
        request = (
            f"GET {local_service}/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Proxy-Authorization: Basic {credentials}\r\nConnection: close\r\n\r\n"
        )
        s.sendall(request.encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        assert answer.split(b" ")[1] != b"200", answer[:300]  # refused: a local address of the gateway host
    with socket.create_connection((LAN, lan.port), source_address=(LAN, 0), timeout=10) as s:
        s.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        assert s.recv(200).split(b" ")[1] == b"407"
    assert len(sims["openai"].requests) == seen
