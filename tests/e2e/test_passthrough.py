"""Only model calls count (issue 16): Claude Code's `HEAD /` reachability check, preflights and non-API paths
are forwarded and answered as they are, counted apart, and never become calls, errors or spend."""

from __future__ import annotations

import re

import httpx

from harness.gateway import Gateway
from provider_sim import Simulator


def passthrough_metric(text: str, reason: str) -> float:
    found = re.search(rf'^tokenlens_passthrough_requests_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_traffic_around_the_api_is_forwarded_and_counted_apart(
    gateway: Gateway, sims: dict[str, Simulator], source: str
) -> None:
    status = httpx.get(f"{gateway.url}/api/status").json()
    kpi = httpx.get(f"{gateway.url}/api/usage/kpi").json()
    metrics = httpx.get(f"{gateway.url}/metrics").text
    sim = sims["anthropic"]
    seen = len(sim.requests)
    headers = {"X-TokenLens-Source": source, "User-Agent": "claude-cli/2.1.197 (external, cli)"}
    assert httpx.head(f"{gateway.url}/proxy/anthropic/", headers=headers).status_code < 500
    assert httpx.options(f"{gateway.url}/proxy/anthropic/v1/messages", headers=headers).status_code < 500
    assert httpx.get(f"{gateway.url}/proxy/anthropic/", headers=headers).status_code < 500
    assert len(sim.requests) == seen + 3  # forwarded upstream, answered as the upstream answers
    assert "x-tokenlens-source" not in sim.requests[-1].headers
    # a real call afterwards is the only call of this source
    httpx.post(
        f"{gateway.url}/proxy/anthropic/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={**headers, "anthropic-version": "2023-06-01"},
    ).raise_for_status()
    calls = gateway.wait_calls(source)
    assert [c["endpoint"] for c in calls] == ["/v1/messages"]
    after = httpx.get(f"{gateway.url}/api/status").json()
    assert after["passthrough_requests"] == status["passthrough_requests"] + 3
    assert after["passthrough_by_reason"]["method"] >= status["passthrough_by_reason"].get("method", 0) + 2
    new_kpi = httpx.get(f"{gateway.url}/api/usage/kpi").json()
    assert new_kpi["calls"] == kpi["calls"] + 1 and new_kpi["error_calls"] == kpi["error_calls"]
    text = httpx.get(f"{gateway.url}/metrics").text
    assert passthrough_metric(text, "method") == passthrough_metric(metrics, "method") + 2
    assert passthrough_metric(text, "path") == passthrough_metric(metrics, "path") + 1
