"""WebSocket model calls through a real gateway (issue 16, docs/gateway.md): the Responses API WebSocket mode with
`client.responses.connect()` and the Realtime API with `client.realtime.connect()`, against the simulator.

Each `response.create` frame is one call; the upgrade is none. Expected tokens come from the simulator's
rules (`provider_sim.usage`, `provider_sim.realtime_api`), costs from published prices written here or in
`published_prices`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness.expect import assert_metered
from harness.gateway import Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator
from provider_sim.client import RESPONSES_FINAL, audio, realtime_turn, turn
from published_prices import expected_cost

CONFIG = """timezone: UTC
routing:
  aliases:
    - {from: gpt-team, to: gpt-4o-mini}
"""
# gpt-realtime, USD per million tokens (openai.com/api/pricing): text in, cached in (text and audio), text
# out, audio in, audio out.
REALTIME = {"text_in": 4.00, "cached": 0.40, "text_out": 16.00, "audio_in": 32.00, "audio_out": 64.00}


@pytest.fixture(scope="module")
def gw(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("websocket-home")
    config = home / "config.yaml"
    write_config(config, sims, CONFIG)
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


@pytest.fixture
def source() -> str:
    return f"ws-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sim(sims: dict[str, Simulator]) -> Simulator:
    sims["openai"].set_default_headers({})
    return sims["openai"]


@pytest.fixture(autouse=True)
def reset(gw: Gateway) -> Iterator[None]:
    yield
    assert httpx.put(f"{gw.url}/api/config/quotas", json={}, timeout=10).status_code == 200


def client(gw: Gateway, source: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.base_url("openai"),
        api_key="sk-test",
        max_retries=0,
        timeout=20,
        default_headers={"X-TokenLens-Source": source, **headers},
    )


def socket_of(sim: Simulator, marker: str) -> Any:
    """The simulator's upgrade request whose first frame carries `marker`."""
    for request in reversed(sim.requests):
        if request.path == "/v1/responses" and any(marker in str(m) for m in request.ws_received[:1]):
            return request
    raise AssertionError(f"no socket with {marker}")


def body_of(frame: dict[str, Any]) -> dict[str, Any]:
    """The `POST /v1/responses` body a `response.create` frame stands for."""
    return {k: v for k, v in frame.items() if k != "type"}


# ---- Responses API WebSocket mode -----------------------------------------------------------------------


def test_turns_on_one_socket_are_calls(gw: Gateway, sim: Simulator, source: str) -> None:
    upgrade = {"x-sim-reply-words": "3", "x-sim-chunk-delay-ms": "20"}
    frames: list[dict[str, Any]] = [
        {
            "type": "response.create",
            "model": "gpt-4o",
            "input": f"hello there {source}",
            "instructions": "be brief",
        },
        {
            "type": "response.create",
            "model": "gpt-4o-mini",
            "input": [{"role": "user", "content": "and now five more words"}],
            "metadata": {"x-sim-reply-words": "5", "x-sim-cache-read": "7", "x-sim-reasoning": "2"},
        },
        {"type": "response.create", "model": "gpt-4o", "input": "x", "metadata": {"x-sim-reply-words": "1"}},
    ]
    sent: list[str] = []
    arrivals: list[list[float]] = []
    oai = client(gw, source, **{"X-TokenLens-Session": f"s-{source}", "X-TokenLens-Tag-Team": "core"})
    with oai.responses.connect(extra_headers=upgrade) as conn:
        previous: str | None = None
        for frame in frames:
            if previous is not None:
                frame["previous_response_id"] = previous
            text = json.dumps(frame, separators=(",", ":"))
            sent.append(text)
            started = time.perf_counter()
            conn.send_raw(text)
            times: list[float] = []
            events: list[Any] = []
            for event in conn:
                events.append(event)
                times.append(time.perf_counter() - started)
                if event.type in RESPONSES_FINAL:
                    break
            assert events[-1].type == "response.completed"
            previous = events[-1].response.id
            arrivals.append(times)
    calls = gw.wait_calls(source, 3)
    assert len(calls) == 3  # the upgrade (101) is not a call
    socket = socket_of(sim, source)
    assert socket.ws_received == sent  # every frame went upstream byte for byte
    for call, frame in zip(calls, frames, strict=True):
        knobs = {**upgrade, **frame.get("metadata", {})}
        assert_metered(call, sim, "openai", "responses", body_of(frame), frame["model"], knobs)
        assert call["endpoint"] == "/v1/responses" and call["stream"] is True
        assert (call["requested_model"], call["model"]) == (frame["model"], frame["model"])
        assert call["session_id"] == f"s-{source}" and call["tags"] == {"team": "core"}
        assert call["transport"] == "websocket"
        assert 0 < call["ttft_ms"] <= call["latency_ms"]
    # unbuffered: the 3 deltas of the first answer, 20 ms apart upstream, arrive spread out
    assert arrivals[0][-1] - arrivals[0][0] >= 0.9 * 0.020 * (len(arrivals[0]) - 1)
    assert calls[0]["latency_ms"] >= 0.9 * 20 * (len(arrivals[0]) - 1)
    # the second turn's cache read and reasoning, priced by hand: gpt-4o-mini, (4+5)+7 in, 7 cached, 5+2 out
    assert calls[1]["cost_usd"] == pytest.approx((9 * 0.15 + 7 * 0.075 + 7 * 0.60) / 1e6, rel=1e-9)


