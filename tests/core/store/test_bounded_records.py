"""A call whose numbers or text no database column could hold is still recorded (clamped), on SQLite and
PostgreSQL; and a record the database refuses is logged by id and error type, never with its content
(issue 17, finding 11a)."""

from __future__ import annotations

import json
import logging

import pytest

from tokenlens.exchange import Exchange
from tokenlens.metering import build_record
from tokenlens.pricing import Pricer
from tokenlens.records import CallRecord
from tokenlens.store import RecordWriter, Store

SECRET = "sk-proj-Zq3v9XkT4mB7nW2pL8rY5cF1hJ6dG0sA"
HUGE = 10**29
BILLION = 10**9  # the documented ceiling of any token count of one call
MILLION_USD = 1_000_000.0  # the documented ceiling of any amount of one call


def hostile_exchange(call_id: str, model: str = "gpt-4o-mini") -> Exchange:
    """A call that asked for 10^29 output tokens and whose answer reports absurd usage."""
    request = {"model": model, "max_tokens": HUGE, "messages": [{"role": "user", "content": SECRET}]}
    usage = {"prompt_tokens": 10**25, "completion_tokens": 10**30, "total_tokens": 10**30 + 10**25}
    answer = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [], "usage": usage}
    return Exchange(
        id=call_id,
        started=1_790_000_000.0,
        provider="openai",
        api="openai",
        endpoint="/v1/chat/completions",
        kind="chat",
        mode="base_url",
        tags={"team": SECRET},
        request_json=request,
        request_body=json.dumps(request).encode(),
        requested_model=model,
        model=model,
        max_tokens=HUGE,
        status=200,
        response_body=json.dumps(answer).encode(),
        ended=1_790_000_001.0,
    )


def test_a_call_with_huge_numbers_is_recorded_clamped(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    pricer = Pricer()
    writer: RecordWriter[Exchange] = RecordWriter(
        store, lambda ex: build_record(ex, pricer), journal=None, interval=0.01
    )
    caplog.set_level(logging.WARNING)
    writer.submit(hostile_exchange("huge"))
    writer.submit(hostile_exchange("odd-text", model="gpt-4o-mini\ud800\x00"))
    assert writer.flush(timeout=30) and writer.stop()
    assert writer.rejected == 0
    stored = store.get_call("huge")
    assert stored is not None
    assert stored.max_tokens == BILLION
    assert (stored.input_tokens, stored.output_tokens) == (BILLION, BILLION)
    assert stored.cost_usd == MILLION_USD and stored.priced
    parts = (
        stored.input_cost_usd,
        stored.output_cost_usd,
        stored.cache_read_cost_usd,
        stored.cache_write_cost_usd,
    )
    assert sum(p or 0.0 for p in parts) == pytest.approx(MILLION_USD, rel=1e-9)  # the breakdown still adds up
    assert stored.request_body is not None and SECRET.encode() in stored.request_body
    odd = store.get_call("odd-text")
    assert odd is not None and odd.model == "gpt-4o-mini\ufffd\ufffd" and odd.max_tokens == BILLION
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_refused_record_is_logged_without_its_content(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's last line of defence: a record built elsewhere, unclamped, that the database refuses."""
    refused = CallRecord(
        id="refused-1",
        ts=1_790_000_000.0,
        provider="openai",
        endpoint="/v1/chat/completions",
        tags={"key": SECRET},
        error=f"upstream said {SECRET}",
        details={"prompt": SECRET},
        max_tokens=HUGE,
        request_body=SECRET.encode(),
    )
    kept = CallRecord(id="kept-1", ts=1_790_000_000.0, provider="openai", endpoint="/v1/chat/completions")
    writer: RecordWriter[CallRecord] = RecordWriter(store, lambda r: r, journal=None, interval=0.01)
    caplog.set_level(logging.DEBUG)
    writer.submit(refused)
    writer.submit(kept)
    assert writer.flush(timeout=30) and writer.stop()
    assert writer.rejected == 1 and store.get_call("kept-1") is not None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "refused-1" in errors[0]
    assert any(name in errors[0] for name in ("OverflowError", "DataError"))
    assert SECRET not in caplog.text  # tracebacks included


def test_the_error_record_of_a_failed_preparation_is_storable(store: Store) -> None:
    def explode(ex: Exchange) -> CallRecord:
        raise RuntimeError(f"cannot prepare {SECRET}")

    exchange = hostile_exchange("fallback")
    exchange.source = "agent\ud800\x00"
    writer: RecordWriter[Exchange] = RecordWriter(store, explode, journal=None, interval=0.01)
    writer.submit(exchange)
    assert writer.flush(timeout=30) and writer.stop()
    stored = store.get_call("fallback")
    assert stored is not None and stored.outcome == "error" and stored.source == "agent\ufffd\ufffd"
