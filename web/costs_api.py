"""Cost-intelligence views (docs/analytics-api.md and docs/analytics-api.md#how-the-figures-are-computed): daily, sources, models, tags, forecast, anomalies, compare,
recommendations, digest, webhook deliveries and the Prometheus `/metrics`.

All usage views answer from the hourly rollups (`tokenlens.store.rollups`) through `tokenlens.analytics`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from tokenlens import analytics
from tokenlens.app import AppDeps
from tokenlens.metrics import CONTENT_TYPE
from tokenlens.pricing import pricer_for
from tokenlens.web.api import (
    days_arg,
    deps,
    error,
    int_arg,
    serve_store_requests,
    text_arg,
    timezone_of,
)

bp = Blueprint("costs_api", __name__)


serve_store_requests(bp)


def _context() -> tuple[AppDeps, Any]:
    d = deps()
    return d, timezone_of(d.settings.get())


@bp.get("/api/usage/daily")
def daily() -> Response:
    d, tz = _context()
    return jsonify(analytics.daily(d.store, days_arg(), tz))


@bp.get("/api/usage/sources")
def sources() -> Response:
    d, tz = _context()
    return jsonify(analytics.sources(d.store, days_arg(), tz))


@bp.get("/api/usage/models")
def models() -> Response:
    d, tz = _context()
    return jsonify(analytics.models(d.store, days_arg(), tz))


@bp.get("/api/usage/by-tag")
def by_tag() -> Response | tuple[Response, int]:
    d, tz = _context()
    key = text_arg("key")
    if key is None:
        return error("key: the tag key is required (e.g. ?key=team)", 400, "key")
    return jsonify(analytics.by_tag(d.store, days_arg(), tz, key.lower()))


@bp.get("/api/usage/forecast")
def forecast() -> Response:
    d, tz = _context()
    return jsonify(analytics.forecast(d.store, tz, d.settings.get().budgets.monthly_usd))


@bp.get("/api/usage/anomalies")
def anomalies() -> Response:
    d, tz = _context()
    return jsonify(analytics.anomalies(d.store, days_arg(), tz))


@bp.get("/api/usage/compare")
def compare() -> Response | tuple[Response, int]:
    d, tz = _context()
    from_model, to_model = text_arg("from_model"), text_arg("to_model")
    if from_model is None:
        return error("from_model: required", 400, "from_model")
    if to_model is None:
        return error("to_model: required", 400, "to_model")
    try:
        result = analytics.compare(
            d.store,
            days_arg(),
            tz,
            pricer_for(d.settings.get().pricing),
            from_model,
            to_model,
            to_provider=text_arg("to_provider"),
            source=text_arg("source"),
        )
    except LookupError as exc:
        return error(str(exc), 400, "to_model")
    return jsonify(result)


@bp.get("/api/usage/recommendations")
def recommendations() -> Response:
    d, tz = _context()
    return jsonify(analytics.recommendations(d.store, days_arg(), tz, pricer_for(d.settings.get().pricing)))


@bp.get("/api/usage/digest")
def digest() -> Response:
    d, tz = _context()
    settings = d.settings.get()
    return jsonify(analytics.digest(d.store, tz, pricer_for(settings.pricing), settings.budgets.monthly_usd))


@bp.get("/api/webhooks/deliveries")
def deliveries() -> Response:
    """The last delivery attempts of the webhook dispatcher (newest first)."""
    limit = int_arg("limit", 100, 1, 1000, clamp=True)
    dispatcher = deps().webhooks
    return jsonify({"deliveries": dispatcher.deliveries(limit), "dispatcher": dispatcher.stats()})


@bp.get("/metrics")
def metrics() -> Response:
    return Response(deps().metrics.render(), content_type=CONTENT_TYPE)
