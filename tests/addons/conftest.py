"""Addon tests: mitmproxy's taddons/tflow helpers with real TokenLens parts (a SQLite store in tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mitm_helpers import WEB_PORT
from tokenlens.addons.broadcast import Broadcaster
from tokenlens.app import AppDeps, SettingsHolder
from tokenlens.bus import EventBus
from tokenlens.config import parse_settings
from tokenlens.metering import RecordBuilder
from tokenlens.store import RecordWriter, open_store


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[AppDeps]:
    settings = SettingsHolder(
        parse_settings(
            {
                "providers": {
                    "openai": {"upstream": "https://api.openai.com"},
                    "ollama": {"upstream": "http://localhost:11434"},
                }
            }
        )
    )
    store = open_store(None, tmp_path)
    bus = EventBus()
    broadcaster = Broadcaster(bus)
    writer = RecordWriter(store, RecordBuilder(settings), broadcaster.on_written)
    made = AppDeps(
        settings=settings,
        store=store,
        writer=writer,
        bus=bus,
        home=tmp_path,
        config_path=tmp_path / "config.yaml",
        web_port=WEB_PORT,
        record_listeners=broadcaster.listeners,
    )
    yield made
    writer.stop()
    store.close()
