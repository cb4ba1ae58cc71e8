"""The Sessions page in a real headless Chromium: agent runs listed with their figures, one run turn by turn.

A gateway with the demo history (for realistic pages and pagination) plus runs crafted here: a Claude Code
session with a subagent conversation and tool calls, and a Codex conversation without a session header. Every
expected figure is computed here from the crafted calls (the per-million rates below, written in the test).
Screenshots of both pages at desktop and phone widths go to `build/screenshots/` (`sessions-*.png`,
`session-*.png`). Skipped, with the reason, when Playwright or the browser is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.browser import chromium
from harness.clock import today_from
from harness.gateway import Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator
from tokenlens.cli.demo import DEMO_CONFIG, fill_store
from tokenlens.config import load_settings
from tokenlens.money import format_usd
from tokenlens.records import CallRecord
from tokenlens.store import open_store

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
RATES = {  # USD per million tokens: input, cache read, cache write, output
    "claude-sonnet-4-6": (3.0, 0.3, 3.75, 15.0),
    "claude-haiku-4-5": (1.0, 0.1, 1.25, 5.0),
    "gpt-5-codex": (1.25, 0.125, 0.0, 10.0),
}
SESSION = "e2e-claude-run-7f3a"
CODEX = "conv-e2e-codex-91b2"
# (conversation, model, input, cache read, cache write, output, latency ms, tools the request's history names)
CLAUDE_CALLS = [
    ("main", "claude-sonnet-4-6", 14_000, 0, 13_500, 420, 5200, []),
    ("main", "claude-sonnet-4-6", 15_200, 13_500, 1_200, 380, 4100, ["Read", "Grep"]),
    ("sub", "claude-haiku-4-5", 3_100, 0, 0, 900, 2400, []),
    ("main", "claude-sonnet-4-6", 17_900, 14_700, 2_700, 610, 6100, ["Bash"]),
    ("main", "claude-sonnet-4-6", 19_400, 17_400, 1_500, 250, 3900, ["Edit", "Edit", "Bash"]),
]
CODEX_CALLS = [
    (CODEX, "gpt-5-codex", 9_000, 0, 0, 700, 3000, []),
    (CODEX, "gpt-5-codex", 10_400, 8_960, 0, 300, 2500, ["shell"]),
]


def costs(model: str, inp: int, read: int, write: int, out: int) -> tuple[float, float, float, float]:
    rate_in, rate_read, rate_write, rate_out = RATES[model]
    return (
        (inp - read - write) * rate_in / 1e6,
        read * rate_read / 1e6,
        write * rate_write / 1e6,
        out * rate_out / 1e6,
    )


def crafted(now: float) -> list[CallRecord]:
    records = []
    for group, calls, source, start in (
        (SESSION, CLAUDE_CALLS, "claude-code", now - 3 * 3600),
        (CODEX, CODEX_CALLS, "codex", now - 2 * 3600),
    ):
        ts = start
        for i, (conversation, model, inp, read, write, out, latency, tools) in enumerate(calls):
            c_in, c_read, c_write, c_out = costs(model, inp, read, write, out)
            records.append(
                CallRecord(
                    id=f"{group}-{i}",
                    ts=ts,
                    provider="openai" if model.startswith("gpt") else "anthropic",
                    endpoint="/v1/responses" if model.startswith("gpt") else "/v1/messages",
                    source=source,
                    model=model,
                    requested_model=model,
                    status=200,
                    input_tokens=inp,
                    output_tokens=out,
                    cache_read_tokens=read,
                    cache_write_tokens=write,
                    usage_source="provider",
                    cost_usd=c_in + c_read + c_write + c_out,
                    input_cost_usd=c_in,
                    cache_read_cost_usd=c_read,
                    cache_write_cost_usd=c_write,
                    output_cost_usd=c_out,
                    priced=True,
                    session_id=SESSION if group == SESSION else None,
                    conversation_id=f"{group}-{conversation}" if group == SESSION else CODEX,
                    turn=i + 1,
                    latency_ms=latency,
                    details={"tools": {"called": tools}} if tools else {},
                )
            )
            ts += latency / 1000 + 20
    return records


def expected(records: list[CallRecord]) -> dict[str, Any]:
    """The figures of one run, computed from its records."""
    last: dict[str | None, tuple[int, int]] = {}
    history_tokens, history_cost = [], []
    for r in records:
        previous = last.get(r.conversation_id)
        tokens = min(r.input_tokens, sum(previous)) if previous else 0
        side = (r.input_cost_usd or 0) + (r.cache_read_cost_usd or 0) + (r.cache_write_cost_usd or 0)
        history_tokens.append(tokens)
        history_cost.append(side * tokens / r.input_tokens)
        last[r.conversation_id] = (r.input_tokens, r.output_tokens)
    tools: list[list[str] | None] = []
    for i, r in enumerate(records):
        later = [n for n in records[i + 1 :] if n.conversation_id == r.conversation_id]
        tools.append(list(later[0].details.get("tools", {}).get("called", [])) if later else None)
    cost = sum(r.cost_usd or 0 for r in records)
    inp = sum(r.input_tokens for r in records)
    return {
        "cost": cost,
        "calls": len(records),
        "cache": sum(r.cache_read_tokens for r in records) / inp,
        "duration": records[-1].ts + (records[-1].latency_ms or 0) / 1000 - records[0].ts,
        "history_tokens": history_tokens,
        "history_cost": history_cost,
        "history_share": sum(history_cost) / cost,
        "tools": tools,
        "inputs": [r.input_tokens for r in records],
        "costs": [r.cost_usd for r in records],
    }


def usd(value: float) -> str:
    """The dashboard's amount format: the one rule of tokenlens.money (pinned by tests/core/test_money.py)."""
    return format_usd(value)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def runs_gateway(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("sessions-home")
    config = home / "config.yaml"
    write_config(config, sims, DEMO_CONFIG.replace("dedup: {enabled: true", "dedup: {enabled: false"))
    settings = load_settings(config)
    assert fill_store(settings, home, days=14, seed=5).imported > 500
    store = open_store(settings.storage.url, home)
    store.insert_calls(crafted(today_from(3 * 3600) + 3 * 3600))  # the runs start 3 hours back: all today
    store.close()
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


@pytest.fixture(scope="module")
def page(browser: Any, runs_gateway: Gateway) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.errors = errors
    yield opened
    context.close()


def visit(page: Any, gateway: Gateway, path: str, size: str = "desktop") -> Any:
    width, height = SIZES[size]
    page.set_viewport_size({"width": width, "height": height})
    page.goto(gateway.url + path)
    page.wait_for_selector("body[data-loaded=true]", timeout=15000)
    assert page.locator("#page-error").is_hidden(), page.locator("#page-error").text_content()
    return page


def api(gateway: Gateway, path: str, **params: Any) -> Any:
    response = httpx.get(gateway.url + path, params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def test_the_list_shows_each_run_with_its_figures(page: Any, runs_gateway: Gateway) -> None:
    claude = [r for r in crafted(0) if r.session_id == SESSION]
    want = expected(claude)
    visit(page, runs_gateway, "/sessions?days=1")
    assert page.locator(".nav a.active").text_content() == "Sessions"
    row = page.locator(f'#runs tr[data-run-id="{SESSION}"]')
    assert row.count() == 1
    assert row.locator(".r-cost").text_content() == usd(want["cost"])
    assert row.locator(".r-turns").text_content() == str(len(claude))
    assert row.locator(".r-cache").text_content() == f"{round(want['cache'] * 100)}%"
    assert row.locator(".r-who .pill.agent").text_content() == "claude-code"
    models = row.locator(".r-models").text_content() or ""
    assert models == "claude-haiku-4-5, claude-sonnet-4-6"
    minutes = int(want["duration"] // 60)
    assert (row.locator(".r-duration").text_content() or "").startswith(f"{minutes} min")

    page.select_option("#kind", "conversation")
    page.wait_for_selector(f'#runs tr[data-run-id="{CODEX}"]')
    codex = [r for r in crafted(0) if r.conversation_id == CODEX]
    row = page.locator(f'#runs tr[data-run-id="{CODEX}"]')
    assert row.locator(".r-cost").text_content() == usd(expected(codex)["cost"])
    assert row.locator(".r-who .pill.agent").text_content() == "codex"
    assert page.locator(f'#runs tr[data-run-id="{SESSION}"]').count() == 0


def test_older_runs_page_by_cursor(page: Any, runs_gateway: Gateway) -> None:
    visit(page, runs_gateway, "/sessions?days=30&kind=session")
    first = page.locator("#runs tr").evaluate_all("rows => rows.map(r => r.dataset.runId)")
    listing = api(runs_gateway, "/api/usage/sessions", days=30, kind="session", limit=50)
    assert first == [s["id"] for s in listing["sessions"]] and len(first) == 50
    page.click("#runs-older")
    page.wait_for_function(f"() => document.querySelector('#runs tr').dataset.runId !== '{first[0]}'")
    second = page.locator("#runs tr").evaluate_all("rows => rows.map(r => r.dataset.runId)")
    older = api(
        runs_gateway,
        "/api/usage/sessions",
        days=30,
        kind="session",
        limit=50,
        before=listing["next"]["session"],
    )
    assert second == [s["id"] for s in older["sessions"]] and not set(first) & set(second)


def test_one_run_turn_by_turn(page: Any, runs_gateway: Gateway) -> None:
    claude = [r for r in crafted(0) if r.session_id == SESSION]
    want = expected(claude)
    visit(page, runs_gateway, "/sessions?days=1")
    page.click(f'#runs tr[data-run-id="{SESSION}"] .r-id a')
    page.wait_for_selector("body[data-loaded=true] #turns-table")
    assert page.text_content('[data-testid="run-cost"]') == usd(want["cost"])
    assert page.text_content('[data-testid="run-cache"]') == f"{round(want['cache'] * 100)}%"
    assert page.text_content('[data-testid="run-history"]') == f"{round(want['history_share'] * 100)}%"
    rows = page.locator("#turns-table tbody tr")
    assert rows.count() == len(claude)
    assert rows.locator("td.t-cost").all_text_contents() == [usd(c) for c in want["costs"]]
    shown_tools = rows.locator("td.t-tools").all_text_contents()
    for shown, tools in zip(shown_tools, want["tools"], strict=True):
        if tools is None:
            assert shown == "—"
        elif not tools:
            assert shown == "none"
        else:
            assert all(name in shown for name in tools), (shown, tools)
    assert "Edit ×2" in shown_tools[3]
    datasets = page.evaluate(
        "Chart.getChart(document.getElementById('turn-cost-chart')).data.datasets.map(d => d.data)"
    )
    history, new_input, output, context = datasets
    assert history == pytest.approx(want["history_cost"], rel=1e-6, abs=1e-12)
    assert context == want["inputs"]
    stacked = [h + n + o for h, n, o in zip(history, new_input, output, strict=True)]
    assert stacked == pytest.approx(want["costs"], rel=1e-6)
    assert page.locator("#run-models-table tbody tr").count() == 2


def test_pages_at_both_widths_are_screenshotted(page: Any, runs_gateway: Gateway) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        for name, path in (("sessions", "/sessions?days=30"), ("session", f"/sessions/{SESSION}")):
            visit(page, runs_gateway, path, size)
            page.wait_for_timeout(300)
            shot = SHOTS / f"{name}-{size}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5000
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= SIZES[size][0] + 1, f"{name} scrolls sideways at {size} width ({width}px)"
            wide = page.evaluate(
                "[...document.querySelectorAll('.table-wrap')].filter((w) => w.scrollWidth > w.clientWidth + 1).length"
            )
            assert wide == 0, f"{name}: a table scrolls sideways at {size} width"
    assert page.errors == []
    visit(page, runs_gateway, "/sessions/no-such-run")
    assert "No session or conversation" in (page.text_content("#run") or "")
    assert [e for e in page.errors if "404" not in e] == []  # the browser logs the API's 404
