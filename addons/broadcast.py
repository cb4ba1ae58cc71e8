"""Broadcast (pipeline stage 11): each recorded call goes to the live feed once it is written.

The writer thread calls `on_written` after a batch is committed; publishing never blocks. Alerts and webhooks
(issue: cost intelligence) hook in here.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenlens.bus import EventBus
from tokenlens.records import CallRecord


class Broadcaster:
    name = "tokenlens.broadcast"

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def on_written(self, records: Sequence[CallRecord]) -> None:
        for record in records:
            self.bus.publish("block" if record.outcome == "blocked" else "call", record.to_dict())