def test_kill_switch_refuses_one_turn_and_the_socket_goes_on(
    gw: Gateway, sim: Simulator, source: str
) -> None:
    with client(gw, source).responses.connect(extra_headers={"x-sim-reply-words": "2"}) as conn:
        conn.response.create(model="gpt-4o-mini", input=f"first {source}")
        assert turn(conn)[-1].type == "response.completed"
        response = httpx.put(f"{gw.url}/api/config/quotas", json={"kill_switches": [source]}, timeout=10)
        assert response.status_code == 200
        conn.response.create(model="gpt-4o-mini", input="second")
        (error,) = turn(conn)
        assert (error.type, error.status) == ("error", 403)
        assert (error.error.type, error.error.code) == ("permission_error", "kill_switch")
        assert "kill_switches" in error.error.message
        assert httpx.put(f"{gw.url}/api/config/quotas", json={}, timeout=10).status_code == 200
        conn.response.create(model="gpt-4o-mini", input="third")
        events = turn(conn)
        assert events[-1].type == "response.completed"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "The quick"
    calls = gw.wait_calls(source, 3)
    assert [(c["outcome"], c["blocked_by"], c["status"]) for c in calls] == [
        ("ok", None, 200),
        ("blocked", "kill_switch", 403),
        ("ok", None, 200),
    ]
    assert calls[1]["cost_usd"] == 0 and calls[1]["input_tokens"] == 0
    socket = socket_of(sim, source)
    assert [json.loads(m)["input"] for m in socket.ws_received] == [f"first {source}", "third"]


def test_alias_routes_the_frame(gw: Gateway, sim: Simulator, source: str) -> None:
    frame = {"model": "gpt-team", "input": f"route me {source}"}
    with client(gw, source).responses.connect(extra_headers={"x-sim-reply-words": "4"}) as conn:
        conn.response.create(**frame)  # type: ignore[arg-type]
        events = turn(conn)
    assert events[-1].response.model == "gpt-4o-mini-2024-07-18"
    (sent,) = socket_of(sim, source).ws_received
    assert json.loads(sent) == {"type": "response.create", "model": "gpt-4o-mini", "input": frame["input"]}
    (call,) = gw.wait_calls(source)
    assert (call["requested_model"], call["model"]) == ("gpt-team", "gpt-4o-mini")
    assert gw.call(call["id"])["details"]["routing"]["rule"] == "alias"
    assert_metered(call, sim, "openai", "responses", frame, "gpt-4o-mini", {"x-sim-reply-words": "4"})


