"""Token-intelligence views over stored calls (docs/analytics-api.md)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from tokenlens.app import AppDeps
from tokenlens.records import CallRecord, new_call_id


def heat(
    system: int, tools: int, context: int, history: int, query: int, turns: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "system": system,
        "tools": tools,
        "context": context,
        "history": history,
        "query": query,
        "scaled": True,
        "turns": turns,
        **extra,
    }


def add(deps: AppDeps, **fields: Any) -> CallRecord:
    record = CallRecord(
        id=new_call_id(),
        ts=time.time() - 60,
        provider=fields.pop("provider", "openai"),
        endpoint="/v1/chat/completions",
        priced=True,
        **fields,
    )
    deps.store.insert_calls([record])
    return record


def test_waste_summary_by_type_source_and_model(web_deps: AppDeps, web_client: FlaskClient) -> None:
    waste = {
        "findings": [
            {"type": "filler", "where": "messages[0]", "tokens": 6, "cost_usd": 6e-6},
            {"type": "whitespace", "where": "messages[1]", "tokens": 4, "cost_usd": 4e-6},
        ]
    }
    add(web_deps, source="a", model="gpt-4o", waste_tokens=10, details={"waste": waste})
    add(
        web_deps,
        source="b",
        model="gpt-4o",
        waste_tokens=6,
        details={"waste": {"findings": waste["findings"][:1]}},
    )
    add(web_deps, source="b", model="gpt-4o", waste_tokens=6, outcome="cached", details={"waste": waste})
    body = web_client.get("/api/usage/waste-summary?days=7").get_json()
    assert body["total_tokens"] == 16 and body["total_cost_usd"] == pytest.approx(16e-6)
    types = {i["type"]: i for i in body["by_type"]}
    assert (
        types["filler"]["tokens"] == 12
        and types["whitespace"]["tokens"] == 4
        and types["empty_message"]["tokens"] == 0
    )
    assert {i["source"]: i["tokens"] for i in body["by_source"]} == {"a": 10, "b": 6}
    assert body["by_model"] == [
        {"model": "gpt-4o", "tokens": 16, "cost_usd": pytest.approx(16e-6), "calls": 2}
    ]
    assert web_client.get("/api/usage/waste-summary?days=0").status_code == 400


def test_token_heatmap_averages_per_call(web_deps: AppDeps, web_client: FlaskClient) -> None:
    add(web_deps, source="s", model="m", input_tokens=100, details={"heatmap": heat(10, 20, 30, 20, 20)})
    add(web_deps, source="s", model="m", input_tokens=300, details={"heatmap": heat(30, 20, 50, 100, 100)})
    items = web_client.get("/api/usage/token-heatmap").get_json()["items"]
    assert items == [
        {
            "source": "s",
            "model": "m",
            "system": 20.0,
            "tools": 20.0,
            "context": 40.0,
            "history": 60.0,
            "query": 60.0,
            "calls": 2,
            "input_tokens": 200.0,
        }
    ]


def test_output_efficiency_flags_over_allocation(web_deps: AppDeps, web_client: FlaskClient) -> None:
    for out in (100, 200):
        add(web_deps, source="big", model="m", max_tokens=4000, output_tokens=out)
    add(web_deps, source="tight", model="m", max_tokens=300, output_tokens=280)
    body = web_client.get("/api/usage/output-efficiency").get_json()
    by_source = {i["source"]: i for i in body["items"]}
    assert by_source["big"]["utilisation"] == pytest.approx((100 / 4000 + 200 / 4000) / 2, abs=1e-4)
    assert by_source["big"]["over_allocating"] and not by_source["tight"]["over_allocating"]
    assert body["over_allocating"] == [{"source": "big", "model": "m"}]


def test_conversation_efficiency_finds_history_bloat(web_deps: AppDeps, web_client: FlaskClient) -> None:
    add(
        web_deps,
        source="chatty",
        model="m",
        input_tokens=100,
        details={"heatmap": heat(10, 0, 0, 50, 40, turns=2)},
    )
    add(
        web_deps,
        source="chatty",
        model="m",
        input_tokens=400,
        details={"heatmap": heat(10, 0, 0, 350, 40, turns=6)},
    )
    add(web_deps, source="oneshot", model="m", input_tokens=100, details={"heatmap": heat(50, 0, 0, 0, 50)})
    body = web_client.get("/api/usage/conversation-efficiency").get_json()
    chatty = next(i for i in body["items"] if i["source"] == "chatty")
    assert chatty["history_share"] == pytest.approx(400 / 500) and chatty["bloated"]
    assert [(t["turn"], t["history_share"]) for t in chatty["trend"]] == [(2, 0.5), (6, 0.875)]
    assert body["bloated_sources"] == ["chatty"]


def test_right_sizing_suggests_a_cheaper_model_of_the_same_provider(
    web_deps: AppDeps, web_client: FlaskClient
) -> None:
    from genai_prices import Usage as GpUsage
    from genai_prices import calc_price

    # claude-opus-4-1: $15 in / $75 out per million (published)
    for _ in range(3):
        add(
            web_deps,
            provider="anthropic",
            source="bot",
            model="claude-opus-4-1",
            complexity=1,
            input_tokens=1000,
            output_tokens=100,
            cost_usd=1000 * 15e-6 + 100 * 75e-6,
        )
    add(
        web_deps,
        provider="anthropic",
        source="bot",
        model="claude-opus-4-1",
        complexity=7,
        input_tokens=50_000,
        output_tokens=4_000,
        cost_usd=50_000 * 15e-6 + 4_000 * 75e-6,
    )
    body = web_client.get("/api/usage/right-sizing?days=7").get_json()
    (item,) = body["items"]
    assert item["simple_calls"] == 3 and item["simple_share"] == 0.75
    candidate = item["suggested_model"]
    assert candidate and candidate.startswith("claude") and candidate != "claude-opus-4-1"
    what_if = float(
        calc_price(
            GpUsage(input_tokens=3000, output_tokens=300), candidate, provider_id="anthropic"
        ).total_price
    )
    assert what_if < 3 * (1000 * 15e-6 + 100 * 75e-6)
    assert item["saving_usd"] == pytest.approx(3 * (1000 * 15e-6 + 100 * 75e-6) - what_if)
    assert item["saving_per_week_usd"] == pytest.approx(item["saving_usd"])  # 7 days asked
    assert item["recommended"] is True


def test_caching_opportunities_for_a_long_prefix_resent(web_deps: AppDeps, web_client: FlaskClient) -> None:
    prefix = {"hash": "abc", "tokens": 2000, "cache_used": False}
    for _ in range(4):
        add(
            web_deps,
            provider="openai",
            source="agent",
            model="gpt-4o",
            input_tokens=2500,
            details={"heatmap": heat(1500, 500, 0, 0, 500, prefix=prefix)},
        )
    add(
        web_deps,
        provider="openai",
        source="agent",
        model="gpt-4o",
        input_tokens=2500,
        details={"heatmap": heat(1500, 500, 0, 0, 500, prefix={**prefix, "hash": "other"})},
    )
    body = web_client.get("/api/usage/caching-opportunities?days=7").get_json()
    (item,) = body["items"]
    # gpt-4o: input $2.50, cached input $1.25 per million; no write premium
    assert item["calls"] == 4 and item["prefix_tokens"] == 2000
    assert item["saving_usd"] == pytest.approx(3 * 2000 * (2.50 - 1.25) / 1e6)


def test_right_sizing_view_pairs_by_family_and_checks_what_the_calls_used(
    web_deps: AppDeps, web_client: FlaskClient
) -> None:
    """Issue 20: claude-sonnet-4-6 was paired with claude-sonnet-5-5 by price alone. Short simple calls go to
    the same line's Haiku; simple calls whose answers outgrow Haiku 4.5's 200,000-token window go to the next
    Sonnet generation, and each item says why."""
    for _ in range(3):
        add(
            web_deps,
            provider="anthropic",
            source="chat",
            model="claude-sonnet-4-6",
            complexity=1,
            input_tokens=1200,
            output_tokens=100,
            cost_usd=0.01,
            details={"heatmap": heat(1000, 100, 0, 0, 100)},
        )  # tool definitions sent
    for _ in range(2):  # under 1,000 input tokens and a long answer: score 2, "simple"
        add(
            web_deps,
            provider="anthropic",
            source="writer",
            model="claude-sonnet-4-6",
            complexity=2,
            input_tokens=900,
            output_tokens=250_000,
            cost_usd=3.75,
        )
    body = web_client.get("/api/usage/right-sizing?days=7").get_json()
    by_source = {i["source"]: i for i in body["items"]}
    chat, writer = by_source["chat"], by_source["writer"]
    assert chat["suggested_model"] == "claude-haiku-4-5"
    assert chat["why"].startswith("Same family line (Claude 4), smaller tier: haiku instead of sonnet")
    assert chat["needs"] == {"tools": True, "images": True, "reasoning": True, "context_tokens": 32_500}
    assert "keeps tools, image input and reasoning" in chat["why"]
    assert writer["needs"]["context_tokens"] == 900 + 250_000  # the largest simple call, read from the calls
    assert writer["suggested_model"] == "claude-sonnet-5-5"
    assert writer["why"].startswith("Next generation (Claude 5 after Claude 4) of the same tier (sonnet)")
