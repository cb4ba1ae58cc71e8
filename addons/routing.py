"""3. Routing: aliases, weighted choice, latency groups; sets the model actually called (SPEC 6, 9).

`decide(flow)` is the routing decision, made once per call and kept with the flow, so that the budget and
quota gates (stages 1-2) can price a call at the model it will really use before this stage applies it.
The rules themselves are in `tokenlens.routing`; this stage rewrites the request for the first model (the
model field only, or the URL and credentials of a cross-provider route) and, for a model with a fallback
chain, leaves a `ChainPlan` for the upstream stage.
"""

from __future__ import annotations

import random

from mitmproxy import http

from tokenlens.addons._chain import ChainPlan
from tokenlens.addons._flowstate import exchange_of, pending_call
from tokenlens.app import AppDeps
from tokenlens.exchange import Exchange
from tokenlens.latency import LatencyTracker, tracker_of
from tokenlens.providers import SECRET_HEADERS
from tokenlens.routing import (
    CallInfo,
    RequestParts,
    Route,
    Target,
    body_with_model,
    compat_url,
    cross_auth,
    decide,
    with_model,
)

ROUTE_KEY = "tokenlens.route"
CHAIN_KEY = "tokenlens.chain"


def chain_plan_of(flow: http.HTTPFlow) -> ChainPlan | None:
    found = flow.metadata.get(CHAIN_KEY)
    return found if isinstance(found, ChainPlan) else None


class ModelRouter:
    name = "tokenlens.routing"

    def __init__(self, deps: AppDeps, rng: random.Random | None = None) -> None:
        self.deps = deps
        self.rng = rng or random.Random()
        self.latency: LatencyTracker = tracker_of(deps.record_listeners)

    def route(self, flow: http.HTTPFlow) -> Route | None:
        """The full routing decision (models in order, providers), made on the first ask."""
        found = flow.metadata.get(ROUTE_KEY)
        if isinstance(found, Route):
            return found
        exchange = exchange_of(flow)
        if exchange is None:
            return None
        call = CallInfo(
            provider=exchange.provider,
            api=exchange.api,
            kind=exchange.kind,
            source=exchange.source,
            model=exchange.requested_model,
            stream=exchange.stream_requested,
        )
        route = decide(self.deps.settings.get(), call, self.rng, self.latency)
        flow.metadata[ROUTE_KEY] = route
        return route

    def decide(self, flow: http.HTTPFlow) -> str | None:
        """The model this call will be sent with (None when it names none)."""
        route = self.route(flow)
        return route.model if route is not None else None

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None:
            return
        route = self.route(flow)
        if (
            route is None
            or not route.targets
            or (route.rule is None and not route.has_chain and not route.notes)
        ):
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
            settings = self.deps.settings.get()
            flow.metadata[CHAIN_KEY] = ChainPlan(
                route.targets, own_url, base_model, client_auth, settings.providers
            )

    @staticmethod
    def _rename(flow: http.HTTPFlow, exchange: Exchange, model: str) -> None:
        """Only the model field changes: Gemini's path segment, or the JSON body's `model`."""
        req = flow.request
        parts = RequestParts(req.method, req.url, (), req.raw_content or b"")
        changed = with_model(exchange.api, parts, exchange.model, model)
        if changed.url != parts.url:
            req.url = changed.url
            exchange.endpoint = exchange.endpoint.replace(
                f"/models/{exchange.model}:", f"/models/{model}:", 1
            )
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
