"""The stream parser's shorter paths give exactly what its general paths give (issue 22).

`StreamParser` takes shorter paths for the usual events (a chunk that is one whole SSE event, a JSON object
scanned without `json.loads`' wrappers, an OpenAI delta with only its content); `_fast = False` takes the
general ones. Every stream here, of every provider and with odd and hostile events, is fed to both, cut into
chunks in several ways, and the summaries (and the text pieces in the order they were found) must be equal.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenlens.usage import StreamParser, StreamSummary, _loads, _loads_event

FAST = settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))


class _Recording(StreamParser):
    def __init__(self, api: str, endpoint: str) -> None:
        super().__init__(api, endpoint)
        self.pieces: list[Any] = []

    def _add_text(self, v: Any) -> None:  # as the guardrails' parser sees the text (it keeps these)
        if isinstance(v, str) and v:
            self.pieces.append(v)
        super()._add_text(v)


class _Reference(_Recording):
    _fast = False


def _summary(parser: StreamParser) -> StreamSummary | str:
    try:
        return parser.summary()
    except Exception as exc:  # a parser bug: it must be the same on both paths
        return type(exc).__name__


def _run(cls: type[_Recording], api: str, endpoint: str, chunks: list[bytes]) -> tuple[Any, ...]:
    parser = cls(api, endpoint)
    midway: list[StreamSummary | str] = []
    for i, chunk in enumerate(chunks):
        parser.feed(chunk)
        if i % 3 == 1:  # summary() mid-stream reads an unterminated last event: it must agree too
            midway.append(_summary(parser))
    return _summary(parser), midway, parser.pieces


def _chunkings(body: bytes, events: list[bytes], seed: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, 7))) if len(body) > 1 else []
    bounds = [0, *cuts, len(body)]
    return [
        events,
        [body],
        [body[a:b] for a, b in zip(bounds, bounds[1:], strict=False)],
        [body[i : i + 1] for i in range(len(body))],
        [e for ev in events for e in (ev[: len(ev) // 2], ev[len(ev) // 2 :])],
    ]


def assert_same(api: str, endpoint: str, events: list[bytes], seed: int = 0) -> None:
    body = b"".join(events)
    for chunks in _chunkings(body, events, seed):
        fast = _run(_Recording, api, endpoint, chunks)
        reference = _run(_Reference, api, endpoint, chunks)
        assert fast == reference, chunks


def sse(*objs: Any, sep: bytes = b"\n\n", dumps: Any = None) -> list[bytes]:
    out = []
    for o in objs:
        data = o if isinstance(o, bytes) else (dumps or json.dumps)(o).encode("utf-8", "surrogatepass")
        out.append(b"data: " + data + sep)
    return out


def chat_chunk(delta: Any, **top: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [choice],
        **top,
    }


USAGE = {"prompt_tokens": 21, "completion_tokens": 8, "total_tokens": 29}
HOSTILE_TEXTS = [
    'say "hi"',
    '"usage": {"prompt_tokens": 999}',
    '\\"}]}, "usage": {"prompt_tokens": 5}',
    "caf\u00e9 \u2603 \U0001f600",
    "\ud83d",  # a lone surrogate (json.dumps writes \\ud83d)
    "line\nbreak\ttab\r",
    "data: [DONE]\n\n",
    "",
    "\x00\x1f",
    "}{",
]


def test_openai_chat_streams_of_odd_content() -> None:
    for i, text in enumerate(HOSTILE_TEXTS):
        for ensure_ascii in (True, False):

            def dumps(o: Any, ea: bool = ensure_ascii) -> str:
                return json.dumps(o, ensure_ascii=ea, separators=(",", ":"))

            events = sse(
                chat_chunk({"role": "assistant", "content": ""}),
                chat_chunk({"content": text}),
                chat_chunk({"content": text, "role": "assistant"}),
                chat_chunk({}, service_tier="default"),
                {
                    **chat_chunk({"content": "x"}),
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                },
                {**chat_chunk({}), "choices": [], "usage": USAGE},
                b"[DONE]",
                dumps=dumps,
            )
            assert_same("openai", "chat", events, seed=i)


@pytest.mark.parametrize(
    "delta",
    [
        {"content": "a", "refusal": "no"},
        {"role": "assistant", "content": "a", "reasoning_content": "think"},
        {"content": None},
        {"content": 5},
        {"content": ["a"]},
        {"role": "assistant"},
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"a"'}}]},
        {"reasoning": "r", "content": "c"},
        {"audio": {"transcript": "t"}, "content": None},
        {"function_call": {"arguments": "{}"}},
        {"refusal": "no", "role": "assistant"},
        "not a dict",
        None,
    ],
)
def test_openai_chat_deltas(delta: Any) -> None:
    events = sse(chat_chunk(delta), chat_chunk({"content": "b"}), {**chat_chunk({}), "usage": USAGE})
    assert_same("openai", "chat", events)
    assert_same("openai", "chat", sse(chat_chunk(delta), sep=b"\r\n\r\n"))


def test_openai_chat_raw_events() -> None:
    raw = [
        b'{"choices":[{"delta":{"content":"a","content":"b"}}]}',  # duplicate keys: the last wins
        b'{"choices":[{"delta":{"content":"a"}}],"model":"m1","model":"m2"}',
        b'{"choices":[{"delta":{"content":"\\u00e9\\ud83d\\ude00\\""}}]}',
        b'{"choices":[{"delta":{"content":"\xed\xa0\xbd"}}]}',  # a UTF-8 encoded surrogate (surrogatepass)
        b'{"choices":[{"delta":{"content":"\xff"}}]}',  # not UTF-8
        b'{"choices":[{"delta":{"content":"x"}}]} trailing',
        b'{"choices":[{"delta":{"content":"x"}}]}\t',
        b'{"choices":[{"delta":{"content":"x"}}]}\x0c',
        b'{"choices":[{"delta":{"content":"x"}}]}{"model":"m"}',
        b'{"choices":[{"delta":{"content":"x"}}]',
        b'{"usage":{"prompt_tokens":NaN,"completion_tokens":Infinity},"choices":[]}',
        b'{"usage":{"prompt_tokens":1e2,"completion_tokens":-3},"choices":[]}',
        b'\xef\xbb\xbf{"choices":[{"delta":{"content":"bom"}}]}',
        '{"choices":[{"delta":{"content":"utf16"}}]}'.encode("utf-16-le"),
        '{"choices":[{"delta":{"content":"utf32"}}]}'.encode("utf-32-le"),
        b'{"error":{"message":"overloaded"}}',
        b'{"error":""}',
        b'{"error":0,"model":"","service_tier":""}',
        b'{"model":5,"service_tier":["x"],"choices":{}}',
        b'{"choices":[{"text":"legacy"},null,5]}',
        b"[1,2]",
        b'"str"',
        b"",
        b"{}",
        b"{" * 5000 + b"}" * 5000,
        b"[DONE]",
        b" [DONE] ",
    ]
    for i, data in enumerate(raw):
        events = [
            b"data: " + data + b"\n\n",
            b"data:" + data + b"\r\n\r\n",
            b": comment\nevent: x\ndata: " + data + b"\n\n",
            b'data: {"choices":[{"delta":\ndata: {"content":"two lines"}}]}\n\n',
            b"data: " + data + b"\ndata: " + data + b"\n\n",  # two data lines (joined, or read apart)
            b"data: " + data,  # the last event without its blank line
        ]
        assert_same("openai", "chat", events, seed=i)


def test_openai_responses_streams() -> None:
    for i, text in enumerate(HOSTILE_TEXTS):
        events = sse(
            {"type": "response.created", "response": {"model": "gpt-5", "status": "in_progress"}},
            {"type": "response.output_text.delta", "sequence_number": 2, "delta": text, "obfuscation": "ab"},
            {"type": "response.reasoning_summary_text.delta", "delta": text},
            {"type": "response.function_call_arguments.delta", "delta": '{"usage":1}'},
            {"type": "response.output_text.done", "text": text},
            {
                "type": "response.completed",
                "response": {
                    "model": "gpt-5",
                    "status": "completed",
                    "service_tier": "default",
                    "usage": {
                        "input_tokens": 5,
                        "output_tokens": 7,
                        "output_tokens_details": {"reasoning_tokens": 2},
                    },
                },
            },
        )
        assert_same("openai", "responses", events, seed=i)
    assert_same("openai", "responses", sse({"type": "error", "code": "x", "message": "m"}))


def test_anthropic_streams() -> None:
    for i, text in enumerate(HOSTILE_TEXTS):
        events = [
            b"event: message_start\n",
            *sse(
                {
                    "type": "message_start",
                    "message": {
                        "model": "claude-sonnet-4",
                        "usage": {"input_tokens": 10, "output_tokens": 1},
                    },
                }
            ),
            *sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            b'event: ping\ndata: {"type": "ping"}\n\n',
            *sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            *sse(
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "thinking_delta", "thinking": text},
                }
            ),
            *sse(
                {
                    "type": "content_block_delta",
                    "index": 2,
                    "delta": {"type": "input_json_delta", "partial_json": text},
                }
            ),
            *sse({"type": "content_block_stop", "index": 0}),
            *sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 12, "cache_read_input_tokens": None},
                }
            ),
            *sse({"type": "message_stop"}),
        ]
        assert_same("anthropic", "messages", events, seed=i)
    assert_same("anthropic", "messages", sse({"type": "error", "error": {"type": "overloaded_error"}}))


def test_gemini_streams() -> None:
    def chunk(text: str, **extra: Any) -> dict[str, Any]:
        return {
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, **extra}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 3},
            "modelVersion": "gemini-2.5-flash",
        }

    for i, text in enumerate(HOSTILE_TEXTS):
        objs = [
            chunk(text),
            chunk(text, finishReason="STOP"),
            {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"a": text}}}]}}]},
        ]
        assert_same("google", "stream_generate", sse(*objs, sep=b"\r\n\r\n"), seed=i)
        array = json.dumps(objs).encode()
        assert_same("google", "stream_generate", [array[:40], array[40:]], seed=i)


def test_loads_event_is_loads() -> None:
    cases = [
        b"{}",
        b'{"a":1}',
        b'{"a":1} ',
        b'{"a":1}\n',
        b'{"a":1}x',
        b'{"a":1}{"b":2}',
        b'{"a":"\xed\xa0\xbd"}',
        b'{"a":"\xff"}',
        b'{"a":NaN,"b":-Infinity}',
        b'{"a":"\\ud83d\\ude00","b":"\\ud83d"}',
        b'{"a":"\x01"}',
        b'{"a" : [1, 2.5e3, true, false, null] }',
        b"{\x00",
        b"{\x00\x00\x00",
        '{"a":1}'.encode("utf-16-le"),
        '{"a":1}'.encode("utf-32-le"),
        b"\xef\xbb\xbf{}",
        b"{",
        b"{" * 100_000,
        b"[]",
        b"1",
        b"",
    ]
    for data in cases:
        try:
            expected: Any = _loads(data)
        except RecursionError:
            expected = RecursionError
        try:
            got: Any = _loads_event(data)
        except RecursionError:
            got = RecursionError
        assert repr(got) == repr(expected), data  # repr: NaN != NaN


_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True), _text)
_delta = st.dictionaries(
    st.sampled_from(["content", "role", "reasoning", "reasoning_content", "refusal", "tool_calls", "x"]),
    _scalar,
    max_size=3,
)
_event = st.one_of(
    st.builds(
        lambda d, fr: chat_chunk(d) | {"choices": [{"delta": d, "finish_reason": fr}]}, _delta, _scalar
    ),
    st.builds(lambda m, t: {"model": m, "service_tier": t, "choices": []}, _scalar, _scalar),
    st.builds(
        lambda p, c: {"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}}, _scalar, _scalar
    ),
    st.just(b"[DONE]"),
    st.binary(max_size=30),
)


@FAST
@given(
    events=st.lists(_event, max_size=8),
    ensure_ascii=st.booleans(),
    sep=st.sampled_from([b"\n\n", b"\r\n\r\n", b"\n\r\n", b"\n"]),
    seed=st.integers(0, 1000),
)
def test_random_openai_chat_streams(events: list[Any], ensure_ascii: bool, sep: bytes, seed: int) -> None:
    def dumps(o: Any) -> str:
        return json.dumps(o, ensure_ascii=ensure_ascii)

    assert_same("openai", "chat", sse(*events, sep=sep, dumps=dumps) or [b"data: {}"], seed=seed)


@FAST
@given(
    data=st.binary(max_size=60),
    prefix=st.sampled_from([b"{", b'{"a":"', b'{"choices":[{"delta":{"content":"']),
)
def test_random_bytes_loads_event_is_loads(data: bytes, prefix: bytes) -> None:
    for d in (data, prefix + data, prefix + data + b'"}'):
        assert repr(_loads_event(d)) == repr(_loads(d))
