import gzip
import json

import pytest

from published_prices import expected_cost
from tokenlens.exchange import Exchange
from tokenlens.metering import build_record
from tokenlens.pricing import PriceOverride, Pricer

PRICER = Pricer()
REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three four five"}]}


def exchange(**kwargs: object) -> Exchange:
    base: dict[str, object] = {
        "id": "x1",
        "started": 1000.0,
        "provider": "openai",
        "api": "openai",
        "endpoint": "/v1/chat/completions",
        "kind": "chat",
        "mode": "base_url",
        "request_json": REQUEST,
        "request_body": json.dumps(REQUEST).encode(),
        "requested_model": "gpt-4o-mini",
        "model": "gpt-4o-mini",
        "status": 200,
        "ended": 1000.25,
    }
    base.update(kwargs)
    return Exchange(**base)  # type: ignore[arg-type]


def chat_body(prompt: int, completion: int, cached: int = 0, model: str = "gpt-4o-mini-2024-07-18") -> bytes:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return json.dumps(
        {"id": "c", "object": "chat.completion", "model": model, "choices": [], "usage": usage}
    ).encode()


def sse(*payloads: object) -> list[bytes]:
    return [b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + b"\n\n" for p in payloads]


def test_non_streamed_call_is_priced_from_the_reported_usage() -> None:
    record = build_record(exchange(response_body=chat_body(1200, 300, cached=200)), PRICER)
    usage = {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 200}
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens) == (1200, 300, 200)
    assert record.cost_usd == pytest.approx(expected_cost("gpt-4o-mini", usage), rel=1e-12)
    assert record.usage_source == "provider" and record.priced and record.outcome == "ok"
    assert record.response_model == "gpt-4o-mini-2024-07-18"
    assert record.latency_ms == 250.0 and record.ttft_ms == 250.0
    parts = [
        record.input_cost_usd,
        record.output_cost_usd,
        record.cache_read_cost_usd,
        record.cache_write_cost_usd,
    ]
    assert sum(p or 0 for p in parts) == pytest.approx(record.cost_usd, rel=1e-12)


def test_gzip_body_is_decoded_before_metering() -> None:
    ex = exchange(
        response_body=gzip.compress(chat_body(10, 5)), response_headers={"content-encoding": "gzip"}
    )
    record = build_record(ex, PRICER)
    assert (record.input_tokens, record.output_tokens) == (10, 5)
    assert json.loads(record.response_body or b"")["usage"]["prompt_tokens"] == 10


def test_stream_with_final_usage() -> None:
    chunk = {
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"delta": {"content": "hi there"}}],
    }
    usage = {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57}
    chunks = sse(chunk, {"object": "chat.completion.chunk", "choices": [], "usage": usage}, b"[DONE]")
    record = build_record(exchange(streamed=True, chunks=chunks, first_chunk_at=1000.05), PRICER)
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (50, 7, "provider")
    assert record.stream and record.ttft_ms == pytest.approx(50.0)


def test_cut_stream_is_estimated_and_priced() -> None:
    chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "alpha beta gamma delta"}}]}
    ex = exchange(
        streamed=True, chunks=sse(chunk, chunk), first_chunk_at=1000.1, error="Client disconnected."
    )
    record = build_record(ex, PRICER)
    assert record.usage_source == "estimated" and record.outcome == "error"
    assert record.input_tokens > 0 and record.output_tokens > 0
    assert record.cost_usd == pytest.approx(
        expected_cost(
            "gpt-4o-mini", {"input_tokens": record.input_tokens, "output_tokens": record.output_tokens}
        )
    )


def test_anthropic_cut_keeps_reported_input_side() -> None:
    start = {
        "type": "message_start",
        "message": {
            "model": "claude-haiku-4-5",
            "usage": {"input_tokens": 100, "cache_read_input_tokens": 900, "output_tokens": 1},
        },
    }
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "partial answer text"}}
    chunks = [b"event: x\ndata: " + json.dumps(e).encode() + b"\n\n" for e in (start, delta)]
    ex = exchange(
        provider="anthropic",
        api="anthropic",
        endpoint="/v1/messages",
        kind="messages",
        model="claude-haiku-4-5",
        streamed=True,
        chunks=chunks,
        error="upstream cut",
    )
    record = build_record(ex, PRICER)
    assert (record.input_tokens, record.cache_read_tokens, record.usage_source) == (1000, 900, "estimated")
    assert record.output_tokens > 1


