"""The mitmproxy layer: one addon per pipeline stage, in the order of SPEC section 6."""

from __future__ import annotations

from tokenlens.addons.broadcast import Broadcaster
from tokenlens.addons.budget import BudgetCheck
from tokenlens.addons.config_watch import ConfigWatcher
from tokenlens.addons.dedup import DedupCache
from tokenlens.addons.guardrails_request import RequestGuardrails
from tokenlens.addons.guardrails_response import ResponseGuardrails
from tokenlens.addons.heatmap import TokenHeatmap
from tokenlens.addons.ingress import Ingress
from tokenlens.addons.quota import QuotaCheck
from tokenlens.addons.recorder import Recorder
from tokenlens.addons.routing import ModelRouter
from tokenlens.addons.upstream import Upstream
from tokenlens.addons.waste import WasteDetector
from tokenlens.addons.workflows import AgentWorkflows
from tokenlens.app import AppDeps


def pipeline(deps: AppDeps, broadcaster: Broadcaster) -> list[object]:
    """The stages in order. mitmproxy runs every hook through this list top to bottom."""
    router = ModelRouter(deps)  # decides once; the gates ask it which model a call will use
    return [
        ConfigWatcher(deps),  # keeps deps.settings current
        Ingress(deps),  # what is this request: provider call, dashboard, or someone else's traffic
        AgentWorkflows(deps),  # conversations, session turns, rate-limit headers (deferred analyses)
        BudgetCheck(deps, router),  # 1
        QuotaCheck(deps, router),  # 2
        router,  # 3
        RequestGuardrails(deps),  # 4
        WasteDetector(deps),  # 5
        TokenHeatmap(deps),  # 6
        DedupCache(deps),  # 7
        Upstream(),  # 8
        ResponseGuardrails(deps),  # 9
        Recorder(deps),  # 10
        broadcaster,  # 11 (fed by the writer thread once records are committed)
    ]


class TokenLens:
    """The parent addon: mitmproxy walks `.addons` recursively, keeping this order."""

    name = "tokenlens"

    def __init__(self, deps: AppDeps, broadcaster: Broadcaster) -> None:
        self.addons = pipeline(deps, broadcaster)
