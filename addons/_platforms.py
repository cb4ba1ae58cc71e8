"""The cloud platforms' proxy-path helpers shared by ingress and the platform_auth stage; the logic is in
tokenlens.platforms.

- `start_platform_call` (ingress): a `/proxy/<platform>/...` request, or one to a platform's own host in
  HTTPS_PROXY mode, becomes a call (provider, wire format, endpoint kind and model read from the path); its
  `PlatformState` is `Exchange.platform`.
- `redirect_server`: in HTTPS_PROXY mode a platform host with a configured endpoint connects there.
- `signed_snapshot`, `refuse_call`: what a client signature covers, and a platform call answered locally.
"""

from __future__ import annotations

from typing import Any, Protocol

from mitmproxy import connection, http

from tokenlens.addons._flowstate import exchange_of, lower_headers
from tokenlens.addons._gate import answer_refused
from tokenlens.config.model import Platforms
from tokenlens.platforms import (
    PLATFORMS,
    Platform,
    PlatformNotConfigured,
    PlatformState,
    Signature,
    base_url_upstream,
    client_signature,
    host_of,
    parse_path,
    platform_of_host,
    proxy_redirect,
    signed_for_gateway_message,
    split_base_url_path,
)
from tokenlens.providers import HEADER_PREFIX, PROXY_PREFIX, Upstream, error_body

JSON = {"content-type": "application/json"}


class StartCall(Protocol):
    """Ingress's `_start_call`: attach the call's Exchange and read its body for the gates."""

    def __call__(
        self, flow: http.HTTPFlow, upstream: Upstream, path: str, tag: str | None, mode: str, kind: str | None
    ) -> None: ...


def base_url_platform(path: str, configured: Any) -> Platform | None:
    """`/proxy/<platform>/...` for a platform name the user has not taken for a provider of their own."""
    name = path[len(PROXY_PREFIX) :].split("/", 1)[0].split("?", 1)[0]
    if name in PLATFORMS and name not in configured:
        return name
    return None


def signed_snapshot(request: http.Request, signature: Signature) -> tuple[Any, ...]:
    """What a client's signature covers: method, path, the signed headers and the body."""
    headers = lower_headers(request)
    signed = tuple(sorted((name, headers.get(name)) for name in signature.signed_headers))
    return (request.method, request.data.path, signed, request.raw_content or b"")


def start_platform_call(
    flow: http.HTTPFlow, platform: Platform, mode: str, platforms: Platforms, start_call: StartCall
) -> None:
    """Make the request a call of `platform` (ingress, after its access checks, with its `start_call`)."""
    req = flow.request
    headers = lower_headers(req)
    if mode == "base_url":
        rest = req.path[len(PROXY_PREFIX) + len(platform) :]
        tag, path = split_base_url_path(rest)
    else:
        tag, path = None, req.path
    call = parse_path(platform, path)
    signature = client_signature(headers, path.partition("?")[2])
    fields = req.headers.fields
    if mode == "base_url":
        try:
            scheme, host, port, base = host_of(base_url_upstream(platform, call, platforms))
        except PlatformNotConfigured as missing:
            scheme, host, port, base = "https", "", 443, ""
            upstream = Upstream(platform, call.api, scheme, host, port, base)
            start_call(flow, upstream, path, tag, mode, call.kind)
            refuse_call(flow, 503, f"TokenLens: {missing}.", "platform_not_configured")
            return
    else:
        scheme, host, port, base = "https", req.host, req.port, ""
    upstream = Upstream(platform, call.api, scheme, host, port, base)
    full_path = base + path
    start_call(flow, upstream, full_path, tag, mode, call.kind)
    exchange = exchange_of(flow)
    if exchange is None:
        return
    state = exchange.platform = PlatformState(call, mode, signature)
    if call.model:
        exchange.model = exchange.requested_model = call.model
    exchange.stream_requested = exchange.stream_requested or call.stream
    if call.wire == "bedrock_converse" and exchange.request_json is not None:
        config = exchange.request_json.get("inferenceConfig")
        limit = config.get("maxTokens") if isinstance(config, dict) else None
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            exchange.max_tokens = limit
    if flow.response is not None:
        return
    if signature is not None:
        if mode == "base_url":
            refuse_call(flow, 400, signed_for_gateway_message(platform), "signed_for_gateway")
            return
        # headers the signature covers are never removed (ingress removes X-TokenLens-* ones)
        prefix = HEADER_PREFIX.encode()
        req.headers.fields = tuple(
            (k, v)
            for k, v in fields
            if not k.lower().startswith(prefix) or k.decode("latin-1").lower() in signature.signed_headers
        )
        state.snapshot = signed_snapshot(req, signature)
        exchange.signed_headers = signature.signed_headers
    if mode == "base_url":
        req.data.scheme, req.data.host, req.data.port = scheme.encode(), host, port
        req.data.path = full_path.encode()
        default = 443 if scheme == "https" else 80
        req.headers["host"] = host if port == default else f"{host}:{port}"
    else:
        redirect = proxy_redirect(platform, platforms)
        if redirect:  # the real host's calls go to a configured endpoint; the request itself is unchanged
            r_scheme, r_host, r_port, _ = host_of(redirect)
            req.data.scheme, req.data.host, req.data.port = r_scheme.encode(), r_host, r_port


def redirect_server(server: connection.Server, platforms: Platforms) -> bool:
    """HTTPS_PROXY mode connects on CONNECT: a platform host with a configured endpoint connects there."""
    if server.address is None:
        return False
    host, port = server.address
    platform = platform_of_host(host, port)
    redirect = proxy_redirect(platform, platforms) if platform else None
    if not redirect:
        return False
    _, r_host, r_port, _ = host_of(redirect)
    server.address = (r_host, r_port)
    server.sni = r_host
    return True


def refuse_call(flow: http.HTTPFlow, status: int, message: str, code: str) -> None:
    """Answer a platform call locally (blocked by `request`) in its wire family's error format."""
    exchange = exchange_of(flow)
    if exchange is None:
        body = error_body("openai", status, message, code)
        flow.response = http.Response.make(status, body, {**JSON, "x-should-retry": "false"})
        return
    answer_refused(flow, exchange, status, message, code)
