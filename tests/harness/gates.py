"""Helpers for the budget and quota gate tests: configured deps with a fake clock, and provider flows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mitmproxy import http

from mitm_helpers import gateway_flow
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.ingress import Ingress
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.controls import Ledger

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()
# my-model: $1 per million input tokens, $1000 per million output tokens (so output dominates)
PRICING = {"my-model": {"input": 1.0, "output": 1000.0}}
PATHS = {
    "openai": "/proxy/openai/v1/chat/completions",
    "anthropic": "/proxy/anthropic/v1/messages",
    "google": "/proxy/google/v1beta/models/my-model:generateContent",
}


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(provider: str, max_tokens: int) -> dict[str, Any]:
    if provider == "google":
        return {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": max_tokens},
        }
    return {"model": "my-model", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}


def configure(deps: AppDeps, clock: Clock, **sections: Any) -> Ledger:
    deps.settings.replace(
        parse_settings(
            {
                "providers": {
                    "openai": {"upstream": "https://api.openai.com"},
                    "anthropic": {"upstream": "https://api.anthropic.com", "format": "anthropic"},
                    "google": {"upstream": "https://generativelanguage.googleapis.com", "format": "google"},
                },
                "pricing": PRICING,
                "timezone": "UTC",
                **sections,
            }
        )
    )
    deps.ledger.clock = clock  # the gateway's own ledger (built by the runtime), on the test's clock
    return deps.ledger


def flow_for(
    deps: AppDeps, provider: str = "openai", max_tokens: int = 1000, source: str = "t"
) -> http.HTTPFlow:
    flow = gateway_flow(PATHS[provider], body(provider, max_tokens), {"X-TokenLens-Source": source})
    Ingress(deps).request(flow)
    assert exchange_of(flow) is not None
    return flow
