"""The Flask app: JSON API, live WebSocket and the home page (SPEC section 9).

`create_app(deps)` builds it around the running gateway's `AppDeps`; the daemon serves it with Werkzeug on an
internal loopback port and the gateway forwards to it every request for itself outside `/proxy/`, with the
original `Host` header.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from tokenlens.app import AppDeps
from tokenlens.web import (
    api,
    config_api,
    controls_api,
    costs_api,
    guardrails_api,
    insights_api,
    live,
    pages,
    protection,
    routing_api,
    sessions_api,
)

log = logging.getLogger(__name__)


def create_app(deps: AppDeps, test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["SOCK_SERVER_OPTIONS"] = live.server_options()
    if test_config:
        app.config.update(test_config)
    app.extensions["tokenlens"] = deps

    protection.init_app(app)
    for blueprint_module in (
        api,
        config_api,
        controls_api,
        routing_api,
        insights_api,
        costs_api,
        guardrails_api,
        pages,
        sessions_api,
    ):
        app.register_blueprint(blueprint_module.bp)
    live.init_app(app)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
            response = jsonify({"error": exc.description or exc.name})
            response.status_code = exc.code or 500
            return response
        return exc.get_response()

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = jsonify({"error": f"internal error: {type(exc).__name__}"})
        response.status_code = 500
        return response

    return app
