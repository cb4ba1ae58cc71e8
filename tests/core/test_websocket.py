"""tokenlens.websocket: client frames as the gates read them, error events, and Realtime usage as metered."""

from __future__ import annotations

import json

import pytest

from tokenlens.request_body import BodyRefused
from tokenlens.usage import Usage, summarize_stream
from tokenlens.websocket import error_event, read_frame, realtime_model, realtime_text, ws_kind


def test_which_upgrades_are_metered() -> None:
    assert ws_kind("openai", "/v1/responses") == "responses"
    assert ws_kind("openai", "/v1/realtime") == "realtime"
    assert ws_kind("openai", "/v1/chat/completions") is None
    assert ws_kind("anthropic", "/v1/responses") is None
    assert realtime_model("/v1/realtime?model=gpt-realtime&x=1") == "gpt-realtime"
    assert realtime_model("/v1/realtime") is None


def test_only_response_create_frames_are_calls_however_they_are_written() -> None:
    assert read_frame(b'{"type":"input_audio_buffer.append","audio":"AAAA"}') is None
    assert read_frame(b"not json") is None
    assert read_frame(b'{"type":"response.cancel"}') is None
    found = read_frame(b'{"type":"response.create","model":"gpt-4o"}')
    assert found is not None and found.json == {"type": "response.create", "model": "gpt-4o"}
    # an escaped type is what the upstream reads: still a call
    escaped = read_frame(b'{"type":"response\\u002ecreate","model":"gpt-4o"}')
    assert escaped is not None and escaped.json is not None and escaped.json["model"] == "gpt-4o"
    # a byte-order mark and trailing bytes, as a lenient upstream reads them
    lenient = read_frame(b'\xef\xbb\xbf{"type":"response.create","model":"m"}\x00junk')
    assert lenient is not None and lenient.json is not None and lenient.json["model"] == "m"
    with pytest.raises(BodyRefused):
        read_frame(b'{"type":"response.create","input":' + b"[" * 300 + b"]" * 300 + b"}")


def test_error_events_in_each_apis_format() -> None:
    error = {"message": "no", "type": "permission_error", "code": "kill_switch", "param": None}
    assert json.loads(error_event("responses", 403, error)) == {
        "type": "error",
        "status": 403,
        "error": error,
    }
    realtime = json.loads(error_event("realtime", 403, error, "evt_1"))
    assert realtime["type"] == "error" and realtime["event_id"].startswith("event_")
    assert realtime["error"] == {**error, "event_id": "evt_1"}
    assert json.loads(error_event("realtime", 403, error))["error"]["event_id"] is None


def test_realtime_events_are_metered_like_a_responses_stream() -> None:
    usage = {
        "input_tokens": 26,
        "output_tokens": 9,
        "input_token_details": {
            "text_tokens": 23,
            "audio_tokens": 3,
            "cached_tokens": 19,
            "cached_tokens_details": {"text_tokens": 16, "audio_tokens": 3},
        },
        "output_token_details": {"text_tokens": 3, "audio_tokens": 6},
    }
    events = [
        {"type": "response.created", "response": {"id": "r1", "usage": None}},
        {"type": "response.output_audio_transcript.delta", "delta": "The quick brown"},
        {"type": "response.done", "response": {"id": "r1", "status": "completed", "usage": usage}},
    ]
    chunks = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    summary = summarize_stream("openai", "/v1/realtime", chunks)
    assert summary.complete and summary.usage_final and summary.output_text == "The quick brown"
    # audio in all of it (cached included); the cached part by modality, each priced at its own rate
    assert summary.usage == Usage(
        26,
        9,
        19,
        input_audio_tokens=3,
        output_audio_tokens=6,
        modality_tokens=(
            ("input", "text", 23),
            ("input", "audio", 3),
            ("cache_read", "text", 16),
            ("cache_read", "audio", 3),
            ("output", "text", 3),
            ("output", "audio", 6),
        ),
    )
    beta = {
        "input_tokens": 7,
        "output_tokens": 6,
        "input_token_details": {"text_tokens": 4, "audio_tokens": 3, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 2, "audio_tokens": 4},
    }
    cut = summarize_stream("openai", "/v1/realtime", chunks[:2])
    assert not cut.complete and cut.usage is None
    done = {"type": "response.done", "response": {"usage": beta}}
    summary = summarize_stream("openai", "/v1/realtime", [b"data: " + json.dumps(done).encode() + b"\n\n"])
    assert summary.usage == Usage(
        7,
        6,
        0,
        input_audio_tokens=3,
        output_audio_tokens=4,
        modality_tokens=(
            ("input", "text", 4),
            ("input", "audio", 3),
            ("output", "text", 2),
            ("output", "audio", 4),
        ),
    )


def test_a_frame_in_utf16_or_utf32_is_read_as_the_gates_read_a_body() -> None:
    """`read_request_body` reads UTF-16/32 JSON (BOM or not), as a lenient upstream could: such a frame has no
    `response.create` in its bytes, and must not pass as "not a call" (ungated, unrecorded)."""
    frame = {"type": "response.create", "model": "gpt-4o"}
    text = json.dumps(frame)
    for encoding in ("utf-16-le", "utf-16", "utf-32-be", "utf-32"):
        found = read_frame(text.encode(encoding))
        assert found is not None and found.json == frame, encoding
    item = {"type": "conversation.item.create", "item": {"role": "user", "content": "hi"}}
    found_text = realtime_text(json.dumps(item).encode("utf-16"))
    assert found_text is not None and found_text[1] == {"messages": [item["item"]]}
