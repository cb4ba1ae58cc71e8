"""9. Response guardrails: PII in the model's output, streamed or not.

Not filled in yet: the stage has no hooks, so it costs nothing on the request path.
"""

from __future__ import annotations

from tokenlens.app import AppDeps


class ResponseGuardrails:
    name = "tokenlens.response_guardrails"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
