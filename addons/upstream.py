"""Upstream call (pipeline stage 8): stream usage requested, streams tapped chunk by chunk, failures answered.

- An OpenAI chat/completions stream whose client did not set `stream_options.include_usage` is sent upstream
  with it set; the extra usage chunk is removed again before it reaches the client (docs/gateway.md#metering).
- A streamed 2xx answer is forwarded chunk by chunk as it arrives; a decoded copy is kept for metering.
- A call whose routed model has a fallback chain (`Exchange.chain`, set by the routing stage) is pointed, as the
  last step before it leaves, at the in-process chain service (`tokenlens.chain`), which tries the models in turn and
  streams the first good answer back; every other call goes straight upstream.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

from tokenlens.addons import _answers
from tokenlens.addons._flowstate import exchange_of, pending_call
from tokenlens.chain import TOKEN_HEADER, ChainJob, ChainService, upstream_ssl_context
from tokenlens.encoding import stream_decoder
from tokenlens.exchange import Exchange
from tokenlens.providers import SECRET_HEADERS
from tokenlens.routing import HOP_HEADERS, ChainPlan, RequestParts
from tokenlens.stream_taps import StreamTap, UsageChunkStripper

USAGE_INJECTION_KINDS = frozenset({"chat", "completions"})


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
        plan = exchange.chain
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
        exchange = exchange_of(flow)
        plan = exchange.chain if exchange is not None else None
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
