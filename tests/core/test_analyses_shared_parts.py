"""The waste and heatmap analyses of one call share its request parts (built once): the record is what each
analysis gives on its own, and a call's parts never reach the next call."""

from __future__ import annotations

import copy
import json
import time
from decimal import Decimal
from typing import Any

import pytest

from tokenlens.analyses import AnalysisContext, run_analyses
from tokenlens.config import SettingsHolder, parse_settings
from tokenlens.exchange import Exchange
from tokenlens.heatmap import record_heatmap
from tokenlens.records import CallRecord
from tokenlens.waste import record_waste

DOC = "<document>\n" + "The quarterly report says revenue grew.   " * 40 + "\n</document>"
BODIES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "openai",
        "chat",
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse.  Be helpful. Be helpful."},
                {"role": "user", "content": "Please, could you kindly    summarise this?\n" + DOC},
                {
                    "role": "assistant",
                    "content": "Sure.",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "content": '{"rows": [1, 2, 3]}', "tool_call_id": "x"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "And now?"},
                        {"type": "image_url", "image_url": {"url": "data:,"}},
                    ],
                },
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        },
    ),
    (
        "anthropic",
        "messages",
        "/v1/messages",
        {
            "model": "claude-sonnet-4",
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "Thanks so much! " + DOC}],
        },
    ),
    (
        "google",
        "generate",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        {
            "systemInstruction": {"parts": [{"text": "Answer in French."}]},
            "contents": [{"role": "user", "parts": [{"text": "Where is Paris?  " + DOC}]}],
        },
    ),
    ("openai", "chat", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": "not a list"}),
]


def _exchange(api: str, kind: str, endpoint: str, body: dict[str, Any], n: int) -> Exchange:
    return Exchange(
        id=f"call-{n}",
        started=time.time(),
        provider=api,
        api=api,  # type: ignore[arg-type]
        endpoint=endpoint,
        kind=kind,
        mode="base_url",
        request_json=body,
        request_body=json.dumps(body).encode(),
        requested_model="m",
        model=body.get("model"),
    )


def _record(n: int, input_tokens: int) -> CallRecord:
    return CallRecord(
        id=f"call-{n}",
        ts=time.time(),
        provider="openai",
        endpoint="/v1/chat/completions",
        input_tokens=input_tokens,
        output_tokens=5,
    )


@pytest.mark.parametrize("input_tokens", [0, 1234])
def test_shared_parts_give_what_each_analysis_gives(input_tokens: int) -> None:
    context = AnalysisContext(SettingsHolder(parse_settings({})))
    rate = Decimal("0.15")
    for n, (api, kind, endpoint, body) in enumerate(BODIES):
        shared, alone = _record(n, input_tokens), _record(n, input_tokens)
        exchange = _exchange(api, kind, endpoint, copy.deepcopy(body), n)
        context.input_rate = rate
        run_analyses(context, ["waste", "conversation", "heatmap"], exchange, shared)
        assert context.parts is None  # nothing kept for the next call
        record_waste(_exchange(api, kind, endpoint, copy.deepcopy(body), n), alone, rate)
        record_heatmap(_exchange(api, kind, endpoint, copy.deepcopy(body), n), alone)
        assert shared.details["waste"] == alone.details["waste"]
        assert shared.details["heatmap"] == alone.details["heatmap"]
        assert (shared.waste_tokens, shared.complexity) == (alone.waste_tokens, alone.complexity)
        run_analyses(context, ["heatmap"], exchange, _record(n, input_tokens))  # heatmap first, alone


def test_two_calls_analysed_at_once_on_one_context_keep_their_own_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The inline writer's spill thread may analyse a call while the writer thread analyses another, with the
    same context: call A pauses between its waste and heatmap analyses while call B has read its parts."""
    import threading

    import tokenlens.analyses as analyses_module

    context = AnalysisContext(SettingsHolder(parse_settings({})))
    a_paused, b_read, a_done = threading.Event(), threading.Event(), threading.Event()

    def pause_a(ctx: AnalysisContext, exchange: Exchange, record: CallRecord) -> None:
        a_paused.set()
        assert b_read.wait(5)

    def pause_b(ctx: AnalysisContext, exchange: Exchange, record: CallRecord) -> None:
        b_read.set()
        assert a_done.wait(5)

    monkeypatch.setitem(analyses_module.ANALYSES, "pause_a", pause_a)
    monkeypatch.setitem(analyses_module.ANALYSES, "pause_b", pause_b)
    (api_a, kind_a, endpoint_a, body_a), (api_b, kind_b, endpoint_b, body_b) = BODIES[0], BODIES[2]
    record_a, record_b = _record(0, 1234), _record(1, 1234)

    def run_b() -> None:
        assert a_paused.wait(5)
        exchange = _exchange(api_b, kind_b, endpoint_b, copy.deepcopy(body_b), 1)
        run_analyses(context, ["waste", "pause_b", "heatmap"], exchange, record_b)

    other = threading.Thread(target=run_b)
    other.start()
    exchange_a = _exchange(api_a, kind_a, endpoint_a, copy.deepcopy(body_a), 0)
    run_analyses(context, ["waste", "pause_a", "heatmap"], exchange_a, record_a)
    a_done.set()
    other.join(5)
    for (api, kind, endpoint, body), n, record in ((BODIES[0], 0, record_a), (BODIES[2], 1, record_b)):
        alone = _record(n, 1234)
        record_heatmap(_exchange(api, kind, endpoint, copy.deepcopy(body), n), alone)
        assert record.details["heatmap"] == alone.details["heatmap"]
