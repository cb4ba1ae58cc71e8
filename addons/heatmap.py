"""6. Token heatmap: system / tools / context / history / query split of the input.

Not filled in yet: the stage has no hooks, so it costs nothing on the request path.
"""

from __future__ import annotations

from tokenlens.app import AppDeps


class TokenHeatmap:
    name = "tokenlens.heatmap"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
