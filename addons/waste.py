"""5. Waste detection: whitespace bloat, polite filler, repeated instructions, empty messages.

Not filled in yet: the stage has no hooks, so it costs nothing on the request path.
"""

from __future__ import annotations

from tokenlens.app import AppDeps


class WasteDetector:
    name = "tokenlens.waste"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
