"""Usage of a platform call's answer, for `tokenlens.metering`: each platform's answers read in their wire
format (Bedrock's event stream and Converse included); any other provider's as usual."""

from __future__ import annotations

from collections.abc import Iterable

from tokenlens.platforms import PLATFORMS, parse_path
from tokenlens.platforms.bedrock import (
    converse_body_usage,
    summarize_converse_stream,
    summarize_invoke_stream,
)
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


def body_usage(provider: str, api: ApiFormat, endpoint: str, body: bytes) -> tuple[Usage | None, str | None]:
    if provider not in PLATFORMS:
        return usage_from_body(api, endpoint, body)
    call = parse_path(provider, endpoint)
    if call.wire == "bedrock_converse":
        return converse_body_usage(body), None
    if call.wire in ("anthropic", "bedrock_invoke"):
        return usage_from_body("anthropic", "messages", body)
    return usage_from_body(call.api, endpoint, body)


def pricing_models(provider: str, response_model: str | None, model: str | None) -> tuple[str, ...]:
    """The names to price a call with, best first: the model the answer reports, then the one called; on
    Bedrock the path's model id first (it says whether a cross-region profile is global or regional, which
    sets the price; the answer names only the model)."""
    order = (model, response_model) if provider == "bedrock" else (response_model, model)
    return tuple(dict.fromkeys(m for m in order if m))
