"""How the stages run: one parent addon that hands each mitmproxy event to the stages in pipeline order.

mitmproxy sees one addon (`Pipeline`); for each event it calls the stages' hook methods in order, from per-event
tuples built once. An exception in a stage is logged as an addon error and the later stages still run (so a
call whose analysis fails is still recorded); in the `request` event an exception in a gate refuses the call
(`FailClosed`). `AddonHalt` ends the event for the later stages, as in mitmproxy.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import mitmproxy.addonmanager  # noqa: F401 (defines the load hook)
import mitmproxy.proxy.layers  # noqa: F401 (defines the connection, HTTP, TLS, TCP, UDP, DNS hooks)
import mitmproxy.proxy.server_hooks  # noqa: F401
from mitmproxy import exceptions, hooks, http

from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons._gate import answer_blocked
from tokenlens.app import AppDeps
from tokenlens.config import Settings
from tokenlens.providers import error_body

# A gate's name (`x-tokenlens-blocked-by`) and whether it lets a call through when it cannot check it.
GatePolicy = tuple[str, Callable[[Settings], bool]]
Hook = Callable[..., Any]
OnError = Callable[[int, tuple[Any, ...], Exception], None]
log = logging.getLogger(__name__)


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

    def __init__(self, deps: AppDeps, stages: Sequence[object], gates: Mapping[type, GatePolicy]) -> None:
        self.deps = deps
        self.stages = tuple(stages)
        self.gates = gates

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
        policy = self.gates.get(type(stage))
        if policy is None or flow.response is not None or flow.error is not None:
            return  # an analysis failed, or the request is already answered
        gate, fails_open = policy
        exchange = exchange_of(flow)
        if exchange is None:
            if gate == "request":  # the ingress could not even tell what the request is
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


class Pipeline:
    """The parent addon: mitmproxy sees this one addon, and it runs each event through `stages` in order."""

    name = "tokenlens"

    def __init__(self, deps: AppDeps, stages: Sequence[object], gates: Mapping[type, GatePolicy]) -> None:
        self.stages = list(stages)
        self.hooks: dict[str, tuple[Hook, ...]] = {}
        for event in hooks.all_hooks:
            owners = [stage for stage in self.stages if callable(getattr(stage, event, None))]
            methods = tuple(getattr(stage, event) for stage in owners)
            if not methods:
                continue  # no attribute: mitmproxy skips this addon for the event, as it skipped each stage
            self.hooks[event] = methods
            on_error: OnError = FailClosed(deps, owners, gates) if event == "request" else _log_only
            if len(methods) == 1 and event != "request":
                setattr(self, event, methods[0])  # mitmproxy calls (and awaits) it as it called the stage's
            elif any(inspect.iscoroutinefunction(m) for m in methods):
                setattr(self, event, async_dispatcher(methods, on_error))
            else:
                setattr(self, event, sync_dispatcher(methods, on_error))


def request_stages(deps: AppDeps, stages: Sequence[Any], gates: Mapping[type, GatePolicy]) -> Hook:
    """The `request` hooks of `stages` as one function (failing closed like the pipeline's), for a stage that
    runs them on a flow of its own (the WebSocket stage, once per call on a socket)."""
    return sync_dispatcher([stage.request for stage in stages], FailClosed(deps, stages, gates))
