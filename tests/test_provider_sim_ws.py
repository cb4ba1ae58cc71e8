"""The simulator's WebSocket endpoints (Responses API WebSocket mode, Realtime API), driven by openai-python.

The SDK is pointed straight at the simulator (no gateway). Expected token counts are written out by hand from
the documented rules (provider_sim.usage, provider_sim.realtime_api) or computed with `expected_usage`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect as ws_connect

from provider_sim import Simulator, expected_usage, reply_text
from provider_sim.client import audio, realtime_turn, turn

RESPONSES_EVENTS_3 = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(https=False) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: Simulator) -> None:
    sim.clear()
    sim.set_default_headers({})


@pytest.fixture
def oai(sim: Simulator) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=sim.base_url("openai"),
        websocket_base_url=sim.url.replace("http://", "ws://") + "/v1",
        api_key="sk-test",
        max_retries=0,
        timeout=10,
    )


def norm(u: Any) -> dict[str, int | None]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.input_tokens_details.cached_tokens or 0,
        "cache_write_tokens": u.input_tokens_details.cache_write_tokens or 0,
        "cache_write_5m_tokens": None,
        "cache_write_1h_tokens": None,
        "reasoning_tokens": u.output_tokens_details.reasoning_tokens or 0,
    }


def recv(conn: Any) -> Any:
    """The next event, untyped (the tests check the fields the simulator sends)."""
    return conn.recv()


def text_of(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


# ---- Responses API WebSocket mode -----------------------------------------------------------------------


def test_responses_turns_on_one_socket(sim: Simulator, oai: openai.OpenAI) -> None:
    knobs = {"x-sim-reply-words": "3"}
    with oai.responses.connect(extra_headers=knobs) as conn:
        first: dict[str, Any] = {"model": "gpt-4o", "input": "hello there", "instructions": "be brief"}
        conn.response.create(**first)
        events = turn(conn)
        assert [e.type for e in events] == RESPONSES_EVENTS_3
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert text_of(events) == "The quick brown"
        done = events[-1].response
        assert done.model == "gpt-4o-2024-08-06"
        assert done.usage.input_tokens == (4 + 2) + (4 + 2)  # instructions + one input item
        assert done.usage.output_tokens == 3
        assert norm(done.usage) == expected_usage("openai", "responses", first, knobs)

        second: dict[str, Any] = {
            "model": "gpt-4.1",
            "input": [{"role": "user", "content": "and now five more words"}],
            "previous_response_id": done.id,
            "metadata": {"x-sim-reply-words": "5", "x-sim-reasoning": "2", "x-sim-cache-read": "7"},
        }
        conn.response.create(**second)
        events = turn(conn)
        done2 = events[-1].response
        assert events[-1].type == "response.completed"
        assert done2.previous_response_id == done.id and done2.id != done.id
        assert text_of(events) == "The quick brown fox jumps"
        assert [item.type for item in done2.output] == ["reasoning", "message"]
        assert done2.usage.input_tokens == (4 + 5) + 7
        assert done2.usage.input_tokens_details.cached_tokens == 7
        assert done2.usage.output_tokens == 5 + 2
        assert norm(done2.usage) == expected_usage("openai", "responses", second, second["metadata"])

        third: dict[str, Any] = {"model": "gpt-4o", "input": "x", "previous_response_id": done2.id}
        conn.response.create(**third)
        events = turn(conn)
        assert text_of(events) == reply_text("openai", "responses", third, knobs)
        assert events[-1].response.usage.input_tokens == 4 + 1
    upgrade = sim.requests[-1]
    assert upgrade.method == "GET" and upgrade.path == "/v1/responses"
    assert upgrade.headers["authorization"] == "Bearer sk-test"
    assert [json.loads(m)["model"] for m in upgrade.ws_received] == ["gpt-4o", "gpt-4.1", "gpt-4o"]
    assert sum(1 for m in upgrade.ws_sent if '"response.completed"' in m) == 3


def test_responses_warmup_generate_false(oai: openai.OpenAI) -> None:
    with oai.responses.connect() as conn:
        warmup: dict[str, Any] = {"model": "gpt-4o", "input": "warm this up", "generate": False}
        conn.response.create(**warmup)
        events = turn(conn)
        assert [e.type for e in events] == ["response.created", "response.completed"]
        usage = events[-1].response.usage
        assert (usage.input_tokens, usage.output_tokens) == (4 + 3, 0)
        assert events[-1].response.output == []
        conn.response.create(model="gpt-4o", input="now answer", previous_response_id=events[-1].response.id)
        events = turn(conn)
        assert events[-1].type == "response.completed"
        assert events[-1].response.usage.output_tokens == 12


def test_responses_bad_frames_get_error_events(sim: Simulator, oai: openai.OpenAI) -> None:
    with oai.responses.connect(extra_headers={"x-sim-reply-words": "2"}) as conn:
        conn.send_raw("this is not json")
        error = recv(conn)
        assert error.type == "error"
        assert error.status == 400
        assert (error.error.type, error.error.code) == ("invalid_request_error", "invalid_json")
        conn.send_raw(json.dumps({"type": "response.bogus"}))
        error = recv(conn)
        assert (error.error.code, error.error.param) == ("invalid_value", "type")
        conn.send_raw(json.dumps({"type": "response.create", "input": "no model"}))
        error = recv(conn)
        assert (error.error.code, error.error.param) == ("missing_required_parameter", "model")
        conn.response.create(model="gpt-4o", input="still works")
        events = turn(conn)
        assert events[-1].type == "response.completed"
        assert text_of(events) == "The quick"
    raw = json.loads(sim.requests[-1].ws_sent[0])
    assert raw == {
        "type": "error",
        "status": 400,
        "error": {
            "message": "The message is not a JSON object.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_json",
        },
    }


@pytest.mark.parametrize("status", [400, 404, 426])
def test_responses_upgrade_refused(sim: Simulator, oai: openai.OpenAI, status: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        with oai.responses.connect(extra_headers={"x-sim-status": str(status)}):
            pass
    response = refused.value.response
    assert response.status_code == status
    assert json.loads(bytes(response.body or b""))["error"]["type"] == "invalid_request_error"
    assert sim.requests[-1].ws_received == [] and sim.requests[-1].ws_sent == []


def test_responses_cut_mid_response(sim: Simulator, oai: openai.OpenAI) -> None:
    # per frame: the second turn is cut after 6 events (2 deltas), never reaching response.completed
    with oai.responses.connect(extra_headers={"x-sim-reply-words": "4"}) as conn:
        conn.response.create(model="gpt-4o", input="first")
        assert turn(conn)[-1].type == "response.completed"
        conn.response.create(model="gpt-4o", input="second", metadata={"x-sim-cut-after": "6"})
        received: list[Any] = []
        with pytest.raises(ConnectionClosedError) as closed:
            for event in conn:
                received.append(event)
    assert [e.type for e in received] == RESPONSES_EVENTS_3[:4] + ["response.output_text.delta"] * 2
    assert closed.value.rcvd is None  # no close frame: the TCP connection was dropped
    # on the upgrade request: every response is cut (a cut beyond the end still stops before the usage)
    with oai.responses.connect(extra_headers={"x-sim-cut-after": "1000", "x-sim-reply-words": "3"}) as conn:
        conn.response.create(model="gpt-4o", input="x")
        got: list[Any] = []
        with pytest.raises(ConnectionClosedError):
            for event in conn:
                got.append(event)
    assert [e.type for e in got] == RESPONSES_EVENTS_3[:-1]


def test_responses_failed_and_incomplete(oai: openai.OpenAI) -> None:
    with oai.responses.connect(extra_headers={"x-sim-reply-words": "5"}) as conn:
        conn.response.create(model="gpt-4o", input="one two", metadata={"x-sim-stream-error": "6"})
        events = turn(conn)
        assert [e.type for e in events][-3:] == [
            "response.output_text.delta",
            "response.output_text.delta",
            "response.failed",
        ]
        failed = events[-1].response
        assert failed.status == "failed" and failed.error.code == "server_error"
        assert (failed.usage.input_tokens, failed.usage.output_tokens) == (4 + 2, 2)  # the 2 words sent

        conn.response.create(model="gpt-4o", input="one two", max_output_tokens=3)
        events = turn(conn)
        assert events[-1].type == "response.incomplete"
        incomplete = events[-1].response
        assert incomplete.incomplete_details.reason == "max_output_tokens"
        assert text_of(events) == "The quick brown"
        assert (incomplete.usage.input_tokens, incomplete.usage.output_tokens) == (6, 3)

        conn.response.create(model="gpt-4o", input="one two")
        assert turn(conn)[-1].type == "response.completed"


def test_responses_error_status_per_frame(oai: openai.OpenAI) -> None:
    headers = {"x-sim-model-status": "gpt-4o-mini=503"}
    with oai.responses.connect(extra_headers=headers) as conn:
        conn.response.create(model="gpt-4o", input="x", metadata={"x-sim-status": "429"})
        error = recv(conn)
        assert error.type == "error"
        assert error.status == 429
        assert error.error.code == "rate_limit_exceeded"
        conn.response.create(model="gpt-4o-mini", input="x")
        error = recv(conn)
        assert (error.type, error.status) == ("error", 503)
        conn.response.create(model="gpt-4o", input="x")
        assert turn(conn)[-1].type == "response.completed"


def test_responses_raw_client_deflate_stream_id_and_delays(sim: Simulator) -> None:
    url = sim.url.replace("http://", "ws://") + "/v1/responses"
    headers = {"Authorization": "Bearer sk-test", "x-sim-reply-words": "3", "x-sim-chunk-delay-ms": "30"}
    with ws_connect(url, additional_headers=headers) as ws:  # offers permessage-deflate by default
        assert ws.response is not None
        assert ws.response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
        assert ws.response.headers["x-request-id"].startswith("req_sim")
        ws.send(
            json.dumps({"type": "response.create", "model": "gpt-4o", "input": "x", "stream_id": "lane-1"})
        )
        arrivals: list[float] = []
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "response.completed":
            events.append(json.loads(ws.recv()))
            arrivals.append(time.perf_counter())
    assert all(e["stream_id"] == "lane-1" for e in events)
    assert [e["type"] for e in events] == RESPONSES_EVENTS_3
    assert arrivals[-1] - arrivals[0] >= 0.03 * 10 * 0.9


def test_responses_over_tls_and_model_delay() -> None:
    with Simulator() as tls:
        assert tls.https_url is not None
        client = openai.OpenAI(
            base_url=tls.base_url("openai", https=True),
            api_key="sk-test",
            max_retries=0,
        )
        headers = {"x-sim-model-delay-ms": "gpt-4o-mini=200", "x-sim-reply-words": "2"}
        options: Any = {"ssl": tls.client_ssl_context()}  # passed on to websockets.connect
        with client.responses.connect(extra_headers=headers, websocket_connection_options=options) as conn:
            start = time.perf_counter()
            conn.response.create(model="gpt-4o", input="x")
            assert text_of(turn(conn)) == "The quick"
            fast = time.perf_counter() - start
            start = time.perf_counter()
            conn.response.create(model="gpt-4o-mini", input="x")
            assert turn(conn)[-1].type == "response.completed"
            assert time.perf_counter() - start >= 0.2 > fast
        assert tls.last_request.tls and tls.last_request.path == "/v1/responses"


def test_other_upgrades_and_paths_are_refused(sim: Simulator) -> None:
    base = sim.url.replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as chat:
        ws_connect(base + "/v1/chat/completions")
    assert chat.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as no_model:
        ws_connect(base + "/v1/realtime")
    assert no_model.value.response.status_code == 400
    assert b"'model'" in bytes(no_model.value.response.body or b"")


# ---- Realtime API ---------------------------------------------------------------------------------------


def test_realtime_text_and_audio_usage(sim: Simulator, oai: openai.OpenAI) -> None:
    with oai.realtime.connect(model="gpt-realtime", extra_headers={"x-sim-reply-words": "3"}) as conn:
        created = recv(conn)
        assert created.type == "session.created"
        assert created.session.model == "gpt-realtime"
        conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "instructions": "be brief"}
        )
        assert recv(conn).type == "session.updated"
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]}
        )
        assert [recv(conn).type for _ in range(2)] == ["conversation.item.added", "conversation.item.done"]
        conn.input_audio_buffer.append(audio=audio(6000))
        conn.input_audio_buffer.append(audio=audio(4000))
        conn.input_audio_buffer.commit()
        assert [recv(conn).type for _ in range(3)] == [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]
        conn.response.create()
        events = realtime_turn(conn)
        assert [e.type for e in events] == [
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "The quick brown"
        usage = events[-1].response.usage
        # instructions 4+2, text item 4+2, audio item 4 text + ceil(10000/4800)=3 audio
        assert (usage.input_token_details.text_tokens, usage.input_token_details.audio_tokens) == (16, 3)
        assert (usage.input_tokens, usage.input_token_details.cached_tokens) == (19, 0)
        assert (usage.output_token_details.text_tokens, usage.output_token_details.audio_tokens) == (3, 0)
        assert (usage.output_tokens, usage.total_tokens) == (3, 22)

        # an audio answer: the transcript is text, 9600 bytes of audio per word (2 audio tokens)
        conn.response.create(response={"output_modalities": ["audio"]})
        events = realtime_turn(conn)
        audio_deltas = [e for e in events if e.type == "response.output_audio.delta"]
        assert len(audio_deltas) == 3
        assert sum(len(base64.b64decode(e.delta)) for e in audio_deltas) == 3 * 9600
        transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
        assert transcript == "The quick brown"
        usage = events[-1].response.usage
        # the conversation grew by the first answer (4+3 text); the first response's input is cached
        assert (usage.input_token_details.text_tokens, usage.input_token_details.audio_tokens) == (23, 3)
        assert usage.input_token_details.cached_tokens == 19
        cached = usage.input_token_details.cached_tokens_details
        assert (cached.text_tokens, cached.audio_tokens) == (16, 3)
        assert (usage.output_token_details.text_tokens, usage.output_token_details.audio_tokens) == (3, 6)
        assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (26, 9, 35)

        # an audio part in conversation.item.create; the audio answer before it counts 4 text + 6 audio
        conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": audio(4800)}],
            }
        )
        added = recv(conn)
        assert added.item.content[0].audio is None
        recv(conn)
        conn.response.create(response={"output_modalities": ["text"], "max_output_tokens": 2})
        events = realtime_turn(conn)
        done = events[-1].response
        assert done.status == "incomplete" and done.status_details.reason == "max_output_tokens"
        usage = done.usage
        assert (usage.input_token_details.text_tokens, usage.input_token_details.audio_tokens) == (
            23 + 4 + 4,
            3 + 6 + 1,
        )
        assert (usage.input_token_details.cached_tokens, usage.output_tokens) == (26, 2)
    upgrade = sim.requests[-1]
    assert upgrade.path == "/v1/realtime" and upgrade.params["model"] == "gpt-realtime"


def test_realtime_beta_dialect(oai: openai.OpenAI) -> None:
    with oai.beta.realtime.connect(
        model="gpt-4o-realtime-preview", extra_headers={"x-sim-reply-words": "2"}
    ) as conn:
        assert recv(conn).type == "session.created"
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a b c"}]}
        )
        assert recv(conn).type == "conversation.item.created"
        conn.response.create(response={"modalities": ["text", "audio"]})
        events = realtime_turn(conn)
        types = [e.type for e in events]
        assert "response.audio_transcript.delta" in types and "response.audio.delta" in types
        assert "conversation.item.created" in types and "conversation.item.done" not in types
        usage = events[-1].response.usage
        assert (usage.input_tokens, usage.output_tokens) == (4 + 3, 2 + 4)
        assert (usage.output_token_details.text_tokens, usage.output_token_details.audio_tokens) == (2, 4)


def test_realtime_errors_keep_the_socket(sim: Simulator, oai: openai.OpenAI) -> None:
    with oai.realtime.connect(model="gpt-realtime", extra_headers={"x-sim-reply-words": "1"}) as conn:
        recv(conn)
        conn.send_raw("{not json")
        assert recv(conn).error.code == "invalid_json"
        conn.send_raw(json.dumps({"type": "made.up", "event_id": "evt_1"}))
        error = recv(conn)
        assert error.type == "error"
        assert (error.error.code, error.error.param, error.error.event_id) == (
            "invalid_value",
            "type",
            "evt_1",
        )
        conn.input_audio_buffer.commit()
        assert recv(conn).error.code == "input_audio_buffer_commit_empty"
        conn.response.create(response={"metadata": {"x-sim-status": "429"}})
        assert recv(conn).error.code == "rate_limit_exceeded"
        conn.response.create(response={"output_modalities": ["text"]})
        assert realtime_turn(conn)[-1].response.status == "completed"
    raw = json.loads(sim.requests[-1].ws_sent[1])
    assert raw["type"] == "error" and set(raw["error"]) == {"type", "code", "message", "param", "event_id"}


def test_realtime_faults(sim: Simulator, oai: openai.OpenAI) -> None:
    with pytest.raises(InvalidStatus) as refused:
        with oai.realtime.connect(
            model="gpt-realtime", extra_headers={"x-sim-model-status": "gpt-realtime=503"}
        ):
            pass
    assert refused.value.response.status_code == 503
    with oai.realtime.connect(model="gpt-realtime", extra_headers={"x-sim-reply-words": "4"}) as conn:
        recv(conn)
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
        )
        recv(conn), recv(conn)
        # failed after 2 transcript+audio pairs: usage counts the 2 words and 4 audio tokens sent
        conn.response.create(response={"metadata": {"x-sim-stream-error": "8"}})
        events = realtime_turn(conn)
        done = events[-1].response
        assert done.status == "failed" and done.status_details.error.type == "server_error"
        usage = done.usage
        assert (usage.input_tokens, usage.output_token_details.text_tokens) == (5, 2)
        assert usage.output_token_details.audio_tokens == 4
        # cut after 5 events: no response.done, no close frame
        conn.response.create(response={"metadata": {"x-sim-cut-after": "5"}})
        received: list[Any] = []
        with pytest.raises(ConnectionClosedError):
            for event in conn:
                received.append(event)
        assert [e.type for e in received][-1] == "response.output_audio_transcript.delta"
        assert len(received) == 5
