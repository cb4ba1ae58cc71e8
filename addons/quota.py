"""2. Quota check: kill switches, per-source spend and call caps, per-model caps (docs/gateway.md#the-pipeline and docs/gateway.md#refused-and-failed-calls).

A source in `quotas.kill_switches` gets 403; the per-source and per-model caps are enforced like the budget
(reservations in the shared ledger, 429 with `Retry-After`).
"""

from __future__ import annotations

from collections.abc import Awaitable

from mitmproxy import http

from tokenlens.addons._flowstate import pending_call
from tokenlens.addons._gate import Gate, answer_blocked
from tokenlens.config import Settings
from tokenlens.controls import model_caps, source_caps
from tokenlens.exchange import route_of


class QuotaCheck(Gate):
    name = "tokenlens.quota"
    reason = "quota"

    def fail_open(self, settings: Settings) -> bool:
        return settings.quotas.fail_open

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        exchange = pending_call(flow)
        if exchange is None:
            return None
        settings = self.deps.settings.get()
        quotas = settings.quotas
        if exchange.source in quotas.killed:  # a set built once per configuration
            self.ledger.release(exchange.id)
            message = (
                f"TokenLens: calls from source {exchange.source!r} are switched off (quotas.kill_switches)"
            )
            answer_blocked(flow, exchange, 403, "kill_switch", message, "kill_switch")
            return None
        if not quotas.source_limits and not quotas.model_limits:
            return None
        model = route_of(exchange, settings, self.deps.rng, self.deps.latency).model
        caps = source_caps(settings, exchange.source) + (model_caps(settings, model) if model else [])
        return self.admit(flow, exchange, settings, caps) if caps else None
