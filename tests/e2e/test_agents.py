"""The real coding agents through a real gateway against the provider simulator (issue 16): Claude Code
(`claude -p`, text and `--output-format json`) and Codex (`codex exec`) over its default WebSocket transport
and over HTTP/SSE, installed from npm at pinned versions by `scripts/install-agents` (see `harness.agents`).

Every request that reaches the simulator is accounted for: a model call (a `POST /v1/messages`, a
`POST /v1/responses`, or one `response.create` frame on a Responses socket) is exactly one record, with the
tokens of the simulator's plan for the body it received; anything else (Claude Code's `HEAD /` reachability
check, Codex's WebSocket upgrade) is counted apart as passthrough and is not a call. The gateway is this
module's own, so its KPIs hold only these agents' calls.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.agents import Agents, require_agents
from harness.expect import TOKEN_FIELDS
from harness.gateway import PROVIDERS, Gateway, start_gateway, stop_gateway, write_config
from provider_sim import ReceivedRequest, Simulator, plan
from provider_sim.realtime_api import frame_headers
from published_prices import expected_cost

pytestmark = pytest.mark.e2e

PROMPT = "Say hi in one short sentence."
# Cached prefixes reported by the simulator on every answer, so cache reads and writes are metered and priced
# (and Codex's "tokens used" can be told apart from input + output).
ANTHROPIC_KNOBS = {"x-sim-cache-read": "2000", "x-sim-cache-write": "300"}
OPENAI_KNOBS = {"x-sim-cache-read": "700", "x-sim-reasoning": "5"}
QUIET = {
    "DISABLE_TELEMETRY": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}
RUN_TIMEOUT = 90
TOKENS_USED = re.compile(r"tokens used\s+([\d,]+)")
NOT_BODY = ("type", "stream", "background", "generate")  # frame keys that are not the Responses request body


@dataclass
class ModelCall:
    """One model call as the simulator received it, with the usage the gateway must record for it."""

    model: str
    usage: dict[str, int]
    text: str  # the visible reply the simulator sent
    generate: bool = True


@dataclass
class Run:
    """One agent run: its output, what reached the simulator, and the gateway's records of it."""

    returncode: int
    stdout: str
    stderr: str
    requests: list[ReceivedRequest]
    model_calls: list[ModelCall]
    records: list[dict[str, Any]]
    passthrough: int  # requests the gateway counted apart during the run
    others: list[ReceivedRequest] = field(default_factory=list)  # requests that are not model calls
    gateway_log: str = ""  # the end of the gateway's log when the records did not all arrive

    def describe(self) -> str:
        out = f"exit {self.returncode}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"
        return out + (f"\ngateway log:\n{self.gateway_log}" if self.gateway_log else "")


@pytest.fixture(scope="module")
def agents() -> Agents:
    return require_agents()


@pytest.fixture(scope="module")
def agent_sims() -> Iterator[dict[str, Simulator]]:
    started = {name: Simulator().start() for name in PROVIDERS}
    started["anthropic"].set_default_headers(ANTHROPIC_KNOBS)
    started["openai"].set_default_headers(OPENAI_KNOBS)
    yield started
    for sim in started.values():
        sim.stop()


