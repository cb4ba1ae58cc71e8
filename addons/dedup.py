"""7. Dedup: answer from the TTL cache when an identical request was answered recently.

- `request`: when `dedup.enabled`, the key (provider, endpoint, query without secrets, routed model,
  canonical body, credential hash) is computed once; a live entry answers the call locally with the stored
  status, content type and bytes, recorded as `outcome: cached` with `saved_usd` (the cost of the call it
  repeats).
- `response`: a successful answer is kept once every response hook of the call has run, as the client got
  it: the body as sent, or for a stream the decoded stream bytes (without the usage chunk the gateway asked
  for on the client's behalf). Errors, blocked and cut calls are never kept. No I/O anywhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time

from mitmproxy import http

from tokenlens.addons._flowstate import exchange_of, pending_call
from tokenlens.app import AppDeps
from tokenlens.dedup import Cost, DedupStore, Entry, canonical_body, credential_digest, request_key
from tokenlens.exchange import METERED_KINDS, Exchange
from tokenlens.providers import redact_query
from tokenlens.stream_taps import UsageChunkStripper

CACHE_HEADER = "x-tokenlens-cache"


def client_stream(exchange: Exchange) -> bytes:
    """The stream bytes the client received (the injected usage chunk removed again)."""
    raw = b"".join(exchange.chunks)
    if not exchange.usage_injected:
        return raw
    stripper = UsageChunkStripper(dataclasses.replace(exchange, chunks=[]))
    out: list[bytes] = []
    for data in (raw, b""):
        piece = stripper(data)
        out.extend(piece if isinstance(piece, list) else [piece])
    return b"".join(out)


def _remember_cost(cost: Cost, usd: float | None) -> None:
    """The original call's cost (`Exchange.on_cost`): what a later hit saves."""
    cost.usd = usd


class DedupCache:
    name = "tokenlens.dedup"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self.cache = DedupStore(deps.settings.get().dedup.max_entries)

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None:
            return
        settings = self.deps.settings.get().dedup
        if not settings.enabled:
            if len(self.cache):
                self.cache.clear()
            return
        if exchange.kind not in METERED_KINDS or exchange.request_json is None:
            return
        if self.cache.max_entries != settings.max_entries:
            self.cache.max_entries = settings.max_entries
            self.cache.trim()
        req = flow.request
        query = redact_query(req.path).partition("?")[2]
        key = request_key(
            provider=exchange.provider,
            endpoint=exchange.endpoint,
            query=query,
            model=exchange.model,
            body=canonical_body(exchange.request_json, exchange.request_body),
            credential=credential_digest(req.headers.items(), req.query.get("key")),
        )
        entry = self.cache.get(key, settings.ttl_s)
        if entry is None:
            exchange.dedup_key = key
            return
        now = time.time()
        flow.response = http.Response.make(entry.status, entry.body, {**entry.headers, CACHE_HEADER: "hit"})
        flow.response.timestamp_start = flow.response.timestamp_end = now
        exchange.outcome = "cached"
        exchange.saved_usd = entry.cost.usd
        exchange.details["dedup"] = {"hit_of": entry.call_id, "age_s": round(now - entry.stored_at, 3)}

    def response(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        key = exchange.dedup_key if exchange is not None else None
        if key is None or exchange is None:
            return
        exchange.dedup_key = None
        # Queued now, before the recorder hands the exchange on; told the cost once the call is metered.
        cost = Cost()
        exchange.on_cost.append(functools.partial(_remember_cost, cost))
        try:
            asyncio.get_running_loop().call_soon(self.keep, flow, key, cost)
        except RuntimeError:  # no event loop (unit tests): the later hooks have run already
            self.keep(flow, key, cost)

    def keep(self, flow: http.HTTPFlow, key: str, cost: Cost) -> None:
        """Store the answer the client got, if it is a complete success."""
        exchange = exchange_of(flow)
        response = flow.response
        if (
            exchange is None
            or response is None
            or flow.error is not None
            or exchange.outcome is not None
            or exchange.error is not None
            or not 200 <= response.status_code < 300
        ):
            return
        headers = {}
        if "content-type" in response.headers:
            headers["content-type"] = response.headers["content-type"]
        if exchange.streamed:
            if exchange.stream_undecodable or not exchange.chunks:
                return
            body = client_stream(exchange)
        else:
            raw = response.raw_content
            if raw is None:
                return
            body = raw
            if "content-encoding" in response.headers:
                headers["content-encoding"] = response.headers["content-encoding"]
        self.cache.put(key, Entry(exchange.id, response.status_code, headers, body, time.time(), cost))
