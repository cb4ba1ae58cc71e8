"""Web fixtures: a real SQLite store in tmp_path, the Flask app and its test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tokenlens.app import AppDeps, SettingsHolder
from tokenlens.bus import EventBus
from tokenlens.config import load_settings
from tokenlens.records import CallRecord
from tokenlens.store import RecordWriter, open_store
from tokenlens.web import create_app


@pytest.fixture
def web_deps(tmp_path: Path) -> Iterator[AppDeps]:
    """Deps whose settings come from `tmp_path/config.yaml` (write it before asking for this fixture)."""
    config = tmp_path / "config.yaml"
    store = open_store(None, tmp_path)
    writer: RecordWriter[CallRecord] = RecordWriter(store, lambda r: r)
    deps = AppDeps(
        settings=SettingsHolder(load_settings(config)),
        store=store,
        writer=writer,
        bus=EventBus(),
        home=tmp_path,
        config_path=config,
    )
    yield deps
    writer.stop()
    store.close()


@pytest.fixture
def web_app(web_deps: AppDeps) -> Flask:
    return create_app(web_deps, {"TESTING": True})


@pytest.fixture
def web_client(web_app: Flask) -> FlaskClient:
    return web_app.test_client()
