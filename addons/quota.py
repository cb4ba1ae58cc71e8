"""2. Quota check: kill switches, per-source spend and call caps, per-model caps (SPEC 6, 8).

Not filled in yet: the stage has no hooks, so it costs nothing on the request path.
"""

from __future__ import annotations

from tokenlens.addons.routing import ModelRouter
from tokenlens.app import AppDeps


class QuotaCheck:
    name = "tokenlens.quota"

    def __init__(self, deps: AppDeps, router: ModelRouter) -> None:
        self.deps = deps
        self.router = router  # router.decide(flow): the model the call will use, before routing runs
