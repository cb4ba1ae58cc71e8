"""5. Waste detection: whitespace bloat, polite filler, repeated instructions, empty messages.

The request hook only queues the analysis (`exchange.deferred`): it runs in the writer thread, off the proxy
path, and fills `waste_tokens` and `details["waste"]` (`tokenlens.waste.analyze_waste`).
"""

from __future__ import annotations

import functools

from mitmproxy import http

from tokenlens.addons._flowstate import pending_call
from tokenlens.app import AppDeps
from tokenlens.exchange import GENERATION_KINDS, Exchange
from tokenlens.pricing import Pricer
from tokenlens.pricing import from_settings as overrides_from_settings
from tokenlens.records import CallRecord
from tokenlens.usage import wire_format
from tokenlens.waste import analyze_waste


class PricerOfSettings:
    """A Pricer with the current pricing overrides, rebuilt only when they change."""

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self._pricing: object = None
        self._pricer = Pricer()

    def get(self) -> Pricer:
        pricing = self.deps.settings.get().pricing
        if pricing is not self._pricing:
            try:
                self._pricer = Pricer(overrides_from_settings(pricing))
            except ValueError:
                self._pricer = Pricer()
            self._pricing = pricing
        return self._pricer


def record_waste(pricer: Pricer, exchange: Exchange, record: CallRecord) -> None:
    """Deferred: the waste report of the call's request, priced at the routed model's input rate."""
    if exchange.request_json is None:
        return
    report = analyze_waste(
        wire_format(exchange.api, exchange.kind),
        exchange.request_json,
        exchange.model,
        provider=exchange.provider,
        pricer=pricer,
    )
    record.waste_tokens = report.tokens
    record.details["waste"] = report.to_dict()


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
