"""1. Budget check: global daily/monthly spend caps with in-flight reservations (docs/gateway.md#the-pipeline and docs/gateway.md#refused-and-failed-calls).

A call is admitted only if spent + reserved (calls in flight) + its own worst case fits every cap; the
reservation is settled by the ledger when the call's record is committed (tokenlens.controls). A refused
call gets the provider's own error format, 429, `Retry-After` and `x-should-retry: false` (`_gate.Gate`).
"""

from __future__ import annotations

from collections.abc import Awaitable

from mitmproxy import http

from tokenlens.addons._flowstate import pending_call
from tokenlens.addons._gate import Gate
from tokenlens.controls import budget_caps


class BudgetCheck(Gate):
    name = "tokenlens.budget"
    reason = "budget"

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        exchange = pending_call(flow)
        if exchange is None:
            return None
        settings = self.deps.settings.get()
        caps = budget_caps(settings)
        return self.admit(flow, exchange, settings, caps) if caps else None
