"""Addon tests: mitmproxy's taddons/tflow helpers with real TokenLens parts (a SQLite store in tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.deps import app_deps
from mitm_helpers import WEB_PORT
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[AppDeps]:
    settings = parse_settings(
        {
            "providers": {
                "openai": {"upstream": "https://api.openai.com"},
                "ollama": {"upstream": "http://localhost:11434"},
            }
        }
    )
    with app_deps(tmp_path, settings, prepare=None, web_port=WEB_PORT) as made:
        yield made
