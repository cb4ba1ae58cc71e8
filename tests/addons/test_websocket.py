"""The WebSocket stage on mitmproxy test flows: frames through the real pipeline (`gateway`), server events
written here by hand in the providers' shapes (tests/provider_sim/websocket.py, realtime_api.py)."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from typing import Any

import pytest
from mitmproxy import http, websocket
from mitmproxy.test import taddons
from wsproto.frame_protocol import Opcode

from mitm_helpers import gateway_flow
from tokenlens.addons import gateway
from tokenlens.addons._flowstate import connection_of, exchange_of
from tokenlens.addons.websocket import WebSocketCalls
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.exchange import Exchange
from tokenlens.metering import build_record
from tokenlens.pricing import Pricer
from tokenlens.records import CallRecord
from tokenlens.websocket import Connection

UPGRADE = {
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
    "X-TokenLens-Source": "agent",
    "X-TokenLens-Tag-Team": "core",
}
# gpt-4o-mini, USD per million tokens (openai.com/api/pricing)
IN, CACHED, OUT = 0.15, 0.075, 0.60
# gpt-realtime: text in, cached, text out, audio in, audio out
RT = {"text_in": 4.00, "cached": 0.40, "text_out": 16.00, "audio_in": 32.00, "audio_out": 64.00}
# gpt-realtime-mini: cached audio has its own rate (0.30), 5x the cached text one (0.06)
RT_MINI = {
    "text_in": 0.60,
    "cached_text": 0.06,
    "cached_audio": 0.30,
    "text_out": 2.40,
    "audio_in": 10.00,
    "audio_out": 20.00,
}


class Socket:
    """One upgraded flow driven through the pipeline; what the stage injected and handed to the writer."""

    def __init__(self, deps: AppDeps, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parent = gateway(deps)
        self.stage = next(s for s in self.parent.stages if isinstance(s, WebSocketCalls))
        self.injected: list[dict[str, Any]] = []
        self.submitted: list[Exchange] = []
        monkeypatch.setattr(self.stage, "inject", lambda flow, data: self.injected.append(json.loads(data)))
        monkeypatch.setattr(deps.writer, "submit", self.submitted.append)
        self.flow = gateway_flow(path, None, UPGRADE, method="GET")
        self.parent.request(self.flow)
        assert self.flow.response is None
        self.flow.response = http.Response.make(101, b"", {"upgrade": "websocket", "connection": "Upgrade"})
        self.flow.websocket = websocket.WebSocketData()

    async def send(
        self, data: str | bytes, from_client: bool = True, ts: float = 100.0
    ) -> websocket.WebSocketMessage:
        content = data.encode() if isinstance(data, str) else data
        opcode = Opcode.TEXT if isinstance(data, str) else Opcode.BINARY
        message = websocket.WebSocketMessage(opcode, from_client, content, timestamp=ts)
        assert self.flow.websocket is not None
        self.flow.websocket.messages.append(message)
        result = self.parent.websocket_message(self.flow)
        if inspect.isawaitable(result):
            await result
        return message

    async def server(self, event: dict[str, Any], ts: float = 100.0) -> None:
        await self.send(json.dumps(event), from_client=False, ts=ts)

    def records(self) -> list[CallRecord]:
        return [build_record(ex, Pricer()) for ex in self.submitted]


def configure(deps: AppDeps, **sections: Any) -> None:
    current = deps.settings.get()
    parsed = parse_settings({"providers": {"openai": {"upstream": "https://api.openai.com"}}, **sections})
    deps.settings.replace(replace(current, **{name: getattr(parsed, name) for name in sections}))


def frame(**fields: Any) -> str:
    return json.dumps({"type": "response.create", **fields})


def completed(
    model: str, usage: dict[str, Any], event: str = "response.completed", **extra: Any
) -> dict[str, Any]:
    return {
        "type": event,
        "response": {"id": "resp_1", "model": model, "status": "completed", "usage": usage, **extra},
    }


USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 10},
    "output_tokens": 12,
    "output_tokens_details": {"reasoning_tokens": 2},
}


# ---- the upgrade ----------------------------------------------------------------------------------------


def test_the_upgrade_is_no_call_and_opens_a_connection(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    exchange = exchange_of(socket.flow)
    assert exchange is not None and exchange.is_call is False
    conn = connection_of(socket.flow)
    assert conn is not None and conn.kind == "responses" and conn.template.source == "agent"
    realtime = Socket(deps, "/proxy/openai/v1/realtime?model=gpt-realtime", monkeypatch)
    conn = connection_of(realtime.flow)
    assert conn is not None and (conn.kind, conn.model) == ("realtime", "gpt-realtime")


async def test_other_upgrades_are_relayed_untouched(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    socket = Socket(deps, "/proxy/openai/v1/chat/completions", monkeypatch)
    assert connection_of(socket.flow) is None
    message = await socket.send(frame(model="gpt-4o-mini", input="hi"))
    await socket.server(completed("gpt-4o-mini", USAGE))
    assert not message.dropped and socket.submitted == [] and socket.injected == []


# ---- Responses WebSocket mode ---------------------------------------------------------------------------


async def test_a_frame_is_a_call_metered_from_its_events(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    with taddons.context():
        sent = frame(model="gpt-4o-mini", input="hello", max_output_tokens=50)
        message = await socket.send(sent, ts=100.0)
        assert not message.dropped and message.content == sent.encode()  # forwarded unchanged
        await socket.server(
            {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-4o-mini"}}, 100.25
        )
        await socket.server({"type": "response.output_text.delta", "delta": "Hi"}, 100.5)
        assert socket.submitted == []
        await socket.server(completed("gpt-4o-mini-2024-07-18", USAGE), 101.0)
    assert socket.flow.websocket is not None and len(socket.flow.websocket.messages) == 1  # not kept
    (record,) = socket.records()
    assert (record.endpoint, record.model, record.response_model) == (
        "/v1/responses",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
    )
    assert (record.source, record.tags, record.max_tokens) == ("agent", {"team": "core"}, 50)
    assert (record.input_tokens, record.cache_read_tokens, record.output_tokens) == (30, 10, 12)
    assert (record.status, record.outcome, record.usage_source, record.stream) == (
        200,
        "ok",
        "provider",
        True,
    )
    assert (record.ttft_ms, record.latency_ms) == (250.0, 1000.0)
    assert record.cost_usd == pytest.approx((20 * IN + 10 * CACHED + 12 * OUT) / 1e6, rel=1e-9)
    assert record.transport == "websocket"


async def test_a_kill_switch_refuses_the_frame_and_the_next_one_goes(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    configure(deps, quotas={"kill_switches": ["agent"]})
    refused = await socket.send(frame(model="gpt-4o-mini", input="hello"))
    assert refused.dropped
    (event,) = socket.injected
    assert event["type"] == "error" and event["status"] == 403
    assert {k: event["error"][k] for k in ("type", "code", "param")} == {
        "type": "permission_error",
        "code": "kill_switch",
        "param": None,
    }
    (blocked,) = socket.records()
    assert (blocked.outcome, blocked.blocked_by, blocked.status, blocked.cost_usd) == (
        "blocked",
        "kill_switch",
        403,
        0,
    )
    configure(deps, quotas={})
    passed = await socket.send(frame(model="gpt-4o-mini", input="hello"))
    assert not passed.dropped and len(socket.injected) == 1
    await socket.server(completed("gpt-4o-mini", USAGE))
    assert [r.outcome for r in socket.records()] == ["blocked", "ok"]


async def test_a_binary_frame_is_gated_too(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(deps, quotas={"kill_switches": ["agent"]})
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    message = await socket.send(frame(model="gpt-4o-mini", input="hello").encode())
    assert not message.is_text and message.dropped and socket.injected[0]["status"] == 403


async def test_a_utf16_frame_is_gated_and_recorded(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON in UTF-16 (no `response.create` in its bytes) is read as the gates read any body."""
    configure(deps, quotas={"kill_switches": ["agent"]})
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    message = await socket.send(frame(model="gpt-4o-mini", input="hello").encode("utf-16"))
    assert message.dropped and socket.injected[0]["status"] == 403
    (record,) = socket.records()
    assert (record.outcome, record.model) == ("blocked", "gpt-4o-mini")


