"""Routing views such as /api/usage/latency (issue: routing)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("routing_api", __name__)
