"""Published list prices (USD per million tokens), written down here so tests can compute costs by hand.

Sources: openai.com/api/pricing, anthropic.com/pricing (cache writes: 5-minute 1.25x and 1-hour 2x the input
rate; reads 0.1x), ai.google.dev/gemini-api/docs/pricing. Prompts here stay under every 200k-token tier.
"""

from __future__ import annotations

from collections.abc import Mapping

PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input": 0.15, "cache_read": 0.075, "output": 0.60},
    "gpt-4o": {"input": 2.50, "cache_read": 1.25, "output": 10.00},
    "gpt-3.5-turbo-instruct": {"input": 1.50, "output": 2.00},
    "text-embedding-3-small": {"input": 0.02, "output": 0.0},
    "claude-sonnet-4-6": {
        "input": 3.00,
        "cache_read": 0.30,
        "cache_write_5m": 3.75,
        "cache_write_1h": 6.00,
        "output": 15.00,
    },
    "claude-haiku-4-5": {
        "input": 1.00,
        "cache_read": 0.10,
        "cache_write_5m": 1.25,
        "cache_write_1h": 2.00,
        "output": 5.00,
    },
    "gemini-2.5-flash": {"input": 0.30, "cache_read": 0.03, "output": 2.50},
    "gemini-embedding-001": {"input": 0.15, "output": 0.0},
}


# Rates of the issue-18 pricing cases (tests/core/test_pricing_exact.py checks them against the price data in
# use; tests/e2e/test_pricing_exact.py prices SDK calls with them), USD per million tokens as decimal strings so
# that costs compute exactly with Decimal (ai.google.dev/gemini-api/docs/pricing,
# platform.claude.com/docs/en/about-claude/pricing, openai.com/api/pricing).
FLASH_IMAGE = {"input": "0.30", "output": "2.50", "output_image": "30"}  # gemini-2.5-flash-image
PRO_IMAGE = {"input": "2", "output": "12", "output_image": "120"}  # gemini-3-pro-image-preview
FLASH_31_IMAGE = {"input": "0.50", "output": "3", "output_image": "60"}  # gemini-3.1-flash-image-preview
EMBEDDING_2 = {"input": "0.20", "input_image": "0.45", "input_video": "12", "input_audio": "6.50"}
FLASH = {
    "input": "0.30",
    "output": "2.50",
    "cache_read": "0.03",
    "input_audio": "1",
    "cache_read_audio": "0.10",
}
TTS = {"input": "0.50", "output": "9"}  # gemini-3.8-flash-tts, standard (from 2026-10-15)
TTS_FLEX = {"input": "0.25", "output": "4.50"}
TTS_PRIORITY = {"input": "0.90", "output": "16.20"}
OPUS_48 = {"input": "5", "output": "25", "cache_read": "0.50", "cache_write": "6.25", "cache_write_1h": "10"}
OPUS_48_BATCH = {"input": "2.50", "output": "12.50", "cache_read": "0.25", "cache_write": "3.125"}
OPUS_48_FAST = {"input": "10", "output": "50", "cache_read": "1", "cache_write": "12.50"}
GPT_4O = {"input": "2.50", "output": "10"}
GPT_4O_2024_05_13 = {"input": "5", "output": "15"}
O1 = {"input": "15", "output": "60"}


def expected_cost(model: str, usage: Mapping[str, int | None]) -> float:
    """Cost from normalised usage: input_tokens includes cache reads and writes; output includes reasoning."""
    rates = PRICES[model]
    read = usage.get("cache_read_tokens") or 0
    write = usage.get("cache_write_tokens") or 0
    write_1h = usage.get("cache_write_1h_tokens") or 0
    write_5m = usage.get("cache_write_5m_tokens")
    write_5m = write - write_1h if write_5m is None else write_5m
    uncached = (usage.get("input_tokens") or 0) - read - write
    total = (
        uncached * rates["input"]
        + read * rates.get("cache_read", rates["input"])
        + write_5m * rates.get("cache_write_5m", rates["input"])
        + write_1h * rates.get("cache_write_1h", rates["input"])
        + (usage.get("output_tokens") or 0) * rates["output"]
    )
    return total / 1_000_000


# The cloud platforms (issue 23), USD per million tokens, keyed "<platform>/<model>" for `expected_cost`.
# Azure OpenAI, Global deployments (azure.microsoft.com/pricing/details/cognitive-services/openai-service):
# GPT-4o 2024-11-20 $2.50 in, $1.25 cached in, $10 out; GPT-4o mini $0.15, $0.075, $0.60.
# Vertex AI (cloud.google.com/vertex-ai/generative-ai/pricing), global endpoint: Claude Haiku 4.5 $1 in,
# $5 out, cache hits $0.10, 5-minute cache writes $1.25; regional endpoints 10% more for Claude Sonnet 4.5 and
# later models (platform.claude.com/docs/en/build-with-claude/claude-on-vertex-ai, "Global vs regional
# endpoints"): $1.10, $5.50, $0.11, $1.375; Gemini 2.5 Flash $0.30 in, $2.50 out.
# Bedrock (aws.amazon.com/bedrock/pricing), Claude Haiku 4.5: global cross-region inference $1 in, $5 out,
# cache read $0.10, cache write $1.25; in-region and geographic ("us.") inference 10% more: $1.10, $5.50,
# $0.11, $1.375.
PRICES.update(
    {
        "azure/gpt-4o": {"input": 2.50, "cache_read": 1.25, "output": 10.00},
        "azure/gpt-4o-mini": {"input": 0.15, "cache_read": 0.075, "output": 0.60},
        "vertex/claude-haiku-4-5": {
            "input": 1.00,
            "cache_read": 0.10,
            "cache_write_5m": 1.25,
            "output": 5.00,
        },
        "vertex/regional/claude-haiku-4-5": {
            "input": 1.10,
            "cache_read": 0.11,
            "cache_write_5m": 1.375,
            "output": 5.50,
        },
        "vertex/gemini-2.5-flash": {"input": 0.30, "cache_read": 0.03, "output": 2.50},
        "bedrock/global/claude-haiku-4-5": {
            "input": 1.00,
            "cache_read": 0.10,
            "cache_write_5m": 1.25,
            "output": 5.00,
        },
        "bedrock/regional/claude-haiku-4-5": {
            "input": 1.10,
            "cache_read": 0.11,
            "cache_write_5m": 1.375,
            "output": 5.50,
        },
    }
)
