"""What a gateway process loads: the request path of a started pipeline (budget and quota gates included) needs
neither the tokenizer vocabularies (~100 MiB) nor numpy nor genai-prices' data when nothing asks for them.

Each case runs in a fresh interpreter (this one has loaded everything other tests needed): it builds the
gateway's services with `build_runtime`, the addon mitmproxy runs (`tokenlens.addons.gateway`), sends one call
through the request hooks and prints which of the large modules are loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import asyncio, inspect, json, sys, tempfile
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from mitm_helpers import gateway_flow
from tokenlens import tokens
from tokenlens.addons import gateway
from tokenlens.addons._flowstate import exchange_of
from tokenlens.config import parse_settings
from tokenlens.runtime import build_runtime

config = json.loads(sys.argv[2])
home = Path(tempfile.mkdtemp())
runtime = build_runtime(parse_settings(config), home, None)
try:
    addon = gateway(runtime.deps)
    body = {
        "model": "my-model",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Bonjour, குறுகிய செய்தி 🙂 " * 50}],
    }
    flow = gateway_flow("/proxy/openai/v1/chat/completions", body, {"X-TokenLens-Source": "lazy"})
    for hook in ("requestheaders", "request"):
        result = getattr(addon, hook, lambda flow: None)(flow)
        if inspect.isawaitable(result):
            asyncio.run(result)
    exchange = exchange_of(flow)
    print(json.dumps({
        "blocked": flow.response is not None,
        "details": exchange.details if exchange is not None else None,
        "encodings": sorted(tokens._encodings),
        "modules": sorted(m for m in ("tiktoken", "numpy", "genai_prices") if m in sys.modules),
    }))
finally:
    runtime.close()
"""

PROVIDERS = {"openai": {"upstream": "https://api.openai.com"}}


def run_pipeline(config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(TESTS), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_default_pipeline_loads_no_tokenizer_numpy_or_price_data() -> None:
    result = run_pipeline({"providers": PROVIDERS})
    assert not result["blocked"] and result["details"] is not None
    assert result["encodings"] == [] and result["modules"] == []


@pytest.mark.parametrize(
    "limits",
    [
        {"budgets": {"daily_usd": 100.0}},
        {"quotas": {"source_limits": [{"source": "lazy", "daily_usd": 100.0}]}},
    ],
    ids=["budget", "quota"],
)
def test_the_budget_and_quota_gates_reserve_without_the_tokenizer(limits: dict[str, Any]) -> None:
    """The gate priced the call (a worst case with an estimated input) and no vocabulary was loaded."""
    config = {"providers": PROVIDERS, "pricing": {"my-model": {"input": 1.0, "output": 2.0}}, **limits}
    result = run_pipeline(config)
    assert not result["blocked"]
    worst = result["details"]["controls"]["worst_case"]
    text = "Bonjour, குறுகிய செய்தி 🙂 " * 50
    assert worst["estimated_input_tokens"] >= len(text.encode()) + 1  # the bytes bound, with overheads
    assert worst["reserved_output_tokens"] == 100
    assert result["encodings"] == [] and "tiktoken" not in result["modules"]


def test_injection_detection_loads_its_model_only_when_on() -> None:
    config = {"providers": PROVIDERS, "guardrails": {"injection_detection": {"enabled": True}}}
    result = run_pipeline(config)
    assert "numpy" in result["modules"]  # the detector ran on the message
    assert result["encodings"] == [] and "tiktoken" not in result["modules"]
