from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

import tokenlens.addons
from mitm_helpers import gateway_flow
from tokenlens.addons import gateway
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.guardrails_request import RequestGuardrails
from tokenlens.addons.ingress import Ingress
from tokenlens.addons.quota import QuotaCheck
from tokenlens.addons.routing import ModelRouter
from tokenlens.addons.waste import WasteDetector
from tokenlens.app import AppDeps
from tokenlens.config import replace_section


def test_stages_run_in_the_order_of_spec_section_6(deps: AppDeps) -> None:
    names = [a.name for a in gateway(deps).stages]
    assert names == [
        "tokenlens.config",
        "tokenlens.access",
        "tokenlens.ingress",
        "tokenlens.lan_guard",
        "tokenlens.websocket",
        "tokenlens.workflows",
        "tokenlens.budget",
        "tokenlens.quota",
        "tokenlens.routing",
        "tokenlens.request_guardrails",
        "tokenlens.waste",
        "tokenlens.heatmap",
        "tokenlens.dedup",
        "tokenlens.platform_auth",
        "tokenlens.upstream",
        "tokenlens.response_guardrails",
        "tokenlens.recorder",
    ]
    assert len(set(names)) == len(names)


def test_every_hook_of_every_stage_is_dispatched(deps: AppDeps) -> None:
    parent = gateway(deps)
    assert not hasattr(parent, "addons"), "mitmproxy would walk the stages itself and call them twice"
    for event in hooks.all_hooks:
        expected = [getattr(s, event) for s in parent.stages if callable(getattr(s, event, None))]
        assert list(parent.hooks.get(event, ())) == expected, event
        assert hasattr(parent, event) == bool(expected), event


class Stage:
    """A stage that logs its calls; `awaits` makes its request hook return a coroutine (like the gates)."""

    def __init__(self, name: str, log: list[str], *, awaits: bool = False, fails: bool = False) -> None:
        self.name = name
        self.log = log
        self.awaits = awaits
        self.fails = fails

    def request(self, flow: Any) -> Awaitable[None] | None:
        self.log.append(f"{self.name}.request")
        if self.fails:
            raise RuntimeError(f"{self.name} failed")
        return self._later() if self.awaits else None

    async def _later(self) -> None:
        await asyncio.sleep(0)
        self.log.append(f"{self.name}.request awaited")

    def response(self, flow: Any) -> None:
        self.log.append(f"{self.name}.response")
        if self.fails:
            raise exceptions.AddonHalt()

    async def running(self) -> None:
        await asyncio.sleep(0)
        self.log.append(f"{self.name}.running")

    def done(self) -> None:
        self.log.append(f"{self.name}.done")


class Nested:
    """What mitmproxy was given before: a parent whose `.addons` it walks itself."""

    name = "nested"

    def __init__(self, stages: list[object]) -> None:
        self.addons = stages


def _stages(log: list[str]) -> list[object]:
    return [
        Stage("a", log),
        Stage("b", log, awaits=True),
        Stage("c", log),
        Stage("d", log, fails=True),
        Stage("e", log),
    ]


async def _run(parent: object) -> None:
    """Events as the proxy fires them, through mitmproxy's own addon manager."""
    with taddons.context(parent, loadcore=False) as tctx:
        manager = tctx.master.addons
        flow = tflow.tflow(resp=True)
        await manager.trigger_event(hooks.RunningHook())
        await manager.trigger_event(HttpRequestHook(flow))
        await manager.trigger_event(HttpResponseHook(flow))
        await manager.trigger_event(hooks.DoneHook())


def test_dispatch_matches_mitmproxy_walking_the_stages(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    nested_log: list[str] = []
    flat_log: list[str] = []
    monkeypatch.setattr(tokenlens.addons, "pipeline", lambda deps: _stages(flat_log))
    flat = gateway(deps)
    errors: dict[str, list[str]] = {}

    async def both() -> None:
        for name, parent in (("nested", Nested(_stages(nested_log))), ("flat", flat)):
            caplog.clear()
            await _run(parent)
            errors[name] = [r.getMessage() for r in caplog.records]

    with caplog.at_level(logging.ERROR):
        asyncio.run(both())
    # mitmproxy walking the stages itself ends an event at the first failing stage; the dispatcher logs the
    # failure the same way and runs the later stages (e.request), so a failing stage cannot keep a call from
    # being recorded. AddonHalt ends the event in both (silently). Awaited in order in both.
    assert nested_log == [
        *("a.running", "b.running", "c.running", "d.running", "e.running"),
        *("a.request", "b.request", "b.request awaited", "c.request", "d.request"),
        *("a.response", "b.response", "c.response", "d.response"),
        *("a.done", "b.done", "c.done", "d.done", "e.done"),
    ]
    assert flat_log == [
        *("a.running", "b.running", "c.running", "d.running", "e.running"),
        *("a.request", "b.request", "b.request awaited", "c.request", "d.request", "e.request"),
        *("a.response", "b.response", "c.response", "d.response"),
        *("a.done", "b.done", "c.done", "d.done", "e.done"),
    ]
    assert errors["flat"] == errors["nested"] == ["Addon error: d failed"]


def test_mitmproxy_sees_one_addon(deps: AppDeps) -> None:
    with taddons.context(loadcore=False) as tctx:
        tctx.master.addons.add(gateway(deps))
        assert list(tctx.master.addons.lookup) == ["tokenlens"]


def run_request(deps: AppDeps, path: str = "/proxy/openai/v1/chat/completions") -> Any:
    parent = gateway(deps)
    flow = gateway_flow(path, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    with taddons.context(parent):
        result = parent.request(flow)
        if result is not None:
            asyncio.run(result)
    return flow


def broken(self: object, flow: Any) -> None:
    raise RuntimeError("state is broken")


@pytest.mark.parametrize(
    "stage, gate, fail_open_section",
    [
        (QuotaCheck, "quota", "quotas"),
        (ModelRouter, "routing", None),
        (RequestGuardrails, "guardrail", "guardrails"),
    ],
)
def test_a_gate_that_raises_refuses_the_call(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch, stage: type, gate: str, fail_open_section: str | None
) -> None:
    """Fail closed: an exception in a gate answers 503 naming it (never "forwarded unchecked")."""
    monkeypatch.setattr(stage, "request", broken)
    if fail_open_section:
        deps.settings.replace(replace_section(deps.settings.get(), fail_open_section, {"fail_open": False}))
    flow = run_request(deps)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.headers["x-tokenlens-blocked-by"] == gate
    exchange = exchange_of(flow)
    assert exchange is not None and (exchange.outcome, exchange.blocked_by) == ("blocked", gate)


def test_a_gate_that_fails_open_lets_the_call_through(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RequestGuardrails, "request", broken)  # guardrails.fail_open defaults to true
    flow = run_request(deps)
    assert flow.response is None and flow.request.host == "api.openai.com"


def test_an_analysis_that_raises_does_not_refuse_the_call(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WasteDetector, "request", broken)
    flow = run_request(deps)
    assert flow.response is None and flow.request.host == "api.openai.com"


def test_an_ingress_crash_never_forwards(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ingress, "_route", broken)
    monkeypatch.setattr(Ingress, "request", lambda self, flow: self._route(flow))  # no own safety net
    flow = run_request(deps)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.request.host == "localhost"
