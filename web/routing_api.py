"""Routing views: `GET /api/usage/latency`, and the extra checks of `PUT /api/config/routing` (docs/analytics-api.md)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from tokenlens.app import AppDeps
from tokenlens.config import Settings
from tokenlens.latency import latency_report
from tokenlens.pricing import pricer_for
from tokenlens.routing import check_routing
from tokenlens.usage import Usage
from tokenlens.web import config_api
from tokenlens.web.api import days_arg, deps, serve_store_requests, timezone_of

bp = Blueprint("routing_api", __name__)
serve_store_requests(bp)  # a store connection per request; a bad `days` answered 400


@bp.get("/api/usage/latency")
def latency() -> Response:
    """p50/p95/p99 latency, time to first token and error rate by provider and model over `days` calendar
    days (from the latency rollups: percentiles within 2.2%), plus the live moving averages latency groups
    route by (`live`)."""
    d = deps()
    days = days_arg()
    items = latency_report(d.store, days, timezone_of(d.settings.get()))
    live = d.latency.snapshot()
    return jsonify({"days": days, "items": items, "live": live})


def _routing_check(candidate: Settings, app_deps: AppDeps) -> list[str]:
    pricer = pricer_for(candidate.pricing)

    def knows(provider: str, model: str) -> bool:
        return pricer.price(provider, model, Usage(input_tokens=1000, output_tokens=1000)).priced

    return check_routing(candidate, knows)


config_api.register_check("routing", _routing_check)