def test_cut_connection_is_recorded_estimated(gw: Gateway, sim: Simulator, source: str) -> None:
    received: list[Any] = []
    with client(gw, source).responses.connect(extra_headers={"x-sim-reply-words": "40"}) as conn:
        conn.response.create(model="gpt-4o-mini", input=f"first {source}")
        assert turn(conn)[-1].type == "response.completed"
        conn.response.create(model="gpt-4o-mini", input="second", metadata={"x-sim-cut-after": "8"})
        try:  # the upstream dropped TCP; the gateway passes the end on as a close frame (code 1006)
            for event in conn:
                received.append(event)
        except ConnectionClosed:
            pass
    deltas = [e.delta for e in received if e.type == "response.output_text.delta"]
    assert deltas == ["The", " quick", " brown", " fox"]
    first, cut = gw.wait_calls(source, 2)
    assert first["outcome"] == "ok" and first["usage_source"] == "provider"
    assert (cut["outcome"], cut["usage_source"], cut["status"]) == ("error", "estimated", 200)
    assert "closed" in cut["error"]
    # estimated locally: the 4 words that arrived (not the 40 planned), the frame's one input item
    assert 4 <= cut["output_tokens"] <= 8 and 1 <= cut["input_tokens"] <= 12
    assert cut["cost_usd"] == pytest.approx(expected_cost("gpt-4o-mini", cut), rel=1e-9)


def test_failed_and_refused_responses(gw: Gateway, sim: Simulator, source: str) -> None:
    with client(gw, source).responses.connect(extra_headers={"x-sim-reply-words": "5"}) as conn:
        conn.response.create(model="gpt-4o-mini", input="one two", metadata={"x-sim-stream-error": "6"})
        assert turn(conn)[-1].type == "response.failed"
        conn.response.create(model="gpt-4o-mini", input="one two", metadata={"x-sim-status": "429"})
        (error,) = turn(conn)
        assert (error.type, error.status) == ("error", 429)
        conn.response.create(model="gpt-4o-mini", input=f"one two {source}", max_output_tokens=3)
        assert turn(conn)[-1].type == "response.incomplete"
    failed, limited, incomplete = gw.wait_calls(source, 3)
    # response.failed: the input (4 + 2) and only the 2 words sent before the failure
    assert (failed["outcome"], failed["usage_source"]) == ("error", "provider")
    assert (failed["input_tokens"], failed["output_tokens"]) == (6, 2)
    assert failed["cost_usd"] == pytest.approx((6 * 0.15 + 2 * 0.60) / 1e6, rel=1e-9)
    assert "response.failed" in failed["error"]
    assert (limited["outcome"], limited["status"], limited["cost_usd"]) == ("error", 429, 0)
    assert (incomplete["outcome"], incomplete["input_tokens"], incomplete["output_tokens"]) == ("ok", 7, 3)


def test_codex_warmup_frame_is_a_call_without_output(gw: Gateway, source: str) -> None:
    """Codex's first frame can be `"generate": false`: the input is read (and billed), nothing is generated."""
    with client(gw, source).responses.connect() as conn:
        conn.send_raw(
            json.dumps(
                {
                    "type": "response.create",
                    "model": "gpt-4o-mini",
                    "input": "warm this up",
                    "generate": False,
                }
            )
        )
        assert [e.type for e in turn(conn)] == ["response.created", "response.completed"]
    (call,) = gw.wait_calls(source)
    assert (call["input_tokens"], call["output_tokens"], call["outcome"]) == (4 + 3, 0, "ok")
    assert call["cost_usd"] == pytest.approx(7 * 0.15 / 1e6, rel=1e-9)


