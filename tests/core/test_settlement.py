"""The gateway's side of the analysis process's reports: each raw call settles once, in the ledger, the latency
tracker, the metrics and the cost hooks; a report read again changes nothing; the live feed gets records only
while someone listens."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenlens.bus import EventBus
from tokenlens.config import SettingsHolder, parse_settings
from tokenlens.controls import Ledger, budget_caps
from tokenlens.exchange import Exchange
from tokenlens.metrics import Metrics
from tokenlens.records import CallRecord, SettledFacts
from tokenlens.settlement import FEED_FLAG, FeedFlag, SettledCall, Settlements, feed_wanted, report_line

# gpt-4o-mini's published rates: $0.15 per million input tokens, $0.60 per million output tokens
COST = 1000 * 0.15 / 1e6 + 100 * 0.60 / 1e6


def record(call_id: str, **fields: object) -> CallRecord:
    values: dict[str, object] = {
        "ts": 1_000_000.0,
        "provider": "openai",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "source": "tests",
        "status": 200,
        "input_tokens": 1000,
        "output_tokens": 100,
        "cost_usd": COST,
        "priced": True,
        "latency_ms": 250.0,
    }
    values.update(fields)
    return CallRecord(id=call_id, **values)  # type: ignore[arg-type]


def exchange(call_id: str) -> Exchange:
    return Exchange(
        id=call_id,
        started=1_000_000.0,
        provider="openai",
        api="openai",
        endpoint="/v1/chat/completions",
        kind="chat",
        mode="base_url",
    )


def samples(metrics: Metrics) -> dict[str, list[tuple[str, float]]]:
    found: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                found[sample.name].append((repr(sorted(sample.labels.items())), sample.value))
    return {name: sorted(values) for name, values in found.items()}


class Heard:
    def __init__(self) -> None:
        self.calls: list[SettledFacts] = []

    def __call__(self, calls: Sequence[SettledFacts]) -> None:
        self.calls.extend(calls)


def test_a_report_settles_each_expected_call_once_with_its_facts_and_tells_its_cost_hooks() -> None:
    heard, costs = Heard(), []
    settlements = Settlements([heard], Metrics(), EventBus())
    for call_id in ("a", "b"):
        ex = exchange(call_id)
        ex.on_cost.append(lambda usd, call_id=call_id: costs.append((call_id, usd)))
        settlements.expect(ex)
    a, b = record("a"), record("b", cost_usd=None, priced=False, outcome="error", status=500)
    line = report_line([a, b], totals=True)
    settlements.receive(line)
    assert [c.id for c in heard.calls] == ["a", "b"] and settlements.pending() == 0
    first = heard.calls[0]
    assert isinstance(first, SettledCall)
    assert (first.cost_usd, first.model, first.source, first.outcome) == (COST, "gpt-4o-mini", "tests", "ok")
    assert heard.calls[1].outcome == "error" and heard.calls[1].status == 500
    assert costs == [("a", COST), ("b", None)]
    settlements.receive(line)  # read again (the analysis process restarted): nothing more
    assert len(heard.calls) == 2 and len(costs) == 2 and settlements.settled == 2


def test_the_ledger_counts_a_raw_call_once_its_report_arrives() -> None:
    settings = parse_settings({"timezone": "UTC", "budgets": {"daily_usd": 1.0}})
    ledger = Ledger(SettingsHolder(settings), clock=lambda: 1_000_000.0)
    settlements = Settlements([ledger.settle], Metrics(), EventBus())
    assert ledger.admit("a", budget_caps(settings), 0.01) is None  # the worst case is reserved
    settlements.expect(exchange("a"))

    def global_day() -> dict[str, object]:
        caps = {(c["scope"], c["period"]): c for c in ledger.status()["caps"]}
        return caps[("global", "day")]

    assert global_day()["reserved_usd"] == pytest.approx(0.01) and global_day()["spent_usd"] == 0
    line = report_line([record("a")], totals=True)
    settlements.receive(line)
    settlements.receive(line)
    assert global_day()["reserved_usd"] == 0
    assert global_day()["spent_usd"] == pytest.approx(COST, rel=1e-12)  # once, at the published rates


def test_metrics_use_the_batch_totals_only_when_every_call_was_expected() -> None:
    records = [
        record("a"),
        record("b", model="gpt-4o", source="other", latency_ms=1200.0, ttft_ms=300.0, stream=True),
        record("c", outcome="blocked", blocked_by="budget", cost_usd=0.0, input_tokens=0, output_tokens=0),
        record("d", outcome="cached", saved_usd=0.25, cost_usd=0.0, input_tokens=0, output_tokens=0),
    ]
    line = report_line(records, totals=True)
    assert "metrics" in json.loads(line)
    whole, direct = Metrics(), Metrics()
    settlements = Settlements([], whole, EventBus())
    for r in records:
        settlements.expect(exchange(r.id))
    settlements.receive(line)
    direct.observe(records)
    assert samples(whole) == samples(direct)

    partial, direct_partial = Metrics(), Metrics()
    settlements = Settlements([], partial, EventBus())
    settlements.expect(exchange("b"))
    settlements.expect(
        exchange("d")
    )  # "a" and "c" were settled before: their share of the totals is not used
    settlements.receive(line)
    direct_partial.observe([records[1], records[3]])
    assert samples(partial) == samples(direct_partial)
    assert samples(partial) != samples(direct)


def test_the_live_feed_gets_the_records_of_settled_calls_only() -> None:
    bus = EventBus()
    settlements = Settlements([], Metrics(), bus)
    settlements.expect(exchange("a"))
    settlements.expect(exchange("b"))
    with bus.subscribe() as sub:
        blocked = record("b", outcome="blocked", blocked_by="quota")
        settlements.receive(
            report_line([record("a"), blocked, record("z")], totals=False, feed={"call", "block"})
        )
        messages = [sub.get(0), sub.get(0), sub.get(0)]
    assert [(m["type"], m["data"]["id"]) for m in messages if m] == [("call", "a"), ("block", "b")]
    assert messages[0] is not None and messages[0]["data"] == json.loads(json.dumps(record("a").to_dict()))


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b'{"calls": [["a"]]}\n',
        b'{"calls": [[1, 1.0, "p", null, "s", "ok", 200, false, 1.0, null, 0.1, null, null, 1, 1, 0, 0, 0]]}\n',
        b'{"calls": [], "metrics": [["p", null, "s", {"cost": -1}]]}\n',
        b'{"metrics": []}\n',
    ],
)
def test_an_unreadable_report_is_dropped_and_its_calls_stay_reserved(line: bytes) -> None:
    heard = Heard()
    settlements = Settlements([heard], Metrics(), EventBus())
    settlements.expect(exchange("a"))
    settlements.receive(line)
    assert heard.calls == [] and settlements.pending() == 1


def test_the_feed_flag_names_the_events_someone_wants_while_they_want_them(tmp_path: Path) -> None:
    bus = EventBus()
    flag = FeedFlag(tmp_path, bus)
    bus.on_subscribers = flag.update
    assert feed_wanted(tmp_path) == frozenset()
    alerts = bus.subscribe(wants=lambda kind: kind == "alert")
    assert feed_wanted(tmp_path) == frozenset()
    hooked: set[str] = set()
    webhooks = bus.subscribe(wants=lambda kind: kind in hooked)  # a webhook's events come from the settings
    hooked.add("block")
    assert feed_wanted(tmp_path) == frozenset()  # not asked again until the webhooks change
    flag.settings_changed(object(), frozenset({"pricing"}))
    flag.settings_changed(object(), frozenset({"webhooks"}))  # written off the caller's thread
    deadline = time.monotonic() + 10
    while feed_wanted(tmp_path) != {"block"} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert feed_wanted(tmp_path) == {"block"}
    calls = bus.subscribe(wants=lambda kind: kind in ("call", "block"))
    assert feed_wanted(tmp_path) == {"call", "block"} and (tmp_path / FEED_FLAG).exists()
    calls.close()
    webhooks.close()
    assert feed_wanted(tmp_path) == frozenset() and not (tmp_path / FEED_FLAG).exists()
    alerts.close()


def test_a_report_carries_the_records_of_the_wanted_events_only() -> None:
    blocked = record("b", outcome="blocked", blocked_by="quota", cost_usd=0.0)
    report = json.loads(report_line([record("a"), blocked], totals=False, feed={"block"}))
    assert [r["id"] for r in report["records"]] == ["b"]
    assert "records" not in json.loads(report_line([record("a"), blocked], totals=False))


def test_the_calls_awaiting_a_report_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tokenlens.settlement.MAX_EXPECTED", 3)
    heard = Heard()
    settlements = Settlements([heard], Metrics(), EventBus())
    for call_id in "abcd":
        settlements.expect(exchange(call_id))
    assert settlements.pending() == 3 and settlements.dropped == 1
    settlements.receive(report_line([record(c) for c in "abcd"], totals=True))
    assert [c.id for c in heard.calls] == ["b", "c", "d"]
