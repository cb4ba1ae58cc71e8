"""Agent workflows: conversation and session turns, and the providers' rate-limit headers (docs/gateway.md and docs/analytics-api.md).

Runs right after the ingress so that every provider call, blocked or not, gets its conversation and turn.
The hooks only queue work for later: the request hook names the conversation inference (`tokenlens.sessions`,
a record analysis), the response hook defers the rate-limit headers of the answer with a salted hash of the
credential the request carried (`tokenlens.ratelimits`, the gateway's live book). The key itself is never kept.
"""

from __future__ import annotations

import functools

from mitmproxy import http

from tokenlens.addons._flowstate import exchange_of, pending_call
from tokenlens.analyses import CONVERSATION
from tokenlens.app import AppDeps
from tokenlens.ratelimits import (
    credential_hash,
    credential_header_fields,
    credential_of,
    load_salt,
    rate_limit_header_fields,
)


class AgentWorkflows:
    name = "tokenlens.workflows"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self.book = deps.rate_limits
        self.salt = load_salt(deps.home)

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None:
            return
        exchange.analyses.append(CONVERSATION)

    def response(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        response = flow.response
        if exchange is None or exchange.recorded or response is None or exchange.outcome is not None:
            return
        # Raw fields: mitmproxy's Headers mapping scans per key, which costs on every answer.
        headers = rate_limit_header_fields(response.headers.fields)
        if not headers and response.status_code != 429:
            return
        request = flow.request
        request_headers = credential_header_fields(request.headers.fields)
        credential = credential_hash(self.salt, credential_of(request_headers, request.path))
        exchange.on_recorded.append(functools.partial(self.book.record, credential, headers))
