"""Property-based tests (hypothesis): no parser lets an exception escape on arbitrary input.

Request bodies of each provider (exchange helpers, token estimates, metering into a record), SSE streams
with arbitrary bytes and chunk splits, guardrail scans, configuration files and config API bodies, import
files. Derandomized with modest example counts so the suite stays fast and stable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenlens.config import (
    EDITABLE_SECTIONS,
    ConfigError,
    Settings,
    load_settings,
    parse_settings,
    replace_section,
)
from tokenlens.exchange import (
    Exchange,
    max_tokens_from_request,
    model_from_request,
    wants_stream,
)
from tokenlens.guardrails.engine import scan_body
from tokenlens.metering import build_record
from tokenlens.pricing import Pricer
from tokenlens.records import CallRecord
from tokenlens.request_body import parse_json_object
from tokenlens.store import open_store
from tokenlens.tokens import estimate_request_tokens
from tokenlens.usage import StreamParser, endpoint_kind, summarize_stream, usage_from_body

FAST = settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ENDPOINTS = [
    ("openai", "/v1/chat/completions"),
    ("openai", "/v1/responses"),
    ("openai", "/v1/completions"),
    ("openai", "/v1/embeddings"),
    ("anthropic", "/v1/messages"),
    ("anthropic", "/v1/messages/count_tokens"),
    ("google", "/v1beta/models/gemini-2.0-flash:generateContent"),
    ("google", "/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
    ("google", "/v1beta/models/text-embedding-004:embedContent"),
]
KEYS = [
    "model", "messages", "contents", "input", "stream", "max_tokens", "max_output_tokens", "usage", "role",
    "content", "text", "parts", "type", "system", "tools", "choices", "delta", "candidates", "usageMetadata",
    "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "promptTokenCount", "generationConfig",
    "stream_options", "include_usage", "message", "response", "output", "index", "cache_read_input_tokens",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=25,
)
objects = st.dictionaries(st.sampled_from(KEYS), json_like, max_size=8)


def as_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


raw_bodies = st.one_of(st.binary(max_size=400), objects.map(as_bytes), json_like.map(as_bytes))


def sse(events: list[Any], ending: str) -> bytes:
    return "".join(f"data: {json.dumps(e)}{ending}" for e in events).encode() + b"data: [DONE]\n\n"


streams = st.one_of(
    st.binary(max_size=600),
    st.tuples(st.lists(json_like, max_size=6), st.sampled_from(["\n\n", "\r\n\r\n", "\n", "\r\r"])).map(
        lambda t: sse(*t)
    ),
    st.lists(objects, max_size=6).map(lambda evs: b"\n".join(as_bytes(e) for e in evs)),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@FAST
@given(endpoint=st.sampled_from(ENDPOINTS), body=raw_bodies)
def test_request_body_helpers_never_raise(endpoint: tuple[str, str], body: bytes) -> None:
    api, path = endpoint
    kind = endpoint_kind(api, path)
    parsed = parse_json_object(body)
    assert parsed is None or isinstance(parsed, dict)
    model_from_request(api, path, parsed)  # type: ignore[arg-type]
    max_tokens_from_request(api, parsed)  # type: ignore[arg-type]
    assert isinstance(wants_stream(kind, parsed), bool)
    if parsed is not None:
        assert estimate_request_tokens(api, parsed) >= 0


@FAST
@given(endpoint=st.sampled_from(ENDPOINTS), body=raw_bodies)
def test_usage_from_any_answer_body_never_raises(endpoint: tuple[str, str], body: bytes) -> None:
    api, path = endpoint
    usage, _model = usage_from_body(api, path, body)  # type: ignore[arg-type]
    if usage is not None:
        assert usage.input_tokens >= 0 or isinstance(usage.input_tokens, int)


@FAST
@given(endpoint=st.sampled_from(ENDPOINTS), data=streams, cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_sse_streams_any_bytes_any_split_never_raise(
    endpoint: tuple[str, str], data: bytes, cuts: list[int]
) -> None:
    api, path = endpoint
    whole = summarize_stream(api, path, [data])  # type: ignore[arg-type]
    pieces = summarize_stream(api, path, split(data, cuts))  # type: ignore[arg-type]
    assert pieces.usage == whole.usage  # the split does not change what the stream says
    parser = StreamParser(api, path)
    for piece in split(data, cuts):
        parser.feed(piece)
    parser.summary()


@FAST
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    request=raw_bodies,
    response=raw_bodies,
    streamed=st.booleans(),
    status=st.sampled_from([None, 200, 400, 429, 500, 502]),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
)
def test_metering_any_exchange_builds_a_record(
    endpoint: tuple[str, str],
    request: bytes,
    response: bytes,
    streamed: bool,
    status: int | None,
    cuts: list[int],
) -> None:
    api, path = endpoint
    parsed = parse_json_object(request)
    exchange = Exchange(
        id="x1",
        started=1_790_000_000.0,
        provider=api,
        api=api,  # type: ignore[arg-type]
        endpoint=path,
        kind=endpoint_kind(api, path),
        mode="base_url",
        request_body=request,
        request_json=parsed,
        requested_model=model_from_request(api, path, parsed),  # type: ignore[arg-type]
        model=model_from_request(api, path, parsed),  # type: ignore[arg-type]
        status=status,
        streamed=streamed,
        response_body=None if streamed else response,
        chunks=split(response, cuts) if streamed else [],
        ended=1_790_000_001.0,
    )
    record = build_record(exchange, PRICER)
    assert isinstance(record, CallRecord) and record.id == "x1"
    assert record.input_tokens >= 0 and record.output_tokens >= 0


PRICER = Pricer()
GUARDS = parse_settings(
    {
        "guardrails": {
            "pii_detection": {"enabled": True, "action": "redact"},
            "injection_detection": {"enabled": True},
            "response_pii_detection": {"enabled": True},
            "custom_rules": [{"name": "ticket", "pattern": "TCK-[0-9]{4}", "action": "redact"}],
        }
    }
).guardrails


@FAST
@given(endpoint=st.sampled_from(ENDPOINTS), body=objects, where=st.sampled_from(["request", "response"]))
def test_guardrail_scans_never_raise(endpoint: tuple[str, str], body: dict[str, Any], where: str) -> None:
    verdict = scan_body(GUARDS, endpoint[0], body, where)
    assert verdict.scan_ms >= 0


SECTION_NAMES = [
    "server", "storage", "providers", "budgets", "quotas", "routing", "guardrails", "dedup", "pricing",
    "alerts", "webhooks", "timezone",
]  # fmt: skip
config_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "host",
                    "port",
                    "enabled",
                    "action",
                    "pattern",
                    "name",
                    "daily_usd",
                    "url",
                    "upstream",
                    "format",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@FAST
@given(data=st.dictionaries(st.sampled_from(SECTION_NAMES) | st.text(max_size=6), config_values, max_size=5))
def test_parse_settings_accepts_or_raises_config_error(data: dict[str, Any]) -> None:
    try:
        assert isinstance(parse_settings(data), Settings)
    except ConfigError as error:
        assert str(error)


@FAST
@given(section=st.sampled_from(EDITABLE_SECTIONS), body=config_values)
def test_config_api_bodies_are_accepted_or_refused_with_a_config_error(section: str, body: Any) -> None:
    try:
        replace_section(BASE, section, body)
    except ConfigError as error:
        assert str(error)


BASE = parse_settings({})
yaml_texts = st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(SECTION_NAMES), config_values, max_size=4).map(
        lambda d: json.dumps(d, ensure_ascii=False)  # JSON is YAML
    ),
)


@FAST
@given(text=yaml_texts)
def test_config_files_load_or_raise_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        assert isinstance(load_settings(path), Settings)
    except ConfigError as error:
        assert str(error)


import_objects = st.fixed_dictionaries(
    {},
    optional={
        "ts": scalars,
        "provider": scalars,
        "model": scalars,
        "input_tokens": scalars,
        "output_tokens": scalars,
        "id": scalars,
        "tags": json_like,
        "cost_usd": scalars,
        "source": scalars,
        "endpoint": scalars,
        "details": json_like,
    },
)
import_lines = st.lists(
    st.one_of(st.binary(max_size=80), st.text(max_size=80), import_objects.map(lambda o: json.dumps(o))),
    max_size=6,
)


@settings(FAST, max_examples=40)
@given(lines=import_lines)
def test_import_files_never_raise(tmp_path_factory: Any, lines: list[str | bytes]) -> None:
    store = open_store(None, tmp_path_factory.mktemp("import"))
    try:
        result = store.import_lines(lines, PRICER)
        assert result.imported + result.skipped + len(result.errors) <= len(lines)
        assert store.count_calls() == result.imported
    finally:
        store.close()
