"""What the gateway's parts share at run time: settings, store, writer, event bus."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tokenlens import __version__
from tokenlens.config import SettingsHolder

if TYPE_CHECKING:
    from tokenlens.bus import EventBus
    from tokenlens.config_sync import ConfigSync
    from tokenlens.controls import Ledger
    from tokenlens.latency import LatencyTracker
    from tokenlens.metrics import Metrics
    from tokenlens.ratelimits import RateLimitBook
    from tokenlens.store import Store
    from tokenlens.webhooks import WebhookDispatcher


class CallSink(Protocol):
    """Where the recorder hands finished calls (`tokenlens.store.RecordWriter` inline, or the spool thread of
    `tokenlens.store.spool` beside an analysis process): `submit` never blocks."""

    def submit(self, item: Any) -> None: ...

    @property
    def pending(self) -> int: ...

    def flush(self, timeout: float = 5) -> bool: ...

    def stop(self, timeout: float = 10) -> bool: ...


class PassthroughCounts:
    """Requests on provider routes that are not calls (docs/gateway.md): forwarded and answered as they are, counted
    here by reason (`method`: HEAD/OPTIONS; `path`: outside the API; `websocket`: an upgrade; `not_found`: a
    path the provider does not serve; `unknown_provider`: no such provider, answered 404 by the gateway), shown by `/api/status` and `/metrics`, never recorded as calls."""

    def __init__(self) -> None:
        self.by_reason: dict[str, int] = {}

    def add(self, reason: str) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


@dataclass(frozen=True)
class AppDeps:
    """Everything the addons and the web app use, built once by `tokenlens.runtime.build_runtime`."""

    settings: SettingsHolder
    store: Store
    writer: CallSink
    bus: EventBus
    home: Path
    config_path: Path
    ledger: Ledger  # budgets and quotas: spend and reservations (shared through the store when `shared`)
    rate_limits: RateLimitBook  # provider rate-limit headroom per credential
    latency: LatencyTracker  # moving averages the latency routing groups read
    metrics: Metrics  # the Prometheus registry fed by committed records
    webhooks: WebhookDispatcher
    config_sync: ConfigSync | None  # configuration sections shared through a PostgreSQL store
    passthrough: PassthroughCounts
    shared: bool  # several gateways share the store (PostgreSQL, or `daemon --workers N`)
    web_port: int  # the internal loopback port of the Flask app (0: none, in tests without it)
    rng: random.Random  # the weighted routing choices
    started_at: float = field(default_factory=time.time)
    version: str = __version__