async def test_a_frame_that_cannot_be_checked_is_not_forwarded(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)

    def broken(*args: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(Connection, "new_call", broken)
    message = await socket.send(frame(model="gpt-4o-mini", input="hello"))
    assert message.dropped
    (event,) = socket.injected
    assert (event["status"], event["error"]["code"]) == (503, "request_unreadable")


async def test_an_alias_rewrites_the_frames_model(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(deps, routing={"aliases": [{"from": "team", "to": "gpt-4o-mini"}]})
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    message = await socket.send(frame(model="team", input="hello", stream_id="lane"))
    assert json.loads(message.content) == {
        "type": "response.create",
        "model": "gpt-4o-mini",
        "input": "hello",
        "stream_id": "lane",
    }
    await socket.server(completed("gpt-4o-mini", USAGE))
    (record,) = socket.records()
    assert (record.requested_model, record.model) == ("team", "gpt-4o-mini")
    assert record.details["routing"]["rule"] == "alias"


async def test_a_blocking_guardrail_refuses_the_frame(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(deps, guardrails={"pii_detection": {"enabled": True, "action": "block"}})
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    message = await socket.send(frame(model="gpt-4o-mini", input="mail maria.gonzalez@acme-corp.com"))
    assert message.dropped
    (event,) = socket.injected
    assert (event["status"], event["error"]["code"]) == (400, "guardrail")
    assert "pii.email" in event["error"]["message"] and "acme" not in json.dumps(event)
    (record,) = socket.records()
    assert (record.outcome, record.blocked_by) == ("blocked", "guardrail")


async def test_a_frame_too_deep_to_check_is_refused(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    deep = '{"type":"response.create","model":"gpt-4o-mini","input":' + "[" * 200 + "]" * 200 + "}"
    message = await socket.send(deep)
    assert message.dropped and socket.injected[0]["status"] == 400
    (record,) = socket.records()
    assert (record.outcome, record.blocked_by) == ("blocked", "request")


async def test_an_error_for_a_frame_that_is_no_call_is_not_the_next_calls(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    bad = await socket.send("this is not json")
    assert not bad.dropped  # the upstream answers it
    await socket.send(frame(model="gpt-4o-mini", input="hello"))
    await socket.server({"type": "error", "status": 400, "error": {"code": "invalid_json", "message": "no"}})
    assert socket.submitted == []
    await socket.server(
        {"type": "error", "status": 429, "error": {"code": "rate_limit_exceeded", "message": "x"}}
    )
    (record,) = socket.records()
    assert (record.outcome, record.status, record.cost_usd) == ("error", 429, 0)
    assert record.error is not None and "rate_limit_exceeded" in record.error


async def test_failed_and_cut_responses(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    socket = Socket(deps, "/proxy/openai/v1/responses", monkeypatch)
    await socket.send(frame(model="gpt-4o-mini", input="hello"))
    failed_usage = {"input_tokens": 6, "output_tokens": 2}
    error = {"code": "server_error", "message": "boom"}
    await socket.server(completed("gpt-4o-mini", failed_usage, "response.failed", error=error))
    await socket.send(frame(model="gpt-4o-mini", input="tell me a long story please"))
    await socket.server({"type": "response.created", "response": {"id": "resp_2", "model": "gpt-4o-mini"}})
    await socket.server({"type": "response.output_text.delta", "delta": "Once upon a time"})
    assert socket.flow.websocket is not None
    socket.flow.websocket.close_code = 1006
    socket.parent.websocket_end(socket.flow)
    socket.parent.websocket_end(socket.flow)  # once only
    failed, cut = socket.records()
    assert (failed.outcome, failed.usage_source, failed.input_tokens, failed.output_tokens) == (
        "error",
        "provider",
        6,
        2,
    )
    assert failed.error is not None and "boom" in failed.error
    assert (cut.outcome, cut.usage_source, cut.status) == ("error", "estimated", 200)
    assert cut.output_tokens > 0 and cut.input_tokens > 0 and cut.error is not None and "1006" in cut.error


# ---- Realtime API ---------------------------------------------------------------------------------------


def realtime_usage() -> dict[str, Any]:
    return {
        "total_tokens": 35,
        "input_tokens": 26,
        "output_tokens": 9,
        "input_token_details": {
            "text_tokens": 23,
            "audio_tokens": 3,
            "image_tokens": 0,
            "cached_tokens": 19,
            "cached_tokens_details": {"text_tokens": 16, "audio_tokens": 3, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": 3, "audio_tokens": 6},
    }


async def test_a_realtime_response_is_a_call_with_text_and_audio(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = Socket(deps, "/proxy/openai/v1/realtime?model=gpt-realtime", monkeypatch)
    await socket.server({"type": "session.created", "session": {"model": "gpt-realtime-2025-08-28"}})
    await socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA" * 1000}))
    assert socket.submitted == []
    await socket.send(
        json.dumps({"type": "response.create", "response": {"output_modalities": ["audio"]}}), ts=10.0
    )
    await socket.server({"type": "response.created", "response": {"id": "r1"}}, ts=10.5)
    await socket.server(
        {"type": "response.output_audio.delta", "response_id": "r1", "delta": "AAAA" * 500}, ts=10.75
    )
    await socket.server({"type": "conversation.item.added", "item": {}}, ts=10.8)
    done = {
        "type": "response.done",
        "response": {"id": "r1", "status": "completed", "usage": realtime_usage()},
    }
    await socket.server(done, ts=12.0)
    (record,) = socket.records()
    assert (record.endpoint, record.model, record.status, record.outcome) == (
        "/v1/realtime",
        "gpt-realtime-2025-08-28",
        200,
        "ok",
    )
    assert (record.input_tokens, record.cache_read_tokens, record.output_tokens) == (26, 19, 9)
    assert record.modality_tokens == {
        "input": {"text": 23, "audio": 3},
        "cache_read": {"text": 16, "audio": 3},
        "output": {"text": 3, "audio": 6},
    }
    # uncached: 7 text; cached: 19 (one rate for text and audio on gpt-realtime); out: 3 text, 6 audio
    expected = (7 * RT["text_in"] + 19 * RT["cached"] + 3 * RT["text_out"] + 6 * RT["audio_out"]) / 1e6
    assert record.cost_usd == pytest.approx(expected, rel=1e-9)
    assert (record.ttft_ms, record.latency_ms) == (500.0, 2000.0)
    assert b"AAAA" not in (record.response_body or b"")  # audio is relayed, not kept
    assert record.price_source == "gpt-realtime"


async def test_realtime_mini_cached_audio_is_priced_at_the_cached_audio_rate(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = Socket(deps, "/proxy/openai/v1/realtime?model=gpt-realtime-mini", monkeypatch)
    await socket.server({"type": "session.created", "session": {"model": "gpt-realtime-mini"}})
    await socket.send(json.dumps({"type": "response.create"}), ts=10.0)
    usage = {
        "input_tokens": 8000,
        "output_tokens": 900,
        "input_token_details": {
            "text_tokens": 2000,
            "audio_tokens": 6000,
            "cached_tokens": 5500,
            "cached_tokens_details": {"text_tokens": 1500, "audio_tokens": 4000},
        },
        "output_token_details": {"text_tokens": 100, "audio_tokens": 800},
    }
    done = {"type": "response.done", "response": {"id": "r1", "status": "completed", "usage": usage}}
    await socket.server(done, ts=11.0)
    (record,) = socket.records()
    assert record.modality_tokens == {
        "input": {"text": 2000, "audio": 6000},
        "cache_read": {"text": 1500, "audio": 4000},
        "output": {"text": 100, "audio": 800},
    }
    p = RT_MINI
    expected = (
        (2000 - 1500) * p["text_in"]
        + (6000 - 4000) * p["audio_in"]
        + 1500 * p["cached_text"]
        + 4000 * p["cached_audio"]
        + 100 * p["text_out"]
        + 800 * p["audio_out"]
    ) / 1e6
    assert record.cost_usd == pytest.approx(expected, rel=1e-9)
    assert record.cache_read_cost_usd == pytest.approx((1500 * 0.06 + 4000 * 0.30) / 1e6, rel=1e-9)


async def test_a_realtime_refusal_names_the_clients_event(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(deps, quotas={"kill_switches": ["agent"]})
    socket = Socket(deps, "/proxy/openai/v1/realtime?model=gpt-realtime", monkeypatch)
    message = await socket.send(json.dumps({"type": "response.create", "event_id": "evt_7"}))
    assert message.dropped
    (event,) = socket.injected
    assert event["type"] == "error" and isinstance(event["event_id"], str) and "status" not in event
    assert set(event["error"]) == {"type", "code", "message", "param", "event_id"}
    assert (event["error"]["code"], event["error"]["event_id"]) == ("kill_switch", "evt_7")


async def test_realtime_errors_end_only_the_call_they_name(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = Socket(deps, "/proxy/openai/v1/realtime?model=gpt-realtime", monkeypatch)
    await socket.send(json.dumps({"type": "response.create", "event_id": "evt_1"}))
    await socket.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "evt_2"}))
    await socket.server(
        {"type": "error", "error": {"code": "input_audio_buffer_commit_empty", "event_id": "evt_2"}}
    )
    assert socket.submitted == []
    await socket.server({"type": "error", "error": {"code": "rate_limit_exceeded", "event_id": "evt_1"}})
    (record,) = socket.records()
    assert record.outcome == "error" and record.error is not None and "rate_limit" in record.error


async def test_a_response_the_realtime_server_starts_itself_is_a_call_of_its_own(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server VAD (`turn_detection.create_response`) starts responses no `response.create` asked for: each is
    recorded as its own call, never metered into the client's call in flight."""
    socket = Socket(deps, "/proxy/openai/v1/realtime?model=gpt-realtime", monkeypatch)
    await socket.send(json.dumps({"type": "response.create", "event_id": "evt_1"}), ts=10.0)
    await socket.server({"type": "response.created", "response": {"id": "r1"}}, ts=10.5)
    vad_usage = {"input_tokens": 40, "output_tokens": 5, "input_token_details": {"text_tokens": 40}}
    await socket.server({"type": "response.created", "response": {"id": "r_vad"}}, ts=11.0)
    vad_done = {
        "type": "response.done",
        "response": {"id": "r_vad", "status": "completed", "usage": vad_usage},
    }
    await socket.server(vad_done, ts=11.5)
    done = {
        "type": "response.done",
        "response": {"id": "r1", "status": "completed", "usage": realtime_usage()},
    }
    await socket.server(done, ts=12.0)
    vad, client = socket.records()
    assert (vad.model, vad.input_tokens, vad.output_tokens, vad.outcome) == ("gpt-realtime", 40, 5, "ok")
    assert (client.input_tokens, client.output_tokens, client.outcome) == (26, 9, "ok")
    assert vad.details["websocket"]["initiated_by"] == "server"


async def test_a_server_started_realtime_response_with_no_call_in_flight_is_recorded(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = Socket(deps, "/proxy/openai/v1/realtime?model=gpt-realtime", monkeypatch)
    await socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA"}))
    await socket.server({"type": "response.created", "response": {"id": "r_vad"}}, ts=11.0)
    done = {
        "type": "response.done",
        "response": {"id": "r_vad", "status": "completed", "usage": realtime_usage()},
    }
    await socket.server(done, ts=12.0)
    (record,) = socket.records()
    assert (record.model, record.input_tokens, record.output_tokens) == ("gpt-realtime", 26, 9)
    assert record.transport == "websocket"


async def test_a_response_the_realtime_server_starts_meets_the_gates(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With voice detection the server starts responses itself: a kill switch (or budget, quota) refuses them as
    it refuses `response.create`: the response is cancelled upstream, the client gets an error event, and the
    call is recorded as blocked with what the provider billed until it stopped."""
    socket = Socket(deps, "/proxy/openai/v1/realtime?model=gpt-realtime", monkeypatch)
    upstream: list[dict[str, Any]] = []
    monkeypatch.setattr(socket.stage, "inject_upstream", lambda flow, data: upstream.append(json.loads(data)))
    configure(deps, quotas={"kill_switches": ["agent"]})
    await socket.server({"type": "response.created", "response": {"id": "r_vad"}}, ts=11.0)
    assert upstream == [{"type": "response.cancel", "response_id": "r_vad"}]
    (error,) = socket.injected
    assert error["type"] == "error" and error["error"]["code"] == "kill_switch"
    usage = {"input_tokens": 40, "output_tokens": 1, "input_token_details": {"text_tokens": 40}}
    await socket.server(
        {"type": "response.done", "response": {"id": "r_vad", "status": "cancelled", "usage": usage}}, ts=11.2
    )
    (record,) = socket.records()
    assert (record.outcome, record.blocked_by) == ("blocked", "kill_switch")
    assert (record.input_tokens, record.output_tokens) == (40, 1)  # billed until cancelled: counted
    expected = (40 * RT["text_in"] + 1 * RT["text_out"]) / 1e6
    assert record.cost_usd == pytest.approx(expected, rel=1e-9)
