"""Budget status and other control views (issue: gateway controls)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("controls_api", __name__)
