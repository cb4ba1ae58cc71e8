"""Agent workflows through the real daemon: conversations and sessions from multi-turn SDK traffic, provider
rate-limit headroom (and that a key never shows), and `tokenlens analyze` against the gateway's own records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.gateway import Clients, Gateway
from published_prices import PRICES, expected_cost

DATA = Path(__file__).resolve().parents[1] / "data" / "analyze"
SYSTEM = "You are a terse assistant for the agent-workflow tests."


def _usage(gateway: Gateway, url: str) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}{url}", timeout=10)
    response.raise_for_status()
    return dict(response.json())


def _history(requests: list[dict[str, int | None]]) -> list[int]:
    """Re-sent history per turn of one conversation, from the simulator's usage: min(input, previous input +
    previous output)."""
    out = [0]
    for prev, cur in zip(requests, requests[1:], strict=False):
        out.append(min(cur["input_tokens"] or 0, (prev["input_tokens"] or 0) + (prev["output_tokens"] or 0)))
    return out


def _item(items: list[dict[str, Any]], item_id: str) -> dict[str, Any]:
    found = [i for i in items if i["id"] == item_id]
    assert len(found) == 1, (item_id, [i["id"] for i in items])
    return found[0]


def test_two_interleaved_conversations_from_one_source_stay_apart(clients: Clients, gateway: Gateway) -> None:
    client = clients.openai()
    sim = clients.sim("openai")
    model = "gpt-4o-mini"
    histories = {
        "a": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Plan a trip to Lisbon."}],
        "b": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Explain TCP slow start."}],
    }
    follow_ups = {"a": ["Add a day in Sintra.", "Now a budget."], "b": ["And congestion avoidance?"]}
    order = ["a", "b", "a", "b", "a"]
    sent: dict[str, list[dict[str, int | None]]] = {"a": [], "b": []}
    for name in order:
        messages = histories[name]
        request = {"model": model, "messages": [dict(m) for m in messages]}
        reply = client.chat.completions.create(**request)
        sent[name].append(sim.expected_usage("openai", "chat", request))
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        if follow_ups[name]:
            messages.append({"role": "user", "content": follow_ups[name].pop(0)})
    calls = gateway.wait_calls(clients.source, len(order))
    assert len(calls) == len(order)
    by_name: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for name, call in zip(order, calls, strict=True):
        by_name[name].append(call)
    conv = {name: {c["conversation_id"] for c in cs} for name, cs in by_name.items()}
    assert len(conv["a"]) == 1 and len(conv["b"]) == 1 and conv["a"] != conv["b"]
    assert [c["turn"] for c in by_name["a"]] == [1, 2, 3]
    assert [c["turn"] for c in by_name["b"]] == [1, 2]
    assert all(c["session_id"] is None for c in calls)

    listing = _usage(gateway, "/api/usage/sessions?days=1")
    rate = PRICES[model]["input"] / 1_000_000
    for name in ("a", "b"):
        (conversation_id,) = conv[name]
        item = _item(listing["conversations"], conversation_id)
        usages = sent[name]
        expected = sum(expected_cost(model, u) for u in usages)
        history = _history(usages)
        assert item["kind"] == "conversation" and item["sources"] == [clients.source]
        assert item["calls"] == len(usages) and item["turns"] == len(usages)
        assert item["cost_usd"] == pytest.approx(expected, rel=1e-9)
        assert item["models"] == [model]
        assert item["history_tokens"] == sum(history)
        assert item["history_cost_usd"] == pytest.approx(sum(history) * rate, rel=1e-6)
        assert item["history_share"] == pytest.approx(sum(history) * rate / expected, abs=1e-4)
        timeline = _usage(gateway, f"/api/usage/sessions/{conversation_id}")
        assert timeline["context_growth"] == [u["input_tokens"] for u in usages]
        assert [t["turn"] for t in timeline["timeline"]] == list(range(1, len(usages) + 1))
        assert [t["call_id"] for t in timeline["timeline"]] == [c["id"] for c in by_name[name]]
        assert [t["history_tokens"] for t in timeline["timeline"]] == history


def test_session_header_groups_calls_and_counts_turns_within_the_session(
    clients: Clients, gateway: Gateway
) -> None:
    session = f"run-{uuid.uuid4().hex[:8]}"
    client = clients.anthropic(headers={"X-TokenLens-Session": session})
    sim = clients.sim("anthropic")
    model = "claude-haiku-4-5"
    main = [{"role": "user", "content": "Refactor the billing module."}]
    sub = [{"role": "user", "content": "Subagent: list the files under billing/."}]
    usages = []
    for messages in (main, sub, main):
        request = {
            "model": model,
            "max_tokens": 200,
            "system": SYSTEM,
            "messages": [dict(m) for m in messages],
        }
        reply = client.messages.create(**request)
        usages.append(sim.expected_usage("anthropic", "messages", request))
        messages.append({"role": "assistant", "content": reply.content[0].text})
        messages.append({"role": "user", "content": "Go on."})
        assert "x-tokenlens-session" not in {k.lower() for k in sim.last_request.headers}
    calls = gateway.wait_calls(clients.source, 3)
    assert [c["session_id"] for c in calls] == [session] * 3
    assert [c["turn"] for c in calls] == [1, 2, 3]
    assert calls[0]["conversation_id"] == calls[2]["conversation_id"] != calls[1]["conversation_id"]

    item = _item(_usage(gateway, "/api/usage/sessions?days=1")["sessions"], session)
    expected = sum(expected_cost(model, u) for u in usages)
    assert (item["kind"], item["calls"], item["turns"], item["conversations"]) == ("session", 3, 3, 2)
    assert item["cost_usd"] == pytest.approx(expected, rel=1e-9)
    history = min(
        usages[2]["input_tokens"] or 0, (usages[0]["input_tokens"] or 0) + (usages[0]["output_tokens"] or 0)
    )
    assert item["history_tokens"] == history
    assert item["duration_s"] >= 0 and item["models"] == [model]
    timeline = _usage(gateway, f"/api/usage/sessions/{session}")
    assert [t["turn"] for t in timeline["timeline"]] == [1, 2, 3]
    assert [t["cost_usd"] for t in timeline["timeline"]] == pytest.approx(
        [expected_cost(model, u) for u in usages]
    )
    assert httpx.get(f"{gateway.url}/api/usage/sessions/no-such-session", timeout=10).status_code == 404


def _all_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file() and p.name.startswith("tokenlens"))


def test_rate_limit_headers_are_kept_per_credential_and_the_key_never_shows(
    clients: Clients, gateway: Gateway
) -> None:
    import anthropic
    import openai

    key = f"sk-secret-{uuid.uuid4().hex}"
    client = openai.OpenAI(
        base_url=gateway.base_url("openai"), api_key=key, max_retries=0, default_headers=clients.headers()
    )
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
    )
    ant_key = f"sk-ant-secret-{uuid.uuid4().hex}"
    ant = anthropic.Anthropic(
        base_url=gateway.base_url("anthropic"),
        api_key=ant_key,
        max_retries=0,
        default_headers=clients.headers({"x-sim-status": "429"}),
    )
    with pytest.raises(anthropic.RateLimitError):
        ant.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    calls = gateway.wait_calls(clients.source, 2)
    assert [c["status"] for c in calls] == [200, 429]

    body = _usage(gateway, "/api/usage/rate-limits")
    openai_items = [
        i
        for i in body["items"]
        if i["provider"] == "openai"
        and i["limits"].get("requests", {}).get("remaining")
        == int(raw.headers["x-ratelimit-remaining-requests"])
        and i["limits"]["tokens"]["remaining"] == int(raw.headers["x-ratelimit-remaining-tokens"])
    ]
    assert len(openai_items) == 1
    limits = openai_items[0]["limits"]
    assert limits["requests"]["limit"] == int(raw.headers["x-ratelimit-limit-requests"])
    assert limits["tokens"]["limit"] == int(raw.headers["x-ratelimit-limit-tokens"])
    assert limits["requests"]["reset"] == raw.headers["x-ratelimit-reset-requests"]
    assert limits["requests"]["resets_at"] is not None
    rate_limited = [i for i in body["items"] if i["provider"] == "anthropic" and i["last_status"] == 429]
    assert any(i["rate_limited_calls"] >= 1 and i["retry_after_s"] == 1.0 for i in rate_limited)
    assert any(i["limits"].get("requests", {}).get("limit") == 4000 for i in rate_limited)
    latest = {c["call_id"]: c for c in body["rate_limited"]["latest"]}
    assert latest[calls[1]["id"]]["provider"] == "anthropic"
    assert latest[calls[1]["id"]]["credential"] in {i["credential"] for i in rate_limited}

    everything = json.dumps(body) + json.dumps(_usage(gateway, "/api/usage/sessions?days=1"))
    everything += "".join(json.dumps(gateway.call(c["id"])) for c in calls)
    everything += httpx.get(f"{gateway.url}/api/export?format=jsonl", timeout=30).text
    for secret in (key, ant_key):
        assert secret not in everything
        assert secret.encode() not in _all_bytes(gateway.home)
        assert secret not in gateway.log.read_text(errors="replace")


REQUESTS = [
    (
        "openai_chat.json",
        "openai",
        "/proxy/openai/v1/chat/completions",
        None,
        {"authorization": "Bearer sk-test"},
    ),
    (
        "anthropic_messages.json",
        "anthropic",
        "/proxy/anthropic/v1/messages",
        None,
        {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"},
    ),
    (
        "google_generate.json",
        "google",
        "/proxy/google/v1beta/models/gemini-2.5-flash:generateContent",
        "gemini-2.5-flash",
        {"x-goog-api-key": "g-test"},
    ),
]


@pytest.mark.parametrize(
    ("name", "provider", "path", "model", "headers"), REQUESTS, ids=[r[1] for r in REQUESTS]
)
def test_analyze_gives_the_findings_the_gateway_recorded(
    gateway: Gateway,
    source: str,
    name: str,
    provider: str,
    path: str,
    model: str | None,
    headers: dict[str, str],
) -> None:
    body = (DATA / name).read_bytes()
    response = httpx.post(
        f"{gateway.url}{path}",
        content=body,
        headers={"content-type": "application/json", "X-TokenLens-Source": source, **headers},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    (call,) = gateway.wait_calls(source)
    for _ in range(50):  # the deferred analysis is in the record once it is listed
        record = gateway.call(call["id"])
        if "waste" in record["details"]:
            break
        time.sleep(0.05)
    args = [sys.executable, "-m", "tokenlens", "analyze", str(DATA / name), "--format", "json"]
    args += ["--config", str(gateway.config)] + (["--model", model] if model else [])
    env = {**os.environ, "TOKENLENS_HOME": str(gateway.home)}
    done = subprocess.run(args, capture_output=True, check=True, env=env, timeout=60)
    cli = json.loads(done.stdout)
    assert cli["provider"] == provider
    assert cli["waste"]["tokens"] > 0
    assert record["waste_tokens"] == cli["waste"]["tokens"]
    assert record["details"]["waste"] == {k: v for k, v in cli["waste"].items() if k != "pct"}
    assert record["complexity"] is not None
    api = httpx.post(
        f"{gateway.url}/api/analyze", params={"model": model} if model else {}, content=body, timeout=30
    )
    assert api.status_code == 200
    assert api.json() == cli
