"""The mitmproxy layer: one addon per pipeline stage, in the order of SPEC section 6."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mitmproxy.addonmanager  # noqa: F401 (defines the load hook)
import mitmproxy.proxy.layers  # noqa: F401 (defines the connection, HTTP, TLS, TCP, UDP, DNS hooks)
import mitmproxy.proxy.server_hooks  # noqa: F401
from mitmproxy import exceptions, hooks

from tokenlens.addons.broadcast import Broadcaster
from tokenlens.addons.budget import BudgetCheck
from tokenlens.addons.config_watch import ConfigWatcher
from tokenlens.addons.dedup import DedupCache
from tokenlens.addons.guardrails_request import RequestGuardrails
from tokenlens.addons.guardrails_response import ResponseGuardrails
from tokenlens.addons.heatmap import TokenHeatmap
from tokenlens.addons.ingress import Ingress
from tokenlens.addons.quota import QuotaCheck
from tokenlens.addons.recorder import Recorder
from tokenlens.addons.routing import ModelRouter
from tokenlens.addons.upstream import Upstream
from tokenlens.addons.waste import WasteDetector
from tokenlens.addons.workflows import AgentWorkflows
from tokenlens.app import AppDeps


def pipeline(deps: AppDeps, broadcaster: Broadcaster) -> list[object]:
    """The stages in order. `TokenLens` runs every hook through this list top to bottom."""
    router = ModelRouter(deps)  # decides once; the gates ask it which model a call will use
    return [
        ConfigWatcher(deps),  # keeps deps.settings current
        Ingress(deps),  # what is this request: provider call, dashboard, or someone else's traffic
        AgentWorkflows(deps),  # conversations, session turns, rate-limit headers (deferred analyses)
        BudgetCheck(deps, router),  # 1
        QuotaCheck(deps, router),  # 2
        router,  # 3
        RequestGuardrails(deps),  # 4
        WasteDetector(deps),  # 5
        TokenHeatmap(deps),  # 6
        DedupCache(deps),  # 7
        Upstream(),  # 8
        ResponseGuardrails(deps),  # 9
        Recorder(deps),  # 10
        broadcaster,  # 11 (fed by the writer thread once records are committed)
    ]


Hook = Callable[..., Any]
log = logging.getLogger(__name__)


def _failed(exc: Exception) -> None:
    log.error(f"Addon error: {exc}", exc_info=exc)


def _call(method: Hook, args: tuple[Any, ...]) -> Any:
    """One stage's hook, run as mitmproxy's `safecall` runs an addon's: an exception is logged and the later
    stages still run (a failing analysis must not keep a call from its recorder); AddonHalt and OptionsError
    end the event, as they do in mitmproxy."""
    try:
        return method(*args)
    except (exceptions.AddonHalt, exceptions.OptionsError):
        raise
    except Exception as exc:
        _failed(exc)
        return None


async def _wait(pending: Awaitable[Any]) -> None:
    try:
        await pending
    except (exceptions.AddonHalt, exceptions.OptionsError):
        raise
    except Exception as exc:
        _failed(exc)


async def _await_then_rest(pending: Awaitable[Any], rest: Sequence[Hook], args: tuple[Any, ...]) -> None:
    """A stage returned an awaitable: await it, then run the later stages in order (awaiting theirs too)."""
    await _wait(pending)
    for method in rest:
        result = _call(method, args)
        if result is not None and inspect.isawaitable(result):
            await _wait(result)


def sync_dispatcher(methods: Sequence[Hook]) -> Hook:
    """One event through the stages in order. Runs synchronously until a stage returns an awaitable; from
    there on it returns a coroutine (mitmproxy awaits what a hook returns) that finishes the event in order."""
    stages = tuple(methods)

    def dispatch(*args: Any) -> Awaitable[None] | None:
        for index, method in enumerate(stages):
            result = _call(method, args)
            if result is not None and inspect.isawaitable(result):
                return _await_then_rest(result, stages[index + 1 :], args)
        return None

    return dispatch


def async_dispatcher(methods: Sequence[Hook]) -> Hook:
    """For an event a stage handles with an `async def`: a coroutine function, as mitmproxy expects there."""
    stages = tuple(methods)

    async def dispatch(*args: Any) -> None:
        for method in stages:
            result = _call(method, args)
            if result is not None and inspect.isawaitable(result):
                await _wait(result)

    return dispatch


class TokenLens:
    """The parent addon. mitmproxy sees this one addon; it runs each event through the stages of `pipeline`
    in order, from per-event lists of the stages' hook methods built once. An exception in a stage is logged
    as an addon error and the later stages still run (so a call whose analysis fails is still recorded);
    `AddonHalt` ends the event for the later stages, as in mitmproxy."""

    name = "tokenlens"

    def __init__(self, deps: AppDeps, broadcaster: Broadcaster) -> None:
        self.stages = pipeline(deps, broadcaster)
        self.hooks: dict[str, tuple[Hook, ...]] = {}
        for event in hooks.all_hooks:
            methods = tuple(
                method for stage in self.stages if callable(method := getattr(stage, event, None))
            )
            if not methods:
                continue  # no attribute: mitmproxy skips this addon for the event, as it skipped each stage
            self.hooks[event] = methods
            if len(methods) == 1:
                setattr(self, event, methods[0])  # mitmproxy calls (and awaits) it as it called the stage's
            elif any(inspect.iscoroutinefunction(m) for m in methods):
                setattr(self, event, async_dispatcher(methods))
            else:
                setattr(self, event, sync_dispatcher(methods))