def test_unknown_model_is_unpriced_not_free() -> None:
    record = build_record(
        exchange(model="my-finetune", response_body=chat_body(10, 5, model="my-finetune")), PRICER
    )
    assert record.priced is False and record.cost_usd is None and record.input_tokens == 10


def test_overrides_price_an_unknown_model() -> None:
    pricer = Pricer({"my-finetune": PriceOverride(input=1.0, output=2.0)})
    record = build_record(
        exchange(model="my-finetune", response_body=chat_body(1_000, 500, model="my-finetune")), pricer
    )
    assert record.cost_usd == pytest.approx((1_000 * 1.0 + 500 * 2.0) / 1e6)


def test_error_without_usage_costs_zero_and_blocked_keeps_reason() -> None:
    failed = build_record(exchange(status=500, response_body=b'{"error": {}}'), PRICER)
    assert (failed.outcome, failed.cost_usd, failed.priced, failed.usage_source) == ("error", 0.0, True, None)
    blocked = build_record(exchange(status=429, outcome="blocked", blocked_by="budget"), PRICER)
    assert (blocked.outcome, blocked.blocked_by, blocked.cost_usd) == ("blocked", "budget", 0.0)


def test_count_tokens_and_other_endpoints_are_unpriced() -> None:
    counted = exchange(
        provider="anthropic",
        api="anthropic",
        endpoint="/v1/messages/count_tokens",
        kind="count_tokens",
        response_body=b'{"input_tokens": 12}',
    )
    record = build_record(counted, PRICER)
    assert (record.priced, record.cost_usd, record.status) == (False, None, 200)
    models = build_record(
        exchange(endpoint="/v1/models", kind="other", response_body=b'{"data": []}'), PRICER
    )
    assert (models.priced, models.cost_usd) == (False, None)


def test_bodies_are_kept_only_when_asked() -> None:
    ex = exchange(response_body=chat_body(1, 1))
    assert build_record(ex, PRICER).request_body == ex.request_body
    bare = build_record(ex, PRICER, store_bodies=False)
    assert bare.request_body is None and bare.response_body is None


def test_deferred_analysis_runs_with_the_built_record_and_cannot_break_it() -> None:
    seen = []

    def annotate(ex: Exchange, record: object) -> None:
        seen.append(record)
        record.details["waste"] = {"tokens": 3}  # type: ignore[attr-defined]
        record.waste_tokens = 3  # type: ignore[attr-defined]

    def broken(ex: Exchange, record: object) -> None:
        raise RuntimeError("boom")

    record = build_record(exchange(response_body=chat_body(10, 5), deferred=[broken, annotate]), PRICER)
    assert seen == [record] and record.details == {"waste": {"tokens": 3}} and record.waste_tokens == 3
    assert record.input_tokens == 10


def test_the_gateway_hooks_run_once_before_the_details_are_taken_and_the_cost_is_told_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told: list[float | None] = []

    def rate_limits(ex: Exchange) -> None:
        ex.details["rate_limit"] = {"credential": "c"}

    def broken(ex: Exchange) -> None:
        raise RuntimeError("a body quoted here")

    ex = exchange(
        response_body=chat_body(10, 5),
        on_recorded=[broken, rate_limits],
        on_cost=[told.append, lambda usd: 1 / 0, told.append],
    )
    record = build_record(ex, PRICER)
    assert record.details["rate_limit"] == {"credential": "c"}
    assert told == [record.cost_usd, record.cost_usd] and record.cost_usd is not None
    assert ex.on_recorded == [] and ex.on_cost == []  # each runs once, however often the call is built
    assert "a body quoted here" not in caplog.text and "RuntimeError" in caplog.text
