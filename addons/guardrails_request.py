"""4. Request guardrails: PII, injection and custom rules; warn, block (400) or redact.

Not filled in yet: the stage has no hooks, so it costs nothing on the request path.
"""

from __future__ import annotations

from tokenlens.app import AppDeps


class RequestGuardrails:
    name = "tokenlens.request_guardrails"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
