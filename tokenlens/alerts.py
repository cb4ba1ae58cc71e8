"""The cost watcher: daily cost alerts, new anomalies and the Sunday digest, published on the event bus.

A background thread checks every `interval` seconds and after new calls, at most every `min_gap` seconds (`notify`
is a record listener: it only sets an event). A check holds the gateway's interpreter for a few milliseconds (2.4-4.5
ms of its 12-34 ms under the benchmark's load), which the proxy's event loop then waits for; the alerts are about
days, so under load it runs every 10 s, not after each batch. Each check, from the rollups:
- `alert`: today's spend (configured time zone) reached `alerts.daily_cost_threshold`: once per day;
- `anomaly`: each anomaly of yesterday or today (`tokenlens.analytics.anomalies`) not published before;
- `digest`: on Sunday (local time), the weekly digest, once that day.
What was published is kept in `$TOKENLENS_HOME/cost-watch.json`, so a restart does not repeat it.
Webhooks subscribe to the bus (`tokenlens.webhooks`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenlens import analytics
from tokenlens.config import Settings, resolve_timezone
from tokenlens.records import SettledFacts
from tokenlens.store.queries import PricerLike, day_start
from tokenlens.store.reads import usage_sums

if TYPE_CHECKING:
    from tokenlens.bus import EventBus
    from tokenlens.config import SettingsHolder
    from tokenlens.store import Store

log = logging.getLogger(__name__)

STATE_FILE = "cost-watch.json"
SUNDAY = 6


def pricer_of(settings: Settings) -> PricerLike:
    """The shared Pricer of the settings' overrides (`tokenlens.pricing.pricer_for`)."""
    from tokenlens.pricing import pricer_for

    return pricer_for(settings.pricing)


class CostWatcher:
    """Publishes `alert`, `anomaly` and `digest` events (see the module docstring)."""

    def __init__(
        self,
        settings: SettingsHolder,
        store: Store,
        bus: EventBus,
        home: Path,
        *,
        interval: float = 60.0,
        min_gap: float = 10.0,
        state_path: Path | None = None,
        pricer: Callable[[Settings], PricerLike] = pricer_of,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.interval = interval
        self.min_gap = min_gap
        self.state_path = state_path if state_path is not None else home / STATE_FILE
        self.pricer = pricer
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = self._load()

    # ------------------------------------------------------------------------------------------ state

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text("utf-8"))
            if isinstance(data, dict):
                return {
                    "alert_day": data.get("alert_day"),
                    "digest_day": data.get("digest_day"),
                    "anomalies": [str(k) for k in data.get("anomalies", [])],
                }
        except (OSError, ValueError):
            pass
        return {"alert_day": None, "digest_day": None, "anomalies": []}

    def _save(self) -> None:
        try:
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state), "utf-8")
            os.replace(tmp, self.state_path)
        except OSError:
            log.warning("could not save %s", self.state_path, exc_info=True)

    # ------------------------------------------------------------------------------------------ thread

    def notify(self, records: Sequence[SettledFacts]) -> None:
        """Record listener: ask for a check soon (never blocks)."""
        self._wake.set()

    def start(self) -> CostWatcher:
        self._thread = threading.Thread(target=self._run, name="tokenlens-cost-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.check()
            except Exception:
                log.exception("cost watcher check failed")
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopped.wait(self.min_gap):
                return

    # ------------------------------------------------------------------------------------------ checks

    def check(self, now: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Run every check once; publish and return the new events."""
        settings = self.settings.get()
        tz = resolve_timezone(settings.timezone)
        store = self.store
        current = time.time() if now is None else now
        today = datetime.fromtimestamp(current, tz).date()
        events: list[tuple[str, dict[str, Any]]] = []
        threshold = settings.alerts.daily_cost_threshold
        if threshold is not None and self.state["alert_day"] != today.isoformat():
            with store.connection():
                edges = [day_start(today, tz), day_start(today + timedelta(days=1), tz)]
                spent = usage_sums(store, edges)[0].get((), {}).get("cost_usd", 0.0)
            if spent >= threshold:
                events.append(
                    (
                        "alert",
                        {
                            "kind": "daily_cost_threshold",
                            "date": today.isoformat(),
                            "spent_usd": analytics.money(spent),
                            "threshold_usd": threshold,
                            "timezone": settings.timezone,
                        },
                    )
                )
                self.state["alert_day"] = today.isoformat()
        seen = set(self.state["anomalies"])
        for anomaly in analytics.anomalies(store, 2, tz, current)["anomalies"]:
            key = f"{anomaly['date']}|{anomaly['source'] or ''}|{anomaly['metric']}"
            if key not in seen:
                seen.add(key)
                events.append(("anomaly", anomaly))
        oldest = (today - timedelta(days=3)).isoformat()
        self.state["anomalies"] = sorted(k for k in seen if k.split("|", 1)[0] >= oldest)
        if today.weekday() == SUNDAY and self.state["digest_day"] != today.isoformat():
            digest = analytics.digest(store, tz, self.pricer(settings), settings.budgets.monthly_usd, current)
            events.append(("digest", digest))
            self.state["digest_day"] = today.isoformat()
        for event, data in events:
            self.bus.publish(event, data)
        if events:
            self._save()
        return events
