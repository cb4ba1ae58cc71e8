"""3. Routing: aliases, weighted choice, latency groups; sets the model actually called (docs/gateway.md#the-pipeline and docs/analytics-api.md).

The decision is `tokenlens.exchange.route_of`, made once per call and kept on the `Exchange`, so that the
budget and quota gates (stages 1-2) price a call at the model it will really use before this stage applies it.
The rules themselves are in `tokenlens.routing`; this stage rewrites the request for the first model (the
model field only, or the URL and credentials of a cross-provider route) and, for a model with a fallback
chain, leaves a `ChainPlan` on the exchange for the upstream stage.
"""

from __future__ import annotations

from mitmproxy import http

from tokenlens.addons._flowstate import pending_call
from tokenlens.app import AppDeps
from tokenlens.exchange import Exchange, route_of
from tokenlens.providers import SECRET_HEADERS
from tokenlens.routing import (
    ChainPlan,
    RequestParts,
    Target,
    body_with_model,
    compat_url,
    cross_auth,
    with_model,
)


class ModelRouter:
    name = "tokenlens.routing"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None:
            return
        route = route_of(exchange, self.deps.settings.get(), self.deps.rng, self.deps.latency)
        if not route.targets or (route.rule is None and not route.has_chain and not route.notes):
            return
        exchange.details["routing"] = route.as_details()
        first = route.targets[0]
        if first.model != exchange.model and not first.cross:
            self._rename(flow, exchange, first.model)
        own_url, base_model = flow.request.url, exchange.model
        client_auth = tuple((k, v) for k, v in flow.request.headers.items() if k.lower() in SECRET_HEADERS)
        if first.cross:
            self._cross(flow, exchange, first)
        if route.has_chain:
            providers = self.deps.settings.get().providers
            exchange.chain = ChainPlan(route.targets, own_url, base_model, client_auth, providers)

    @staticmethod
    def _rename(flow: http.HTTPFlow, exchange: Exchange, model: str) -> None:
        """Only the model field changes: its path segment (Gemini, Vertex, Bedrock), or the JSON body's `model`."""
        req = flow.request
        parts = RequestParts(req.method, req.url, (), req.raw_content or b"")
        changed = with_model(exchange.api, parts, exchange.model, model)
        if changed.url != parts.url:
            req.url = changed.url
            exchange.endpoint = with_model(  # the same path rewrite (Gemini's, Vertex's, Bedrock's)
                exchange.api, RequestParts("", exchange.endpoint, (), b""), exchange.model, model
            ).url
        elif changed.body != parts.body:
            req.content = changed.body
            if exchange.request_json is not None:
                exchange.request_json = {**exchange.request_json, "model": model}
        exchange.model = model

    def _cross(self, flow: http.HTTPFlow, exchange: Exchange, target: Target) -> None:
        """An OpenAI chat-completions call sent to another provider's OpenAI-compatible endpoint."""
        provider = self.deps.settings.get().providers[target.provider]
        req = flow.request
        for name in list(req.headers):
            if name.lower() in SECRET_HEADERS:
                del req.headers[name]
        for name, value in cross_auth(provider):
            req.headers[name] = value
        req.url = compat_url(provider)
        body = body_with_model(req.raw_content or b"", target.model)
        if body is not None:
            req.content = body
        if exchange.request_json is not None:
            exchange.request_json = {**exchange.request_json, "model": target.model}
        exchange.model = target.model
        exchange.provider = target.provider
        exchange.endpoint = req.path.partition("?")[0]
