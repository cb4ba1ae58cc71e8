"""Usage of a platform call's answer, for `tokenlens.metering`: each platform's answers read in their wire
format (Bedrock's event stream and Converse included); any other provider's as usual."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from decimal import Decimal

from tokenlens.platforms import PLATFORMS, parse_path
from tokenlens.platforms.bedrock import (
    converse_body_usage,
    invocation_usage,
    summarize_converse_stream,
    summarize_invoke_stream,
)
from tokenlens.pricing import Price
from tokenlens.providers import ApiFormat
from tokenlens.usage import StreamSummary, Usage, summarize_stream, usage_from_body


def summarize(provider: str, api: ApiFormat, endpoint: str, chunks: Iterable[bytes]) -> StreamSummary:
    if provider not in PLATFORMS:
        return summarize_stream(api, endpoint, chunks)
    call = parse_path(provider, endpoint)
    if call.wire == "bedrock_converse":
        return summarize_converse_stream(chunks)
    if call.wire == "bedrock_invoke":
        return summarize_invoke_stream(chunks)
    return summarize_stream(call.api, "messages" if call.wire == "anthropic" else endpoint, chunks)


def body_usage(
    provider: str, api: ApiFormat, endpoint: str, body: bytes, headers: Mapping[str, str] | None = None
) -> tuple[Usage | None, str | None]:
    """(usage, reported model) of a non-streamed answer; `headers` (lower-case names) are the answer's."""
    if provider not in PLATFORMS:
        return usage_from_body(api, endpoint, body)
    call = parse_path(provider, endpoint)
    if call.wire == "bedrock_converse":
        return converse_body_usage(body), None
    if call.wire == "bedrock_invoke":
        usage, model = usage_from_body("anthropic", "messages", body)
        if usage is None and headers:  # another model's body: Bedrock's token-count headers
            usage = invocation_usage(headers)
        return usage, model
    if call.wire == "anthropic":
        return usage_from_body("anthropic", "messages", body)
    return usage_from_body(call.api, endpoint, body)


def pricing_models(provider: str, response_model: str | None, model: str | None) -> tuple[str, ...]:
    """The names to price a call with, best first: the model the answer reports, then the one called; on
    Bedrock the path's model id first (it says whether a cross-region profile is global or regional, which
    sets the price; the answer names only the model)."""
    order = (model, response_model) if provider == "bedrock" else (response_model, model)
    return tuple(dict.fromkeys(m for m in order if m))


# Vertex AI bills Claude Sonnet 4.5 and later models 10% more on regional (and multi-region) endpoints than on
# the global one (platform.claude.com/docs/en/build-with-claude/claude-on-vertex-ai, "Global vs regional
# endpoints"; cloud.google.com/vertex-ai/generative-ai/pricing); the price data lists the global prices. Bedrock's data has its own regional entries (the path's model id selects them).
VERTEX_REGIONAL_PREMIUM = Decimal("1.1")
_CLAUDE_VERSION = re.compile(r"claude-(opus|sonnet|haiku)-(\d+)(?:[-.](\d)(?!\d))?")
_CLAUDE_OLD = re.compile(r"claude-(?:\d|instant)")


def vertex_regional_premium(endpoint: str, model: str) -> bool:
    """Whether a Vertex call is billed with the regional premium: a Claude model of the 4.5 generation or later
    called on a regional location (not `global`)."""
    call = parse_path("vertex", endpoint)
    if call.api != "anthropic" or not call.location or call.location == "global":
        return False
    name = model.lower()
    if "claude" not in name or _CLAUDE_OLD.search(name):
        return False  # Claude 3.x and older names (claude-3-5-sonnet, claude-instant)
    m = _CLAUDE_VERSION.search(name)
    if m is None:
        return True  # a family named after the 4.5 generation (all of them are 4.5 or later)
    return (int(m.group(2)), int(m.group(3) or 0)) >= (4, 5)


def adjust_price(provider: str, endpoint: str, model: str, price: Price) -> Price:
    """The platform's own surcharges on a price from the data (never on a user's override)."""
    if provider != "vertex" or price.source != "genai-prices" or not vertex_regional_premium(endpoint, model):
        return price

    def scaled(value: Decimal | None) -> Decimal | None:
        return None if value is None else value * VERTEX_REGIONAL_PREMIUM

    return replace(
        price,
        cost_usd=scaled(price.cost_usd),
        input_cost_usd=scaled(price.input_cost_usd),
        output_cost_usd=scaled(price.output_cost_usd),
        cache_read_cost_usd=scaled(price.cache_read_cost_usd),
        cache_write_cost_usd=scaled(price.cache_write_cost_usd),
    )