def test_refused_upgrade_is_not_a_call(gw: Gateway, source: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        with client(gw, source).responses.connect(extra_headers={"x-sim-status": "401"}):
            pass
    assert refused.value.response.status_code == 401
    with client(gw, source).responses.connect() as conn:
        conn.close()
    time.sleep(0.5)
    assert gw.calls(source=source) == []


def test_socket_in_explicit_proxy_mode(
    gw: Gateway, sim: Simulator, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY and the gateway's CA bundle: the SDK's wss:// socket to the provider's host is intercepted."""
    monkeypatch.setenv("HTTPS_PROXY", gw.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(gw.ca_bundle()))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    oai = openai.OpenAI(
        base_url=sim.base_url("openai", https=True),
        api_key="sk-test",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    frame = {"model": "gpt-4o-mini", "input": f"through the proxy {source}"}
    with oai.responses.connect(extra_headers={"x-sim-reply-words": "3"}) as conn:
        conn.response.create(**frame)  # type: ignore[arg-type]
        assert turn(conn)[-1].type == "response.completed"
    (call,) = gw.wait_calls(source)
    assert (call["mode"], call["transport"]) == ("proxy", "websocket")
    assert_metered(call, sim, "openai", "responses", frame, "gpt-4o-mini", {"x-sim-reply-words": "3"})


# ---- Realtime API ---------------------------------------------------------------------------------------


def realtime_cost(text_in: int, audio_in: int, cached: int, text_out: int, audio_out: int) -> float:
    """gpt-realtime: uncached text and audio, cached input (one rate for text and audio), output by modality."""
    p = REALTIME
    total = (
        text_in * p["text_in"]
        + audio_in * p["audio_in"]
        + cached * p["cached"]
        + text_out * p["text_out"]
        + audio_out * p["audio_out"]
    )
    return total / 1e6


def test_realtime_responses_are_calls_with_text_and_audio(gw: Gateway, sim: Simulator, source: str) -> None:
    oai = client(gw, source)
    with oai.realtime.connect(model="gpt-realtime", extra_headers={"x-sim-reply-words": "3"}) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "instructions": "be brief"}
        )
        assert conn.recv().type == "session.updated"
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]}
        )
        conn.input_audio_buffer.append(audio=audio(6000))
        conn.input_audio_buffer.append(audio=audio(4000))
        conn.input_audio_buffer.commit()
        conn.response.create()
        assert realtime_turn(conn)[-1].response.status == "completed"
        conn.response.create(response={"output_modalities": ["audio"]})
        assert realtime_turn(conn)[-1].response.usage.output_token_details.audio_tokens == 6
        httpx.put(f"{gw.url}/api/config/quotas", json={"kill_switches": [source]}, timeout=10)
        conn.response.create(event_id="evt_blocked", response={"output_modalities": ["text"]})
        error = realtime_turn(conn)[-1]
        assert error.type == "error" and error.error.code == "kill_switch"
        assert error.error.event_id == "evt_blocked"
        httpx.put(f"{gw.url}/api/config/quotas", json={}, timeout=10)
        conn.response.create(response={"output_modalities": ["text"], "max_output_tokens": 2})
        assert realtime_turn(conn)[-1].response.status == "incomplete"
    calls = gw.wait_calls(source, 4)
    assert len(calls) == 4
    first, second, blocked, third = calls
    for call in (first, second, third):
        assert (call["endpoint"], call["model"], call["stream"]) == ("/v1/realtime", "gpt-realtime", True)
        assert (call["outcome"], call["usage_source"], call["status"]) == ("ok", "provider", 200)
        assert call["transport"] == "websocket"
    # instructions 4+2, text item 4+2, audio item 4 text + ceil(10000/4800) = 3 audio; 3 words out
    assert (first["input_tokens"], first["cache_read_tokens"], first["output_tokens"]) == (19, 0, 3)
    assert first["modality_tokens"] == {"input": {"text": 16, "audio": 3}, "output": {"text": 3}}
    assert first["cost_usd"] == pytest.approx(realtime_cost(16, 3, 0, 3, 0), rel=1e-9)
    # + the first answer (4+3 text); the first input cached (16 text, 3 audio); audio out: 3 text + 6 audio
    assert (second["input_tokens"], second["cache_read_tokens"], second["output_tokens"]) == (26, 19, 9)
    assert second["modality_tokens"] == {
        "input": {"text": 23, "audio": 3},
        "cache_read": {"text": 16, "audio": 3},
        "output": {"text": 3, "audio": 6},
    }
    assert second["cost_usd"] == pytest.approx(realtime_cost(23 - 16, 0, 19, 3, 6), rel=1e-9)
    assert (blocked["outcome"], blocked["blocked_by"], blocked["cost_usd"]) == ("blocked", "kill_switch", 0)
    # + the audio answer (4 text + 6 audio); the second input cached; cut to 2 words
    assert (third["input_tokens"], third["cache_read_tokens"], third["output_tokens"]) == (36, 26, 2)
    assert third["cost_usd"] == pytest.approx(realtime_cost(27 - 23, 9 - 3, 26, 2, 0), rel=1e-9)
    upgrade = next(r for r in reversed(sim.requests) if r.path == "/v1/realtime")
    assert sum(1 for m in upgrade.ws_received if '"response.create"' in str(m)) == 3


