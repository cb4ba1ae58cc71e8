"""Cost-intelligence views: daily, sources, models, forecast, anomalies, compare, digest (issue: cost intelligence)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("costs_api", __name__)
