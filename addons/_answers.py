"""Upstream failures answered in the provider's own format.

mitmproxy answers a failed upstream connection, or an upstream that sends garbage, with its own HTML 502,
and its `error` hook cannot supply a response (shared/notes/mitmproxy.md, section 3). For provider calls whose
answer has not started reaching the client, this wraps `HttpStream.handle_protocol_error` so the client gets a
JSON error its SDK understands (docs/gateway.md#refused-and-failed-calls) and the `response` hook records the call. Everything else keeps
mitmproxy's behaviour. mitmproxy is pinned to 12.x, and tests/e2e exercise this path.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.layers.http import HttpResponseHeadersHook, HttpStream, ResponseProtocolError

from tokenlens.addons._flowstate import exchange_of
from tokenlens.providers import error_body

_original = HttpStream.handle_protocol_error
_installed = False


def _handle_protocol_error(self: HttpStream, event: Any) -> Generator[Any, Any, None]:
    flow = self.flow
    exchange = exchange_of(flow)
    answer_ourselves = (
        isinstance(event, ResponseProtocolError)
        and exchange is not None
        and exchange.outcome is None
        and self.client_state == self.state_done
        and not (flow.response is not None and flow.response.stream)
    )
    if not answer_ourselves:
        yield from _original(self, event)
        return
    assert exchange is not None
    exchange.error = f"upstream: {event.message}"
    message = f"TokenLens could not get an answer from the {exchange.provider} upstream: {event.message}"
    flow.response = http.Response.make(
        502,
        error_body(exchange.api, 502, message, "upstream_unavailable"),
        {"content-type": "application/json", "x-tokenlens-error": "upstream_unavailable"},
    )
    flow.response.timestamp_start = time.time()
    yield HttpResponseHeadersHook(flow)
    yield from self.send_response()


def install() -> None:
    """Idempotent."""
    global _installed
    if not _installed:
        HttpStream.handle_protocol_error = _handle_protocol_error  # type: ignore[method-assign]
        _installed = True
