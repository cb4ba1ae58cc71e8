"""The record of a call: the Gemini tier the request asked for, per-modality counts, `price_source` and the
warning for a model the price data does not know (issue 18). Rates: published USD per million tokens
(tests/published_prices.py)."""

from __future__ import annotations

import json

import pytest

from published_prices import TTS_FLEX as TTS_FLEX_RATES
from tokenlens.exchange import Exchange
from tokenlens.metering import build_record
from tokenlens.pricing import Pricer

TTS_FLEX = {k: float(v) for k, v in TTS_FLEX_RATES.items()}  # gemini-3.8-flash-tts, flex


def gemini_exchange(request: dict[str, object], **kwargs: object) -> Exchange:
    base: dict[str, object] = {
        "id": "g1",
        "started": 1000.0,
        "provider": "google",
        "api": "google",
        "endpoint": "/v1beta/models/gemini-3.8-flash-tts:generateContent",
        "kind": "generate",
        "mode": "base_url",
        "request_json": request,
        "request_body": json.dumps(request).encode(),
        "requested_model": "gemini-3.8-flash-tts",
        "model": "gemini-3.8-flash-tts",
        "status": 200,
        "ended": 1000.5,
    }
    base.update(kwargs)
    return Exchange(**base)  # type: ignore[arg-type]


def body(um: dict[str, object], model: str = "gemini-3.8-flash-tts") -> bytes:
    return json.dumps(
        {"candidates": [{"finishReason": "STOP"}], "usageMetadata": um, "modelVersion": model}
    ).encode()


def test_the_requested_flex_tier_prices_the_call_and_is_recorded() -> None:
    request = {"contents": [{"parts": [{"text": "hi"}]}], "serviceTier": "flex"}
    um = {
        "promptTokenCount": 1000,
        "candidatesTokenCount": 400,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}],
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 400}],
    }
    record = build_record(gemini_exchange(request, response_body=body(um)), Pricer())
    assert record.service_tier == "flex" and record.price_source == "gemini-3.8-flash-tts"
    assert record.modality_tokens == {"input": {"text": 1000}, "output": {"audio": 400}}
    assert record.cost_usd == pytest.approx(
        (1000 * TTS_FLEX["input"] + 400 * TTS_FLEX["output"]) / 1e6, rel=1e-12
    )


def test_a_cut_stream_is_estimated_at_the_requested_tier() -> None:
    request = {"contents": [{"parts": [{"text": "one two three"}]}], "serviceTier": "flex"}
    chunk = {
        "candidates": [{"content": {"parts": [{"text": "partial answer"}]}}],
        "modelVersion": "gemini-3.8-flash-tts",
    }
    ex = gemini_exchange(request, streamed=True, chunks=[b"data: " + json.dumps(chunk).encode() + b"\n\n"])
    record = build_record(ex, Pricer())
    assert record.usage_source == "estimated" and record.service_tier == "flex"
    expected = (record.input_tokens * TTS_FLEX["input"] + record.output_tokens * TTS_FLEX["output"]) / 1e6
    assert record.cost_usd == pytest.approx(expected, rel=1e-12)


def test_a_model_the_price_data_does_not_know_is_flagged() -> None:
    request = {"contents": [{"parts": [{"text": "hi"}]}]}
    ex = gemini_exchange(
        request,
        model="gemini-9-ultra",
        response_body=body({"promptTokenCount": 5, "candidatesTokenCount": 2}, "gemini-9-ultra"),
    )
    record = build_record(ex, Pricer())
    assert (record.priced, record.cost_usd, record.price_source) == (False, None, None)
    assert "gemini-9-ultra is not in the price data in use" in record.details["pricing"]["warning"]
    assert "tokenlens prices update" in record.details["pricing"]["warning"]
