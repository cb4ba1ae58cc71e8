"""The cloud platforms' stage (Azure OpenAI, Vertex AI, Bedrock), right before Upstream, after routing and
redaction; the logic is in tokenlens.platforms, the ingress side in `_platforms`.

- A request the client signed (AWS SigV4, HTTPS_PROXY mode) goes out byte for byte: if an earlier stage changed
  anything the signature covers (routing, redaction), it is refused with a clear message.
- Base-URL calls without client credentials are signed here (Bedrock, botocore's credential chain) or get a
  Vertex token (google-auth default credentials); credentials are resolved in a thread, off the event loop.
- Bedrock's event-stream answers are tapped chunk by chunk (forwarded untouched, metered from a copy).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from mitmproxy import http

from tokenlens.addons._flowstate import exchange_of, lower_headers, pending_call
from tokenlens.addons._platforms import refuse_call, signed_snapshot
from tokenlens.app import AppDeps
from tokenlens.encoding import stream_decoder
from tokenlens.exchange import Exchange
from tokenlens.platforms import bedrock_error, bedrock_region, signed_request_changed_message
from tokenlens.platforms.auth import AwsSigner, CredentialsMissing, VertexTokens
from tokenlens.platforms.eventstream import CONTENT_TYPE as EVENT_STREAM
from tokenlens.stream_taps import StreamTap

log = logging.getLogger(__name__)


class PlatformAuth:
    name = "tokenlens.platform_auth"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self.signer = AwsSigner()
        self.tokens = VertexTokens()

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        exchange = pending_call(flow)
        state = exchange.platform if exchange is not None else None
        if exchange is None or state is None:
            return None
        if state.signature is not None:
            if (
                state.snapshot is not None
                and signed_snapshot(flow.request, state.signature) != state.snapshot
            ):
                log.warning("refused call %s: a stage changed a client-signed request", exchange.id)
                refuse_call(
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
            refuse_call(
                flow, 503, "TokenLens: set platforms.bedrock.region to sign Bedrock calls.", "no_region"
            )
            return
        try:
            credentials = await asyncio.to_thread(self.signer.credentials)
        except (CredentialsMissing, Exception) as exc:
            log.error("no AWS credentials to sign call %s: %s", exchange.id, type(exc).__name__)
            refuse_call(flow, 503, f"TokenLens could not sign this Bedrock call: {exc}", "no_credentials")
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
            refuse_call(
                flow, 503, f"TokenLens could not authenticate this Vertex AI call: {exc}", "no_credentials"
            )
            return
        if flow.response is None and flow.error is None:
            flow.request.headers["authorization"] = f"Bearer {token}"

    def response(self, flow: http.HTTPFlow) -> None:
        """A Bedrock call the gateway answered itself (refused by a gate) gets Bedrock's error format."""
        exchange = exchange_of(flow)
        state = exchange.platform if exchange is not None else None
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
        if exchange is None or response is None or exchange.outcome is not None or exchange.platform is None:
            return
        if response.status_code >= 300 or not response.headers.get("content-type", "").startswith(
            EVENT_STREAM
        ):
            return
        exchange.streamed = True
        response.stream = StreamTap(exchange, stream_decoder(response.headers.get("content-encoding")))
