"""Configuration shared through the store (docs/storage.md): a section changed through any gateway's API is kept in the
`config_section` table with a version, and every gateway on the store applies newer versions within a second.

Each gateway's YAML file gives the initial values and its local settings (`server`, `storage`); a section in
the table overrides the file's (at start, on every poll, and after the file is reloaded).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from tokenlens.config import EDITABLE_SECTIONS, ConfigError, Settings, replace_section
from tokenlens.store.config_tables import ConfigTable

if TYPE_CHECKING:
    from tokenlens.config import SettingsHolder
    from tokenlens.store import Store

log = logging.getLogger(__name__)

POLL_S = 0.5


class ConfigSync:
    """Publishes this gateway's API changes to the store and applies the other gateways' changes."""

    def __init__(self, store: Store, settings: SettingsHolder, interval: float = POLL_S) -> None:
        self.store = store
        self.settings = settings
        self.interval = interval
        self._seen: dict[str, tuple[int, Any]] = {}  # section -> (version, data) applied here
        self.lock = threading.RLock()  # held while a section is published and applied here
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.table = ConfigTable(store)

    def publish(self, name: str, data: Any) -> int:
        """Keep a section changed through this gateway's API in the store; its new version (raises on a
        database error, before anything changed here)."""
        text = json.dumps(data, sort_keys=True)
        with self.lock:
            version = self.table.put(name, text, time.time())
            self._seen[name] = (version, data)
        return version

    def fetch(self) -> dict[str, tuple[int, Any]]:
        """Every section in the store: name -> (version, data)."""
        return {name: (version, json.loads(data)) for name, version, data in self.table.all()}

    def poll(self) -> list[str]:
        """Apply the sections whose version in the store is newer than the one applied here; their names."""
        applied: list[str] = []
        rows = self.fetch()
        with self.lock:
            current = self.settings.get()
            fresh = current
            for name, (version, data) in sorted(rows.items()):
                if name not in EDITABLE_SECTIONS:
                    continue
                seen = self._seen.get(name)
                if seen is not None and seen[0] >= version:
                    continue
                try:
                    fresh = replace_section(fresh, name, data)
                except ConfigError as problem:
                    log.error(
                        "shared configuration section %s (version %d) not applied: %s", name, version, problem
                    )
                self._seen[name] = (version, data)
                applied.append(name)
            if fresh is not current:
                self.settings.replace(fresh)
        if applied:
            log.info("configuration from the shared store applied: %s", ", ".join(applied))
        return applied

    def overlay(self, settings: Settings) -> Settings:
        """`settings` (e.g. just reloaded from the file) with the sections the store has given this gateway."""
        with self.lock:
            seen = dict(self._seen)
        for name, (_, data) in sorted(seen.items()):
            try:
                settings = replace_section(settings, name, data)
            except ConfigError as problem:
                log.error("shared configuration section %s not applied: %s", name, problem)
        return settings

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tokenlens-config-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as exc:
                log.warning("shared configuration not polled (%s: %s); retrying", type(exc).__name__, exc)
