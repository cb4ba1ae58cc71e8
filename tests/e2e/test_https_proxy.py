"""HTTPS_PROXY mode intercepts the providers' real host names whatever upstream each is sent to (issue 16).

The session gateway sends every built-in provider to a TLS simulator (as a user's corporate gateway would
be). Clients here call the *real* host names through `HTTPS_PROXY`: the gateway intercepts them with its own
CA, forwards each call to the configured upstream, and meters it under the right provider.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness.gateway import Gateway
from provider_sim import Simulator

PROMPT = [{"role": "user", "content": "Say hello through the real host name."}]


def headers(source: str) -> dict[str, str]:
    return {"X-TokenLens-Source": source}


def test_the_real_host_names_are_intercepted_and_metered(
    gateway: Gateway, sims: dict[str, Simulator], source: str, proxy_env: Callable[[], None]
) -> None:
    import anthropic
    import openai
    from google import genai
    from google.genai import types

    proxy_env()
    before = {name: len(sim.requests) for name, sim in sims.items()}
    chat = openai.OpenAI(
        base_url="https://api.openai.com/v1",
        api_key="sk-test",
        max_retries=0,
        default_headers=headers(source),
    ).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)  # type: ignore[arg-type]
    message = anthropic.Anthropic(
        base_url="https://api.anthropic.com", api_key="sk-ant", max_retries=0, default_headers=headers(source)
    ).messages.create(model="claude-haiku-4-5", max_tokens=50, messages=PROMPT)  # type: ignore[arg-type]
    google = genai.Client(
        api_key="g-test", http_options=types.HttpOptions(api_version="v1beta", headers=headers(source))
    )
    gemini = google.models.generate_content(model="gemini-2.0-flash", contents="Say hello, real host name.")
    assert chat.choices[0].message.content and message.content and gemini.text
    # each reached its own simulator (the overridden upstream), never the real host
    for name in sims:
        assert len(sims[name].requests) == before[name] + 1, name
    calls = {c["provider"]: c for c in gateway.wait_calls(source, count=3)}
    assert set(calls) == {"openai", "anthropic", "google"}
    expected = {
        "openai": (chat.usage.prompt_tokens, chat.usage.completion_tokens),  # type: ignore[union-attr]
        "anthropic": (message.usage.input_tokens, message.usage.output_tokens),
        "google": (
            gemini.usage_metadata.prompt_token_count,  # type: ignore[union-attr]
            gemini.usage_metadata.candidates_token_count,  # type: ignore[union-attr]
        ),
    }
    for name, (input_tokens, output_tokens) in expected.items():
        sent = sims[name].requests[-1]
        planned = sims[name].expected_usage(name, sent.path, sent.json())
        assert (calls[name]["input_tokens"], calls[name]["output_tokens"]) == (input_tokens, output_tokens)
        assert (input_tokens, output_tokens) == (planned["input_tokens"], planned["output_tokens"])
        assert calls[name]["cost_usd"] and calls[name]["cost_usd"] > 0


def test_providers_that_cannot_be_told_apart_are_rejected(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("providers:\n  azure: {upstream: 'https://api.openai.com'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "tokenlens", "config", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "providers.azure.upstream" in done.stderr + done.stdout
    assert "providers.openai" in done.stderr + done.stdout
    started = subprocess.run(
        [sys.executable, "-m", "tokenlens", "daemon", "--port", "1", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TOKENLENS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert started.returncode == 2 and "providers.azure.upstream" in started.stderr
