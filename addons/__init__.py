"""The mitmproxy layer: one addon per pipeline stage, in the order of SPEC section 6."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mitmproxy.addonmanager  # noqa: F401 (defines the load hook)
import mitmproxy.proxy.layers  # noqa: F401 (defines the connection, HTTP, TLS, TCP, UDP, DNS hooks)
import mitmproxy.proxy.server_hooks  # noqa: F401
from mitmproxy import exceptions, hooks, http

from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.broadcast import Broadcaster
from tokenlens.addons.budget import BudgetCheck, answer_blocked
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
from tokenlens.addons.websocket import WebSocketCalls
from tokenlens.addons.workflows import AgentWorkflows
from tokenlens.app import AppDeps
from tokenlens.config import Settings
from tokenlens.providers import error_body


def pipeline(deps: AppDeps, broadcaster: Broadcaster) -> list[object]:
    """The stages in order. `TokenLens` runs every hook through this list top to bottom."""
    router = ModelRouter(deps)  # decides once; the gates ask it which model a call will use
    # The request stages, which also gate and analyse each call on a WebSocket (one per response.create frame).
    call_stages = [
        AgentWorkflows(deps),  # conversations, session turns, rate-limit headers (deferred analyses)
        BudgetCheck(deps, router),  # 1
        QuotaCheck(deps, router),  # 2
        router,  # 3
        RequestGuardrails(deps),  # 4
        WasteDetector(deps),  # 5
        TokenHeatmap(deps),  # 6
    ]
    return [
        ConfigWatcher(deps),  # keeps deps.settings current
        Ingress(deps),  # what is this request: provider call, dashboard, or someone else's traffic
        WebSocketCalls(deps, call_stages),  # the calls on Responses and Realtime WebSockets
        *call_stages,
        DedupCache(deps),  # 7
        Upstream(),  # 8
        ResponseGuardrails(deps),  # 9
        Recorder(deps),  # 10
        broadcaster,  # 11 (fed by the writer thread once records are committed)
    ]


Hook = Callable[..., Any]
OnError = Callable[[int, tuple[Any, ...], Exception], None]
log = logging.getLogger(__name__)

# The gates: a request one of them cannot check is refused (503, `x-tokenlens-blocked-by` naming the gate)
# unless that gate's `fail_open` is true. An error in any other stage (analyses) is logged and the call goes on.
GATES: dict[type, tuple[str, Callable[[Settings], bool]]] = {
    Ingress: ("request", lambda settings: False),
    BudgetCheck: ("budget", lambda settings: settings.budgets.fail_open),
    QuotaCheck: ("quota", lambda settings: settings.quotas.fail_open),
    ModelRouter: ("routing", lambda settings: False),
    RequestGuardrails: ("guardrail", lambda settings: settings.guardrails.fail_open),
}


def _failed(exc: Exception) -> None:
    log.error(f"Addon error: {exc}", exc_info=exc)


def _log_only(index: int, args: tuple[Any, ...], exc: Exception) -> None:
    _failed(exc)


def _call(method: Hook, args: tuple[Any, ...], index: int, on_error: OnError) -> Any:
    """One stage's hook, run as mitmproxy's `safecall` runs an addon's: an exception goes to `on_error` and the
    later stages still run (a failing analysis must not keep a call from its recorder); AddonHalt and
    OptionsError end the event, as they do in mitmproxy."""
    try:
        return method(*args)
    except (exceptions.AddonHalt, exceptions.OptionsError):
        raise
    except Exception as exc:
        on_error(index, args, exc)
        return None


async def _wait(pending: Awaitable[Any], args: tuple[Any, ...], index: int, on_error: OnError) -> None:
    try:
        await pending
    except (exceptions.AddonHalt, exceptions.OptionsError):
        raise
    except Exception as exc:
        on_error(index, args, exc)


async def _await_then_rest(
    pending: Awaitable[Any], stages: Sequence[Hook], start: int, args: tuple[Any, ...], on_error: OnError
) -> None:
    """A stage returned an awaitable: await it, then run the later stages in order (awaiting theirs too)."""
    await _wait(pending, args, start, on_error)
    for index in range(start + 1, len(stages)):
        result = _call(stages[index], args, index, on_error)
        if result is not None and inspect.isawaitable(result):
            await _wait(result, args, index, on_error)


def sync_dispatcher(methods: Sequence[Hook], on_error: OnError = _log_only) -> Hook:
    """One event through the stages in order. Runs synchronously until a stage returns an awaitable; from
    there on it returns a coroutine (mitmproxy awaits what a hook returns) that finishes the event in order."""
    stages = tuple(methods)

    def dispatch(*args: Any) -> Awaitable[None] | None:
        for index, method in enumerate(stages):
            result = _call(method, args, index, on_error)
            if result is not None and inspect.isawaitable(result):
                return _await_then_rest(result, stages, index, args, on_error)
        return None

    return dispatch


def async_dispatcher(methods: Sequence[Hook], on_error: OnError = _log_only) -> Hook:
    """For an event a stage handles with an `async def`: a coroutine function, as mitmproxy expects there."""
    stages = tuple(methods)

    async def dispatch(*args: Any) -> None:
        for index, method in enumerate(stages):
            result = _call(method, args, index, on_error)
            if result is not None and inspect.isawaitable(result):
                await _wait(result, args, index, on_error)

    return dispatch


class FailClosed:
    """What happens when a stage's `request` hook raises: a gate's error refuses the call unless the gate
    fails open; an analysis error is only logged. Anything unexpected refuses the request."""

    def __init__(self, deps: AppDeps, stages: Sequence[object]) -> None:
        self.deps = deps
        self.stages = tuple(stages)

    def __call__(self, index: int, args: tuple[Any, ...], exc: Exception) -> None:
        _failed(exc)
        flow = args[0] if args else None
        if not isinstance(flow, http.HTTPFlow):
            return
        try:
            self.refuse(flow, self.stages[index], exc)
        except Exception as again:  # the last line of defence: no answer must never mean "forwarded"
            _failed(again)
            flow.kill()

    def refuse(self, flow: http.HTTPFlow, stage: object, exc: Exception) -> None:
        policy = GATES.get(type(stage))
        if policy is None or flow.response is not None or flow.error is not None:
            return  # an analysis failed, or the request is already answered
        gate, fails_open = policy
        exchange = exchange_of(flow)
        if exchange is None:
            if isinstance(stage, Ingress):  # it could not even tell what the request is
                body = error_body(
                    "openai", 503, "TokenLens could not read this request.", "request_unreadable"
                )
                flow.response = http.Response.make(503, body, {"content-type": "application/json"})
            return
        if fails_open(self.deps.settings.get()):
            log.warning("the %s gate failed on call %s; letting it through (fail_open)", gate, exchange.id)
            return
        message = f"TokenLens: the {gate} check failed ({type(exc).__name__}); the call was refused."
        answer_blocked(flow, exchange, 503, gate, message, f"{gate}_check_unavailable")


class TokenLens:
    """The parent addon. mitmproxy sees this one addon; it runs each event through the stages of `pipeline`
    in order, from per-event lists of the stages' hook methods built once. An exception in a stage is logged
    as an addon error and the later stages still run (so a call whose analysis fails is still recorded); in
    the `request` event an exception in a gate refuses the call (`FailClosed`). `AddonHalt` ends the event for
    the later stages, as in mitmproxy."""

    name = "tokenlens"

    def __init__(self, deps: AppDeps, broadcaster: Broadcaster) -> None:
        self.stages = pipeline(deps, broadcaster)
        self.hooks: dict[str, tuple[Hook, ...]] = {}
        for event in hooks.all_hooks:
            owners = [stage for stage in self.stages if callable(getattr(stage, event, None))]
            methods = tuple(getattr(stage, event) for stage in owners)
            if not methods:
                continue  # no attribute: mitmproxy skips this addon for the event, as it skipped each stage
            self.hooks[event] = methods
            on_error: OnError = FailClosed(deps, owners) if event == "request" else _log_only
            if len(methods) == 1 and event != "request":
                setattr(self, event, methods[0])  # mitmproxy calls (and awaits) it as it called the stage's
            elif any(inspect.iscoroutinefunction(m) for m in methods):
                setattr(self, event, async_dispatcher(methods, on_error))
            else:
                setattr(self, event, sync_dispatcher(methods, on_error))
