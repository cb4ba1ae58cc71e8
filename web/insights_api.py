"""Token-intelligence views: waste, heatmap, output efficiency, right-sizing (issue: token intelligence)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("insights_api", __name__)
