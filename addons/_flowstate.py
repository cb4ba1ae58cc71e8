"""Per-flow state, the one reader and writer of `flow.metadata`: the Exchange of a provider call (every
decision a stage makes for the call is on it), and the Connection of a WebSocket whose frames are calls."""

from __future__ import annotations

from mitmproxy import http

from tokenlens.exchange import Exchange
from tokenlens.websocket import Connection

KEY = "tokenlens"
CONNECTION_KEY = "tokenlens.websocket"


def exchange_of(flow: http.HTTPFlow) -> Exchange | None:
    value = flow.metadata.get(KEY)
    return value if isinstance(value, Exchange) else None


def attach(flow: http.HTTPFlow, exchange: Exchange) -> None:
    flow.metadata[KEY] = exchange


def connection_of(flow: http.HTTPFlow) -> Connection | None:
    found = flow.metadata.get(CONNECTION_KEY)
    return found if isinstance(found, Connection) else None


def attach_connection(flow: http.HTTPFlow, connection: Connection) -> None:
    flow.metadata[CONNECTION_KEY] = connection


def pending_call(flow: http.HTTPFlow) -> Exchange | None:
    """The Exchange of a provider call whose request still has to go upstream (no answer yet); None for
    traffic that is not a call (it goes upstream ungated and unrecorded, as any request outside the API)."""
    if flow.response or flow.error or not flow.live:
        return None
    exchange = exchange_of(flow)
    return exchange if exchange is not None and exchange.is_call else None


def lower_headers(request: http.Request) -> dict[str, str]:
    """The request's headers with lower-case names, from one pass over the raw fields (mitmproxy's Headers
    lookups are per-key scans)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers.fields}
