"""5. Waste detection: whitespace bloat, polite filler, repeated instructions, empty messages.

The request hook only names the analysis (`exchange.analyses`): it runs where the record is built, off the
proxy path, and fills `waste_tokens` and `details["waste"]` (`tokenlens.waste.analyze_waste`, priced at the
model's input rate with the current pricing overrides).
"""

from __future__ import annotations

from mitmproxy import http

from tokenlens.addons._flowstate import pending_call
from tokenlens.analyses import WASTE
from tokenlens.app import AppDeps
from tokenlens.exchange import GENERATION_KINDS


class WasteDetector:
    name = "tokenlens.waste"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None or exchange.request_json is None or exchange.kind not in GENERATION_KINDS:
            return
        exchange.analyses.append(WASTE)
