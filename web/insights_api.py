"""Token-intelligence views: waste, heatmap, output efficiency, history bloat, right-sizing, caching (docs/analytics-api.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from flask import Blueprint, Response, jsonify

from tokenlens import insights
from tokenlens.pricing import Pricer, pricer_for
from tokenlens.store import Store
from tokenlens.web.api import BadParam, days_arg, deps, error, timezone_of

bp = Blueprint("insights_api", __name__)


@bp.errorhandler(BadParam)
def _bad_param(exc: BadParam) -> tuple[Response, int]:
    return error(str(exc), 400, exc.field)


def _view(compute: Callable[[Store, int, tzinfo], dict[str, Any]]) -> Response:
    d = deps()
    days = days_arg()
    return jsonify(compute(d.store, days, timezone_of(d.settings.get())))


def _priced_view(compute: Callable[[Store, int, tzinfo, Pricer], dict[str, Any]]) -> Response:
    d = deps()
    days = days_arg()
    settings = d.settings.get()
    pricer = pricer_for(settings.pricing)
    assert isinstance(pricer, Pricer)
    return jsonify(compute(d.store, days, timezone_of(settings), pricer))


@bp.get("/api/usage/waste-summary")
def waste_summary() -> Response:
    return _view(insights.waste_summary)


@bp.get("/api/usage/token-heatmap")
def token_heatmap() -> Response:
    return _view(insights.token_heatmap)


@bp.get("/api/usage/output-efficiency")
def output_efficiency() -> Response:
    return _view(insights.output_efficiency)


@bp.get("/api/usage/conversation-efficiency")
def conversation_efficiency() -> Response:
    return _view(insights.conversation_efficiency)


@bp.get("/api/usage/right-sizing")
def right_sizing() -> Response:
    return _priced_view(insights.right_sizing)


@bp.get("/api/usage/caching-opportunities")
def caching_opportunities() -> Response:
    return _priced_view(insights.caching_opportunities)
