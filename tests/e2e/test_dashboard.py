"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python package).

One gateway (in front of the provider simulators) with the demo history and one browser are shared by the
module. Screenshots of every page at desktop and phone widths go to `build/screenshots/`. Skipped, with the
reason, when Playwright or the browser is missing (`.ci/run` installs the browser).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from harness.browser import chromium
from harness.gateway import Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator
from tokenlens.cli.demo import DEMO_CONFIG, fill_store
from tokenlens.config import load_settings
from tokenlens.money import format_usd

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
PAGES = {
    "overview": "/",
    "live": "/live",
    "sources": "/sources",
    "models": "/models",
    "insights": "/insights",
    "latency": "/latency",
    "settings": "/settings",
}
SIZES = {"desktop": (1280, 800), "wide": (1440, 900), "phone": (390, 844)}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def demo_gateway(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("dashboard-home")
    config = home / "config.yaml"
    write_config(config, sims, DEMO_CONFIG.replace("dedup: {enabled: true", "dedup: {enabled: false"))
    result = fill_store(load_settings(config), home, days=30, seed=11)
    assert result.imported > 1000 and not result.errors
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


class Session:
    """A browser context on the gateway that records every request the pages make and every JS error."""

    def __init__(self, browser: Any, gateway: Gateway) -> None:
        self.gateway = gateway
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.websockets: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page = self.context.new_page()
        self.page.on("websocket", lambda socket: self.websockets.append(socket.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console", lambda message: self.errors.append(message.text) if message.type == "error" else None
        )

    def open(self, path: str, size: str = "desktop") -> Any:
        width, height = SIZES[size]
        self.page.set_viewport_size({"width": width, "height": height})
        self.page.goto(self.gateway.url + path)
        self.page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        return self.page

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.gateway.url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def session(browser: Any, demo_gateway: Gateway) -> Iterator[Session]:
    state = Session(browser, demo_gateway)
    yield state
    state.context.close()


def test_every_page_loads_at_both_widths_and_is_screenshotted(session: Session) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        for name, path in PAGES.items():
            page = session.open(path, size)
            assert page.locator("h1").first.is_visible()
            assert page.locator("#page-error").is_hidden(), page.locator("#page-error").text_content()
            shot = SHOTS / f"{name}-{size}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5000
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= SIZES[size][0] + 1, f"{name} scrolls sideways at {size} width ({width}px)"
            # nor does any table inside its box (it would be cut at the card's edge); on phones rows become
            # labelled cards
            page.wait_for_timeout(300)  # tables filled after the first fetch settle
            wide = page.evaluate(
                "[...document.querySelectorAll('.table-wrap')]"
                ".filter((w) => w.scrollWidth > w.clientWidth + 1).map((w) => w.querySelector('table').id)"
            )
            tables = page.evaluate("document.querySelectorAll('table.data tbody tr').length")
            assert wide == [], f"{name}: table(s) {wide} scroll sideways at {size} width"
            if name in ("live", "sources", "models", "insights"):
                assert tables > 0, f"{name}: no table rows to check"
            if size == "phone":
                hidden = page.evaluate(  # every page's link is on screen, none behind a sideways scroll
                    "[...document.querySelectorAll('.nav a')].filter((a) => {"
                    " const r = a.getBoundingClientRect(); return r.right > window.innerWidth || r.left < 0; }).length"
                )
                assert hidden == 0, f"{name}: {hidden} navigation link(s) off screen at phone width"
    call_id = session.api("/api/calls", limit=1)["calls"][0]["id"]
    for size in SIZES:
        session.open(f"/calls/{call_id}", size).screenshot(
            path=str(SHOTS / f"call-{size}.png"), full_page=True
        )
    assert session.errors == []


def test_theme_follows_the_system_and_the_toggle(session: Session) -> None:
    page = session.open("/")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.reload()
    page.wait_for_selector("body[data-loaded=true]")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"  # remembered
    page.screenshot(path=str(SHOTS / "overview-desktop-dark.png"), full_page=True)
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"


def test_overview_numbers_match_the_api(session: Session) -> None:
    page = session.open("/")
    kpi = session.api("/api/usage/kpi", days=30)
    status = session.api("/api/status")
    assert kpi["calls"] > 1000
    shown = {name: page.text_content(f'[data-testid="kpi-{name}"]') for name in ("calls", "saved", "blocked")}
    assert shown == {
        "calls": f"{kpi['calls']:,}",
        "saved": format_usd(kpi["total_saved_usd"]),
        "blocked": f"{kpi['blocked_calls']:,}",
    }
    assert page.text_content('[data-testid="kpi-today"]') == format_usd(status["today_usd"])
    assert page.text_content('[data-testid="kpi-month"]') == format_usd(status["month_usd"])
    forecast = session.api("/api/usage/forecast")
    assert page.text_content('[data-testid="forecast-projected"]') == format_usd(
        forecast["projected_month_usd"]
    )
    top = session.api("/api/usage/sources", days=30)["items"][0]
    first = page.locator("#top-sources-table tbody tr").first
    assert first.locator("td").nth(0).text_content() == top["name"]
    assert first.locator("td").nth(2).text_content() == f"{top['calls']:,}"
    caps = session.api("/api/usage/budget-status")["caps"]
    assert page.locator(".gauge").count() >= len(caps) == 4  # day and month, global and code-agent
    assert page.evaluate("Chart.getChart(document.getElementById('daily-chart')).data.datasets.length") == 4
    days = session.api("/api/usage/daily", days=30)["days"]
    shown_total = page.evaluate(
        "Chart.getChart(document.getElementById('daily-chart')).data.datasets"
        ".reduce((s, d) => s + d.data.reduce((a, b) => a + b, 0), 0)"
    )
    parts = ("input_cost_usd", "output_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd")
    assert shown_total == pytest.approx(sum(d[p] or 0 for d in days for p in parts), rel=1e-9)
    assert sum(d["cost_usd"] for d in days) == pytest.approx(kpi["total_cost_usd"], rel=1e-6)


def test_tables_paginate(session: Session) -> None:
    page = session.open("/live")
    first_page = page.locator("#calls tr").evaluate_all("rows => rows.map(r => r.dataset.callId)")
    assert len(first_page) == 50
    api_page = session.api("/api/calls", limit=50)
    assert first_page == [c["id"] for c in api_page["calls"]]
    page.click("#older")
    page.wait_for_function(f"() => document.querySelector('#calls tr').dataset.callId !== '{first_page[0]}'")
    second = page.locator("#calls tr").evaluate_all("rows => rows.map(r => r.dataset.callId)")
    assert second == [c["id"] for c in session.api("/api/calls", limit=50, before=api_page["next"])["calls"]]
    page.select_option("#filters select[name=outcome]", "blocked")
    page.click("#filters button[type=submit]")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#calls tr')].every(r => r.textContent.includes('blocked'))"
    )
    blocked = session.api("/api/calls", limit=50, outcome="blocked")["calls"]
    assert page.locator("#calls tr").count() == len(blocked) > 0


def test_call_detail_shows_the_call_and_masks_secrets(session: Session) -> None:
    calls = session.api("/api/calls", limit=1000)["calls"]
    with_secret = next(
        c
        for c in calls
        if c["details"].get("waste")
        and "sk-demo-" in (session.api(f"/api/calls/{c['id']}")["request_body"] or "")
    )
    page = session.open(f"/calls/{with_secret['id']}")
    assert page.text_content('[data-testid="call-input"]') == f"{with_secret['input_tokens']:,}"
    assert page.text_content('[data-testid="call-output"]') == f"{with_secret['output_tokens']:,}"
    assert page.text_content('[data-testid="call-cost"]') == format_usd(with_secret["cost_usd"])
    findings = with_secret["details"]["waste"]["findings"]
    assert page.locator("#waste-table tbody tr").count() == len(findings)
    assert page.locator(".legend [data-section]").count() == 5
    request_text = page.text_content("#request-body") or ""
    assert "staging API" in request_text and "••••" in request_text
    assert "sk-demo-" not in (page.content())
    fallback = next(c for c in calls if c["fallback_from"] and c["details"].get("attempts"))
    page = session.open(f"/calls/{fallback['id']}")
    rows = page.locator("#attempts-table tbody tr")
    assert rows.count() == len(fallback["details"]["attempts"])
    assert fallback["fallback_from"] in (rows.first.text_content() or "")


def test_sources_models_insights_latency_show_the_api_figures(session: Session) -> None:
    page = session.open("/sources")
    sources = session.api("/api/usage/sources", days=30)["items"]
    names = page.locator("#sources-table tbody tr td:first-child").all_text_contents()
    assert names == [s["name"] for s in sources][:10]
    tags = session.api("/api/usage/by-tag", key="team", days=30)["items"]
    assert page.locator("#tags-table tbody tr").count() == min(10, len(tags))

    page = session.open("/models")
    models = session.api("/api/usage/models", days=30)["items"]
    assert (
        page.locator("#models-table tbody tr td:first-child").all_text_contents()
        == [m["name"] for m in models][:12]
    )
    page.select_option("#from-model", "gpt-4o")
    page.fill("#to-model", "gpt-4o-mini")
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector('[data-testid="compare-whatif"]')
    expected = session.api("/api/usage/compare", from_model="gpt-4o", to_model="gpt-4o-mini", days=30)
    assert page.text_content('[data-testid="compare-actual"]') == format_usd(expected["actual_usd"])
    assert page.text_content('[data-testid="compare-whatif"]') == format_usd(expected["what_if_usd"])
    assert expected["what_if_usd"] < expected["actual_usd"]

    page = session.open("/insights")
    recommendations = session.api("/api/usage/recommendations")["recommendations"]
    assert page.locator("#recommendation-list .reco").count() == min(12, len(recommendations)) > 0
    bloat = session.api("/api/usage/conversation-efficiency")["items"]
    assert page.locator("#bloat-table .pill.warn").count() == sum(1 for b in bloat[:10] if b["bloated"]) >= 1
    assert page.locator("#caching-table tbody tr").count() > 0

    page = session.open("/latency?days=30")
    latency = session.api("/api/usage/latency", days=30)["items"]
    assert page.locator("#latency-table tbody tr").count() == min(15, len(latency)) > 0


def test_a_setting_saved_through_the_form_applies(session: Session) -> None:
    page = session.open("/settings#budgets")
    form = page.locator("#form-budgets")
    form.locator("input[aria-label='Daily (USD)']").fill("7.5")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#form-budgets .status.ok")
    assert session.api("/api/settings/budget")["daily_usd"] == 7.5
    assert session.api("/api/usage/budget-status")["caps"][0]["limit_usd"] == 7.5

    form = page.locator("#form-budgets")
    form.locator("input[aria-label='Monthly (USD)']").fill("-3")
    form.locator("button[type=submit]").click()
    error = page.locator('#form-budgets .field-error[data-field="budgets.monthly_usd"]')
    error.wait_for()
    assert "must be a number" in (error.text_content() or "")
    # the message sits next to the field it names
    assert (
        page.evaluate(
            "document.querySelector('#form-budgets .field-error').previousElementSibling.dataset.path"
        )
        == "budgets.monthly_usd"
    )
    assert session.api("/api/settings/budget")["monthly_usd"] == 60.0  # unchanged

    page = session.open("/settings#quotas")
    form = page.locator("#form-quotas")
    form.get_by_role("button", name="+ Add source limit").click()
    row = form.locator(".row-item").nth(1)
    row.locator("input[aria-label='Source']").fill("ci-evals")
    row.locator("input[aria-label='Daily (USD)']").fill("lots")
    form.locator("button[type=submit]").click()
    error = page.locator('#form-quotas .field-error[data-field="quotas.source_limits[1].daily_usd"]')
    error.wait_for()
    page.screenshot(path=str(SHOTS / "settings-error-desktop.png"), full_page=True)
    form.locator(".row-item").nth(1).locator("input[aria-label='Daily (USD)']").fill("1.25")
    form.locator("input[aria-label='Kill switches']").fill("website-chat")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#form-quotas .status.ok")
    quotas = session.api("/api/config/quotas")
    assert quotas["kill_switches"] == ["website-chat"]
    assert {"source": "ci-evals", "daily_usd": 1.25} in [
        {k: v for k, v in limit.items() if k in ("source", "daily_usd")} for limit in quotas["source_limits"]
    ]


def test_a_call_appears_live(session: Session) -> None:
    import openai

    page = session.open("/live")
    page.wait_for_selector("body[data-live=open]", timeout=10000)
    source = f"live-{int(time.time() * 1000)}"
    client = openai.OpenAI(
        base_url=session.gateway.base_url("openai"),
        api_key="sk-test",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}])
    row = page.locator("#calls tr", has_text=source)
    row.wait_for(timeout=10000)
    recorded = session.gateway.wait_calls(source)
    assert row.get_attribute("data-call-id") == recorded[0]["id"]
    page.click("#pause")
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Again"}])
    page.wait_for_function("() => document.getElementById('paused-count').textContent === '1'", timeout=10000)
    assert page.locator("#calls tr", has_text=source).count() == 1  # paused: not shown yet
    page.click("#pause")
    page.wait_for_function(
        f"() => [...document.querySelectorAll('#calls tr')].filter(r => r.textContent.includes('{source}')).length === 2"
    )


def test_no_request_leaves_loopback(session: Session) -> None:
    assert len(session.requests) > 50  # every page above was recorded
    outside = [url for url in session.requests if urlsplit(url).hostname not in LOOPBACK]
    assert outside == []
    assert any(url.endswith("/static/vendor/chart.umd.min.js") for url in session.requests)
    assert session.websockets and all(urlsplit(url).hostname in LOOPBACK for url in session.websockets)
    # every page above ran under the gateway's Content-Security-Policy without a violation
    assert [e for e in session.errors if "Content Security Policy" in e or "Refused to" in e] == []
