"""The Flask app: JSON API, live WebSocket and the home page (docs/analytics-api.md).

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


def base_urls(deps: AppDeps, origin: str) -> dict[str, str]:
    """The base URL an SDK of each configured provider takes on this gateway."""
    return {
        name: f"{origin}/proxy/{name}" + ("/v1" if provider.format == "openai" else "")
        for name, provider in deps.settings.get().providers.items()
    }


def unknown_route(deps: AppDeps) -> Response:
    """A request outside /proxy/, /api/ and the dashboard: most often an SDK whose base URL lacks
    /proxy/<provider>. The SDKs print the message, so it names the base URL of each provider (OpenAI's error
    format, which the other SDKs show whole)."""
    urls = base_urls(deps, request.host_url.rstrip("/"))
    listed = ", ".join(f"{name}: {url}" for name, url in urls.items())
    message = (
        f"TokenLens has no route {request.path[:200]!r}. Provider calls go under /proxy/<provider>; "
        f"set your SDK's base URL to {listed}"
    )
    response = jsonify(
        {"error": {"message": message, "type": "not_found", "code": "unknown_route", "param": None}}
    )
    response.status_code = 404
    return response


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
        if exc.code == 404 and not request.path.startswith(("/api/", "/static/")):
            return unknown_route(deps)
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
