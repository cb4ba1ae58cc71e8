"""Web fixtures: a real SQLite store in tmp_path, the Flask app and its test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from harness.deps import app_deps
from tokenlens.app import AppDeps
from tokenlens.config import load_settings
from tokenlens.web import create_app


@pytest.fixture
def web_deps(tmp_path: Path) -> Iterator[AppDeps]:
    """Deps whose settings come from `tmp_path/config.yaml` (write it before asking for this fixture)."""
    with app_deps(tmp_path, load_settings(tmp_path / "config.yaml")) as deps:
        yield deps


@pytest.fixture
def web_app(web_deps: AppDeps) -> Flask:
    return create_app(web_deps, {"TESTING": True})


@pytest.fixture
def web_client(web_app: Flask) -> FlaskClient:
    return web_app.test_client()
