"""JSON API: health, status, call records, KPI, export and import (docs/analytics-api.md)."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from tokenlens import price_data
from tokenlens.app import AppDeps
from tokenlens.config import Settings, resolve_timezone
from tokenlens.guardrails.record import mask_secrets
from tokenlens.insights import prefix_cache_message
from tokenlens.pricing import pricer_for
from tokenlens.records import CallRecord
from tokenlens.shared_ledger import import_counted
from tokenlens.store import (
    InterfaceError,
    OperationalError,
    chunk_text,
    day_bounds,
    export_lines,
    month_bounds,
    parse_since,
)
from tokenlens.store.queries import MAX_LIMIT, bounded_lines
from tokenlens.store.writer import store_error_text

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}
MAX_DAYS = 3660


def deps() -> AppDeps:
    found: AppDeps = current_app.extensions["tokenlens"]
    return found


def error(message: str, status: int = 400, field: str | None = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return jsonify(body), status


class BadParam(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _bad_param(exc: BadParam) -> tuple[Response, int]:
    return error(str(exc), 400, exc.field)


def int_arg(name: str, default: int, minimum: int, maximum: int | None = None, *, clamp: bool = False) -> int:
    """An integer query parameter; BadParam (400) when it is not one or is out of range."""
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadParam(name, f"expected an integer, got {raw!r}") from None
    if value < minimum:
        raise BadParam(name, f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        if clamp:
            return maximum
        raise BadParam(name, f"must be at most {maximum}")
    return value


def days_arg(default: int = 30) -> int:
    return int_arg("days", default, 1, MAX_DAYS)


def text_arg(name: str) -> str | None:
    value = request.args.get(name)
    return value if value else None


def timezone_of(settings: Settings) -> Any:
    return resolve_timezone(settings.timezone)


# ------------------------------------------------------------------------------------------ a connection per request


def _open_connection() -> None:
    g.tokenlens_opened_db = deps().store.open_connection()


def _close_connection(exc: BaseException | None) -> None:
    if g.pop("tokenlens_opened_db", False):
        deps().store.close_connection()


def serve_store_requests(blueprint: Blueprint) -> None:
    """For a JSON API blueprint: a store connection per request, and BadParam answered as 400."""
    blueprint.register_error_handler(BadParam, _bad_param)
    blueprint.before_request(_open_connection)
    blueprint.teardown_request(_close_connection)


serve_store_requests(bp)


# ------------------------------------------------------------------------------------------ store or files unavailable

# A file the app cannot write for reasons of the machine, not of the request: a read-only or full disk.
_UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


@bp.app_errorhandler(OperationalError)
@bp.app_errorhandler(InterfaceError)
@bp.app_errorhandler(sqlite3.OperationalError)
def store_unavailable(exc: Exception) -> tuple[Response, int]:
    """Any route (this app's): the database cannot be opened, read or written (a read-only data directory,
    a locked or unreachable database) answers 503 with the reason, not a 500."""
    detail = store_error_text(exc)
    log.warning("%s %s: the store is unavailable (%s)", request.method, request.path, detail)
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        reason = "the store is read-only or cannot be opened (is the data directory writable?)"
    else:
        reason = "the store is unavailable"
    return error(f"{reason}: {detail}", 503)


@bp.app_errorhandler(OSError)
def file_unavailable(exc: OSError) -> tuple[Response, int]:
    """A file that cannot be written because the disk is read-only, not writable for us, or full (the
    configuration file on PUT /api/config/*) answers 503; any other OSError is an internal error (500)."""
    if exc.errno not in _UNWRITABLE:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error(f"internal error: {type(exc).__name__}", 500)
    where = os.path.dirname(str(exc.filename)) if exc.filename else "the data directory"
    log.warning("%s %s: cannot write to %s (%s)", request.method, request.path, where, exc.strerror)
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    reason = "the disk is full" if full else "it is read-only or not accessible"
    return error(f"cannot write to {where}: {reason} ({exc.strerror})", 503)


# ------------------------------------------------------------------------------------------ routes


@bp.get("/api/status")
def status() -> Response:
    d = deps()
    settings = d.settings.get()
    tz = timezone_of(settings)
    price_data.refresh(d.home)  # a file `prices update` just kept (looked for at most once a second)
    return jsonify(
        {
            "version": d.version,
            "uptime_s": round(time.time() - d.started_at, 3),
            "store": d.store.location.describe(),
            "today_usd": d.store.spend_between(*day_bounds(tz)),
            "month_usd": d.store.spend_between(*month_bounds(tz)),
            "pending_records": d.writer.pending,
            "timezone": settings.timezone,
            "passthrough_requests": d.passthrough.total,  # on provider routes, not calls (docs/gateway.md)
            "passthrough_by_reason": dict(d.passthrough.by_reason),
            "prices": price_data.data_info(),  # the price data in use, its date and age (issue 18)
        }
    )


@bp.get("/api/calls")
def list_calls() -> Response | tuple[Response, int]:
    limit = int_arg("limit", 100, 1, MAX_LIMIT, clamp=True)
    try:
        calls, cursor = deps().store.list_calls(
            limit=limit,
            before=text_arg("before"),
            source=text_arg("source"),
            model=text_arg("model"),
            provider=text_arg("provider"),
            outcome=text_arg("outcome"),
        )
    except ValueError as exc:
        return error(str(exc), 400, "before")
    return jsonify({"calls": [c.to_dict() for c in calls], "next": cursor})


@bp.get("/api/calls/<call_id>")
def get_call(call_id: str) -> Response | tuple[Response, int]:
    record = deps().store.get_call(call_id, bodies=True)
    if record is None:
        return error(f"no call with id {call_id!r:.200}", 404)
    data = record.to_dict(bodies=True)
    for name in CallRecord.BODY_FIELDS:  # a key pasted into a prompt is never shown, whatever the guardrails
        data[name] = mask_secrets(data[name])
    message = prefix_cache_message(record, pricer_for(deps().settings.get().pricing))
    if message is not None:  # the detail page's line on the repeated prefix, true to the cache usage
        data["details"]["heatmap"]["prefix"]["message"] = message
    return jsonify(data)


@bp.get("/api/usage/kpi")
def kpi() -> Response:
    d = deps()
    days = days_arg()
    return jsonify(d.store.kpi(days, timezone_of(d.settings.get())))


@bp.get("/api/export")
def export() -> Response | tuple[Response, int]:
    d = deps()
    fmt = request.args.get("format", "jsonl").lower()
    if fmt not in EXPORT_TYPES:
        return error("format: expected csv or jsonl", 400, "format")
    since_ts = None
    if request.args.get("since"):
        try:
            since_ts = parse_since(request.args["since"], timezone_of(d.settings.get()))
        except ValueError as exc:
            return error(str(exc), 400, "since")
    chunks = chunk_text(export_lines(d.store, fmt, since_ts))
    first = next(chunks, "")  # read before answering: a store that cannot be read answers 503, not a cut file

    def generate() -> Iterator[str]:
        try:
            yield from itertools.chain([first], chunks)
        except Exception:
            log.exception("export failed while streaming")
            raise

    response = Response(generate(), content_type=EXPORT_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="tokenlens-calls.{fmt}"'
    return response


@bp.post("/api/import")
def import_calls() -> Response | tuple[Response, int]:
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return error("send the JSONL file as the request body (Content-Type: application/x-ndjson)", 415)
    d = deps()
    settings = d.settings.get()
    result = import_counted(  # counted toward budgets at once
        d.store,
        bounded_lines(request.stream),
        pricer_for(settings.pricing),
        settings=d.settings,
        ledger=d.ledger,
        store_bodies=settings.storage.store_bodies,
    )
    return jsonify(result.to_dict())
