"""A table of usage shapes priced two ways: by TokenLens (its usage parsing, then `Pricer.price`) and by
genai-prices' own extractor and `calc_price` (the oracle: a dev dependency, not the implementation). They must
agree to 1e-9 USD on every shape, and the table must hold at least 300 of them.

Each shape is a provider's answer body as the API sends it: OpenAI chat completions, Responses and Realtime
(text, audio, image, cached, reasoning, service tiers), Anthropic messages (cache reads, 5-minute and 1-hour
writes, web searches, batch, fast mode, batch with fast, the 200k tier) and Gemini (per-modality prompt,
cache, candidate and tool-use details, documents, thoughts, flex and priority, the 200k tier, embeddings).
The oracle's price context is the providers' billing rule written here: the reported tier (OpenAI), batch
before fast (Anthropic), serviceTier flex or priority (Gemini).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import pytest

from tokenlens.pricing import Pricer
from tokenlens.usage import usage_from_body

WHEN = datetime(2026, 12, 1, 12, tzinfo=UTC)
TOLERANCE = Decimal("1e-9")

OPENAI_CHAT_MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-5",
    "o3",
    "gpt-4o-2024-05-13",
    "gpt-4o-audio-preview",
]
OPENAI_RESPONSES_MODELS = ["gpt-4.1-mini", "gpt-5-mini", "o4-mini", "gpt-5.4"]
REALTIME_MODELS = ["gpt-realtime", "gpt-realtime-mini", "gpt-4o-realtime-preview"]
ANTHROPIC_MODELS = [
    "claude-sonnet-4-5",
    "claude-sonnet-4-6",
    "claude-opus-4-8",
    "claude-haiku-4-5",
    "claude-opus-4-6",
]
GEMINI_MODELS = [
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.5-flash-image",
    "gemini-3-pro-image-preview",
    "gemini-3.1-flash-image-preview",
    "gemini-3.8-flash-tts",
]


def chat_shapes() -> list[dict[str, Any]]:
    return [
        {"usage": {"prompt_tokens": 1234, "completion_tokens": 567}},
        {
            "usage": {
                "prompt_tokens": 9000,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 6400},
            }
        },
        {
            "usage": {
                "prompt_tokens": 4000,
                "completion_tokens": 2500,
                "completion_tokens_details": {"reasoning_tokens": 2000},
            }
        },
        {
            "usage": {
                "prompt_tokens": 3000,
                "completion_tokens": 900,
                "prompt_tokens_details": {"audio_tokens": 1200, "cached_tokens": 1024},
                "completion_tokens_details": {"audio_tokens": 700},
            }
        },
        {"usage": {"prompt_tokens": 5000, "completion_tokens": 700}, "service_tier": "priority"},
        {"usage": {"prompt_tokens": 5000, "completion_tokens": 700}, "service_tier": "flex"},
        {"usage": {"prompt_tokens": 5000, "completion_tokens": 700}, "service_tier": "default"},
        {
            "usage": {
                "prompt_tokens": 250_000,
                "completion_tokens": 100,
                "prompt_tokens_details": {"cached_tokens": 100},
            },
            "service_tier": "fast",
        },
    ]


def responses_shapes() -> list[dict[str, Any]]:
    return [
        {"usage": {"input_tokens": 2000, "output_tokens": 800}},
        {
            "usage": {
                "input_tokens": 12_000,
                "output_tokens": 3000,
                "input_tokens_details": {"cached_tokens": 8000},
                "output_tokens_details": {"reasoning_tokens": 2500},
            }
        },
        {"usage": {"input_tokens": 7000, "output_tokens": 100}, "service_tier": "flex"},
        {"usage": {"input_tokens": 7000, "output_tokens": 100}, "service_tier": "priority"},
        {
            "usage": {
                "input_tokens": 300_000,
                "output_tokens": 4000,
                "input_tokens_details": {"cached_tokens": 200_000},
            },
            "service_tier": "default",
        },
    ]


def realtime_shapes() -> list[dict[str, Any]]:
    def usage(
        text: int, audio: int, image: int, c_text: int, c_audio: int, c_image: int, o_text: int, o_audio: int
    ) -> dict[str, Any]:
        return {
            "input_tokens": text + audio + image,
            "output_tokens": o_text + o_audio,
            "input_token_details": {
                "text_tokens": text,
                "audio_tokens": audio,
                "image_tokens": image,
                "cached_tokens": c_text + c_audio + c_image,
                "cached_tokens_details": {
                    "text_tokens": c_text,
                    "audio_tokens": c_audio,
                    "image_tokens": c_image,
                },
            },
            "output_token_details": {"text_tokens": o_text, "audio_tokens": o_audio},
        }

    rows = [
        (100, 0, 0, 0, 0, 0, 20, 0),
        (500, 3000, 0, 0, 0, 0, 50, 900),
        (2000, 6000, 0, 1500, 4000, 0, 100, 800),
        (1000, 0, 800, 600, 0, 500, 40, 0),
        (23, 3, 0, 16, 3, 0, 3, 6),
        (4000, 12_000, 1000, 4000, 12_000, 1000, 300, 2000),
    ]
    return [
        {"type": "response.done", "response": {"status": "completed", "usage": usage(*row)}} for row in rows
    ]


def anthropic_shapes() -> list[dict[str, Any]]:
    shapes: list[dict[str, Any]] = []
    bases = [
        {"input_tokens": 1200, "output_tokens": 400},
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 9000,
            "cache_creation_input_tokens": 0,
            "output_tokens": 800,
        },
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 4000,
            "cache_creation_input_tokens": 3000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
            "output_tokens": 10,
        },
        {
            "input_tokens": 300,
            "cache_creation_input_tokens": 2048,
            "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 100,
            "server_tool_use": {"web_search_requests": 3},
        },
        {
            "input_tokens": 150_000,
            "cache_read_input_tokens": 80_000,
            "output_tokens": 2000,
        },  # above 200k in all
    ]
    for base in bases:
        for tier, speed in (
            (None, None),
            ("standard", None),
            ("batch", None),
            ("standard", "fast"),
            ("batch", "fast"),
        ):
            usage = dict(base)
            if tier:
                usage["service_tier"] = tier
            if speed:
                usage["speed"] = speed
            shapes.append({"usage": usage})
    return shapes


def gemini_shapes() -> list[dict[str, Any]]:
    def um(**kw: Any) -> dict[str, Any]:
        return {"candidates": [{"finishReason": "STOP"}], "usageMetadata": kw}

    text = lambda n: {"modality": "TEXT", "tokenCount": n}  # noqa: E731
    image = lambda n: {"modality": "IMAGE", "tokenCount": n}  # noqa: E731
    audio = lambda n: {"modality": "AUDIO", "tokenCount": n}  # noqa: E731
    video = lambda n: {"modality": "VIDEO", "tokenCount": n}  # noqa: E731
    doc = lambda n: {"modality": "DOCUMENT", "tokenCount": n}  # noqa: E731
    shapes = [
        um(promptTokenCount=1000, candidatesTokenCount=200, promptTokensDetails=[text(1000)]),
        um(
            promptTokenCount=5000,
            cachedContentTokenCount=3000,
            candidatesTokenCount=100,
            thoughtsTokenCount=400,
        ),
        um(
            promptTokenCount=1548,
            candidatesTokenCount=1315,
            promptTokensDetails=[text(258), image(1290)],
            candidatesTokensDetails=[text(25), image(1290)],
        ),
        um(
            promptTokenCount=10_000,
            cachedContentTokenCount=8000,
            candidatesTokenCount=100,
            thoughtsTokenCount=50,
            promptTokensDetails=[text(2000), audio(8000)],
            cacheTokensDetails=[text(2000), audio(6000)],
        ),
        um(
            promptTokenCount=6000,
            candidatesTokenCount=300,
            promptTokensDetails=[text(500), video(4000), audio(1500)],
        ),
        um(
            promptTokenCount=3000,
            toolUsePromptTokenCount=700,
            candidatesTokenCount=90,
            promptTokensDetails=[text(1000), doc(2000)],
            toolUsePromptTokensDetails=[text(700)],
        ),
        um(
            promptTokenCount=250_000,
            cachedContentTokenCount=100_000,
            candidatesTokenCount=2000,
            thoughtsTokenCount=3000,
            promptTokensDetails=[text(250_000)],
            cacheTokensDetails=[text(100_000)],
        ),
        um(promptTokenCount=2000, candidatesTokenCount=500, candidatesTokensDetails=[audio(500)]),
    ]
    tiered = []
    for tier in ("flex", "priority", "standard"):
        for shape in (shapes[0], shapes[1]):
            copy = json.loads(json.dumps(shape))
            copy["usageMetadata"]["serviceTier"] = tier
            tiered.append(copy)
    return shapes + tiered


def embedding_shapes() -> list[tuple[str, dict[str, Any]]]:
    details = [
        [{"modality": "TEXT", "tokenCount": 900}],
        [{"modality": "TEXT", "tokenCount": 100}, {"modality": "IMAGE", "tokenCount": 1000}],
        [{"modality": "TEXT", "tokenCount": 10}, {"modality": "VIDEO", "tokenCount": 2000}],
        [{"modality": "AUDIO", "tokenCount": 300}, {"modality": "IMAGE", "tokenCount": 258}],
    ]
    out = []
    for d in details:
        total = sum(x["tokenCount"] for x in d)
        out.append(
            ("gemini-embedding-2", {"usageMetadata": {"promptTokenCount": total, "promptTokensDetails": d}})
        )
    return out


def oracle_context(provider: str, body: dict[str, Any]) -> dict[str, str] | None:
    """The billing rule, independently of the code: which genai-prices price variant a call is billed at."""
    if provider == "openai":
        tier = body.get("service_tier")
        return {"service_tier": tier} if tier and tier != "auto" else None
    if provider == "anthropic":
        usage = body["usage"]
        if usage.get("service_tier") == "batch":
            return {"processing": "batch"}  # fast mode does not stack with the batch discount
        return {"speed": "fast"} if usage.get("speed") == "fast" else None
    tier = body.get("usageMetadata", {}).get("serviceTier")
    return {"service_tier": tier} if tier in ("flex", "priority") else None


CASES: list[tuple[str, str, str, str, dict[str, Any]]] = []  # (provider, flavor, endpoint, model, body)
for _model in OPENAI_CHAT_MODELS:
    CASES += [("openai", "chat", "/v1/chat/completions", _model, b) for b in chat_shapes()]
for _model in OPENAI_RESPONSES_MODELS:
    CASES += [("openai", "responses", "/v1/responses", _model, b) for b in responses_shapes()]
for _model in REALTIME_MODELS:
    CASES += [("openai", "realtime", "/v1/responses", _model, b) for b in realtime_shapes()]
for _model in ANTHROPIC_MODELS:
    CASES += [("anthropic", "default", "/v1/messages", _model, b) for b in anthropic_shapes()]
for _model in GEMINI_MODELS:
    CASES += [("google", "default", "generate", _model, b) for b in gemini_shapes()]
CASES += [("google", "default", "embed", m, b) for m, b in embedding_shapes()]


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 300, len(CASES)


@pytest.mark.parametrize(("provider", "flavor", "endpoint", "model", "body"), CASES)
def test_agrees_with_genai_prices_calc_price(
    provider: str, flavor: str, endpoint: str, model: str, body: dict[str, Any]
) -> None:
    raw = json.dumps({**body, "model": model}).encode()
    usage, _ = usage_from_body(provider, endpoint, raw)  # type: ignore[arg-type]
    assert usage is not None
    ours = Pricer().price(provider, model, usage, when=WHEN)
    extracted = genai_prices.extract_usage(json.loads(raw), provider_id=provider, api_flavor=flavor)
    oracle = genai_prices.calc_price(
        extracted.usage,
        model,
        provider_id=provider,
        genai_request_timestamp=WHEN,
        price_context=oracle_context(provider, body),
    )
    assert ours.priced and ours.cost_usd is not None
    assert abs(ours.cost_usd - oracle.total_price) <= TOLERANCE, (ours.cost_usd, oracle.total_price)
    assert (
        extracted.usage.input_tokens == usage.input_tokens
        and extracted.usage.output_tokens == usage.output_tokens
    )
