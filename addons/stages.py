"""Pipeline stages whose behaviour later issues fill in; each is a named place in the pipeline order now.

They have no hooks yet, so they cost nothing on the request path.
"""

from __future__ import annotations

from tokenlens.app import AppDeps


class _Stage:
    name = "tokenlens.stage"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps


class BudgetCheck(_Stage):
    """1. Global daily/monthly spend caps with in-flight reservations (issue: gateway controls)."""

    name = "tokenlens.budget"


class QuotaCheck(_Stage):
    """2. Kill switches, per-source and per-model caps (issue: gateway controls)."""

    name = "tokenlens.quota"


class ModelRouter(_Stage):
    """3. Aliases, weighted choice, latency groups (issue: routing)."""

    name = "tokenlens.routing"


class RequestGuardrails(_Stage):
    """4. PII, injection and custom rules on requests (issue: guardrails)."""

    name = "tokenlens.request_guardrails"


class WasteDetector(_Stage):
    """5. Whitespace bloat, filler, repeated instructions, empty messages (issue: token intelligence)."""

    name = "tokenlens.waste"


class TokenHeatmap(_Stage):
    """6. System / tools / context / history / query split of the input (issue: token intelligence)."""

    name = "tokenlens.heatmap"


class DedupCache(_Stage):
    """7. Answers an identical recent request from the TTL cache (issue: routing and caching)."""

    name = "tokenlens.dedup"


class ResponseGuardrails(_Stage):
    """9. PII in the model's output, streamed or not (issue: guardrails)."""

    name = "tokenlens.response_guardrails"
