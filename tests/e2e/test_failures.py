"""Bad input and broken upstreams: the client gets the upstream's answer or a provider-format error, the
gateway keeps serving, and every call is recorded (docs/gateway.md)."""

from __future__ import annotations

import json
import socket
import time

import anthropic
import httpx
import openai
import pytest

from harness.gateway import Clients, Gateway, free_port, start_gateway, stop_gateway, write_config

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count to twenty slowly"}]}


def healthy(gateway: Gateway) -> bool:
    return httpx.get(f"{gateway.url}/healthz", timeout=5).json() == {"status": "ok"}


def test_openai_stream_cut_by_the_upstream_is_recorded_estimated(clients: Clients, gateway: Gateway) -> None:
    client = clients.openai(headers={"x-sim-cut-after": "4", "x-sim-reply-words": "40"})
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(**CHAT, stream=True):
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert received
    (call,) = gateway.wait_calls(clients.source)
    assert call["usage_source"] == "estimated" and call["outcome"] == "error" and call["error"]
    assert call["stream"] is True and call["output_tokens"] > 0 and call["input_tokens"] > 0
    assert call["priced"] is True and call["cost_usd"] > 0
    assert healthy(gateway)


def test_anthropic_stream_cut_keeps_the_input_side_already_reported(
    clients: Clients, gateway: Gateway
) -> None:
    request = {
        "model": "claude-haiku-4-5",
        "max_tokens": 500,
        "messages": [{"role": "user", "content": "go on"}],
    }
    client = clients.anthropic(
        headers={"x-sim-cut-after": "5", "x-sim-reply-words": "60", "x-sim-cache-read": "30"}
    )
    with pytest.raises((anthropic.APIConnectionError, httpx.HTTPError, Exception)):
        with client.messages.stream(**request) as stream:
            for _ in stream.text_stream:
                pass
    (call,) = gateway.wait_calls(clients.source)
    usage = clients.sim("anthropic").expected_usage(
        "anthropic", "messages", request, {"x-sim-cache-read": "30"}
    )
    assert call["usage_source"] == "estimated"
    assert call["input_tokens"] == usage["input_tokens"] and call["cache_read_tokens"] == 30
    assert 0 < call["output_tokens"] < usage["output_tokens"]


def test_client_disconnecting_mid_stream_is_recorded(clients: Clients, gateway: Gateway) -> None:
    body = {**CHAT, "stream": True}
    headers = {**clients.headers(), "x-sim-chunk-delay-ms": "100", "x-sim-reply-words": "30"}
    with httpx.stream(
        "POST", f"{gateway.base_url('openai')}/chat/completions", json=body, headers=headers
    ) as r:
        pieces = r.iter_raw()
        first = [next(pieces) for _ in range(3)]
        assert first[0].startswith(b"data: ")
    (call,) = gateway.wait_calls(clients.source)
    assert call["outcome"] == "error" and "disconnect" in (call["error"] or "").lower()
    assert call["usage_source"] == "estimated" and call["output_tokens"] > 0
    assert healthy(gateway)


def test_stream_arrives_chunk_by_chunk_not_buffered(clients: Clients, gateway: Gateway) -> None:
    """Behaviour, not speed: the first chunk is in the client's hands long before the stream ends."""
    body = {**CHAT, "stream": True}
    headers = {
        **clients.headers(),
        "x-sim-chunk-delay-ms": "150",
        "x-sim-reply-words": "6",
        "x-sim-chunk-words": "1",
    }
    arrivals = []
    with httpx.stream(
        "POST", f"{gateway.base_url('openai')}/chat/completions", json=body, headers=headers
    ) as r:
        for piece in r.iter_raw():
            arrivals.append((time.monotonic(), piece))
    assert len(arrivals) >= 6
    assert (
        arrivals[-1][0] - arrivals[0][0] >= 0.6
    )  # 6+ events 150 ms apart upstream, so not one buffered body


def test_gzip_stream_is_passed_compressed_and_metered(clients: Clients, gateway: Gateway) -> None:
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    client = clients.openai(headers={"x-sim-gzip": "1"})
    chunks = list(client.chat.completions.create(**request))
    assert chunks[-1].usage is not None
    (call,) = gateway.wait_calls(clients.source)
    expected = clients.sim("openai").expected_usage("openai", "chat", request, {"x-sim-gzip": "1"})
    assert (call["input_tokens"], call["output_tokens"], call["usage_source"]) == (
        expected["input_tokens"],
        expected["output_tokens"],
        "provider",
    )


def test_gzip_answer_is_metered(clients: Clients, gateway: Gateway) -> None:
    answer = clients.openai(headers={"x-sim-gzip": "1"}).chat.completions.create(**CHAT)
    assert answer.usage is not None
    (call,) = gateway.wait_calls(clients.source)
    assert (call["input_tokens"], call["output_tokens"]) == (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )
    assert (
        json.loads(gateway.call(call["id"])["response_body"])["usage"]["prompt_tokens"]
        == answer.usage.prompt_tokens
    )


def test_upstream_garbage_gets_a_provider_format_502(clients: Clients, gateway: Gateway) -> None:
    with pytest.raises(anthropic.InternalServerError) as error:
        clients.anthropic(headers={"x-sim-garbage": "1"}).messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert error.value.status_code == 502
    assert error.value.body["type"] == "error" and "upstream" in error.value.body["error"]["message"]
    (call,) = gateway.wait_calls(clients.source)
    assert (call["status"], call["outcome"]) == (502, "error")
    assert healthy(gateway)


