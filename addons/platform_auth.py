"""The cloud platforms (Azure OpenAI, Vertex AI, Bedrock) on the proxy path; the logic is in tokenlens.platforms.

- `start_platform_call` (called by ingress): a `/proxy/<platform>/...` request or one to a platform's own host in
  HTTPS_PROXY mode becomes a call (provider, wire format, endpoint kind and model read from the path).
- `PlatformAuth` (the stage right before Upstream, after routing and redaction):
  * a request the client signed (AWS SigV4, HTTPS_PROXY mode) goes out byte for byte: if an earlier stage
    changed anything the signature covers (routing, redaction), it is refused with a clear message;
  * base-URL calls without client credentials are signed here (Bedrock, botocore's credential chain) or get a
    Vertex token (google-auth default credentials); credentials are resolved in a thread, off the event loop;
  * Bedrock's event-stream answers are tapped chunk by chunk (forwarded untouched, metered from a copy).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from mitmproxy import connection, http

from tokenlens.addons._flowstate import exchange_of, lower_headers, pending_call
from tokenlens.app import AppDeps
from tokenlens.config.model import Platforms
from tokenlens.encoding import stream_decoder
from tokenlens.exchange import Exchange
from tokenlens.platforms import (
    PLATFORMS,
    Platform,
    PlatformCall,
    PlatformNotConfigured,
    Signature,
    base_url_upstream,
    bedrock_error,
    bedrock_region,
    client_signature,
    host_of,
    parse_path,
    platform_of_host,
    proxy_redirect,
    signed_for_gateway_message,
    signed_request_changed_message,
    split_base_url_path,
)
from tokenlens.platforms.auth import AwsSigner, CredentialsMissing, VertexTokens
from tokenlens.platforms.eventstream import CONTENT_TYPE as EVENT_STREAM
from tokenlens.providers import HEADER_PREFIX, PROXY_PREFIX, Upstream, error_body
from tokenlens.stream_taps import StreamTap


class StartCall(Protocol):
    """Ingress's `_start_call`: attach the call's Exchange and read its body for the gates."""

    def __call__(
        self, flow: http.HTTPFlow, upstream: Upstream, path: str, tag: str | None, mode: str, kind: str | None
    ) -> None: ...


log = logging.getLogger(__name__)

KEY = "tokenlens.platform"
JSON = {"content-type": "application/json"}


@dataclass
class PlatformState:
    call: PlatformCall
    mode: str
    signature: Signature | None = None
    snapshot: tuple[Any, ...] | None = None  # what a client signature covers, as it arrived


def state_of(flow: http.HTTPFlow) -> PlatformState | None:
    value = flow.metadata.get(KEY)
    return value if isinstance(value, PlatformState) else None


def base_url_platform(path: str, configured: Any) -> Platform | None:
    """`/proxy/<platform>/...` for a platform name the user has not taken for a provider of their own."""
    name = path[len(PROXY_PREFIX) :].split("/", 1)[0].split("?", 1)[0]
    if name in PLATFORMS and name not in configured:
        return name
    return None


def _snapshot(request: http.Request, signature: Signature) -> tuple[Any, ...]:
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
            _refuse_call(flow, 503, f"TokenLens: {missing}.", "platform_not_configured")
            return
    else:
        scheme, host, port, base = "https", req.host, req.port, ""
    upstream = Upstream(platform, call.api, scheme, host, port, base)
    full_path = base + path
    start_call(flow, upstream, full_path, tag, mode, call.kind)
    exchange = exchange_of(flow)
    if exchange is None:
        return
    state = PlatformState(call, mode, signature)
    flow.metadata[KEY] = state
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
            _refuse_call(flow, 400, signed_for_gateway_message(platform), "signed_for_gateway")
            return
        # headers the signature covers are never removed (ingress removes X-TokenLens-* ones)
        prefix = HEADER_PREFIX.encode()
        req.headers.fields = tuple(
            (k, v)
            for k, v in fields
            if not k.lower().startswith(prefix) or k.decode("latin-1").lower() in signature.signed_headers
        )
        state.snapshot = _snapshot(req, signature)
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


def _refuse_call(flow: http.HTTPFlow, status: int, message: str, code: str) -> None:
    exchange = exchange_of(flow)
    if exchange is None:
        body = error_body("openai", status, message, code)
        flow.response = http.Response.make(status, body, {**JSON, "x-should-retry": "false"})
        return
    exchange.outcome, exchange.blocked_by = "blocked", "request"
    exchange.error = message
    flow.response = http.Response.make(
        status,
        error_body(exchange.api, status, message, code),
        {**JSON, "x-should-retry": "false", "x-tokenlens-blocked-by": "request"},
    )


class PlatformAuth:
    name = "tokenlens.platform_auth"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self.signer = AwsSigner()
        self.tokens = VertexTokens()

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        exchange = pending_call(flow)
        state = state_of(flow)
        if exchange is None or state is None:
            return None
        if state.signature is not None:
            if state.snapshot is not None and _snapshot(flow.request, state.signature) != state.snapshot:
                log.warning("refused call %s: a stage changed a client-signed request", exchange.id)
                _refuse_call(
                    flow,
                    400,
                    signed_request_changed_message("routing or redaction"),
                    "signed_request_changed",
                )
            return None
        if state.mode != "base_url":
            return None
        headers = lower_headers(flow.request)
        if state.call.provider == "bedrock" and "authorization" not in headers:
            return self._sign_bedrock(flow, exchange)
        if state.call.provider == "vertex" and "authorization" not in headers:
            return self._add_vertex_token(flow, exchange)
        return None

    async def _sign_bedrock(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        req = flow.request
        region = bedrock_region(self.deps.settings.get().platforms, req.host)
        if not region:
            _refuse_call(
                flow, 503, "TokenLens: set platforms.bedrock.region to sign Bedrock calls.", "no_region"
            )
            return
        try:
            credentials = await asyncio.to_thread(self.signer.credentials)
        except (CredentialsMissing, Exception) as exc:
            log.error("no AWS credentials to sign call %s: %s", exchange.id, type(exc).__name__)
            _refuse_call(flow, 503, f"TokenLens could not sign this Bedrock call: {exc}", "no_credentials")
            return
        if flow.response is not None or flow.error is not None:
            return
        url = f"{req.scheme}://{req.headers.get('host') or req.host}{req.path}"
        signed = self.signer.sign(
            req.method, url, dict(req.headers.items()), req.raw_content or b"", region, credentials
        )
        for name in ("authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"):
            req.headers.pop(name, None)
        for name, value in signed.items():
            req.headers[name] = value

    async def _add_vertex_token(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        try:
            token = await asyncio.to_thread(self.tokens.token)
        except Exception as exc:
            log.error("no Google credentials for call %s: %s", exchange.id, type(exc).__name__)
            _refuse_call(
                flow, 503, f"TokenLens could not authenticate this Vertex AI call: {exc}", "no_credentials"
            )
            return
        if flow.response is None and flow.error is None:
            flow.request.headers["authorization"] = f"Bearer {token}"

    def response(self, flow: http.HTTPFlow) -> None:
        """A Bedrock call the gateway answered itself (refused by a gate) gets Bedrock's error format."""
        exchange = exchange_of(flow)
        state = state_of(flow)
        response = flow.response
        if exchange is None or state is None or response is None or state.call.provider != "bedrock":
            return
        if exchange.outcome != "blocked" or response.status_code < 400:
            return
        body, error_type = bedrock_error(response.status_code, response.content or b"")
        response.content = body
        response.headers["x-amzn-errortype"] = error_type

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Bedrock streams in event-stream framing (not SSE): tap it chunk by chunk, untouched."""
        exchange = exchange_of(flow)
        response = flow.response
        if exchange is None or response is None or exchange.outcome is not None or state_of(flow) is None:
            return
        if response.status_code >= 300 or not response.headers.get("content-type", "").startswith(
            EVENT_STREAM
        ):
            return
        exchange.streamed = True
        response.stream = StreamTap(exchange, stream_decoder(response.headers.get("content-encoding")))
