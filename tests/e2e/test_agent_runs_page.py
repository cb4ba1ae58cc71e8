"""The Sessions page after real agent runs (issue 16): two `claude -p` runs sent with one
`X-TokenLens-Session` (through Claude Code's `ANTHROPIC_CUSTOM_HEADERS`) are one session of two turns, and a
`codex exec` run over its default WebSocket transport is a session of its own (the run id Codex sends); the
page lists both with the cost the
simulator's plan and the published prices give (computed here from what reached the simulator) and opens the
Claude Code session turn by turn. Skips with the reason without the pinned agents or a browser (see
tests/e2e/test_agents.py and tests/e2e/test_dashboard.py)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.agents import Agents, require_agents
from harness.browser import chromium
from harness.expect import TOKEN_FIELDS
from harness.gateway import PROVIDERS, Gateway, start_gateway, stop_gateway, write_config
from provider_sim import ReceivedRequest, Simulator, plan
from provider_sim.realtime_api import frame_headers
from published_prices import expected_cost
from tokenlens.money import format_usd

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
SESSION = f"claude-run-{uuid.uuid4().hex[:8]}"
CLAUDE_MODEL, CODEX_MODEL = "claude-sonnet-4-6", "gpt-4o-mini"
KNOBS = {"x-sim-cache-read": "1200", "x-sim-cache-write": "300"}  # so the cache hit rate is not 0
QUIET = {
    "DISABLE_TELEMETRY": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}
NOT_BODY = ("type", "stream", "background", "generate")


def usd(value: float) -> str:
    """The dashboard's amount format: the one rule of tokenlens.money (pinned by tests/core/test_money.py)."""
    return format_usd(value)


