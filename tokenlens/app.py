"""What the gateway's parts share at run time: settings, store, writer, event bus."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tokenlens import __version__
from tokenlens.config import SettingsHolder

if TYPE_CHECKING:
    from tokenlens.bus import EventBus
    from tokenlens.config_sync import ConfigSync
    from tokenlens.controls import Ledger
    from tokenlens.metrics import Metrics
    from tokenlens.records import CallRecord
    from tokenlens.store import RecordWriter, Store
    from tokenlens.webhooks import WebhookDispatcher


class PassthroughCounts:
    """Requests on provider routes that are not calls (SPEC 5): forwarded and answered as they are, counted
    here by reason (`method`: HEAD/OPTIONS; `path`: outside the API; `websocket`: an upgrade; `not_found`: a
    path the provider does not serve; `unknown_provider`: no such provider, answered 404 by the gateway), shown by `/api/status` and `/metrics`, never recorded as calls."""

    def __init__(self) -> None:
        self.by_reason: dict[str, int] = {}

    def add(self, reason: str) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


@dataclass
class AppDeps:
    settings: SettingsHolder
    store: Store
    writer: RecordWriter
    bus: EventBus
    home: Path
    config_path: Path
    web_port: int = 0  # the internal loopback port of the Flask app, once it listens
    # Called by the writer thread with each committed batch, before it is broadcast (e.g. to settle budgets).
    record_listeners: list[Callable[[Sequence[CallRecord]], None]] = field(default_factory=list)
    ledger: Ledger | None = None  # budgets and quotas: spend and reservations (tokenlens.controls.ledger_for)
    started_at: float = field(default_factory=time.time)
    # Prometheus registry fed by committed records (made by the cost blueprint when None).
    metrics: Metrics | None = None
    # The webhook dispatcher the daemon runs (None in tests and tools without one).
    webhooks: WebhookDispatcher | None = None
    version: str = __version__
    # Several gateways share the store (PostgreSQL, or `daemon --workers N`): budgets use the shared ledger.
    shared: bool = False
    # Configuration sections shared through the store (PostgreSQL stores); None for a local store.
    config_sync: ConfigSync | None = None
    passthrough: PassthroughCounts = field(default_factory=PassthroughCounts)
