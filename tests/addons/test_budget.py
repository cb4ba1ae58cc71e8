"""The budget gate with mitmproxy's test flows: admission, the docs/gateway.md#refused-and-failed-calls answer, settlement, fail closed/open."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.test import taddons

from harness.gates import PATHS, Clock, configure, flow_for
from mitm_helpers import gateway_flow
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.budget import BudgetCheck
from tokenlens.addons.ingress import Ingress
from tokenlens.addons.recorder import Recorder
from tokenlens.app import AppDeps


def answer_ok(flow: http.HTTPFlow, output_tokens: int) -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": output_tokens, "total_tokens": 10 + output_tokens}
    flow.response = http.Response.make(
        200,
        json.dumps({"id": "x", "model": "my-model", "choices": [], "usage": usage}),
        {"content-type": "application/json"},
    )


def test_calls_within_the_daily_cap_pass_and_the_next_one_gets_a_429(deps: AppDeps) -> None:
    clock = Clock()
    # each call reserves >= 1000 output tokens at $1000/M = $1.00; the cap fits two
    configure(deps, clock, budgets={"daily_usd": 2.5})
    gate = BudgetCheck(deps)
    first, second, third = (flow_for(deps) for _ in range(3))
    gate.request(first)
    gate.request(second)
    assert first.response is None and second.response is None
    gate.request(third)
    assert third.response is not None and third.response.status_code == 429
    headers = third.response.headers
    assert headers["x-should-retry"] == "false" and headers["x-tokenlens-blocked-by"] == "budget"
    assert int(headers["retry-after"]) == 12 * 3600  # noon UTC to midnight UTC
    error = json.loads(third.response.content or b"")["error"]
    assert error["type"] == "rate_limit_exceeded" and "daily budget" in error["message"]
    ex = exchange_of(third)
    assert ex is not None and (ex.outcome, ex.blocked_by) == ("blocked", "budget")
    assert ex.details["controls"]["blocked"] == {"scope": "global", "period": "day", "metric": "usd"}


@pytest.mark.parametrize(
    ("provider", "check"),
    [
        ("anthropic", lambda e: e["type"] == "error" and e["error"]["type"] == "rate_limit_error"),
        ("google", lambda e: e["error"]["code"] == 429 and e["error"]["status"] == "RESOURCE_EXHAUSTED"),
    ],
)
def test_the_answer_is_in_the_calling_providers_format(deps: AppDeps, provider: str, check: Any) -> None:
    configure(deps, Clock(), budgets={"monthly_usd": 0.5})
    flow = flow_for(deps, provider)
    BudgetCheck(deps).request(flow)
    assert flow.response is not None and flow.response.status_code == 429
    assert check(json.loads(flow.response.content or b""))
    assert int(flow.response.headers["retry-after"]) == 21 * 86400 + 12 * 3600  # to April 1st, UTC


def test_the_reservation_is_settled_with_the_real_cost_when_the_record_commits(deps: AppDeps) -> None:
    clock = Clock()
    ledger = configure(deps, clock, budgets={"daily_usd": 1.5})
    gate, recorder = BudgetCheck(deps), Recorder(deps)
    first = flow_for(deps)
    gate.request(first)
    assert first.response is None
    blocked = flow_for(deps)
    gate.request(blocked)
    assert blocked.response is not None  # $1 reserved + $1 > $1.5
    answer_ok(first, output_tokens=100)  # real cost: (10 * 1 + 100 * 1000) / 1e6 = $0.10001
    gate.response(first)
    recorder.response(first)
    recorder.response(blocked)
    assert deps.writer.flush()
    (cap,) = ledger.status()["caps"]
    assert cap["spent_usd"] == pytest.approx((10 * 1.0 + 100 * 1000.0) / 1e6)
    assert cap["reserved_usd"] == 0 and ledger.in_flight() == 0
    later = flow_for(deps)
    gate.request(later)
    assert later.response is None


def test_an_aborted_call_is_settled_by_its_error_record(deps: AppDeps) -> None:
    ledger = configure(deps, Clock(), budgets={"daily_usd": 1.5})
    gate, recorder = BudgetCheck(deps), Recorder(deps)
    flow = flow_for(deps)
    gate.request(flow)
    assert ledger.in_flight() == 1
    flow.error = mflow.Error("client disconnected")
    gate.error(flow)
    recorder.error(flow)
    assert deps.writer.flush()
    assert ledger.in_flight() == 0


def test_the_period_boundary_resets_the_cap(deps: AppDeps) -> None:
    clock = Clock(datetime(2026, 3, 10, 23, 59, 30, tzinfo=UTC).timestamp())
    configure(deps, clock, budgets={"daily_usd": 1.5})
    gate = BudgetCheck(deps)
    gate.request(flow_for(deps))
    refused = flow_for(deps)
    gate.request(refused)
    assert refused.response is not None and refused.response.headers["retry-after"] == "30"
    clock.now += 30
    admitted = flow_for(deps)
    gate.request(admitted)
    assert admitted.response is None


def test_no_caps_means_no_reservation(deps: AppDeps) -> None:
    ledger = configure(deps, Clock())
    flow = flow_for(deps)
    BudgetCheck(deps).request(flow)
    assert flow.response is None and ledger.in_flight() == 0


def test_a_broken_ledger_fails_closed_by_default(deps: AppDeps, caplog: pytest.LogCaptureFixture) -> None:
    ledger = configure(deps, Clock(), budgets={"daily_usd": 100})
    ledger.broken = "the spend ledger could not be loaded"
    flow = flow_for(deps)
    with taddons.context():
        BudgetCheck(deps).request(flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.headers["x-tokenlens-blocked-by"] == "budget"
    assert "fail_open is false" in json.loads(flow.response.content or b"")["error"]["message"]
    assert "refusing it" in caplog.text


def test_a_broken_ledger_with_fail_open_lets_calls_through(
    deps: AppDeps, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = configure(deps, Clock(), budgets={"daily_usd": 100, "fail_open": True})
    ledger.broken = "the spend ledger could not be loaded"
    flow = flow_for(deps)
    with taddons.context():
        BudgetCheck(deps).request(flow)
    assert flow.response is None
    assert "letting it through" in caplog.text


def test_a_budget_event_is_published_when_a_cap_refuses_a_call(deps: AppDeps) -> None:
    configure(deps, Clock(), budgets={"daily_usd": 0.5})
    with deps.bus.subscribe() as sub:
        BudgetCheck(deps).request(flow_for(deps))
        messages = [sub.get(timeout=1), sub.get(timeout=1)]
    assert [(m["type"], m["data"]["threshold"]) for m in messages if m] == [("budget", 80), ("budget", 100)]


@pytest.mark.parametrize(
    ("provider", "limits"),
    [
        ("openai", {"max_completion_tokens": 1, "max_tokens": 4000}),
        ("openai", {"max_completion_tokens": 1, "max_output_tokens": "4000"}),
        ("anthropic", {"max_completion_tokens": 1, "max_tokens": 4000.0}),
        ("google", {"generationConfig": {"maxOutputTokens": 1, "max_output_tokens": 4000}}),
    ],
)
def test_the_largest_output_limit_is_reserved(deps: AppDeps, provider: str, limits: dict[str, Any]) -> None:
    """Issue 17, finding 6: a small limit next to a large one must not shrink the reservation."""
    ledger = configure(deps, Clock(), budgets={"daily_usd": 10.0})
    gate = BudgetCheck(deps)
    request: dict[str, Any]
    if provider == "google":
        request = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **limits}
    else:
        request = {"model": "my-model", "messages": [{"role": "user", "content": "hi"}], **limits}
    flows = [gateway_flow(PATHS[provider], request, {"X-TokenLens-Source": "t"}) for _ in range(5)]
    for flow in flows:
        Ingress(deps).request(flow)
        gate.request(flow)
    # 4000 output tokens at $1000 per million = $4.00 each (plus a little input): two fit under $10
    assert [f.response is None for f in flows] == [True, True, False, False, False]
    (cap,) = ledger.status()["caps"]
    assert 8.0 <= cap["reserved_usd"] <= 8.01
    ex = exchange_of(flows[0])
    assert ex is not None and ex.details["controls"]["worst_case"]["reserved_output_tokens"] == 4000


def test_every_answer_asked_for_is_reserved(deps: AppDeps) -> None:
    """`n` answers of up to max_tokens each may be billed: the reservation covers all of them."""
    configure(deps, Clock(), budgets={"daily_usd": 10.0})
    gate = BudgetCheck(deps)
    request = {
        "model": "my-model",
        "n": 3,
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}],
    }
    flow = gateway_flow(PATHS["openai"], request, {"X-TokenLens-Source": "t"})
    Ingress(deps).request(flow)
    gate.request(flow)
    ex = exchange_of(flow)
    assert ex is not None and ex.details["controls"]["worst_case"]["reserved_output_tokens"] == 3000