def usages(sim: Simulator, requests: list[ReceivedRequest]) -> list[dict[str, int]]:
    """The usage of each model call among `requests` (Messages and Responses over HTTP, `response.create`
    frames on a Responses socket, Codex's warm-up included), from the simulator's plan for the body it
    received."""
    out = []
    for req in requests:
        if req.method == "POST" and req.path in ("/v1/messages", "/v1/responses"):
            kind = "messages" if req.path == "/v1/messages" else "responses"
            p = sim.plan("anthropic" if kind == "messages" else "openai", kind, req.json(), req.headers)
            out.append({f: p.normalized()[f] or 0 for f in TOKEN_FIELDS})
        for message in req.ws_received if req.method == "GET" else ():
            frame = json.loads(message)
            if frame.get("type") != "response.create":
                continue
            body = {k: v for k, v in frame.items() if k not in NOT_BODY}
            headers = frame_headers(sim.knob_headers(req.headers), body.get("metadata"))
            usage = {f: plan("openai", "responses", body, headers).normalized()[f] or 0 for f in TOKEN_FIELDS}
            if frame.get("generate") is False:  # Codex's warm-up: the input is read, nothing is generated
                usage.update(output_tokens=0, reasoning_tokens=0)
            out.append(usage)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, dict[str, list[dict[str, int]]]]]:
    agents: Agents = require_agents()
    sims = {name: Simulator().start() for name in PROVIDERS}
    for sim in sims.values():
        sim.set_default_headers(KNOBS)
    home = tmp_path_factory.mktemp("agent-runs-home")
    config = home / "config.yaml"
    write_config(config, sims, "timezone: UTC\n")
    gateway = start_gateway(home, config, sims)
    try:
        seen: dict[str, list[dict[str, int]]] = {}
        work = tmp_path_factory.mktemp("agent-runs")
        (work / "home").mkdir()
        claude_env = {
            "PATH": agents.path_env(),
            "HOME": str(work / "home"),
            "ANTHROPIC_BASE_URL": gateway.base_url("anthropic"),
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "ANTHROPIC_CUSTOM_HEADERS": f"X-TokenLens-Session: {SESSION}",
            **QUIET,
        }
        start = len(sims["anthropic"].requests)
        for prompt in ("List the files.", "Now summarise them."):
            done = subprocess.run(
                [str(agents.claude), "-p", prompt, "--model", CLAUDE_MODEL],
                env=claude_env,
                cwd=work,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=90,
            )
            assert done.returncode == 0, done.stderr[-2000:]
        seen["claude"] = usages(sims["anthropic"], list(sims["anthropic"].requests)[start:])
        codex_home = work / "codex-home"
        codex_home.mkdir()
        (codex_home / "config.toml").write_text(f'openai_base_url = "{gateway.base_url("openai")}"\n')
        codex_env = {
            "PATH": agents.path_env(),
            "HOME": str(work / "home"),
            "CODEX_HOME": str(codex_home),
            "OPENAI_API_KEY": "sk-test",
        }
        start = len(sims["openai"].requests)
        done = subprocess.run(
            [str(agents.codex), "exec", "--skip-git-repo-check", "-m", CODEX_MODEL, "Say hi."],
            env=codex_env,
            cwd=work,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        seen["codex"] = usages(sims["openai"], list(sims["openai"].requests)[start:])
        deadline = time.monotonic() + 15
        while len(gateway.calls(limit=100)) < len(seen["claude"]) + len(seen["codex"]):
            assert time.monotonic() < deadline, gateway.log.read_text()[-3000:]
            time.sleep(0.1)
        yield gateway, seen
    finally:
        assert stop_gateway(gateway) == 0
        for sim in sims.values():
            sim.stop()


def test_the_page_shows_each_agent_run_with_its_turns(
    browser: Any, runs: tuple[Gateway, dict[str, list[dict[str, int]]]]
) -> None:
    gateway, seen = runs
    claude, codex = seen["claude"], seen["codex"]
    assert len(claude) == 2 and len(codex) >= 1
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{gateway.url}/sessions?days=1")
    page.wait_for_selector("body[data-loaded=true]")
    row = page.locator(f'#runs tr[data-run-id="{SESSION}"]')
    assert row.locator(".r-who .pill.agent").text_content() == "claude-code"
    assert row.locator(".r-turns").text_content() == "2"
    assert row.locator(".r-cost").text_content() == usd(sum(expected_cost(CLAUDE_MODEL, u) for u in claude))
    cached = sum(u["cache_read_tokens"] for u in claude) / sum(u["input_tokens"] for u in claude)
    assert row.locator(".r-cache").text_content() == f"{round(cached * 100)}%"
    assert row.locator(".r-models").text_content() == CLAUDE_MODEL

    # Codex sends its own run id (`session-id`, with its `originator` header): its run is a session too
    listing = httpx.get(f"{gateway.url}/api/usage/sessions", params={"days": 1}, timeout=10).json()
    runs_of_codex = [c for c in listing["sessions"] if c["agent"] == "codex"]
    assert len(runs_of_codex) == 1 and runs_of_codex[0]["calls"] == len(codex)  # warm-up and turn: one run
    expected_codex = sum(expected_cost(CODEX_MODEL, u) for u in codex)
    assert sum(c["cost_usd"] for c in runs_of_codex) == pytest.approx(expected_codex, rel=1e-6)
    for item in runs_of_codex:
        row = page.locator(f'#runs tr[data-run-id="{item["id"]}"]')
        assert row.locator(".pill.agent").text_content() == "codex"
        assert row.locator(".r-cost").text_content() == usd(item["cost_usd"])
    page.screenshot(path=str(SHOTS / "sessions-agents-desktop.png"), full_page=True)

    page.goto(f"{gateway.url}/sessions/{SESSION}")
    page.wait_for_selector("body[data-loaded=true] #turns-table")
    turns = page.locator("#turns-table tbody tr")
    assert turns.count() == 2
    assert turns.locator("td.t-cost").all_text_contents() == [
        usd(expected_cost(CLAUDE_MODEL, u)) for u in claude
    ]
    assert page.locator("#turns-table tbody td.t-turn").all_text_contents() == ["1", "2"]
    page.screenshot(path=str(SHOTS / "session-agent-desktop.png"), full_page=True)
    assert errors == []
    run = httpx.get(f"{gateway.url}/api/usage/sessions/{SESSION}", timeout=10).json()
    assert [t["input_tokens"] for t in run["timeline"]] == [u["input_tokens"] for u in claude]
    context.close()
