"""Exact money end to end (issue 18), through the official SDKs against the simulator: Gemini image
generation with an image in the prompt (per-modality counts recorded and priced), Gemini service tiers
requested with the google-genai SDK (and a priority request served at standard), Anthropic fast mode and a
batch answer that also says fast, a model on a user-added provider (unpriced, then priced by an override),
and `tokenlens prices update --from FILE` on a running gateway: the new rate only for calls after it.

Expected costs come from the published per-million-token rates in tests/published_prices.py (checked against
the price data by tests/core/test_pricing_exact.py) and the simulator's token counts.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.genai import types

from harness.gateway import Clients, Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator
from published_prices import FLASH_IMAGE, OPUS_48_BATCH, OPUS_48_FAST, TTS, TTS_FLEX, TTS_PRIORITY

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def cost(rates: Mapping[str, str | float], **tokens: int) -> float:
    """USD for `tokens` (rate name: count) at `rates` (USD per million tokens)."""
    return sum(float(rates[k]) * n for k, n in tokens.items()) / 1e6


def test_gemini_image_generation_is_priced_by_modality(clients: Clients, gateway: Gateway) -> None:
    client = clients.google()
    contents = [types.Part.from_bytes(data=PNG, mime_type="image/png"), "Make this picture brighter"]
    config = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"])
    answer = client.models.generate_content(model="gemini-2.5-flash-image", contents=contents, config=config)
    assert answer.candidates and any(p.inline_data for p in answer.candidates[0].content.parts)
    sim: Simulator = clients.sim("google")
    sent = sim.requests[-1]
    plan = sim.plan("google", "generate", sent.json(), {})
    (call,) = gateway.wait_calls(clients.source)
    modalities = plan.modality_tokens()
    assert call["modality_tokens"] == modalities
    assert modalities["input"]["image"] == 258 and modalities["output"]["image"] == 1290
    assert (call["input_tokens"], call["output_tokens"]) == (
        sum(modalities["input"].values()),
        plan.reply_words + 1290,
    )
    expected = cost(
        FLASH_IMAGE,
        input=call["input_tokens"],
        output=plan.reply_words,
        output_image=1290,
    )
    assert call["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert call["price_source"] == "gemini-2.5-flash-image"
    detail = httpx.get(f"{gateway.url}/api/calls/{call['id']}", timeout=5).json()
    assert detail["modality_tokens"] == modalities


@pytest.mark.parametrize(
    ("tier", "knobs", "rates"),
    [
        (None, {}, TTS),
        ("flex", {}, TTS_FLEX),
        ("priority", {}, TTS_PRIORITY),
        ("priority", {"x-sim-service-tier": "standard"}, TTS),  # served at standard: billed at standard
    ],
)
def test_gemini_service_tiers(
    clients: Clients, gateway: Gateway, tier: str | None, knobs: dict[str, str], rates: dict[str, float]
) -> None:
    client = clients.google(headers=knobs)
    config = types.GenerateContentConfig(service_tier=tier) if tier else None
    client.models.generate_content(model="gemini-3.8-flash-tts", contents="Say hello", config=config)
    sent = clients.sim("google").requests[-1]
    assert sent.json().get("serviceTier") == tier
    (call,) = gateway.wait_calls(clients.source)
    assert call["service_tier"] == (knobs.get("x-sim-service-tier") or tier)
    expected = cost(rates, input=call["input_tokens"], output=call["output_tokens"])
    assert call["cost_usd"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("knobs", "rates"),
    [({}, OPUS_48_FAST), ({"x-sim-service-tier": "batch"}, OPUS_48_BATCH)],
)
def test_anthropic_fast_mode_and_batch_with_fast(
    clients: Clients, gateway: Gateway, knobs: dict[str, str], rates: dict[str, float]
) -> None:
    client = clients.anthropic(headers=knobs)
    client.messages.create(
        model="claude-opus-4-8",
        max_tokens=100,
        messages=[{"role": "user", "content": "Quickly"}],
        extra_body={"speed": "fast"},
    )
    (call,) = gateway.wait_calls(clients.source)
    expected = cost(rates, input=call["input_tokens"], output=call["output_tokens"])
    assert call["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert call["price_source"] == "claude-opus-4-8"


def test_a_local_model_is_priced_only_by_an_override(clients: Clients, gateway: Gateway) -> None:
    import openai

    client = openai.OpenAI(
        base_url=f"{gateway.url}/proxy/compat",
        api_key="sk-test",
        max_retries=0,
        default_headers=clients.headers(),
    )
    client.chat.completions.create(model="deepseek-r1:8b", messages=[{"role": "user", "content": "hi"}])
    (first,) = gateway.wait_calls(clients.source)
    assert (first["priced"], first["cost_usd"], first["price_source"]) == (False, None, None)
    assert first["input_tokens"] > 0  # metered all the same
    settings = f"{gateway.url}/api/settings/pricing"
    assert (
        httpx.put(settings, json={"deepseek-r1:8b": {"input": 0.1, "output": 0.2}}, timeout=5).status_code
        == 200
    )
    try:
        client.chat.completions.create(model="deepseek-r1:8b", messages=[{"role": "user", "content": "hi"}])
        calls = gateway.wait_calls(clients.source, count=2)
        second = next(c for c in calls if c["id"] != first["id"])
        assert second["price_source"] == "override"
        expected = cost(
            {"input": 0.1, "output": 0.2}, input=second["input_tokens"], output=second["output_tokens"]
        )
        assert second["cost_usd"] == pytest.approx(expected, rel=1e-9)
    finally:
        assert httpx.put(settings, json={}, timeout=5).status_code == 200


# ---- prices update on a running gateway ---------------------------------------------------------------------


def price_file(path: Path, mini_input: float, mini_output: float) -> Path:
    """A small price data file in genai-prices' published format (a list of providers)."""

    def provider(pid: str, models: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": pid, "name": pid.title(), "api_pattern": f"https://api\\.{pid}\\.com", "models": models}

    def model(mid: str, **prices: float) -> dict[str, Any]:
        return {"id": mid, "match": {"starts_with": mid}, "prices": prices}

    data = [
        provider("openai", [model("gpt-4o-mini", input_mtok=mini_input, output_mtok=mini_output)]),
        provider("anthropic", [model("claude-haiku-4-5", input_mtok=1, output_mtok=5)]),
        provider("google", [model("gemini-2.5-flash", input_mtok=0.3, output_mtok=2.5)]),
    ]
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def own_gateway(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("prices-home")
    config = home / "config.yaml"
    write_config(config, sims)
    running = start_gateway(home, config, sims)
    yield running, home, config
    assert stop_gateway(running) == 0, running.log.read_text()


def test_prices_update_applies_from_the_next_call_only(
    own_gateway: Any, sims: dict[str, Simulator], tmp_path: Path, source: str
) -> None:
    import openai

    gateway, home, config = own_gateway
    client = openai.OpenAI(
        base_url=gateway.base_url("openai"),
        api_key="sk-test",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "before"}])
    (before,) = gateway.wait_calls(source)
    # gpt-4o-mini's published rate: $0.15 / $0.60 per million tokens
    assert before["cost_usd"] == pytest.approx(
        cost({"i": 0.15, "o": 0.60}, i=before["input_tokens"], o=before["output_tokens"]), rel=1e-9
    )
    status = httpx.get(f"{gateway.url}/api/status", timeout=5).json()["prices"]
    assert status["kind"] == "bundled" and status["age_days"] is not None
    data = price_file(tmp_path / "data.json", 7.0, 11.0)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokenlens",
            "prices",
            "update",
            "--from",
            str(data),
            "--data-dir",
            str(home),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (home / "prices.json").read_bytes() == data.read_bytes()
    time.sleep(1.2)  # the gateway looks for a new file at most once a second
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "after"}])
    calls = gateway.wait_calls(source, count=2)
    after = next(c for c in calls if c["id"] != before["id"])
    assert after["cost_usd"] == pytest.approx(
        cost({"i": 7.0, "o": 11.0}, i=after["input_tokens"], o=after["output_tokens"]), rel=1e-9
    )
    again = next(c for c in calls if c["id"] == before["id"])
    assert again["cost_usd"] == before["cost_usd"]  # a call priced before keeps its price
    status = httpx.get(f"{gateway.url}/api/status", timeout=5).json()["prices"]
    assert status["kind"] == "file" and status["sha256"] and status["date"]
    # a model the new data does not know: unpriced, with a warning that the data may predate it
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "unknown now"}])
    calls = gateway.wait_calls(source, count=3)
    unknown = next(c for c in calls if c["model"] == "gpt-4o")
    assert unknown["priced"] is False and unknown["cost_usd"] is None
    assert "may be newer than the data" in unknown["details"]["pricing"]["warning"]
    status = httpx.get(f"{gateway.url}/api/status", timeout=5).json()["prices"]
    assert {"provider": "openai", "model": "gpt-4o-2024-08-06"} in status["unknown_models"]
    (home / "prices.json").unlink()  # back to the bundled data for whatever runs next on this gateway


