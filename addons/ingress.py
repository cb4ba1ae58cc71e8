"""Ingress: decides what a request is and prepares provider calls (docs/gateway.md), once access control
(the stage before) has admitted it.

- A request sent to the gateway itself: `/proxy/<provider>/...` is a base-URL provider call, rewritten to the
  upstream; any other path is the dashboard and API, forwarded to the internal Flask port.
- A proxy request (absolute-form, or inside an intercepted CONNECT) for a configured provider host, or a cloud
  platform's own host: a provider call as it is. Anything else: passed through untouched and unrecorded.

Fail closed: a request this stage cannot read is answered here (400 for a body the gates cannot check, 503
for anything unexpected), never forwarded unchecked. The call's Exchange is attached before its body is read,
so a refusal is recorded.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from tokenlens.addons import _request_form
from tokenlens.addons._flowstate import attach, exchange_of, lower_headers
from tokenlens.addons._gate import answer_refused, refuse_request
from tokenlens.addons._platforms import base_url_platform, redirect_server, start_platform_call
from tokenlens.addons._request_form import is_for_gateway
from tokenlens.app import AppDeps
from tokenlens.config import Settings
from tokenlens.exchange import (
    Exchange,
    max_tokens_from_request,
    model_from_request,
    wants_stream,
)
from tokenlens.platforms import proxy_platform
from tokenlens.providers import (
    API_METHODS,
    HEADER_PREFIX,
    PROXY_PREFIX,
    Intercept,
    UnknownProvider,
    Upstream,
    attribute_source,
    error_body,
    intercept_for,
    intercepts,
    is_api_request,
    redact_query,
    resolve_proxy_path,
    session_from_headers,
    tags_from_headers,
    upstreams_from,
)
from tokenlens.records import new_call_id
from tokenlens.request_body import BodyRefused, decode_content, read_request_body
from tokenlens.usage import endpoint_kind

log = logging.getLogger(__name__)

JSON = {"content-type": "application/json"}


class Ingress:
    name = "tokenlens.ingress"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        # The upstreams of the providers and the hosts HTTPS_PROXY mode intercepts for them (one tuple: read
        # together), rebuilt when the providers change.
        self._routes: tuple[dict[str, Upstream], list[Intercept]] = ({}, [])
        deps.settings.on_change(self._settings_changed)
        self._settings_changed(deps.settings.get(), frozenset({"providers"}))

    def _settings_changed(self, settings: Settings, updated: frozenset[str]) -> None:
        if "providers" in updated:
            upstreams = upstreams_from(settings)
            self._routes = (upstreams, intercepts(upstreams))

    def upstreams(self) -> dict[str, Upstream]:
        return self._routes[0]

    def intercepts(self) -> list[Intercept]:
        """`providers.intercepts` of the current upstreams, built once per change of the providers."""
        return self._routes[1]

    def load(self, loader: object) -> None:
        _request_form.install()

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """HTTPS_PROXY mode opens the upstream connection on CONNECT (before any request): for a provider's
        real host whose calls go to another upstream, connect to that upstream instead (TLS name included)."""
        server = data.server
        if server.address is None or redirect_server(server, self.deps.settings.get().platforms):
            return
        host, port = server.address
        for intercept in self.intercepts():
            upstream = intercept.upstream
            if (intercept.host, intercept.port) != (host.lower(), port):
                continue
            if (upstream.host.lower(), upstream.port) != (host.lower(), port):
                server.address = (upstream.host, upstream.port)
                server.sni = upstream.host
            return

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        try:
            self._route(flow)
        except Exception as exc:  # fail closed: a request this stage cannot read is never forwarded
            log.error("could not read request %s %s: %s", flow.request.method, flow.request.path[:200], exc)
            exchange = exchange_of(flow)
            message = f"TokenLens could not read this request ({type(exc).__name__}); it was not forwarded."
            if exchange is None:
                refuse_request(flow, 503, message)
            else:
                answer_refused(flow, exchange, 503, message, "request_unreadable")

    def _route(self, flow: http.HTTPFlow) -> None:
        """Access control (the stage before) has admitted the request: what is it?"""
        req = flow.request
        if is_for_gateway(flow, self.deps.settings.get().server):
            if not req.path.startswith(PROXY_PREFIX):
                req.scheme, req.data.host, req.data.port = "http", "127.0.0.1", self.deps.web_port
                return
            platform = base_url_platform(req.path, self.upstreams())
            if platform is not None:  # Azure OpenAI, Vertex AI, Bedrock
                platforms = self.deps.settings.get().platforms
                start_platform_call(flow, platform, "base_url", platforms, self._start_call)
                return
            self._base_url_call(flow)
            return
        intercept = intercept_for(req.host, req.port, req.path, self.intercepts())
        if intercept is None:
            platforms = self.deps.settings.get().platforms
            platform = proxy_platform(req.host, req.port, req.host_header or "", platforms)
            if platform is not None:  # a cloud platform's own host: its calls are metered as they are
                start_platform_call(flow, platform, "proxy", platforms, self._start_call)
            return  # otherwise someone else's traffic: passed through, not recorded
        upstream = intercept.upstream
        path = req.path
        if (intercept.host, intercept.port) != (upstream.host.lower(), upstream.port):
            path = upstream.base_path + path[len(intercept.base_path) :]  # a real host, sent to its upstream
        self._start_call(flow, upstream, path, None, "proxy")
        moved = path != req.path or (req.host.lower(), req.port) != (upstream.host.lower(), upstream.port)
        if flow.response is None and moved:
            req.data.scheme, req.data.host, req.data.port = (
                upstream.scheme.encode(),
                upstream.host,
                upstream.port,
            )
            req.data.path = path.encode()
            req.headers["host"] = upstream.host_header

    def _base_url_call(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        upstreams = self.upstreams()
        try:
            target = resolve_proxy_path(req.path, upstreams)
        except UnknownProvider as unknown:
            self._answer_unknown_provider(flow, unknown)
            return
        upstream = upstreams[target.provider]
        self._start_call(flow, upstream, target.path, target.tag, "base_url")
        if flow.response is not None:
            return  # refused while reading: nothing goes upstream
        # Set the parts directly: the `url` setter re-parses and re-derives Host for every call.
        req.data.scheme, req.data.host, req.data.port = upstream.scheme.encode(), upstream.host, upstream.port
        req.data.path = target.path.encode()
        req.headers["host"] = upstream.host_header

    def _start_call(
        self,
        flow: http.HTTPFlow,
        upstream: Upstream,
        path: str,
        tag: str | None,
        mode: str,
        kind: str | None = None,  # the endpoint kind when the caller read it from the path (platforms)
    ) -> None:
        """Attach the call's Exchange first (so a refusal is recorded), then read the body for the gates."""
        req = flow.request
        fields = req.headers.fields
        headers = lower_headers(req)
        endpoint = redact_query(path).partition("?")[0]
        kind = kind or endpoint_kind(upstream.format, endpoint)
        body = req.raw_content or b""
        exchange = Exchange(
            id=new_call_id(),
            started=req.timestamp_start or time.time(),
            provider=upstream.name,
            api=upstream.format,
            endpoint=endpoint,
            kind=kind,
            mode=mode,  # type: ignore[arg-type]
            source=attribute_source(headers, tag),
            tags=tags_from_headers(headers.items()),
            session_id=session_from_headers(headers),
            request_body=body,
        )
        attach(flow, exchange)
        upgrade = headers.get("upgrade", "").lower() == "websocket"
        if any(name.startswith(HEADER_PREFIX) for name in headers):
            prefix = HEADER_PREFIX.encode()
            req.headers.fields = tuple((k, v) for k, v in fields if not k.lower().startswith(prefix))
        if not is_api_request(req.method, path, upgrade, kind):
            exchange.is_call = False  # forwarded as it is, counted apart by the recorder, never a call
            method_ok = req.method.upper() in API_METHODS
            exchange.details["passthrough"] = "websocket" if upgrade else "path" if method_ok else "method"
            return
        try:
            content = decode_content(body, headers.get("content-encoding", ""))
            read = read_request_body(content) if body else None
        except BodyRefused as refused:
            answer_refused(flow, exchange, 400, f"TokenLens: {refused}.", refused.code)
            return
        parsed = read.json if read is not None else None
        exchange.request_json = parsed
        exchange.request_text = read.text if read is not None else None
        exchange.requested_model = exchange.model = model_from_request(upstream.format, endpoint, parsed)
        exchange.stream_requested = wants_stream(kind, parsed)
        exchange.max_tokens = max_tokens_from_request(upstream.format, parsed)

    def _answer_unknown_provider(self, flow: http.HTTPFlow, unknown: UnknownProvider) -> None:
        """An unknown provider name gets a 404 in OpenAI's format (the most common client), naming the known
        ones; it is counted apart (`unknown_provider`), not recorded as a call."""
        req = flow.request
        exchange = Exchange(
            id=new_call_id(),
            started=req.timestamp_start or time.time(),
            provider=unknown.name or "unknown",
            api="openai",
            endpoint=redact_query(req.path).partition("?")[0],
            kind="other",
            mode="base_url",
            source=attribute_source(req.headers, None),
            tags=tags_from_headers(req.headers.items()),
            request_body=req.raw_content or b"",
            error=str(unknown),
            is_call=False,  # no provider behind it: answered here, counted apart, not a call
        )
        exchange.details["passthrough"] = "unknown_provider"
        attach(flow, exchange)
        message = f"TokenLens: {unknown}. Use /proxy/<provider>/... with one of them."
        flow.response = http.Response.make(404, error_body("openai", 404, message, "unknown_provider"), JSON)
