"""Agent-workflow views (docs/analytics-api.md): sessions and conversations, provider rate-limit headroom, and the offline
prompt analysis of `tokenlens analyze` as `POST /api/analyze`."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from tokenlens import sessions
from tokenlens.analyze import AnalyzeError, analyze_request
from tokenlens.pricing import Pricer, pricer_for
from tokenlens.ratelimits import rate_limited_calls
from tokenlens.store import decode_cursor
from tokenlens.web.api import (
    days_arg,
    deps,
    error,
    int_arg,
    serve_store_requests,
    text_arg,
    timezone_of,
)

bp = Blueprint("sessions_api", __name__)

MAX_ANALYZE_BYTES = 10 * 1024 * 1024


serve_store_requests(bp)


@bp.get("/api/usage/sessions")
def list_sessions() -> Response | tuple[Response, int]:
    """Runs with a call in the last `days` days, newest first, from the session rollups: both kinds, or
    `kind=session|conversation` only; `before` is a `next` cursor of the previous page (with `kind`)."""
    d = deps()
    limit = int_arg("limit", 200, 1, 1000, clamp=True)
    kind = text_arg("kind")
    if kind not in (None, "session", "conversation"):
        return error("kind: expected session or conversation", 400, "kind")
    before = None
    cursor = text_arg("before")
    if cursor is not None:
        if kind is None:
            return error("before: needs kind (session or conversation)", 400, "before")
        try:
            before = decode_cursor(cursor)
        except ValueError:
            return error("before: not a cursor from this API", 400, "before")
    summary = sessions.sessions_summary(
        d.store, days_arg(), timezone_of(d.settings.get()), limit, kind=kind, before=before
    )
    return jsonify(summary)


@bp.get("/api/usage/sessions/<path:group_id>")
def one_session(group_id: str) -> Response | tuple[Response, int]:
    found = sessions.session_timeline(deps().store, group_id)
    if found is None:
        return error(f"no session or conversation {group_id!r}", 404)
    return jsonify(found)


@bp.get("/api/usage/rate-limits")
def rate_limits() -> Response:
    d = deps()
    days = days_arg(7)
    return jsonify(
        {
            "low_share": d.rate_limits.low,
            "items": d.rate_limits.snapshot(),
            "rate_limited": rate_limited_calls(d.store, days, timezone_of(d.settings.get())),
            "days": days,
        }
    )


@bp.post("/api/analyze")
def analyze() -> Response | tuple[Response, int]:
    """The body is the request body (JSON) or the prompt (text); `?model=` and `?provider=` as on the CLI."""
    raw = request.get_data(cache=False)
    if len(raw) > MAX_ANALYZE_BYTES:
        return error("body: larger than 10 MB", 413, "body")
    if not raw.strip():
        return error("body: a request body or a prompt is required", 400, "body")
    pricer = pricer_for(deps().settings.get().pricing)
    assert isinstance(pricer, Pricer)
    try:
        result = analyze_request(raw, provider=text_arg("provider"), model=text_arg("model"), pricer=pricer)
    except AnalyzeError as exc:
        return error(str(exc), 400, "provider")
    return jsonify(result)
