"""A hostile page cannot read or change TokenLens: every route of the app, walked from its URL map."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from harness.deps import app_deps
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.web import create_app

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
EVIL_ORIGINS = ["http://evil.example", "https://evil.example:8420", "null", "http://localhost.evil.example"]


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[AppDeps]:
    with app_deps(tmp_path, parse_settings({})) as made:
        yield made


@pytest.fixture
def app(deps: AppDeps) -> Flask:
    return create_app(deps, {"TESTING": True})


def concrete(rule: str) -> str:
    """A URL for a rule, with every variable part filled in."""
    return re.sub(r"<(?:[^:>]+:)?[^>]+>", "x1", rule)


def routes(app: Flask) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, concrete(rule.rule)))
    return out


def test_the_app_has_state_changing_routes_to_check(app: Flask) -> None:
    changing = [r for r in routes(app) if r[0] in STATE_CHANGING]
    assert len(changing) >= 10 and any(p.startswith("/api/config/") for _, p in changing)


def test_every_state_changing_route_refuses_another_origin(app: Flask) -> None:
    client = app.test_client()
    changing = [r for r in routes(app) if r[0] in STATE_CHANGING]
    for method, path in changing:
        for origin in EVIL_ORIGINS:
            response = client.open(path, method=method, json={}, headers={"Origin": origin})
            assert response.status_code == 403, (method, path, origin, response.status_code)


def test_every_route_refuses_a_rebound_host_name(app: Flask) -> None:
    client = app.test_client()
    for method, path in routes(app):
        for host in ("evil.example", "evil.example:8420", "127.0.0.1.evil.example", "localhost.evil.example"):
            response = client.open(path, method=method, json={}, headers={"Host": host})
            assert response.status_code == 403, (method, path, host)


def test_no_route_sends_permissive_cors_headers(app: Flask) -> None:
    client = app.test_client()
    for method, path in routes(app):
        for verb in (method, "OPTIONS"):
            headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": method}
            response = client.open(path, method=verb, headers=headers)
            allow = response.headers.get("Access-Control-Allow-Origin")
            assert allow is None, (verb, path, allow)
            assert "Access-Control-Allow-Credentials" not in response.headers


def test_with_a_non_loopback_bind_every_route_but_healthz_needs_the_token(app: Flask, deps: AppDeps) -> None:
    current = deps.settings.get()
    server = dataclasses.replace(current.server, host="192.0.2.2", api_token="s3cret-token")
    deps.settings.replace(dataclasses.replace(current, server=server))
    client: FlaskClient = app.test_client()
    for method, path in routes(app):
        response = client.open(path, method=method, json={}, headers={"Host": "192.0.2.2:8420"})
        expected = 200 if path == "/healthz" else 401
        assert response.status_code == expected, (method, path, response.status_code)
        wrong = client.open(
            path, method=method, json={}, headers={"Host": "192.0.2.2", "Authorization": "Bearer nope"}
        )
        assert wrong.status_code == expected, (method, path)
    good = {"Host": "192.0.2.2", "Authorization": "Bearer s3cret-token"}
    assert client.get("/api/calls", headers=good).status_code == 200
    cross = client.put("/api/config/budgets", json={}, headers={**good, "Origin": "http://evil.example"})
    assert cross.status_code == 403  # the token does not make a cross-site write acceptable


def test_the_websocket_handshake_checks_origin(app: Flask) -> None:
    client = app.test_client()
    ws_paths = [p for m, p in routes(app) if "live" in p]
    assert ws_paths
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    for path in ws_paths:
        for origin in EVIL_ORIGINS:
            response = client.get(
                path, headers={**upgrade, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": origin}
            )
            assert response.status_code == 403, (path, origin)
