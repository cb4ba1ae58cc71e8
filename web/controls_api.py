"""Budget status and other control views (issue: gateway controls)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from tokenlens.app import AppDeps

bp = Blueprint("controls_api", __name__)


@bp.get("/api/usage/budget-status")
def budget_status() -> Response:
    """Each USD cap in force: limit, spent, reserved by calls in flight, remaining, when it resets."""
    deps: AppDeps = current_app.extensions["tokenlens"]
    return jsonify(deps.ledger.status())
