"""5. Waste detection: whitespace bloat, polite filler, repeated instructions, empty messages.

The request hook only queues the analysis (`exchange.deferred`): it runs in the writer thread, off the proxy
path, and fills `waste_tokens` and `details["waste"]` (`tokenlens.waste.analyze_waste`).
"""

from __future__ import annotations

import functools

from mitmproxy import http

from tokenlens.addons._flowstate import pending_call
from tokenlens.app import AppDeps
from tokenlens.exchange import GENERATION_KINDS
from tokenlens.pricing import Pricer, pricer_for
from tokenlens.waste import record_waste


class PricerOfSettings:
    """The Pricer of the current pricing overrides (`tokenlens.pricing.pricer_for`)."""

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def get(self) -> Pricer:
        return pricer_for(self.deps.settings.get().pricing)


class WasteDetector:
    name = "tokenlens.waste"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self.pricer = PricerOfSettings(deps)

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None or exchange.request_json is None or exchange.kind not in GENERATION_KINDS:
            return
        exchange.deferred.append(functools.partial(record_waste, self.pricer.get()))
