"""7. Dedup: answer from the TTL cache when an identical request was answered recently.

Not filled in yet: the stage has no hooks, so it costs nothing on the request path.
"""

from __future__ import annotations

from tokenlens.app import AppDeps


class DedupCache:
    name = "tokenlens.dedup"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