@pytest.fixture(scope="module")
def gw(
    agents: Agents, agent_sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("agents-home")
    config = home / "config.yaml"
    write_config(config, agent_sims, "timezone: UTC\n")
    running = start_gateway(home, config, agent_sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


def passthrough(gw: Gateway) -> int:
    response = httpx.get(f"{gw.url}/api/status", timeout=10)
    response.raise_for_status()
    return int(response.json()["passthrough_requests"])


def expected(
    sim: Simulator, provider: str, kind: str, body: dict[str, Any], headers: dict[str, str]
) -> ModelCall:
    p = sim.plan(provider, kind, body, headers)
    return ModelCall(str(body.get("model")), {f: p.normalized()[f] or 0 for f in TOKEN_FIELDS}, p.text)


def frame_calls(sim: Simulator, req: ReceivedRequest) -> list[ModelCall]:
    """The model calls of a Responses socket: one per `response.create` frame the simulator received."""
    calls = []
    for message in req.ws_received:
        frame = json.loads(message)
        assert frame.get("type") == "response.create", frame.get("type")
        body = {k: v for k, v in frame.items() if k not in NOT_BODY}
        p = plan(
            "openai", "responses", body, frame_headers(sim.knob_headers(req.headers), body.get("metadata"))
        )
        generate = frame.get("generate") is not False
        if not generate:  # a warm-up: the prompt is counted, nothing is generated
            p = dataclasses.replace(p, reply_words=0, reasoning=0, text="")
        usage = {f: p.normalized()[f] or 0 for f in TOKEN_FIELDS}
        calls.append(ModelCall(str(body.get("model")), usage, p.text, generate))
    return calls


def model_calls(
    sim: Simulator, provider: str, requests: list[ReceivedRequest]
) -> tuple[list[ModelCall], list[ReceivedRequest]]:
    """Split what reached `sim` into model calls (with their expected usage) and other requests."""
    calls: list[ModelCall] = []
    others: list[ReceivedRequest] = []
    for req in requests:
        if provider == "anthropic" and req.method == "POST" and req.path == "/v1/messages":
            calls.append(expected(sim, "anthropic", "messages", req.json(), req.headers))
        elif provider == "openai" and req.method == "POST" and req.path == "/v1/responses":
            calls.append(expected(sim, "openai", "responses", req.json(), req.headers))
        elif provider == "openai" and req.method == "GET" and req.path == "/v1/responses" and req.ws_received:
            calls.extend(frame_calls(sim, req))
            others.append(req)  # the upgrade itself is not a call
        else:
            others.append(req)
    return calls, others


def run_agent(
    gw: Gateway, sim: Simulator, provider: str, argv: list[str], env: dict[str, str], cwd: Path
) -> Run:
    """Run one agent to completion and collect what it did, waiting for the gateway to write its records."""
    before_ids = {c["id"] for c in gw.calls(limit=1000)}
    before_passthrough = passthrough(gw)
    start = len(sim.requests)
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT
    )
    requests = list(sim.requests)[start:]
    calls, others = model_calls(sim, provider, requests)
    deadline = time.monotonic() + 15
    while True:
        records = [c for c in reversed(gw.calls(limit=1000)) if c["id"] not in before_ids]
        if len(records) >= len(calls) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    log = gw.log.read_text(errors="replace")[-5000:] if len(records) < len(calls) else ""
    return Run(
        done.returncode,
        done.stdout,
        done.stderr,
        requests,
        calls,
        records,
        passthrough(gw) - before_passthrough,
        others,
        log,
    )


def claude(agents: Agents, gw: Gateway, sims: dict[str, Simulator], tmp: Path, *args: str) -> Run:
    home = tmp / "home"
    home.mkdir()
    env = {
        "PATH": agents.path_env(),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gw.base_url("anthropic"),
        "ANTHROPIC_API_KEY": "sk-ant-test",
        **QUIET,
    }
    return run_agent(gw, sims["anthropic"], "anthropic", [str(agents.claude), "-p", PROMPT, *args], env, tmp)


def codex(agents: Agents, gw: Gateway, sims: dict[str, Simulator], tmp: Path, config: str) -> Run:
    home, codex_home = tmp / "home", tmp / "codex-home"
    home.mkdir()
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(config)
    env = {
        "PATH": agents.path_env(),
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        "OPENAI_API_KEY": "sk-test",
    }
    argv = [str(agents.codex), "exec", "--skip-git-repo-check", PROMPT]
    return run_agent(gw, sims["openai"], "openai", argv, env, tmp)


@pytest.fixture(scope="module")
def claude_text(
    agents: Agents, gw: Gateway, agent_sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory
) -> Run:
    return claude(agents, gw, agent_sims, tmp_path_factory.mktemp("claude-text"))


@pytest.fixture(scope="module")
def claude_json(
    agents: Agents, gw: Gateway, agent_sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory
) -> Run:
    tmp = tmp_path_factory.mktemp("claude-json")
    return claude(agents, gw, agent_sims, tmp, "--output-format", "json", "--model", "claude-sonnet-4-6")


@pytest.fixture(scope="module")
def codex_websocket(
    agents: Agents, gw: Gateway, agent_sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory
) -> Run:
    """Codex as the README sets it up: the built-in provider, whose default transport is WebSocket."""
    config = f'openai_base_url = "{gw.base_url("openai")}"\n'
    return codex(agents, gw, agent_sims, tmp_path_factory.mktemp("codex-ws"), config)


@pytest.fixture(scope="module")
def codex_http(
    agents: Agents, gw: Gateway, agent_sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory
) -> Run:
    """Codex with a custom provider that turns WebSocket off: the Responses API over HTTP with SSE."""
    config = (
        'model_provider = "tokenlens"\n\n'
        "[model_providers.tokenlens]\n"
        'name = "TokenLens"\n'
        f'base_url = "{gw.base_url("openai")}"\n'
        'env_key = "OPENAI_API_KEY"\n'
        'wire_api = "responses"\n'
        "supports_websockets = false\n"
    )
    return codex(agents, gw, agent_sims, tmp_path_factory.mktemp("codex-http"), config)


def usage_of(record: dict[str, Any]) -> dict[str, int]:
    return {f: record[f] for f in TOKEN_FIELDS}


def assert_recorded(run: Run, provider: str, endpoint: str, source: str, transport: str) -> None:
    """Each model call of the run is exactly one record, metered from the simulator's plan, none failed."""
    assert run.returncode == 0, run.describe()
    assert run.model_calls, f"no model call reached the simulator\n{run.describe()}"
    assert len(run.records) == len(run.model_calls), f"{run.records}\n{run.describe()}"
    key = lambda model, usage: (model, tuple(sorted(usage.items())))  # noqa: E731
    assert Counter(key(r["model"], usage_of(r)) for r in run.records) == Counter(
        key(c.model, c.usage) for c in run.model_calls
    )
    for record in run.records:
        assert record["provider"] == provider
        assert record["endpoint"] == endpoint
        assert record["source"] == source
        assert record["requested_model"] == record["model"]
        assert record["stream"] is True
        assert (record["status"], record["outcome"], record["error"]) == (200, "ok", None)
        assert record["usage_source"] == "provider"
        assert record["priced"] is True and record["cost_usd"] > 0
        assert record["transport"] == transport
    # every other request was forwarded and counted apart, never recorded
    assert run.passthrough == len(run.others), [(r.method, r.path) for r in run.others]


# ---- Claude Code -----------------------------------------------------------------------------------------


def test_claude_code_print_mode_is_metered(claude_text: Run) -> None:
    """`claude -p`: its one model call is recorded with the plan's tokens and priced; the reply is printed."""
    run = claude_text
    assert_recorded(run, "anthropic", "/v1/messages", "claude-code", "http")
    assert len(run.model_calls) == 1
    assert run.stdout.strip() == run.model_calls[0].text
    assert run.records[0]["cache_read_tokens"] == 2000 and run.records[0]["cache_write_tokens"] == 300


def test_claude_code_reachability_check_is_not_a_call(claude_text: Run, gw: Gateway) -> None:
    """The `HEAD /` Claude Code sends before its first call reaches the provider but is not a call."""
    run = claude_text
    assert [(r.method, r.path) for r in run.others] == [("HEAD", "/")]
    assert run.passthrough == 1
    assert all(c["endpoint"] != "/" for c in gw.calls(limit=1000))


def test_claude_code_json_cost_equals_the_record(claude_json: Run) -> None:
    """`--output-format json`: Claude Code's own `total_cost_usd` equals the sum of the run's recorded costs,
    which equal the published Sonnet 4.6 prices applied to the simulator's token counts."""
    run = claude_json
    assert_recorded(run, "anthropic", "/v1/messages", "claude-code", "http")
    result = json.loads(run.stdout)
    assert result["type"] == "result" and result["subtype"] == "success", result
    assert result["is_error"] is False
    assert [r["model"] for r in run.records] == ["claude-sonnet-4-6"] * len(run.records)
    assert result["result"] == run.model_calls[-1].text
    recorded = math.fsum(r["cost_usd"] for r in run.records)
    # equal to the last bits of a double: Claude Code sums its parts in floating point (0.052490999999999996)
    # where the gateway reports the rounded decimal (0.052491)
    assert math.isclose(result["total_cost_usd"], recorded, rel_tol=1e-12, abs_tol=0), (result, recorded)
    published = math.fsum(expected_cost("claude-sonnet-4-6", c.usage) for c in run.model_calls)
    assert recorded == pytest.approx(published, rel=1e-9)
    # Claude Code's usage counts uncached input apart; the record's input includes the cached prefix
    totals = {f: sum(c.usage[f] for c in run.model_calls) for f in TOKEN_FIELDS}
    usage = result["usage"]
    assert usage["cache_read_input_tokens"] == totals["cache_read_tokens"]
    assert usage["cache_creation_input_tokens"] == totals["cache_write_tokens"]
    assert (
        usage["input_tokens"]
        == totals["input_tokens"] - totals["cache_read_tokens"] - totals["cache_write_tokens"]
    )
    assert usage["output_tokens"] == totals["output_tokens"]


# ---- Codex -------------------------------------------------------------------------------------------------


def tokens_used(run: Run) -> int:
    found = TOKENS_USED.findall(run.stdout + "\n" + run.stderr)
    assert found, run.describe()
    return int(found[-1].replace(",", ""))


def test_codex_over_websocket_is_metered(codex_websocket: Run) -> None:
    """`codex exec` with `openai_base_url`: one socket, each `response.create` frame one record (the warm-up
    frame with `"generate": false` included), no fallback to HTTP, the upgrade not a call."""
    run = codex_websocket
    assert_recorded(run, "openai", "/v1/responses", "codex", "websocket")
    assert {(r.method, r.path) for r in run.requests} == {("GET", "/v1/responses")}, "fell back to HTTP"
    assert all(r.headers.get("upgrade", "").lower() == "websocket" for r in run.requests)
    generated = [c for c in run.model_calls if c.generate]
    assert generated and run.stdout.strip().endswith(generated[-1].text)


def test_codex_over_http_is_metered(codex_http: Run) -> None:
    """A custom provider with `supports_websockets = false`: the Responses API over HTTP with SSE."""
    run = codex_http
    assert_recorded(run, "openai", "/v1/responses", "codex", "http")
    assert {(r.method, r.path) for r in run.requests} == {("POST", "/v1/responses")}
    assert not run.others
    assert run.stdout.strip().endswith(run.model_calls[-1].text)


@pytest.mark.parametrize("transport", ["websocket", "http"])
def test_codex_tokens_used_is_uncached_input_plus_output(
    transport: str, request: pytest.FixtureRequest
) -> None:
    """Codex prints `tokens used N`: N is the run's input not read from cache plus its output (reasoning
    included), summed over its calls; the gateway's input_tokens include the cached tokens."""
    run: Run = request.getfixturevalue(f"codex_{transport}")
    assert run.returncode == 0, run.describe()
    blended = sum(r["input_tokens"] - r["cache_read_tokens"] + r["output_tokens"] for r in run.records)
    assert tokens_used(run) == blended
    assert tokens_used(run) != sum(r["input_tokens"] + r["output_tokens"] for r in run.records)


# ---- the gateway's view after the runs ---------------------------------------------------------------


def test_kpi_shows_exactly_the_agents_model_calls(
    gw: Gateway, claude_text: Run, claude_json: Run, codex_websocket: Run, codex_http: Run
) -> None:
    """After the runs, /api/calls and /api/usage/kpi hold the agents' model calls and nothing else."""
    runs = [claude_text, claude_json, codex_websocket, codex_http]
    for run in runs:
        assert run.returncode == 0, run.describe()
    calls = [c for run in runs for c in run.model_calls]
    records = gw.calls(limit=1000)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for run in runs for r in run.records)
    kpi = httpx.get(f"{gw.url}/api/usage/kpi", timeout=10).json()
    assert kpi["calls"] == len(calls) == len(records)
    assert (kpi["error_calls"], kpi["blocked_calls"], kpi["cached_calls"], kpi["unpriced_calls"]) == (
        0,
        0,
        0,
        0,
    )
    for f in TOKEN_FIELDS:
        assert kpi[f] == sum(c.usage[f] for c in calls), f
    assert kpi["total_cost_usd"] == pytest.approx(math.fsum(r["cost_usd"] for r in records), rel=1e-9)
    sources = httpx.get(f"{gw.url}/api/usage/sources", timeout=10).json()["items"]
    assert {s["name"]: s["calls"] for s in sources} == {
        "claude-code": len(claude_text.model_calls) + len(claude_json.model_calls),
        "codex": len(codex_websocket.model_calls) + len(codex_http.model_calls),
    }
    assert passthrough(gw) == sum(len(run.others) for run in runs)
