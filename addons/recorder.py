"""Record and cost (pipeline stage 10): every provider call, answered or not, is handed to the writer thread;
traffic on a provider route that is not a call (`Exchange.is_call` false, or a 404 for a path the provider
does not serve) is only counted (`AppDeps.passthrough`).

Only the raw exchange is queued here; parsing usage and pricing happen in the writer thread, so the proxy
path never waits on bookkeeping.
"""

from __future__ import annotations

import time

from mitmproxy import http

from tokenlens.addons._flowstate import exchange_of
from tokenlens.app import AppDeps
from tokenlens.exchange import Exchange
from tokenlens.platforms import BEDROCK_RESPONSE_HEADERS

KEPT_RESPONSE_HEADERS = (
    "content-type",
    "content-encoding",
    "x-request-id",
    "request-id",
    *BEDROCK_RESPONSE_HEADERS,
)
_KEPT_BY_RAW_NAME = {name.encode(): name for name in KEPT_RESPONSE_HEADERS}


def kept_headers(headers: http.Headers) -> dict[str, str]:
    """`{name: headers[name]}` for the kept names present, in their order, from one pass over the raw
    fields (mitmproxy's Headers scans every field per lookup); repeated headers joined with ", " as it does."""
    found: dict[str, list[bytes]] = {}
    for key, value in headers.fields:
        name = _KEPT_BY_RAW_NAME.get(key.lower())
        if name is not None:
            found.setdefault(name, []).append(value)
    if not found:
        return {}
    return {
        name: ", ".join(v.decode("utf-8", "surrogateescape") for v in found[name])
        for name in KEPT_RESPONSE_HEADERS
        if name in found
    }


class Recorder:
    name = "tokenlens.recorder"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def response(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        if exchange is None or exchange.recorded or flow.response is None:
            return
        if exchange.kind == "other" and flow.response.status_code == 404 and exchange.outcome is None:
            exchange.is_call = False  # a path the provider does not serve: not an API call
            exchange.details.setdefault("passthrough", "not_found")
        if not exchange.is_call:
            self.count_passthrough(exchange)
            return
        response = flow.response
        exchange.status = response.status_code
        exchange.response_headers = kept_headers(response.headers)
        if not exchange.streamed:
            exchange.response_body = response.raw_content
        exchange.ended = response.timestamp_end or time.time()
        self.submit(exchange)

    def error(self, flow: http.HTTPFlow) -> None:
        """A client that went away, or a stream cut by the upstream: recorded with what had arrived."""
        exchange = exchange_of(flow)
        if exchange is None or exchange.recorded:
            return
        if not exchange.is_call:
            self.count_passthrough(exchange)
            return
        if flow.response is not None:
            exchange.status = flow.response.status_code
            exchange.response_headers = kept_headers(flow.response.headers)
        exchange.error = flow.error.msg if flow.error else "unknown error"
        exchange.ended = time.time()
        self.submit(exchange)

    def count_passthrough(self, exchange: Exchange) -> None:
        exchange.recorded = True  # counted once, whichever of response/error comes
        self.deps.passthrough.add(str(exchange.details.get("passthrough", "path")))

    def submit(self, exchange: Exchange) -> None:
        exchange.recorded = True
        self.deps.writer.submit(exchange)
