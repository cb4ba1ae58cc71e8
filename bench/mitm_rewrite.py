"""Regular-mode baseline of bench/gateway.py: the gateway's base-URL routing and nothing else.

`/proxy/openai/<rest>` addressed to the proxy itself goes to `<bench_upstream>/<rest>`, as TokenLens'
Ingress does (docs/gateway.md); event streams are streamed. Nothing is parsed, metered or recorded.

    mitmdump -q --mode regular@PORT -s bench/mitm_rewrite.py --set bench_upstream=http://127.0.0.1:SIMPORT
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mitmproxy import ctx, http

PREFIX = "/proxy/openai"


class BaseUrlRewrite:
    def __init__(self) -> None:
        self.scheme, self.host, self.port = "http", "127.0.0.1", 80

    def load(self, loader: Any) -> None:
        loader.add_option("bench_upstream", str, "", "Upstream base URL for /proxy/openai/...")

    def configure(self, updated: set[str]) -> None:
        if "bench_upstream" in updated and ctx.options.bench_upstream:
            url = urlsplit(ctx.options.bench_upstream)
            self.scheme, self.host = url.scheme, url.hostname or "127.0.0.1"
            self.port = url.port or (443 if url.scheme == "https" else 80)

    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if req.path.startswith(PREFIX + "/"):
            req.scheme, req.host, req.port = self.scheme, self.host, self.port
            req.path = req.path[len(PREFIX) :]

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and flow.response.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            flow.response.stream = True


addons = [BaseUrlRewrite()]
