import gzip
import json
import zlib

from mitmproxy import http
from mitmproxy.test import taddons

from mitm_helpers import gateway_flow
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.ingress import Ingress
from tokenlens.addons.upstream import Upstream
from tokenlens.app import AppDeps
from tokenlens.exchange import Exchange
from tokenlens.stream_taps import StreamTap, UsageChunkStripper

STREAM_CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def chunk_event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


WORDS = ("Hello", ' "usage": null, ', "!")
# What the client gets without include_usage, and what upstream sends with it (`"usage": null` added).
ASKED_EVENTS = [
    chunk_event(
        {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}}]}
    )
    for w in WORDS
]
CONTENT_EVENTS = [
    chunk_event(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": w}}],
            "usage": None,
        }
    )
    for w in WORDS
]
USAGE_EVENT = chunk_event(
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
)
DONE = b"data: [DONE]\n\n"


def prepared(deps: AppDeps, body: dict[str, object]) -> tuple[http.HTTPFlow, Exchange]:
    flow = gateway_flow("/proxy/openai/v1/chat/completions", body)
    ingress, upstream = Ingress(deps), Upstream()
    with taddons.context(ingress, upstream):
        ingress.request(flow)
        upstream.request(flow)
    exchange = exchange_of(flow)
    assert exchange is not None
    return flow, exchange


def test_usage_is_requested_for_streams_that_did_not_ask(deps: AppDeps) -> None:
    flow, exchange = prepared(deps, STREAM_CHAT)
    sent = json.loads(flow.request.content or b"")
    assert sent["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in sent.items() if k != "stream_options"} == STREAM_CHAT
    assert exchange.usage_injected and flow.request.headers["accept-encoding"] == "identity"


def test_a_client_that_asked_for_usage_is_forwarded_unchanged(deps: AppDeps) -> None:
    body = {**STREAM_CHAT, "stream_options": {"include_usage": True}}
    flow, exchange = prepared(deps, body)
    assert not exchange.usage_injected
    assert json.loads(flow.request.content or b"") == body


def test_non_streaming_requests_are_not_touched(deps: AppDeps) -> None:
    body = {**STREAM_CHAT, "stream": False}
    raw = json.dumps(body).encode()
    flow = gateway_flow("/proxy/openai/v1/chat/completions", raw)
    ingress, upstream = Ingress(deps), Upstream()
    with taddons.context(ingress, upstream):
        ingress.request(flow)
        upstream.request(flow)
    assert flow.request.content == raw


def run_tap(tap: StreamTap, pieces: list[bytes]) -> bytes:
    out = b""
    for piece in [*pieces, b""]:
        result = tap(piece)
        out += result if isinstance(result, bytes) else b"".join(result)
    return out


def test_stripper_removes_only_the_usage_chunk_whatever_the_split(deps: AppDeps) -> None:
    wire = b"".join(CONTENT_EVENTS) + USAGE_EVENT + DONE
    expected = b"".join(ASKED_EVENTS) + DONE
    for size in (1, 7, 64, len(wire)):
        exchange = prepared(deps, STREAM_CHAT)[1]
        tap = UsageChunkStripper(exchange)
        pieces = [wire[i : i + size] for i in range(0, len(wire), size)]
        assert run_tap(tap, pieces) == expected
        assert b"".join(exchange.chunks) == wire  # the record still sees the usage


def test_stripper_passes_complete_events_at_once(deps: AppDeps) -> None:
    exchange = prepared(deps, STREAM_CHAT)[1]
    tap = UsageChunkStripper(exchange)
    assert tap(CONTENT_EVENTS[0]) == ASKED_EVENTS[0]
    assert tap(USAGE_EVENT) == []
    assert tap(DONE) == DONE


def test_tap_forwards_compressed_bytes_and_keeps_them_decoded(deps: AppDeps) -> None:
    exchange = prepared(deps, STREAM_CHAT)[1]
    from tokenlens.encoding import stream_decoder

    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    wire_pieces = [compressor.compress(e) + compressor.flush(zlib.Z_SYNC_FLUSH) for e in CONTENT_EVENTS]
    wire_pieces.append(compressor.flush())
    tap = StreamTap(exchange, stream_decoder("gzip"))
    assert run_tap(tap, wire_pieces) == b"".join(wire_pieces)
    assert b"".join(exchange.chunks) == b"".join(CONTENT_EVENTS)
    assert gzip.decompress(b"".join(wire_pieces)) == b"".join(CONTENT_EVENTS)


def test_only_successful_event_streams_are_tapped(deps: AppDeps) -> None:
    upstream = Upstream()
    flow, exchange = prepared(deps, STREAM_CHAT)
    flow.response = http.Response.make(429, b"{}", {"content-type": "application/json"})
    upstream.responseheaders(flow)
    assert not flow.response.stream and not exchange.streamed
    flow.response = http.Response.make(
        200, b"", {"content-type": "text/event-stream", "content-length": "10"}
    )
    upstream.responseheaders(flow)
    assert isinstance(flow.response.stream, UsageChunkStripper) and exchange.streamed
    assert "content-length" not in flow.response.headers
