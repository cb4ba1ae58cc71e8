"""Which form a request line had: origin-form (`GET /path`, sent to the gateway itself) or absolute-form
(`GET http://host/path`, proxy traffic).

In regular mode mitmproxy 12 clears `Request.authority` of every HTTP/1 request before the first hook
(`HttpStream.state_wait_for_request_headers`: "Set the request target to origin-form for HTTP/1"), so in the
`request` hook `GET http://evil.example/` through the proxy and `GET /` with `Host: evil.example` look the same.
The first is proxy traffic; the second must never be forwarded to the host its header names (docs/analytics-api.md). This
wraps that one method to mark absolute-form requests before mitmproxy clears the authority. mitmproxy is
pinned to 12.x, and tests/addons/test_request_form.py runs the real HTTP/1 layer through it.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import http
from mitmproxy.proxy.layers.http import HttpStream, RequestHeaders

from tokenlens.access import host_allowed
from tokenlens.config import ServerSettings

ABSOLUTE = "_tokenlens_absolute_form"

_original = HttpStream.state_wait_for_request_headers
_installed = False


def is_absolute_form(request: http.Request) -> bool:
    """Whether the client sent the request in absolute form (or as HTTP/2, which always names the authority)."""
    return bool(getattr(request, ABSOLUTE, False)) or request.first_line_format == "absolute"


def _state_wait_for_request_headers(self: HttpStream, event: Any) -> Any:
    if isinstance(event, RequestHeaders) and event.request.authority and event.request.method != "CONNECT":
        setattr(event.request, ABSOLUTE, True)
    return _original(self, event)


def install() -> None:
    """Idempotent."""
    global _installed
    if not _installed:
        HttpStream.state_wait_for_request_headers = _state_wait_for_request_headers  # type: ignore[method-assign]
        _installed = True


def is_for_gateway(flow: http.HTTPFlow, server: ServerSettings) -> bool:
    """Addressed to the gateway itself (base-URL clients, the dashboard), not proxied to another host: sent in
    plain HTTP to a name the gateway answers to (loopback, `server.host`, `server.allowed_hosts`), in origin
    form, or in absolute form naming the gateway's own port."""
    req = flow.request
    if flow.client_conn.tls or not host_allowed(req.host, server):
        return False
    if not is_absolute_form(req):
        return True  # origin-form: it was sent to this socket, whatever port the Host header names
    own_port = flow.client_conn.sockname[1] if flow.client_conn.sockname else None
    return req.port == own_port
