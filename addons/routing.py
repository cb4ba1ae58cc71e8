"""3. Routing: aliases, weighted choice, latency groups; sets the model actually called (SPEC 6, 9).

`decide(flow)` is the routing decision, made once per call and kept on the Exchange, so that the budget and
quota gates (stages 1-2) can price a call at the model it will really use before this stage applies it.
Not filled in yet: the model asked for is the model called.
"""

from __future__ import annotations

from mitmproxy import http

from tokenlens.addons._flowstate import exchange_of
from tokenlens.app import AppDeps


class ModelRouter:
    name = "tokenlens.routing"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def decide(self, flow: http.HTTPFlow) -> str | None:
        """The model this call will be sent with (None when it names none)."""
        exchange = exchange_of(flow)
        return exchange.model if exchange is not None else None
