"""Helpers for addon tests: flows shaped as mitmproxy hands them to the hooks."""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http
from mitmproxy.test import tflow

GATEWAY_PORT = 8420
WEB_PORT = 18421


def gateway_flow(
    path: str,
    body: dict[str, Any] | bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    host: str = "localhost",
    port: int = GATEWAY_PORT,
    scheme: str = "http",
    absolute: bool | None = None,
) -> http.HTTPFlow:
    """A flow as mitmproxy hands it to the request hook for a client of the gateway's port.

    `https` is a request inside an intercepted CONNECT; `absolute` an absolute-form proxy request (default:
    a plain-HTTP request for another host and port than the gateway's), else origin-form."""
    content = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    all_headers = {"host": f"{host}:{port}", "content-type": "application/json", **(headers or {})}
    request = http.Request.make(method, f"{scheme}://{host}:{port}{path}", content, all_headers)
    request.timestamp_start = 1_700_000_000.0
    flow = tflow.tflow(req=request)
    flow.client_conn.sockname = ("127.0.0.1", GATEWAY_PORT)
    if scheme == "https":
        flow.client_conn.tls = True  # inside an intercepted CONNECT (HTTPS_PROXY mode)
    elif absolute or (absolute is None and host not in ("localhost", "127.0.0.1") and port != GATEWAY_PORT):
        request.authority = f"{host}:{port}"  # absolute-form: a plain-HTTP proxy request
    return flow
