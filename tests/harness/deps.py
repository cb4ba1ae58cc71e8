"""AppDeps on a real SQLite store, for the web and CLI tests that run the app without the proxy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tokenlens.app import AppDeps, SettingsHolder
from tokenlens.bus import EventBus
from tokenlens.config import Settings
from tokenlens.records import CallRecord
from tokenlens.store import RecordWriter, open_store


@contextlib.contextmanager
def app_deps(home: Path, settings: Settings) -> Iterator[AppDeps]:
    """Deps with `settings`, the store `home/tokenlens.db` and its writer (stopped, and the store closed, after)."""
    store = open_store(None, home)
    writer: RecordWriter[CallRecord] = RecordWriter(store, lambda r: r)
    try:
        yield AppDeps(
            settings=SettingsHolder(settings),
            store=store,
            writer=writer,
            bus=EventBus(),
            home=home,
            config_path=home / "config.yaml",
        )
    finally:
        writer.stop()
        store.close()
