"""Ingress: decides what a request is and prepares provider calls (SPEC 2 and 5).

- `/proxy/<provider>/...` addressed to the gateway: a base-URL provider call, rewritten to the upstream.
- Any other path addressed to the gateway: the dashboard and API, forwarded to the internal Flask port.
- A request to a configured provider host (explicit-proxy mode): a provider call as it is.
- Anything else: passed through untouched and unrecorded.
"""

from __future__ import annotations

import ipaddress
import logging
import time

from mitmproxy import connection, http

from tokenlens.addons._flowstate import attach
from tokenlens.app import AppDeps
from tokenlens.config import Settings
from tokenlens.exchange import (
    Exchange,
    max_tokens_from_request,
    model_from_request,
    parse_json_object,
    wants_stream,
)
from tokenlens.providers import (
    HEADER_PREFIX,
    PROXY_PREFIX,
    SESSION_HEADER,
    UnknownProvider,
    Upstream,
    attribute_source,
    error_body,
    redact_query,
    resolve_proxy_path,
    tags_from_headers,
    upstream_for_authority,
)
from tokenlens.records import new_call_id
from tokenlens.usage import endpoint_kind

log = logging.getLogger(__name__)

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def client_allowed(peer_host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a client address may use the gateway: loopback always, others when in `allowed` (IP networks)."""
    try:
        address = ipaddress.ip_address(peer_host.rsplit("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return True
    for entry in allowed:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def upstreams_from(settings: Settings) -> dict[str, Upstream]:
    return {name: Upstream.parse(name, p.upstream, p.format) for name, p in settings.providers.items()}


class Ingress:
    name = "tokenlens.ingress"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self._settings: Settings | None = None
        self._upstreams: dict[str, Upstream] = {}

    def upstreams(self) -> dict[str, Upstream]:
        settings = self.deps.settings.get()
        if settings is not self._settings:
            self._upstreams, self._settings = upstreams_from(settings), settings
        return self._upstreams

    def gateway_names(self) -> set[str]:
        server = self.deps.settings.get().server
        return {*LOCAL_NAMES, server.host.lower(), *(h.lower() for h in server.allowed_hosts)}

    def is_for_gateway(self, flow: http.HTTPFlow) -> bool:
        """Addressed to the gateway itself (base-URL clients, the dashboard), not proxied to another host."""
        req = flow.request
        if flow.client_conn.tls or not self.is_own_port(flow):
            return False
        host = req.host.lower()
        return host in self.gateway_names() or any(
            name.startswith(".") and host.endswith(name)
            for name in self.deps.settings.get().server.allowed_hosts
        )

    @staticmethod
    def is_own_port(flow: http.HTTPFlow) -> bool:
        req = flow.request
        own_port = flow.client_conn.sockname[1] if flow.client_conn.sockname else None
        if req.port == own_port:
            return True
        # Some clients (simple_websocket) send Host without the port, which mitmproxy reads as port 80.
        return req.port == 80 and ":" not in (req.host_header or "").rpartition("]")[2]

    def client_connected(self, client: connection.Client) -> None:
        """Disconnect a client that `server.allowed_clients` does not allow (loopback clients always are)."""
        peer = client.peername[0] if client.peername else ""
        if not client_allowed(str(peer), self.deps.settings.get().server.allowed_clients):
            log.warning("client %s is not in server.allowed_clients; connection refused", peer)
            client.error = "Connection refused: client not in server.allowed_clients."

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        req = flow.request
        upstreams = self.upstreams()
        if self.is_for_gateway(flow):
            if not req.path.startswith(PROXY_PREFIX):
                req.scheme, req.data.host, req.data.port = "http", "127.0.0.1", self.deps.web_port
                return
            try:
                target = resolve_proxy_path(req.path, upstreams)
            except UnknownProvider as unknown:
                self._answer_unknown_provider(flow, unknown)
                return
            upstream = upstreams[target.provider]
            # Set the parts directly: the `url` setter re-parses and re-derives Host for every call.
            req.data.scheme, req.data.host, req.data.port = (
                upstream.scheme.encode(),
                upstream.host,
                upstream.port,
            )
            req.data.path = target.path.encode()
            req.headers["host"] = upstream.host_header
            self._start_call(flow, upstream, target.tag, "base_url")
        elif (upstream_or_none := upstream_for_authority(req.host, req.port, upstreams)) is not None:
            self._start_call(flow, upstream_or_none, None, "proxy")
        elif (
            not flow.client_conn.tls
            and flow.client_conn.sockname
            and req.port == flow.client_conn.sockname[1]
        ):
            # A foreign Host on the gateway's own port: a DNS-rebinding attempt, not a proxy request.
            flow.response = http.Response.make(
                403, b'{"error": "Host not allowed"}', {"content-type": "application/json"}
            )

    def _start_call(self, flow: http.HTTPFlow, upstream: Upstream, tag: str | None, mode: str) -> None:
        req = flow.request
        fields = req.headers.fields
        # One pass over the raw header fields (mitmproxy's Headers lookups are per-key scans).
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in fields}
        endpoint = redact_query(req.path).partition("?")[0]
        kind = endpoint_kind(upstream.format, endpoint)
        body = req.raw_content or b""
        parsed = parse_json_object(req.get_content(strict=False) or b"") if body else None
        model = model_from_request(upstream.format, endpoint, parsed)
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
            session_id=headers.get(SESSION_HEADER) or None,
            request_body=body,
            request_json=parsed,
            requested_model=model,
            model=model,
            stream_requested=wants_stream(kind, parsed),
            max_tokens=max_tokens_from_request(upstream.format, parsed),
        )
        if any(name.startswith(HEADER_PREFIX) for name in headers):
            prefix = HEADER_PREFIX.encode()
            req.headers.fields = tuple((k, v) for k, v in fields if not k.lower().startswith(prefix))
        attach(flow, exchange)

    def _answer_unknown_provider(self, flow: http.HTTPFlow, unknown: UnknownProvider) -> None:
        """An unknown provider name gets a 404 in OpenAI's format (the most common client) and is recorded."""
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
        )
        attach(flow, exchange)
        message = f"TokenLens: {unknown}. Use /proxy/<provider>/... with one of them."
        flow.response = http.Response.make(
            404, error_body("openai", 404, message, "unknown_provider"), {"content-type": "application/json"}
        )