def test_body_that_is_not_json_is_forwarded_as_is(clients: Clients, gateway: Gateway) -> None:
    raw = b'{"model": "gpt-4o-mini", "messages": [truncated'
    via = httpx.post(f"{gateway.base_url('openai')}/chat/completions", content=raw, headers=clients.headers())
    sim = clients.sim("openai")
    assert sim.requests[-1].body == raw
    direct = httpx.post(f"{sim.base_url('openai')}/chat/completions", content=raw)
    assert via.status_code == direct.status_code and via.status_code >= 400
    assert via.json()["error"]["message"] == direct.json()["error"]["message"]
    (call,) = gateway.wait_calls(clients.source)
    assert call["status"] == via.status_code and call["outcome"] == "error" and call["model"] is None


def test_huge_body_goes_through(clients: Clients, gateway: Gateway) -> None:
    big = "word " * 1_000_000  # 5 MB of text
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": big}]}
    answer = clients.openai().chat.completions.create(**request)
    assert answer.usage is not None and answer.usage.prompt_tokens > 1_000_000
    (call,) = gateway.wait_calls(clients.source)
    assert call["input_tokens"] == answer.usage.prompt_tokens and call["priced"] is True


def test_unknown_provider_name(clients: Clients, gateway: Gateway) -> None:
    """No provider behind it, so not a call: answered 404 naming the known ones, counted apart."""
    before = httpx.get(f"{gateway.url}/api/status").json()["passthrough_by_reason"].get("unknown_provider", 0)
    response = httpx.post(
        f"{gateway.url}/proxy/mistral/v1/chat/completions", json=CHAT, headers=clients.headers()
    )
    assert response.status_code == 404
    assert "mistral" in response.json()["error"]["message"]
    assert "openai" in response.json()["error"]["message"]
    after = httpx.get(f"{gateway.url}/api/status").json()["passthrough_by_reason"].get("unknown_provider", 0)
    assert after == before + 1
    assert gateway.calls(source=clients.source) == []


def test_headers_stripped_and_keys_never_stored(clients: Clients, gateway: Gateway) -> None:
    headers = {
        "X-TokenLens-Tag-Team": "core",
        "X-TokenLens-Tag-Feature": "search",
        "X-TokenLens-Session": "sess-9",
    }
    clients.openai(headers=headers).chat.completions.create(**CHAT)
    seen = clients.sim("openai").requests[-1]
    assert not [h for h in seen.headers if h.startswith("x-tokenlens-")]
    assert seen.headers["authorization"] == "Bearer sk-test"
    (call,) = gateway.wait_calls(clients.source)
    assert call["tags"] == {"team": "core", "feature": "search"} and call["session_id"] == "sess-9"
    stored = json.dumps(gateway.call(call["id"]))
    assert "sk-test" not in stored
    assert gateway.call(call["id"])["request_body"] is not None


def test_non_provider_hosts_are_tunnelled_untouched(gateway: Gateway, clients: Clients) -> None:
    """In HTTPS_PROXY mode, a host that is not a provider keeps its own certificate and is not recorded."""
    from provider_sim import Simulator

    with Simulator() as other:
        assert other.https_url and other.ca_file
        before = len(gateway.calls(limit=1000))
        with httpx.Client(proxy=gateway.url, verify=other.client_ssl_context()) as client:
            response = client.get(f"{other.https_url}/v1/models", headers={"authorization": "Bearer x"})
        assert response.status_code == 200  # trusted with the other server's own CA: not intercepted
        time.sleep(0.3)
        assert len(gateway.calls(limit=1000)) == before


def test_live_feed_sends_a_call_event(clients: Clients, gateway: Gateway) -> None:
    from simple_websocket import Client

    ws = Client.connect(f"ws://127.0.0.1:{gateway.port}/api/live")
    try:
        clients.openai().chat.completions.create(**CHAT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = ws.receive(timeout=deadline - time.monotonic())
            if message is None:
                continue
            event = json.loads(message)
            if event["type"] == "call" and event["data"]["source"] == clients.source:
                assert event["data"]["input_tokens"] > 0 and event["data"]["cost_usd"] > 0
                return
        pytest.fail("no call event for this source on /api/live")
    finally:
        ws.close()


def test_upstream_down_and_clean_shutdown_flush(tmp_path, sims) -> None:  # type: ignore[no-untyped-def]
    """A provider whose upstream refuses connections gets a provider-format 502; SIGTERM writes every record."""
    closed = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, sims, f"  deadend: {{upstream: 'http://127.0.0.1:{closed}', format: anthropic}}\n")
    # write_config ends with the providers block, so the extra provider line lands in it
    gateway = start_gateway(tmp_path, config, sims)
    try:
        client = anthropic.Anthropic(base_url=f"{gateway.url}/proxy/deadend", api_key="k", max_retries=0)
        with pytest.raises(anthropic.InternalServerError) as error:
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert error.value.status_code == 502 and error.value.body["error"]["type"] == "api_error"
        fast = openai.OpenAI(base_url=gateway.base_url("openai"), api_key="k", max_retries=0)
        for _ in range(20):
            fast.chat.completions.create(**CHAT)
    finally:
        assert stop_gateway(gateway) == 0  # immediately after the last answer: records still queued
    import sqlite3

    with sqlite3.connect(tmp_path / "tokenlens.db") as db:
        rows = db.execute("select provider, status from call").fetchall()
    assert sorted(set(rows)) == [("deadend", 502), ("openai", 200)]
    assert len(rows) == 21
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", gateway.port))
