"""Amounts in the dashboard, in a real headless Chromium, for a store of sub-cent spends and one of large spends.

Each store is filled through `POST /api/import` with amounts written here; the expected texts are computed
from those amounts with `tokenlens.money.format_usd` (itself pinned by hand-written texts in
tests/core/test_money.py, and checked there against the pages' own formatter). Pages are checked at 1440 and
390 px wide, with a screenshot of each in `build/screenshots/`; no table is cut or scrolls sideways.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.browser import chromium
from harness.gateway import Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator
from tokenlens.money import format_usd

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
SIZES = {"wide": (1440, 900), "phone": (390, 844)}
PAGES = {
    "overview": "/",
    "live": "/live",
    "sources": "/sources",
    "models": "/models",
    "insights": "/insights",
}
CHART_TICKS = """(id) => {
  const chart = Chart.getChart(document.getElementById(id));
  return chart.scales.y.ticks.map((t) => ({ value: t.value, label: String(t.label) }));
}"""
CHART_TOOLTIP = """([id, value]) => {
  const chart = Chart.getChart(document.getElementById(id));
  const callbacks = chart.options.plugins.tooltip.callbacks;
  const item = { dataset: { label: "Input" }, parsed: { y: value } };
  return [callbacks.label(item), callbacks.footer([item, item])];
}"""
CUT_TABLES = """() => [...document.querySelectorAll('.table-wrap')]
  .filter((w) => w.scrollWidth > w.clientWidth + 1)
  .map((w) => (w.querySelector('table') || {}).id || w.parentElement.id)"""


@dataclass
class Store:
    """The calls one test store is filled with (the amounts the expected texts are computed from)."""

    name: str
    now: datetime
    lines: list[dict[str, Any]] = field(default_factory=list)

    def add(self, id_: str, when: datetime, cost: float | None, **extra: Any) -> None:
        line: dict[str, Any] = {
            "id": id_,
            "ts": when.isoformat().replace("+00:00", "Z"),
            "provider": "openai",
            "endpoint": "/v1/chat/completions",
            "source": "chat",
            "model": "gpt-4o-mini",
            "input_tokens": 1000,
            "output_tokens": 100,
            "status": 200,
            "outcome": "ok",
        }
        if cost is not None:  # the parts add up to the total: 60% input, the rest output
            line.update(
                cost_usd=cost, input_cost_usd=cost * 0.6, output_cost_usd=cost - cost * 0.6, priced=True
            )
        line.update(extra)
        self.lines.append(line)

    def total(self, since: datetime) -> float:
        return math.fsum(
            line["cost_usd"]
            for line in self.lines
            if line.get("cost_usd") is not None and datetime.fromisoformat(line["ts"]) >= since
        )

    def today(self) -> float:
        return self.total(self.now.replace(hour=0, minute=0, second=0, microsecond=0))

    def month(self) -> float:
        return self.total(self.now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))

    def daily(self) -> dict[str, float]:
        days: dict[str, float] = {}
        for line in self.lines:
            if line.get("cost_usd") is not None:
                days[line["ts"][:10]] = days.get(line["ts"][:10], 0.0) + line["cost_usd"]
        return days


def small_store(now: datetime) -> Store:
    """Sub-cent spends: $0.0014 today (the issue's example) and a gpt-4o-mini call of $0.000011."""
    store = Store("small", now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = [max(now - timedelta(seconds=30 * (i + 1)), midnight + timedelta(seconds=i)) for i in range(3)]
    store.add("small-today-1", today[0], 0.0005)
    store.add("small-today-2", today[1], 0.000889)
    store.add("small-tiny", today[2], 0.000011, input_tokens=60, output_tokens=3, source="cheap")
    for day in range(1, 21):  # a tenth of a cent a day, then a two-cent spike yesterday
        store.add(
            f"small-day-{day}",
            midnight - timedelta(days=day) + timedelta(hours=9),
            0.02 if day == 1 else 0.001,
        )
    for i in range(20):  # simple calls on gpt-4o: right-sizing suggests a cheaper model, saving under a cent
        store.add(
            f"small-simple-{i}",
            midnight - timedelta(days=1 + i % 5, hours=-10),
            200 * 2.5e-6 + 20 * 10e-6,  # gpt-4o: $2.50 / $10 per million
            model="gpt-4o",
            source="helpdesk",
            input_tokens=200,
            output_tokens=20,
            complexity=1,
        )
    return store


def large_store(now: datetime) -> Store:
    """Large spends: over a thousand dollars today, hundreds a day before, a spike yesterday."""
    store = Store("large", now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = [max(now - timedelta(seconds=30 * (i + 1)), midnight + timedelta(seconds=i)) for i in range(2)]
    store.add("large-today-1", today[0], 1234.5, source="batch", input_tokens=900_000, output_tokens=50_000)
    store.add("large-today-2", today[1], 312.56, source="batch", input_tokens=300_000, output_tokens=9_000)
    for day in range(1, 21):
        cost = 4321.09 if day == 1 else 300 + 7.25 * (day % 4)
        store.add(
            f"large-day-{day}", midnight - timedelta(days=day) + timedelta(hours=9), cost, source="batch"
        )
    for i in range(400):  # simple calls with long inputs on gpt-4o: a right-sizing saving of dollars
        store.add(
            f"large-simple-{i}",
            midnight - timedelta(days=1 + i % 10, hours=-11),
            100_000 * 2.5e-6 + 4_000 * 10e-6,
            model="gpt-4o",
            source="summariser",
            input_tokens=100_000,
            output_tokens=4_000,
            complexity=1,
        )
    return store


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module", params=["small", "large"])
def filled(
    request: pytest.FixtureRequest, sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Store]]:
    home = tmp_path_factory.mktemp(f"money-{request.param}")
    config = home / "config.yaml"
    write_config(config, sims, "timezone: UTC\n")
    running = start_gateway(home, config, sims)
    now = datetime.now(UTC)
    store = small_store(now) if request.param == "small" else large_store(now)
    body = "\n".join(json.dumps(line) for line in store.lines) + "\n"
    answer = httpx.post(
        f"{running.url}/api/import",
        content=body,
        headers={"Content-Type": "application/x-ndjson"},
        timeout=60,
    ).json()
    assert answer == {"imported": len(store.lines), "skipped": 0, "errors": []}, answer
    yield running, store
    assert stop_gateway(running) == 0, running.log.read_text()


@pytest.fixture(scope="module")
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    yield ctx
    ctx.close()


def open_page(context: Any, gateway: Gateway, path: str, size: str, errors: list[str]) -> Any:
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    width, height = SIZES[size]
    page.set_viewport_size({"width": width, "height": height})
    page.goto(gateway.url + path)
    page.wait_for_selector("body[data-loaded=true]", timeout=15000)
    page.wait_for_timeout(300)  # tables filled after the first fetch settle
    return page


def api(gateway: Gateway, path: str, **params: Any) -> Any:
    response = httpx.get(gateway.url + path, params=params, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.mark.parametrize("size", list(SIZES))
def test_kpis_live_row_and_chart_axis_show_the_amounts(
    filled: tuple[Gateway, Store], context: Any, size: str
) -> None:
    gateway, store = filled
    errors: list[str] = []
    page = open_page(context, gateway, "/", size, errors)
    today, month = store.today(), store.month()
    assert page.text_content('[data-testid="kpi-today"]') == format_usd(today)
    assert page.text_content('[data-testid="kpi-month"]') == format_usd(month)
    if store.name == "small":  # the example, written out
        assert page.text_content('[data-testid="kpi-today"]') == "$0.0014"
    else:
        assert page.text_content('[data-testid="kpi-today"]') == "$1,547.06"
    # the value is whole in its card (not cut with an ellipsis)
    cut = page.evaluate(
        "[...document.querySelectorAll('.kpi .value')].filter((v) => v.scrollWidth > v.clientWidth + 1).length"
    )
    assert cut == 0

    ticks = page.evaluate(CHART_TICKS, "daily-chart")
    assert len(ticks) >= 3
    assert [t["label"] for t in ticks] == [format_usd(t["value"]) for t in ticks]
    assert len({t["label"] for t in ticks}) == len(ticks), ticks  # no two ticks read alike ("$0.0000")
    assert max(t["value"] for t in ticks) >= max(store.daily().values()) * 0.99
    amount = store.lines[0]["input_cost_usd"]
    label, footer = page.evaluate(CHART_TOOLTIP, ["daily-chart", amount])
    assert label == f"Input: {format_usd(amount)}" and footer == f"Total {format_usd(amount * 2)}"
    page.screenshot(path=str(SHOTS / f"money-{store.name}-overview-{size}.png"), full_page=True)
    assert page.evaluate(CUT_TABLES) == []
    page.close()

    page = open_page(context, gateway, "/live", size, errors)
    for line in [line for line in store.lines if "today" in line["id"] or "tiny" in line["id"]]:
        row = page.locator(f'#calls tr[data-call-id="{line["id"]}"]')
        assert row.locator(".c-cost").text_content() == format_usd(line["cost_usd"])
    if store.name == "small":
        assert page.locator('#calls tr[data-call-id="small-tiny"] .c-cost').text_content() == "$0.000011"
    page.screenshot(path=str(SHOTS / f"money-{store.name}-live-{size}.png"), full_page=True)
    assert page.evaluate(CUT_TABLES) == []
    page.close()
    assert errors == []


@pytest.mark.parametrize("size", list(SIZES))
def test_insights_tables_show_the_amounts_and_are_not_cut(
    filled: tuple[Gateway, Store], context: Any, size: str
) -> None:
    gateway, store = filled
    errors: list[str] = []
    page = open_page(context, gateway, "/insights", size, errors)
    page.screenshot(path=str(SHOTS / f"money-{store.name}-insights-{size}.png"), full_page=True)
    assert page.evaluate(CUT_TABLES) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size][0] + 1

    sizing = [r for r in api(gateway, "/api/usage/right-sizing", days=30)["items"] if r["recommended"]]
    rows = page.locator("#right-sizing-table tbody tr")
    assert rows.count() == min(10, len(sizing)) >= 1
    for i in range(rows.count()):
        saving = rows.nth(i).locator('td[data-label="Saving"]')
        assert saving.text_content() == format_usd(sizing[i]["saving_usd"])
        assert saving.is_visible()
        box, table = saving.bounding_box(), page.locator("#right-sizing").bounding_box()
        assert box["x"] + box["width"] <= table["x"] + table["width"] + 1  # the column is whole, not cut
    header = page.locator("#right-sizing-table thead th", has_text="Saving")
    if size == "wide":
        assert header.is_visible()
        box, table = header.bounding_box(), page.locator("#right-sizing").bounding_box()
        assert box["x"] + box["width"] <= table["x"] + table["width"] + 1

    spend = [a for a in reversed(api(gateway, "/api/usage/anomalies", days=30)["anomalies"])]
    rows = page.locator("#anomalies-table tbody tr")
    assert rows.count() == min(10, len(spend))
    assert any(a["metric"] == "spend" and a["source"] is None for a in spend)  # yesterday's spike
    for i in range(rows.count()):
        a = spend[i]
        if a["metric"] == "spend":
            assert rows.nth(i).locator('td[data-label="Value"]').text_content() == format_usd(a["value"])

    recommendations = api(gateway, "/api/usage/recommendations")["recommendations"]
    shown = page.locator("#recommendation-list .reco .saving").all_text_contents()
    assert shown == [f"{format_usd(r['saving_usd_month'])}/mo" for r in recommendations][: len(shown)]
    assert "$0.0000" not in (page.text_content("main") or "")
    page.close()
    assert errors == []


def test_every_page_keeps_its_tables_whole(filled: tuple[Gateway, Store], context: Any) -> None:
    gateway, store = filled
    errors: list[str] = []
    for size in SIZES:
        for name, path in PAGES.items():
            page = open_page(context, gateway, path, size, errors)
            assert page.evaluate(CUT_TABLES) == [], f"{name} at {size}"
            assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size][0] + 1, name
            page.close()
    assert errors == []