def test_the_dashboard_shows_the_price_used_modalities_and_the_data_age(
    clients: Clients, gateway: Gateway
) -> None:
    from harness.browser import chromium

    client = clients.google()
    config = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"])
    client.models.generate_content(model="gemini-2.5-flash-001", contents="Draw a fox", config=config)
    (call,) = gateway.wait_calls(clients.source)
    assert call["price_source"] == "inferred:gemini-2.5-flash"  # a guessed price, shown as one
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{gateway.url}/calls/{call['id']}")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        assert "guessed from gemini-2.5-flash" in (page.text_content('[data-testid="price-source"]') or "")
        rows = page.locator("#modality-table tbody tr")
        assert sorted(rows.all_text_contents()) == sorted(
            f"{m}{call['modality_tokens'].get('input', {}).get(m, 0):,}{call['modality_tokens'].get('output', {}).get(m, 0):,}"
            for m in {*call["modality_tokens"].get("input", {}), *call["modality_tokens"].get("output", {})}
        )
        page.goto(f"{gateway.url}/")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        status = httpx.get(f"{gateway.url}/api/status", timeout=5).json()["prices"]
        shown = page.text_content('[data-testid="price-data"]') or ""
        assert f"prices: {status['source']}, {status['date']} ({status['age_days']} days old)" in shown
        page.close()
