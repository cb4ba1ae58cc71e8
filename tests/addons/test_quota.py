"""The quota gate: kill switches, per-source and per-model caps, with mitmproxy's test flows."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from mitmproxy.test import taddons

from harness.gates import Clock, configure, flow_for
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.budget import BudgetCheck
from tokenlens.addons.quota import QuotaCheck
from tokenlens.app import AppDeps
from tokenlens.config import ModelLimit, Quotas, SourceLimit
from tokenlens.records import CallRecord


def gates(deps: AppDeps) -> tuple[BudgetCheck, QuotaCheck]:
    return BudgetCheck(deps), QuotaCheck(deps)


def run(deps: AppDeps, source: str = "agent", provider: str = "openai", **kw: Any) -> Any:
    flow = flow_for(deps, provider, source=source, **kw)
    budget, quota = gates(deps)
    budget.request(flow)
    if flow.response is None:
        quota.request(flow)
    return flow


def test_a_killed_source_gets_403_in_its_providers_format(deps: AppDeps) -> None:
    configure(deps, Clock(), quotas={"kill_switches": ["agent"]})
    for provider, error_type in (
        ("openai", lambda b: b["error"]["type"] == "permission_error"),
        ("anthropic", lambda b: b["error"]["type"] == "permission_error"),
        ("google", lambda b: b["error"]["status"] == "PERMISSION_DENIED"),
    ):
        flow = run(deps, provider=provider)
        assert flow.response is not None and flow.response.status_code == 403
        assert flow.response.headers["x-tokenlens-blocked-by"] == "kill_switch"
        assert flow.response.headers["x-should-retry"] == "false"
        assert "retry-after" not in flow.response.headers
        assert error_type(json.loads(flow.response.content or b""))
        ex = exchange_of(flow)
        assert ex is not None and (ex.outcome, ex.blocked_by) == ("blocked", "kill_switch")
    assert run(deps, source="someone-else").response is None


def test_a_kill_switch_releases_the_budget_reservation(deps: AppDeps) -> None:
    ledger = configure(deps, Clock(), budgets={"daily_usd": 100}, quotas={"kill_switches": ["agent"]})
    run(deps)
    assert ledger.in_flight() == 0


def test_per_source_daily_calls(deps: AppDeps) -> None:
    ledger = configure(deps, Clock(), quotas={"source_limits": [{"source": "agent", "daily_calls": 2}]})
    assert run(deps).response is None
    assert run(deps).response is None
    third = run(deps)
    assert third.response is not None and third.response.status_code == 429
    assert third.response.headers["x-tokenlens-blocked-by"] == "quota"
    assert third.response.headers["retry-after"] == str(12 * 3600)
    assert "2 calls" in json.loads(third.response.content or b"")["error"]["message"]
    assert run(deps, source="other").response is None
    assert ledger.in_flight() == 2  # "other" has no cap: nothing reserved


def test_per_source_usd_caps_leave_other_sources_alone(deps: AppDeps) -> None:
    # each call reserves ~ $1 (1000 output tokens at $1000/M)
    configure(
        deps, Clock(), quotas={"source_limits": [{"source": "agent", "daily_usd": 1.5, "monthly_usd": 10}]}
    )
    assert run(deps).response is None
    refused = run(deps)
    assert refused.response is not None and refused.response.status_code == 429
    assert "daily source quota of 'agent'" in json.loads(refused.response.content or b"")["error"]["message"]
    assert run(deps, source="other").response is None


def test_per_source_monthly_cap(deps: AppDeps) -> None:
    configure(deps, Clock(), quotas={"source_limits": [{"source": "agent", "monthly_usd": 0.5}]})
    refused = run(deps)
    assert refused.response is not None and refused.response.status_code == 429
    assert "monthly source quota" in json.loads(refused.response.content or b"")["error"]["message"]


def test_per_model_caps_apply_to_the_model_called(deps: AppDeps) -> None:
    configure(deps, Clock(), quotas={"model_limits": [{"model": "my-model", "daily_calls": 1}]})
    assert run(deps, source="a").response is None
    refused = run(deps, source="b", provider="anthropic")
    assert refused.response is not None and refused.response.status_code == 429
    body = json.loads(refused.response.content or b"")
    assert (
        body["error"]["type"] == "rate_limit_error"
        and "model quota of 'my-model'" in body["error"]["message"]
    )


def test_a_quota_refusal_releases_the_budget_reservation(deps: AppDeps) -> None:
    ledger = configure(
        deps,
        Clock(),
        budgets={"daily_usd": 100},
        quotas={"source_limits": [{"source": "agent", "daily_calls": 0}]},
    )
    flow = run(deps)
    assert flow.response is not None and flow.response.status_code == 429
    assert ledger.in_flight() == 0
    assert ledger.status()["caps"][0]["reserved_usd"] == 0


def test_a_broken_quota_gate_fails_closed_unless_fail_open(deps: AppDeps) -> None:
    with taddons.context():  # the gate logs through mitmproxy
        ledger = configure(deps, Clock(), quotas={"source_limits": [{"source": "agent", "daily_calls": 5}]})
        ledger.broken = "broken on purpose"
        flow = run(deps)
        assert flow.response is not None and flow.response.status_code == 503
        assert flow.response.headers["x-tokenlens-blocked-by"] == "quota"
        configure(
            deps,
            Clock(),
            quotas={"source_limits": [{"source": "agent", "daily_calls": 5}], "fail_open": True},
        )
        deps.ledger.broken = "broken on purpose"  # type: ignore[union-attr]
        assert run(deps).response is None


def test_config_changes_apply_to_the_next_request(deps: AppDeps) -> None:
    configure(deps, Clock())
    assert run(deps).response is None
    settings = deps.settings.get()
    import dataclasses

    from tokenlens.config import Quotas

    deps.settings.replace(dataclasses.replace(settings, quotas=Quotas(kill_switches=("agent",))))
    blocked = run(deps)
    assert blocked.response is not None and blocked.response.status_code == 403


class Scanned(tuple[Any, ...]):
    """A tuple that counts how often it is scanned (iterated or searched)."""

    scans = 0

    def __iter__(self) -> Any:
        Scanned.scans += 1
        return super().__iter__()

    def __contains__(self, item: object) -> bool:
        Scanned.scans += 1
        return super().__contains__(item)


def test_the_work_per_call_does_not_grow_with_the_kill_switches_and_limits(deps: AppDeps) -> None:
    """Issue 17, finding 11c: 200,000 kill switches made every call scan them. The gates now look sources
    and models up in indexes built once per configuration: after the first call, no call scans a list."""
    ledger = configure(deps, Clock(), budgets={"daily_usd": 1000})
    quotas = Quotas(
        kill_switches=Scanned(f"killed-{i}" for i in range(200_000)),
        source_limits=Scanned(SourceLimit(f"source-{i}", daily_calls=10**6) for i in range(10_000)),
        model_limits=Scanned(ModelLimit(f"model-{i}", daily_calls=10**6) for i in range(10_000)),
    )
    deps.settings.replace(dataclasses.replace(deps.settings.get(), quotas=quotas))
    Scanned.scans = 0
    assert run(deps, source="source-7").response is None
    assert run(deps, source="killed-199999").response is not None
    built = Scanned.scans
    assert built <= 3  # each list read once, to build its index
    for i in range(50):
        assert run(deps, source=f"source-{i}").response is None
        assert run(deps, source=f"killed-{i}").response.status_code == 403
    records = [
        CallRecord(
            id=f"r{i}",
            ts=Clock()(),
            provider="openai",
            endpoint="/v1/chat/completions",
            model="my-model",
            source=f"source-{i}",
            outcome="ok",
            cost_usd=0.01,
        )
        for i in range(50)
    ]
    ledger.settle(records)
    assert Scanned.scans == built
    assert ledger.status()["call_caps"]  # the status page still lists every cap (it reads the lists)