def test_realtime_beta_dialect(gw: Gateway, source: str) -> None:
    """`client.beta.realtime.connect()` (OpenAI-Beta: realtime=v1): text and audio out in one response.

    The beta client always dials wss:// from the base URL: a plain-HTTP gateway needs `websocket_base_url`."""
    oai = client(gw, source).with_options(
        websocket_base_url=gw.base_url("openai").replace("http://", "ws://", 1)
    )
    with oai.beta.realtime.connect(
        model="gpt-4o-realtime-preview", extra_headers={"x-sim-reply-words": "2"}
    ) as conn:
        assert conn.recv().type == "session.created"
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a b c"}]}
        )
        conn.response.create(response={"modalities": ["text", "audio"]})
        assert realtime_turn(conn)[-1].response.status == "completed"
    (call,) = gw.wait_calls(source)
    # input: the item, 4 + 3 text tokens; output: 2 words of transcript and 2 * 2 audio tokens
    assert (call["input_tokens"], call["output_tokens"], call["transport"]) == (7, 6, "websocket")
    assert call["modality_tokens"] == {"input": {"text": 7}, "output": {"text": 2, "audio": 4}}
    # gpt-4o-realtime-preview (openai.com/api/pricing): $5 text in, $20 text out, $80 audio out per million
    assert call["cost_usd"] == pytest.approx((7 * 5.00 + 2 * 20.00 + 4 * 80.00) / 1e6, rel=1e-9)


def test_realtime_text_meets_the_request_guardrails(gw: Gateway, sim: Simulator, source: str) -> None:
    """The text of a Realtime conversation travels in `conversation.item.create`, not in `response.create`:
    a blocking rule refuses that frame with an error event (it never reaches the provider), redact rewrites
    it, and the socket stays usable."""
    guardrails = f"{gw.url}/api/config/guardrails"
    before = httpx.get(guardrails, timeout=10).json()
    rules = [{"name": "codename", "pattern": "PROJECT-ZEUS", "action": "redact"}]
    blocking = {"pii_detection": {"enabled": True, "action": "block"}, "custom_rules": rules}
    assert httpx.put(guardrails, json=blocking, timeout=10).status_code == 200
    try:
        oai = client(gw, source)
        with oai.realtime.connect(model="gpt-realtime", extra_headers={"x-sim-reply-words": "2"}) as conn:
            assert conn.recv().type == "session.created"
            conn.conversation.item.create(
                event_id="evt_pii",
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "mail me at alice.smith@example.com"}],
                },
            )
            error = conn.recv()
            assert error.type == "error" and error.error.code == "guardrail"
            assert error.error.event_id == "evt_pii" and "example.com" not in error.error.message
            conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "status of PROJECT-ZEUS please"}],
                }
            )
            conn.response.create()
            assert realtime_turn(conn)[-1].response.status == "completed"
    finally:
        httpx.put(guardrails, json=before, timeout=10)
    upgrade = next(r for r in reversed(sim.requests) if r.path == "/v1/realtime")
    received = " ".join(str(m) for m in upgrade.ws_received)
    assert "alice.smith@example.com" not in received and "PROJECT-ZEUS" not in received
    # redacted: the rule's placeholder is its name, upper-case, numbered
    assert "status of [CODENAME_1] please" in received
    (call,) = gw.wait_calls(source)
    assert call["outcome"] == "ok"
