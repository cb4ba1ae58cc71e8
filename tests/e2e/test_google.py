"""Gemini through the gateway with the official google-genai SDK, in base-URL and HTTPS_PROXY mode."""

from __future__ import annotations

import json

import httpx
import pytest
from google.genai import types

from harness.expect import assert_metered
from harness.gateway import Clients, Gateway
from provider_sim import reply_text

MODES = ["base_url", "proxy"]
KNOBS = {"x-sim-cache-read": "12", "x-sim-reasoning": "9"}


def config(headers: dict[str, str]) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        system_instruction="Answer in one line", http_options=types.HttpOptions(headers=headers)
    )


@pytest.mark.parametrize("mode", MODES)
def test_generate_content(clients: Clients, gateway: Gateway, mode: str) -> None:
    client, direct_client = (
        clients.google(mode),
        clients.google("direct"),
    )  # a genai.Client closes when collected
    via = client.models.generate_content(
        model="gemini-2.5-flash", contents="What does the gateway record?", config=config(KNOBS)
    )
    direct = direct_client.models.generate_content(
        model="gemini-2.5-flash", contents="What does the gateway record?", config=config(KNOBS)
    )
    assert via.text == direct.text and via.usage_metadata == direct.usage_metadata
    sim = clients.sim("google")
    sent = sim.requests[-2]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == "g-test"
    (call,) = gateway.wait_calls(clients.source)
    assert_metered(call, sim, "google", "generate", sent.json(), "gemini-2.5-flash", KNOBS)
    assert (call["model"], call["cache_read_tokens"], call["reasoning_tokens"]) == ("gemini-2.5-flash", 12, 9)


@pytest.mark.parametrize("mode", MODES)
def test_stream_sse_with_partial_usage_on_early_chunks(clients: Clients, gateway: Gateway, mode: str) -> None:
    client = clients.google(mode)
    chunks = list(
        client.models.generate_content_stream(
            model="gemini-2.5-flash", contents="Stream me a line", config=config(KNOBS)
        )
    )
    sim = clients.sim("google")
    sent = sim.requests[-1]
    assert sent.query == "alt=sse"
    assert "".join(c.text or "" for c in chunks) == reply_text("google", "generate", sent.json(), KNOBS)
    (call,) = gateway.wait_calls(clients.source)
    assert_metered(call, sim, "google", "generate", sent.json(), "gemini-2.5-flash", KNOBS)
    assert (
        call["stream"] is True and call["endpoint"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    )


def test_stream_as_json_array_with_key_in_query(clients: Clients, gateway: Gateway) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "array stream please"}]}]}
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=SECRET-KEY"
    headers = {**clients.headers(), "x-sim-chunk-delay-ms": "5"}
    via = httpx.post(f"{gateway.url}/proxy/google{path}", json=body, headers=headers)
    sim = clients.sim("google")
    assert sim.requests[-1].params == {"key": "SECRET-KEY"}
    direct = httpx.post(f"{sim.url}{path}", json=body, headers={"x-sim-chunk-delay-ms": "5"})
    assert (
        via.status_code == 200
        and json.loads(via.content)[-1]["candidates"] == json.loads(direct.content)[-1]["candidates"]
    )
    (call,) = gateway.wait_calls(clients.source)
    assert_metered(call, sim, "google", "generate", body, "gemini-2.5-flash")
    stored = gateway.call(call["id"])
    assert "SECRET-KEY" not in json.dumps(stored)


@pytest.mark.parametrize("mode", MODES)
def test_embed_content(clients: Clients, gateway: Gateway, mode: str) -> None:
    client = clients.google(mode)
    result = client.models.embed_content(model="gemini-embedding-001", contents=["a b c", "d e"])
    assert result.embeddings is not None and len(result.embeddings) == 2
    sim = clients.sim("google")
    sent = sim.requests[-1]
    (call,) = gateway.wait_calls(clients.source)
    usage = sim.expected_usage("google", sent.path, sent.json())
    assert call["input_tokens"] == usage["input_tokens"] and call["model"] == "gemini-embedding-001"
    assert call["priced"] is True and call["cost_usd"] == pytest.approx(usage["input_tokens"] * 0.15 / 1e6)
