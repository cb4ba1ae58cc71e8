"""Upstream call (pipeline stage 8): stream usage requested, streams tapped chunk by chunk, failures answered.

- An OpenAI chat/completions stream whose client did not set `stream_options.include_usage` is sent upstream
  with it set; the extra usage chunk is removed again before it reaches the client (SPEC 7).
- A streamed 2xx answer is forwarded chunk by chunk as it arrives; a decoded copy is kept for metering.
- A call whose routed model has a fallback chain (a `ChainPlan` from the routing stage) is pointed, as the last
  step before it leaves, at the in-process chain service (`_chain.py`), which tries the models in turn and
  streams the first good answer back; every other call goes straight upstream.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from mitmproxy import http

from tokenlens.addons import _answers
from tokenlens.addons._chain import TOKEN_HEADER, ChainJob, ChainPlan, ChainService, upstream_ssl_context
from tokenlens.addons._flowstate import exchange_of, pending_call
from tokenlens.addons.routing import chain_plan_of
from tokenlens.encoding import StreamDecoder, stream_decoder
from tokenlens.exchange import Exchange
from tokenlens.providers import SECRET_HEADERS
from tokenlens.routing import HOP_HEADERS, RequestParts
from tokenlens.usage import is_usage_only_chunk, split_events

USAGE_INJECTION_KINDS = frozenset({"chat", "completions"})
# With include_usage, every chunk carries `"usage": null`. Quotes inside JSON strings are escaped, so an
# unescaped `"usage": null` in the bytes can only be that key.
_USAGE_NULL = re.compile(rb'\s*,\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*')


class StreamTap:
    """Passes every chunk on at once and untouched; keeps a decoded copy for the record."""

    def __init__(self, exchange: Exchange, decoder: StreamDecoder | None) -> None:
        self.exchange = exchange
        self.decoder = decoder
        exchange.stream_undecodable = decoder is None

    def keep(self, data: bytes) -> None:
        if self.exchange.first_chunk_at is None:
            self.exchange.first_chunk_at = time.time()
        if self.decoder is None:
            return
        try:
            self.exchange.chunks.append(self.decoder.decode(data))
        except Exception:
            self.decoder, self.exchange.stream_undecodable = None, True

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if not data:
            return []
        self.keep(data)
        return data


class UsageChunkStripper(StreamTap):
    """A tap that undoes the usage request the client did not make (uncompressed SSE only).

    It removes the usage-only chunk and the `"usage": null` field of every other chunk, so the client gets
    the stream it asked for. Complete events go on as soon as they are complete; only a partial event waits.
    """

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(exchange, None)
        self.exchange.stream_undecodable = False
        self.pending = b""

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if not data:
            rest, self.pending = self.pending, b""
            return [rest] if rest else []
        self.keep(data)
        self.exchange.chunks.append(data)
        events, self.pending = split_events(self.pending + data)
        out = [
            _USAGE_NULL.sub(b"", event) if b'"usage"' in event else event
            for event in events
            if not _is_usage_event(event)
        ]
        if len(out) == 1:
            return out[0]
        return b"".join(out) if out else []


def _is_usage_event(event: bytes) -> bool:
    if b'"usage"' not in event:
        return False
    for line in event.splitlines():
        if line.startswith(b"data:"):
            return is_usage_only_chunk(line[5:].strip())
    return False


class Upstream:
    name = "tokenlens.upstream"

    def __init__(self) -> None:
        self.chain = ChainService()

    def load(self, loader: Any) -> None:
        _answers.install()

    async def running(self) -> None:
        from mitmproxy import ctx

        verify = upstream_ssl_context(
            ctx.options.ssl_verify_upstream_trusted_ca or None, bool(ctx.options.ssl_insecure)
        )
        await self.chain.start(verify)

    async def done(self) -> None:
        await self.chain.stop()

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None:
            return
        if _needs_usage_injection(exchange):
            self._inject_usage_request(flow, exchange)
        plan = chain_plan_of(flow)
        if plan is not None and self.chain.ready:
            self._to_chain(flow, exchange, plan)

    def _to_chain(self, flow: http.HTTPFlow, exchange: Exchange, plan: ChainPlan) -> None:
        """Point the flow at the chain service, with the request of each attempt prepared."""
        req = flow.request
        headers = tuple((k, v) for k, v in req.headers.items() if k.lower() not in HOP_HEADERS)
        body = req.raw_content or b""
        first = RequestParts(req.method, req.url, headers, body)
        own = tuple((k, v) for k, v in headers if k.lower() not in SECRET_HEADERS) + plan.client_auth
        job = ChainJob(
            exchange,
            exchange.api,
            plan.targets,
            first,
            RequestParts(req.method, plan.own_url, own, body),
            plan.base_model,
            plan.providers,
        )
        plan.token = self.chain.submit(job)
        req.headers[TOKEN_HEADER] = plan.token
        req.scheme, req.host, req.port = "http", "127.0.0.1", self.chain.port

    def response(self, flow: http.HTTPFlow) -> None:
        self._forget(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._forget(flow)

    def _forget(self, flow: http.HTTPFlow) -> None:
        plan = chain_plan_of(flow)
        if plan is not None and plan.token is not None:
            self.chain.jobs.pop(plan.token, None)

    @staticmethod
    def _inject_usage_request(flow: http.HTTPFlow, exchange: Exchange) -> None:
        assert exchange.request_json is not None
        body = dict(exchange.request_json)
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        flow.request.content = json.dumps(body, ensure_ascii=False).encode()
        flow.request.headers["accept-encoding"] = "identity"
        exchange.usage_injected = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        response = flow.response
        if (
            exchange is None
            or response is None
            or exchange.outcome is not None
            or response.status_code >= 300
        ):
            return
        content_type = response.headers.get("content-type", "")
        if not (content_type.startswith("text/event-stream") or exchange.kind == "stream_generate"):
            return
        exchange.streamed = True
        decoder = stream_decoder(response.headers.get("content-encoding"))
        identity = response.headers.get("content-encoding", "identity").lower() in ("", "identity")
        if exchange.usage_injected and identity:
            response.headers.pop("content-length", None)
            response.stream = UsageChunkStripper(exchange)
        else:
            response.stream = StreamTap(exchange, decoder)


def _needs_usage_injection(exchange: Exchange) -> bool:
    if (
        exchange.api != "openai"
        or exchange.kind not in USAGE_INJECTION_KINDS
        or not exchange.stream_requested
    ):
        return False
    body = exchange.request_json
    if body is None:
        return False
    options = body.get("stream_options")
    return not (isinstance(options, dict) and options.get("include_usage") is True)
