"""What the gates share: the docs/gateway.md#refused-and-failed-calls answer to a refused call, and the ledger admission of budgets and quotas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from mitmproxy import http

from tokenlens.addons._flowstate import exchange_of
from tokenlens.app import AppDeps
from tokenlens.config import Settings
from tokenlens.controls import Cap, Denial, WorstCase, WorstCasePricer
from tokenlens.exchange import METERED_KINDS, Exchange, route_of
from tokenlens.providers import error_body

log = logging.getLogger(__name__)

DETAILS_KEY = "controls"
BROKEN_STATUS = 503  # the gate cannot decide (its state is broken) and fails closed


def answer_blocked(
    flow: http.HTTPFlow,
    exchange: Exchange,
    status: int,
    blocked_by: str,
    message: str,
    code: str,
    retry_after: int | None = None,
) -> None:
    """Answer the call locally as docs/gateway.md#refused-and-failed-calls says (the provider's error format, `x-tokenlens-blocked-by`); the
    recorder records it like any call."""
    headers = {
        "content-type": "application/json",
        "x-should-retry": "false",
        "x-tokenlens-blocked-by": blocked_by,
    }
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    exchange.outcome, exchange.blocked_by = "blocked", blocked_by
    flow.response = http.Response.make(status, error_body(exchange.api, status, message, code), headers)


def answer_refused(flow: http.HTTPFlow, exchange: Exchange, status: int, message: str, code: str) -> None:
    """A call refused before any gate could check it (unreadable, unsigned, unconfigured): blocked by
    `request`, its message kept as the record's error."""
    answer_blocked(flow, exchange, status, "request", message, code)
    exchange.error = message


class Gate:
    """What the budget and quota gates share: the ledger, worst-case pricing, the failure policy."""

    name = "tokenlens.gate"
    reason = "budget"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self.ledger = deps.ledger
        self.pricer = WorstCasePricer()

    def fail_open(self, settings: Settings) -> bool:
        return settings.budgets.fail_open

    def worst_case(self, settings: Settings, exchange: Exchange, model: str, provider: str) -> WorstCase:
        """Priced once per call (both gates use it) and kept in the record's details."""
        details: dict[str, Any] = exchange.details.setdefault(DETAILS_KEY, {})
        known = details.get("worst_case")
        if isinstance(known, dict) and known.get("model") == model:
            return WorstCase(
                model,
                known["estimated_input_tokens"],
                known["reserved_output_tokens"],
                known["worst_case_usd"],
            )
        worst = self.pricer.worst_case(
            settings,
            provider=provider,
            api=exchange.api,
            endpoint=exchange.endpoint,
            body=exchange.request_json,
            model=model,
            max_tokens=exchange.max_tokens,
        )
        details["worst_case"] = worst.as_details()
        return worst

    def admit(
        self, flow: http.HTTPFlow, exchange: Exchange, settings: Settings, caps: list[Cap]
    ) -> Awaitable[None] | None:
        """Reserve the call's worst case in `caps` or answer it with 429; apply fail_open if that fails.

        A ledger shared through the database may wait on it, so its admission runs in a worker thread and
        this returns the coroutine that awaits it (mitmproxy awaits what a hook returns); the in-memory
        ledger decides at once and nothing is returned.
        """
        route = route_of(exchange, settings, self.deps.rng, self.deps.latency)  # the model the call will use
        model = route.model
        if model is None and exchange.kind not in METERED_KINDS:
            return None  # nothing to price or count (e.g. listing models): caps do not apply
        try:
            if self.ledger.broken is not None:
                raise RuntimeError(self.ledger.broken)
            cost: float | None = (
                None  # a model call whose model cannot be read: admitted while caps have room
            )
            if model is not None:
                # a cross-provider route is priced by the provider that will serve it
                provider = route.targets[0].provider if route.targets else exchange.provider
                cost = self.worst_case(settings, exchange, model, provider).cost_usd
            if self.ledger.admits_through_store:
                return self._admit_off_loop(flow, exchange, settings, caps, cost)
            denial = self.ledger.admit(exchange.id, caps, cost)
        except Exception as problem:
            self.failed(flow, exchange, settings, problem)
            return None
        self.answer(flow, exchange, denial)
        return None

    async def _admit_off_loop(
        self, flow: http.HTTPFlow, exchange: Exchange, settings: Settings, caps: list[Cap], cost: float | None
    ) -> None:
        try:
            denial = await asyncio.to_thread(self.ledger.admit, exchange.id, caps, cost)
        except Exception as problem:
            self.failed(flow, exchange, settings, problem)
            return
        self.answer(flow, exchange, denial)

    def answer(self, flow: http.HTTPFlow, exchange: Exchange, denial: Denial | None) -> None:
        """Answer a refused call with 429 (its reservations released); an admitted one goes on."""
        if denial is None:
            return
        self.ledger.release(exchange.id)  # an earlier gate's reservation: the call goes nowhere
        exchange.details.setdefault(DETAILS_KEY, {})["blocked"] = {
            "scope": denial.cap.scope,
            "period": denial.cap.period,
            "metric": denial.metric,
        }
        code = "budget_exceeded" if denial.cap.reason == "budget" else "quota_exceeded"
        answer_blocked(flow, exchange, 429, denial.cap.reason, denial.message, code, denial.retry_after)

    def failed(self, flow: http.HTTPFlow, exchange: Exchange, settings: Settings, problem: Exception) -> None:
        section = "budgets" if self.reason == "budget" else "quotas"
        if self.fail_open(settings):
            log.warning(
                "%s gate cannot check call %s (%s); letting it through because %s.fail_open is true",
                self.reason,
                exchange.id,
                problem,
                section,
            )
            return
        log.error(
            "%s gate cannot check call %s (%s); refusing it because %s.fail_open is false",
            self.reason,
            exchange.id,
            problem,
            section,
        )
        self.ledger.release(exchange.id)
        message = (
            f"TokenLens: the {self.reason} check is unavailable ({problem}); calls are refused while "
            f"{section}.fail_open is false"
        )
        answer_blocked(
            flow, exchange, BROKEN_STATUS, self.reason, message, f"{self.reason}_check_unavailable"
        )

    def response(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def _ended(self, flow: http.HTTPFlow) -> None:
        """The flow is over: the record settles the reservation; if it never commits, it is released later."""
        exchange = exchange_of(flow)
        if exchange is not None:
            self.ledger.end(exchange.id)


def answer_guardrail_block(flow: http.HTTPFlow, exchange: Exchange, message: str) -> None:
    """The docs/gateway.md#refused-and-failed-calls answer to a call a guardrail stopped: 400 in the provider's format."""
    answer_blocked(flow, exchange, 400, "guardrail", message, "guardrail")


def refuse_request(
    flow: http.HTTPFlow, status: int, message: str, extra: dict[str, str] | None = None
) -> None:
    """Answer a request that is not (yet) a call: plain JSON in OpenAI's error format, nothing recorded."""
    body = error_body("openai", status, f"TokenLens: {message}", "request_refused")
    headers = {"content-type": "application/json", "x-should-retry": "false", **(extra or {})}
    flow.response = http.Response.make(status, body, headers)
