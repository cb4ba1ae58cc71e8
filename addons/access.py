"""Access control (before the ingress): who may use the gateway, and what never goes through it (docs/analytics-api.md).

- A client whose address `server.allowed_clients` does not allow is disconnected (loopback always may).
- A request sent to this socket with a `Host` that names another host is refused (403): a DNS-rebinding or
  forwarding attempt, never forwarded.
- `/proxy/...` refuses a request a web page on another site made (a foreign or `null` `Origin`,
  `Sec-Fetch-Site: cross-site|same-site`).
- With a non-loopback `server.host`, proxy traffic needs `server.api_token` (`X-TokenLens-Token`, or
  `Proxy-Authorization` Bearer or Basic): 401 on `/proxy/...`, 407 for proxy requests and CONNECTs. The
  credential is removed before anything goes upstream (it is the gateway's, not the provider's).
The checks are `tokenlens.access`; an exception here refuses the request (the pipeline's `GATES`).
"""

from __future__ import annotations

import logging
import weakref

from mitmproxy import connection, http

from tokenlens.access import (
    TOKEN_HEADER,
    client_allowed,
    cross_site_browser_request,
    host_allowed,
    token_presented,
    token_required,
)
from tokenlens.addons._flowstate import lower_headers
from tokenlens.addons._gate import refuse_request
from tokenlens.addons._request_form import is_absolute_form, is_for_gateway
from tokenlens.app import AppDeps
from tokenlens.providers import PROXY_PREFIX

log = logging.getLogger(__name__)

PROXY_AUTHENTICATE = {"proxy-authenticate": 'Basic realm="tokenlens"'}


class AccessControl:
    name = "tokenlens.access"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self._authorized: weakref.WeakSet[connection.Client] = weakref.WeakSet()  # CONNECTs with the token

    def client_connected(self, client: connection.Client) -> None:
        """Disconnect a client that `server.allowed_clients` does not allow (loopback clients always are)."""
        peer = client.peername[0] if client.peername else ""
        if not client_allowed(str(peer), self.deps.settings.get().server.allowed_clients):
            log.warning("client %s is not in server.allowed_clients; connection refused", peer)
            client.error = "Connection refused: client not in server.allowed_clients."

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A CONNECT (HTTPS_PROXY mode) needs the token when the gateway listens beyond loopback."""
        server = self.deps.settings.get().server
        if not token_required(server.host):
            return
        if token_presented(lower_headers(flow.request), server.api_token):
            self._authorized.add(flow.client_conn)
            return
        refuse_request(flow, 407, "proxy authentication required", PROXY_AUTHENTICATE)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        req = flow.request
        server = self.deps.settings.get().server
        if not flow.client_conn.tls and not is_absolute_form(req) and not host_allowed(req.host, server):
            refuse_request(flow, 403, "Host not allowed")  # sent to this socket, naming another host
            return
        if is_for_gateway(flow, server):
            if not req.path.startswith(PROXY_PREFIX):
                return  # the dashboard and its API, which protect themselves (web/protection.py)
            headers = lower_headers(req)
            if cross_site_browser_request(headers, req.host_header or ""):
                log.warning("refused a cross-site browser request to %s", req.path[:200])
                refuse_request(flow, 403, "cross-site browser requests to /proxy/ are refused")
                return
            if token_required(server.host) and not token_presented(headers, server.api_token):
                refuse_request(flow, 401, f"send server.api_token as Proxy-Authorization or {TOKEN_HEADER}")
                return
        elif token_required(server.host) and not (
            flow.client_conn in self._authorized or token_presented(lower_headers(req), server.api_token)
        ):
            refuse_request(flow, 407, "proxy authentication required", PROXY_AUTHENTICATE)
            return
        req.headers.pop("proxy-authorization", None)  # the gateway's credential, not the provider's
