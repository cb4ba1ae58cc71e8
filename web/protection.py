"""Request protection for the dashboard and API (docs/analytics-api.md, "Protection").

1. DNS-rebinding defence: the `Host` header (port ignored) must be a loopback name (localhost, 127.x, ::1),
   the configured `server.host`, or one of `server.allowed_hosts` (an entry starting with "." also matches
   every subdomain). Otherwise 403.
2. Cross-site requests: a state-changing request (POST, PUT, PATCH, DELETE), and a WebSocket handshake (which
   browsers do not restrict by CORS), whose `Origin` header is present and is not this same host gets 403.
3. When `server.host` is not loopback, every path except `/healthz` needs `Authorization: Bearer <api_token>`
   (401 otherwise).
4. Every response carries `SECURITY_HEADERS`: a Content-Security-Policy that forbids framing, plugins, inline
   scripts and styles and anything not served by the gateway itself (the pages load only their own static
   files), `X-Frame-Options: DENY` for older browsers, `nosniff`, no referrer, and a same-origin resource
   policy (another site cannot embed an API answer as a script or image).

Settings are read on every request, so a configuration change applies at once.
"""

from __future__ import annotations

import hmac

from flask import Flask, Response, current_app, jsonify, request

from tokenlens.access import host_allowed, same_origin
from tokenlens.config import is_loopback_host

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_PATHS = frozenset({"/healthz"})
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _refuse(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tokenlens"'
    return response


def _bearer_ok(expected: str | None) -> bool:
    if not expected:
        return False  # a non-loopback server without a token refuses everything (the daemon will not start)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


def check_request() -> Response | None:
    """The `before_request` hook: None to go on, or the refusal."""
    server = current_app.extensions["tokenlens"].settings.get().server
    host_header = request.headers.get("Host", "")
    if not host_allowed(host_header, server):
        return _refuse(403, "this host name is not allowed; use localhost or add it to server.allowed_hosts")
    origin = request.headers.get("Origin")
    is_websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    if origin is not None and (request.method in STATE_CHANGING or is_websocket):
        if not same_origin(origin, host_header, request.scheme):
            return _refuse(403, "cross-site request refused")
    if request.path not in OPEN_PATHS and not is_loopback_host(server.host):
        if not _bearer_ok(server.api_token):
            return _refuse(401, "authentication required: send Authorization: Bearer <server.api_token>")
    return None


def add_security_headers(response: Response) -> Response:
    """The `after_request` hook: `SECURITY_HEADERS` on every answer (pages, API, errors and refusals)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    app.before_request(check_request)
    app.after_request(add_security_headers)
