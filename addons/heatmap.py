"""6. Token heatmap: system / tools / context / history / query split of the input.

The request hook only names the analysis (`exchange.analyses`); where the record is built it estimates the
sections locally, scales them to the provider-reported input total (`details["heatmap"]`), scores the call's
complexity (`complexity`) and fingerprints its stable prefix for the prompt-caching report.
"""

from __future__ import annotations

from mitmproxy import http

from tokenlens.addons._flowstate import pending_call
from tokenlens.analyses import HEATMAP
from tokenlens.app import AppDeps
from tokenlens.exchange import GENERATION_KINDS


class TokenHeatmap:
    name = "tokenlens.heatmap"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None or exchange.request_json is None or exchange.kind not in GENERATION_KINDS:
            return
        exchange.analyses.append(HEATMAP)
