"""Broadcast (pipeline stage 11): each recorded call goes to the live feed once it is written.

The writer thread calls `on_written` after a batch is committed; publishing never blocks. Alerts and webhooks
(issue: cost intelligence) hook in here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tokenlens.bus import EventBus
from tokenlens.records import CallRecord

log = logging.getLogger(__name__)


class Broadcaster:
    name = "tokenlens.broadcast"

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.listeners: list[Callable[[Sequence[CallRecord]], None]] = []

    def on_written(self, records: Sequence[CallRecord]) -> None:
        for listener in self.listeners:
            try:
                listener(records)
            except Exception:
                log.exception("record listener %r failed", listener)
        publish = self.bus.publish_lazy  # the record's dict is built only for a subscriber that wants it
        for record in records:
            publish("block" if record.outcome == "blocked" else "call", record.to_dict)
