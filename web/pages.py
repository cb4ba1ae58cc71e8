"""The dashboard's pages (issue 8): server-rendered shells whose plain JS modules fill them from the JSON API.

Every page extends `base.html` (navigation, theme toggle) and loads `static/js/pages/<name>.js`. Nothing is
fetched from outside the gateway: the charting library is served from `static/vendor/`.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("pages", __name__)

NAV: tuple[tuple[str, str, str], ...] = (  # (endpoint, path, label)
    ("overview", "/", "Overview"),
    ("live", "/live", "Live"),
    ("sources", "/sources", "Sources"),
    ("models", "/models", "Models"),
    ("sessions", "/sessions", "Sessions"),
    ("insights", "/insights", "Insights"),
    ("latency", "/latency", "Latency"),
    ("settings", "/settings", "Settings"),
)
TITLES = {name: label for name, _, label in NAV} | {"call": "Call", "session": "Session"}


def _page(name: str, **context: object) -> str:
    version = current_app.extensions["tokenlens"].version
    return render_template(
        f"pages/{name}.html", page=name, title=TITLES[name], nav=NAV, version=version, **context
    )


@bp.get("/")
def overview() -> str:
    return _page("overview")


@bp.get("/live")
def live() -> str:
    return _page("live")


@bp.get("/calls/<call_id>")
def call(call_id: str) -> str:
    return _page("call", call_id=call_id)


@bp.get("/sources")
def sources() -> str:
    return _page("sources")


@bp.get("/models")
def models() -> str:
    return _page("models")


@bp.get("/sessions")
def sessions() -> str:
    return _page("sessions")


@bp.get("/sessions/<path:group_id>")
def session(group_id: str) -> str:
    return _page("session", group_id=group_id)


@bp.get("/insights")
def insights() -> str:
    return _page("insights")


@bp.get("/latency")
def latency() -> str:
    return _page("latency")


@bp.get("/settings")
def settings() -> str:
    return _page("settings")
