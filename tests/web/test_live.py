from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import simple_websocket
from werkzeug.serving import make_server

from harness.deps import app_deps
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.records import CallRecord
from tokenlens.web import create_app


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[AppDeps, int]]:
    stack = contextlib.ExitStack()
    deps = stack.enter_context(app_deps(tmp_path, parse_settings({})))  # records go on the feed once written
    app = create_app(deps)
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 1}
    web = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    yield deps, web.server_port
    web.shutdown()
    thread.join(5)
    stack.close()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_live_feed_receives_published_call(server: tuple[AppDeps, int]) -> None:
    deps, port = server
    ws = simple_websocket.Client.connect(f"ws://127.0.0.1:{port}/api/live")
    try:
        assert wait_for(lambda: deps.bus.subscriber_count == 1)
        record = CallRecord(
            id="live-1",
            ts=1_790_000_000.5,
            provider="openai",
            endpoint="/v1/chat/completions",
            model="gpt-4o",
        )
        deps.writer.submit(record)  # written, then published by on_written
        message = json.loads(ws.receive(timeout=5))
        assert message == {"type": "call", "data": record.to_dict()}
        deps.bus.publish("alert", {"message": "daily threshold"})
        assert json.loads(ws.receive(timeout=5)) == {"type": "alert", "data": {"message": "daily threshold"}}
        ws.send("ignored by the server")
        deps.bus.publish("budget", {"scope": "global"})
        assert json.loads(ws.receive(timeout=5))["type"] == "budget"
    finally:
        ws.close()
    assert wait_for(lambda: deps.bus.subscriber_count == 0), "the subscription must end with the connection"


def test_dead_client_is_noticed(server: tuple[AppDeps, int]) -> None:
    deps, port = server
    ws = simple_websocket.Client.connect(f"ws://127.0.0.1:{port}/api/live")
    assert wait_for(lambda: deps.bus.subscriber_count == 1)
    ws.sock.close()  # vanish without a close frame
    assert wait_for(lambda: deps.bus.subscriber_count == 0, timeout=10)


def test_cross_site_websocket_is_refused(server: tuple[AppDeps, int]) -> None:
    _, port = server
    with pytest.raises(simple_websocket.ConnectionError):
        simple_websocket.Client.connect(
            f"ws://127.0.0.1:{port}/api/live", headers={"Origin": "http://evil.example"}
        )


def handshake_status(port: int, origin: str) -> int:
    """The status a browser-like WebSocket handshake (Host with its port, an Origin) gets from /api/live."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(
            (
                "GET /api/live HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: {origin}\r\n\r\n"
            ).encode()
        )
        status_line = conn.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://127.0.0.1:{port}", 101),  # the dashboard itself
        ("http://localhost:{port}", 101),  # the same gateway under its other loopback name
        ("http://127.0.0.1:{other}", 403),  # a page on another loopback port (same site, another origin)
        ("http://localhost:{other}", 403),
        ("http://evil.example", 403),
        ("null", 403),
    ],
)
def test_only_the_dashboards_own_origin_opens_the_feed(
    server: tuple[AppDeps, int], origin: str, status: int
) -> None:
    _, port = server
    assert handshake_status(port, origin.format(port=port, other=port + 1)) == status
