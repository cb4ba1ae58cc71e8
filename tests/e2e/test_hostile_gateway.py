"""Through the real gateway port: clients not allowed are refused, rebound Host names and cross-site WebSocket
handshakes get nothing, API keys never reach the store, the log, exports or the API, and arbitrary request
bodies always get an answer and a record."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.gateway import Clients, Gateway
from harness.network import lan_address

NON_LOOPBACK = lan_address() or "192.0.2.2"  # this machine's own non-loopback address


@pytest.mark.skipif(lan_address() is None, reason="this machine has no non-loopback address to test from")
def test_a_client_not_in_allowed_clients_is_disconnected(gateway: Gateway) -> None:
    """The gateway listens on 127.0.0.1 only; a connection from this machine's LAN address is not loopback."""
    transport = httpx.HTTPTransport(local_address=NON_LOOPBACK)
    with httpx.Client(transport=transport, timeout=5) as outsider:
        with pytest.raises(httpx.TransportError):
            outsider.get(f"{gateway.url}/api/calls")
        with pytest.raises(httpx.TransportError):
            outsider.post(f"{gateway.base_url('openai')}/chat/completions", json={"model": "gpt-4o-mini"})
    assert httpx.get(f"{gateway.url}/api/calls", timeout=5).status_code == 200
    assert "not in server.allowed_clients" in gateway.log.read_text()


def test_a_rebound_host_name_gets_403_on_the_gateway_port(gateway: Gateway) -> None:
    for path in ("/api/calls", "/api/config/server", "/"):
        response = httpx.get(f"{gateway.url}{path}", headers={"Host": f"evil.example:{gateway.port}"})
        assert response.status_code == 403, path
        assert "calls" not in response.text or "error" in response.json()


def test_the_live_websocket_refuses_another_origin(gateway: Gateway) -> None:
    from simple_websocket import Client, ConnectionError

    with pytest.raises(ConnectionError):
        Client.connect(f"ws://127.0.0.1:{gateway.port}/api/live", headers={"Origin": "http://evil.example"})
    ok = Client.connect(f"ws://127.0.0.1:{gateway.port}/api/live")  # a non-browser client sends no Origin
    ok.close()


def test_api_keys_never_reach_the_store_the_log_exports_or_the_api(
    clients: Clients, gateway: Gateway
) -> None:
    keys = {
        name: f"sk-SECRET{uuid.uuid4().hex}" for name in ("bearer", "x_api_key", "goog_header", "goog_query")
    }
    hdr = clients.headers()
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    httpx.post(
        f"{gateway.base_url('openai')}/chat/completions",
        json=chat,
        headers={**hdr, "Authorization": f"Bearer {keys['bearer']}"},
    ).raise_for_status()
    httpx.post(
        f"{gateway.base_url('anthropic')}/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={**hdr, "x-api-key": keys["x_api_key"], "anthropic-version": "2023-06-01"},
    ).raise_for_status()
    google = f"{gateway.base_url('google')}/v1beta/models/gemini-2.0-flash:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    httpx.post(google, json=body, headers={**hdr, "x-goog-api-key": keys["goog_header"]}).raise_for_status()
    httpx.post(f"{google}?key={keys['goog_query']}", json=body, headers=hdr).raise_for_status()
    httpx.post(  # an error answer too (its URL and headers are recorded as well)
        f"{google.replace('gemini-2.0-flash', 'nope')}?key={keys['goog_query']}",
        json=body,
        headers={**hdr, "x-sim-status": "500"},
    )
    calls = gateway.wait_calls(clients.source, count=5)
    assert len(calls) == 5
    seen = clients.sim("google").requests[-1]
    assert keys["goog_query"] in seen.query  # the key did reach the provider: it is just never kept
    places: dict[str, bytes] = {}
    for suffix in ("", "-wal"):
        path = gateway.home / f"tokenlens.db{suffix}"
        if path.exists():
            places[path.name] = path.read_bytes()
    places["daemon log"] = gateway.log.read_bytes()
    for fmt in ("jsonl", "csv"):
        done = subprocess.run(
            [sys.executable, "-m", "tokenlens", "export", "--format", fmt, "--data-dir", str(gateway.home)],
            capture_output=True,
            timeout=60,
            env={"TOKENLENS_CONFIG": str(gateway.config), "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, done.stderr
        assert clients.source.encode() in done.stdout
        places[f"export {fmt}"] = done.stdout + done.stderr
    api = [httpx.get(f"{gateway.url}/api/calls", params={"source": clients.source, "limit": 100}).content]
    api += [httpx.get(f"{gateway.url}/api/calls/{c['id']}").content for c in calls]
    api.append(httpx.get(f"{gateway.url}/api/export", params={"format": "jsonl"}).content)
    places["api"] = b"".join(api)
    for where, data in places.items():
        for name, key in keys.items():
            assert key.encode() not in data, f"{name} found in {where}"
            assert key[len("sk-SECRET") :].encode() not in data, f"part of {name} found in {where}"


PATHS = [
    "/proxy/openai/v1/chat/completions",
    "/proxy/openai/v1/responses",
    "/proxy/openai/v1/embeddings",
    "/proxy/anthropic/v1/messages",
    "/proxy/google/v1beta/models/gemini-2.0-flash:generateContent",
    "/proxy/google/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
provider_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.text(max_size=20), st.integers(), st.none(), st.just("gpt-4o-mini")),
        "messages": json_values,
        "contents": json_values,
        "stream": json_values,
        "max_tokens": json_values,
        "input": json_values,
        "tools": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: __import__("json").dumps(v).encode()),
    provider_like.map(lambda v: __import__("json").dumps(v).encode()),
)


def test_arbitrary_bodies_get_an_answer_and_a_record(clients: Clients, gateway: Gateway) -> None:
    sent = 0

    @settings(
        max_examples=60,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        path=st.sampled_from(PATHS), body=bodies, content_type=st.sampled_from(["application/json", "text/x"])
    )
    def check(path: str, body: bytes, content_type: str) -> None:
        nonlocal sent
        response = httpx.post(
            f"{gateway.url}{path}",
            content=body,
            headers={**clients.headers(), "content-type": content_type},
            timeout=15,
        )
        sent += 1
        assert 200 <= response.status_code < 600
        response.read()

    check()
    calls = gateway.wait_calls(clients.source, count=sent, timeout=20)
    assert len(calls) == sent
    assert all(c["status"] is not None for c in calls)
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
