from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from harness.deps import app_deps
from tokenlens.access import same_origin, split_host
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.web import create_app

IMPORT_LINE = (
    b'{"ts": 1790000000, "provider": "openai", "model": "m", "input_tokens": 1, "output_tokens": 1}\n'
)


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[AppDeps]:
    settings = parse_settings({"server": {"allowed_hosts": ["tokenlens.internal", ".corp.example"]}})
    with app_deps(tmp_path, settings) as made:
        yield made


@pytest.fixture
def client(deps: AppDeps) -> FlaskClient:
    return create_app(deps, {"TESTING": True}).test_client()


def set_server(deps: AppDeps, **changes: Any) -> None:
    current = deps.settings.get()
    deps.settings.replace(dataclasses.replace(current, server=dataclasses.replace(current.server, **changes)))


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8420",
        "LOCALHOST:8420",
        "127.0.0.1",
        "127.0.0.1:8421",
        "127.9.8.7:80",
        "[::1]:8420",
        "[::1]",
        "tokenlens.internal:8420",
        "dash.corp.example",
        "corp.example",
    ],
)
def test_allowed_hosts(client: FlaskClient, host: str) -> None:
    assert client.get("/api/calls", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8420", "localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.5:8420", ""],
)
def test_foreign_host_is_refused(client: FlaskClient, host: str) -> None:
    for path in ("/api/calls", "/", "/api/status", "/healthz"):
        response = client.get(path, headers={"Host": host})
        assert response.status_code == 403, path
        assert "error" in response.get_json()


def test_configured_server_host_is_allowed(client: FlaskClient, deps: AppDeps) -> None:
    assert client.get("/healthz", headers={"Host": "gateway.lan:8420"}).status_code == 403
    set_server(deps, host="gateway.lan", api_token="t0ken")
    assert client.get("/healthz", headers={"Host": "gateway.lan:8420"}).status_code == 200


def test_cross_site_post_is_refused(client: FlaskClient) -> None:
    headers = {"Host": "localhost:8420", "Content-Type": "application/x-ndjson"}
    evil = client.post("/api/import", data=IMPORT_LINE, headers={**headers, "Origin": "http://evil.example"})
    assert evil.status_code == 403 and "error" in evil.get_json()
    other_port = client.post(
        "/api/import", data=IMPORT_LINE, headers={**headers, "Origin": "http://localhost:3000"}
    )
    assert other_port.status_code == 403
    null = client.post("/api/import", data=IMPORT_LINE, headers={**headers, "Origin": "null"})
    assert null.status_code == 403
    same = client.post(
        "/api/import", data=IMPORT_LINE, headers={**headers, "Origin": "http://localhost:8420"}
    )
    assert same.status_code == 200 and same.get_json()["imported"] == 1
    loopback_alias = client.post(
        "/api/import", data=IMPORT_LINE, headers={**headers, "Origin": "http://127.0.0.1:8420"}
    )
    assert loopback_alias.status_code == 200
    no_origin = client.post("/api/import", data=IMPORT_LINE, headers=headers)  # curl, scripts, the CLI
    assert no_origin.status_code == 200


def test_cross_site_get_is_not_refused_but_websocket_handshake_is(client: FlaskClient) -> None:
    headers = {"Host": "localhost:8420", "Origin": "http://evil.example"}
    assert (
        client.get("/api/calls", headers=headers).status_code == 200
    )  # the browser cannot read it (no CORS)
    upgrade = {**headers, "Upgrade": "websocket", "Connection": "Upgrade"}
    assert client.get("/api/live", headers=upgrade).status_code == 403


def test_bearer_token_when_not_loopback(client: FlaskClient, deps: AppDeps) -> None:
    set_server(deps, host="0.0.0.0", api_token="s3cret-token")
    host = {"Host": "tokenlens.internal:8420"}
    assert client.get("/healthz", headers=host).status_code == 200
    missing = client.get("/api/calls", headers=host)
    assert missing.status_code == 401 and "error" in missing.get_json()
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/api/calls", headers={**host, "Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = client.get("/api/calls", headers={**host, "Authorization": "Basic s3cret-token"})
    assert basic.status_code == 401
    good = {**host, "Authorization": "Bearer s3cret-token"}
    assert client.get("/api/calls", headers=good).status_code == 200
    assert client.get("/", headers=good).status_code == 200
    assert client.post("/api/import", data=IMPORT_LINE, headers=good).status_code == 200
    # A foreign Host is refused before the token is even looked at.
    assert client.get("/api/calls", headers={**good, "Host": "evil.example"}).status_code == 403
    # Back to loopback at run time: no token needed any more.
    set_server(deps, host="127.0.0.1")
    assert client.get("/api/calls", headers=host).status_code == 200


def test_split_host() -> None:
    assert split_host("LocalHost:8420") == ("localhost", 8420)
    assert split_host("[::1]:8420") == ("::1", 8420)
    assert split_host("::1") == ("::1", None)
    assert split_host("example.com.") == ("example.com", None)


def test_same_origin() -> None:
    assert same_origin("http://localhost:8420", "localhost:8420", "http")
    assert same_origin("http://localhost", "127.0.0.1:80", "http")
    assert not same_origin("https://localhost:8420", "localhost:8421", "http")
    assert not same_origin("http://evil.example:8420", "localhost:8420", "http")
    assert not same_origin("file://", "localhost:8420", "http")


def csp_directives(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name.lower()] = values
    return directives


PAGES = ("/", "/live", "/sources", "/models", "/insights", "/latency", "/settings", "/calls/abc")


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/", {}),
        ("GET", "/settings", {}),
        ("GET", "/api/calls", {}),
        ("GET", "/api/settings/budget", {}),
        ("GET", "/metrics", {}),
        ("GET", "/healthz", {}),
        ("GET", "/static/css/app.css", {}),
        ("GET", "/api/no-such-thing", {}),
        ("GET", "/", {"Host": "evil.example"}),
        ("PUT", "/api/settings/budget", {"Origin": "http://evil.example"}),
    ],
)
def test_every_answer_forbids_framing_and_foreign_content(
    client: FlaskClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = client.open(path, method=method, headers={"Host": "localhost:8420", **headers})
    csp = csp_directives(response.headers.get("Content-Security-Policy", "default-src *"))
    assert csp.get("frame-ancestors") == ["'none'"]
    assert csp.get("script-src") == ["'self'"]
    assert csp.get("style-src") == ["'self'"]
    assert csp.get("object-src") == ["'none'"]
    assert csp.get("base-uri") == ["'none'"]
    assert csp.get("default-src") == ["'none'"]
    assert response.headers.get("X-Frame-Options") == "DENY"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Referrer-Policy") == "no-referrer"


class InlineFinder(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts, style blocks and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name.lower(): value for name, value in attrs}
        if tag == "script" and not names.get("src"):
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> block")
        for name, value in names.items():
            if name == "style" or name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if value and value.strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:...>")


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_nothing_inline(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers={"Host": "localhost:8420"})
    assert response.status_code == 200
    finder = InlineFinder()
    finder.feed(response.get_data(as_text=True))
    assert finder.found == []
    for source in re.findall(r'<script[^>]* src="([^"]+)"', response.get_data(as_text=True)):
        assert source.startswith("/static/")
        assert client.get(source, headers={"Host": "localhost:8420"}).status_code == 200
