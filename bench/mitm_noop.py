"""The "bare mitmdump" of bench/gateway.py: an addon that does nothing, except let streams stream.

Without `response.stream`, mitmproxy buffers a whole response before sending it on, so a server-sent-events
answer would arrive in one piece at the end; TokenLens streams them, so the baseline must too.

    mitmdump -q --mode reverse:http://127.0.0.1:SIMPORT@PORT -s bench/mitm_noop.py
"""

from __future__ import annotations

from mitmproxy import http


class StreamEventStreams:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and flow.response.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            flow.response.stream = True


addons = [StreamEventStreams()]
