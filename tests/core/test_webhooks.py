"""Webhook delivery against real HTTP receivers on 127.0.0.1: signature, retries, isolation from a hang."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tokenlens.bus import EventBus
from tokenlens.config import Webhook
from tokenlens.webhooks import WebhookDispatcher


class Receiver:
    """A local HTTP server recording each request; answers `statuses` in turn (then 200), or hangs."""

    def __init__(self, statuses: list[int] | None = None, hang: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        self.hang = hang
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append({"headers": dict(self.headers), "body": body})
                if outer.hang:
                    time.sleep(outer.hang)
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


def test_signed_json_retried_after_500_nothing_lost(receivers: list[Receiver]) -> None:
    receiver = Receiver(statuses=[500, 503])
    receivers.append(receiver)
    bus = EventBus()
    hooks = [Webhook(url=receiver.url, events=("alert", "anomaly"), secret="s3cret")]
    dispatcher = WebhookDispatcher(bus, lambda: hooks, backoff=0.05, timeout=2.0).start()
    try:
        for i in range(5):
            bus.publish("anomaly", {"n": i})
        bus.publish("call", {"ignored": True})  # not chosen by the hook
        deadline = time.monotonic() + 10
        while dispatcher.stats()["delivered"] < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dispatcher.wait_idle(10)
    finally:
        dispatcher.stop()
    assert len(receiver.requests) == 7  # two failed attempts, then the five events
    delivered = {}
    for request in receiver.requests:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        expected = hmac.new(
            b"s3cret", headers["x-tokenlens-timestamp"].encode() + b"." + request["body"], hashlib.sha256
        ).hexdigest()
        assert headers["x-tokenlens-signature"] == f"sha256={expected}"
        body = json.loads(request["body"])
        assert body["event"] == "anomaly" == headers["x-tokenlens-event"]
        assert body["delivery_id"] == headers["x-tokenlens-delivery"]
        delivered[body["delivery_id"]] = body["data"]["n"]
    assert sorted(delivered.values()) == [0, 1, 2, 3, 4]  # nothing lost, nothing extra
    attempts = dispatcher.deliveries()
    assert [a["outcome"] for a in attempts].count("delivered") == 5
    assert [a["status"] for a in attempts if a["outcome"] == "retrying"] == [503, 500]
    first = attempts[-1]
    assert first["attempt"] == 1 and first["status"] == 500
    assert any(a["delivery_id"] == first["delivery_id"] and a["attempt"] == 3 for a in attempts)


def test_hanging_receiver_slows_nothing(receivers: list[Receiver]) -> None:
    hanging, healthy = Receiver(hang=3.0), Receiver()
    receivers.extend([hanging, healthy])
    bus = EventBus()
    hooks = [
        Webhook(url=hanging.url, events=("alert",), format="slack"),
        Webhook(url=healthy.url, events=("alert",), format="slack"),
    ]
    dispatcher = WebhookDispatcher(bus, lambda: hooks, timeout=0.5, backoff=0.05, max_attempts=2).start()
    try:
        started = time.perf_counter()
        for i in range(20):
            bus.publish("alert", {"spent_usd": i, "threshold_usd": 1, "date": "2026-03-01"})
        publish_time = time.perf_counter() - started
        deadline = time.monotonic() + 5
        while len(healthy.requests) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        healthy_time = time.perf_counter() - started
        while time.monotonic() < deadline and not any(
            a["url"] == hanging.url for a in dispatcher.deliveries()
        ):
            time.sleep(0.02)
        timed_out = [a for a in dispatcher.deliveries(500) if a["url"] == hanging.url]
    finally:
        dispatcher.stop(timeout=0.1)
    assert publish_time < 0.05  # publishing never waits for a delivery
    assert len(healthy.requests) == 20 and healthy_time < 3.0  # the other hook is not held up
    text = json.loads(healthy.requests[0]["body"])["text"]
    assert text.startswith("TokenLens alert: spend today $0.00 crossed the daily threshold $1.00")
    assert "x-tokenlens-signature" not in {k.lower() for k in healthy.requests[0]["headers"]}
    assert timed_out and timed_out[0]["outcome"] == "retrying" and "Timeout" in timed_out[0]["error"]


def test_the_bus_sends_the_dispatcher_only_events_a_hook_chose() -> None:
    bus = EventBus()
    hooks: list[Webhook] = []
    dispatcher = WebhookDispatcher(bus, lambda: hooks)
    assert not dispatcher.wants("call") and not dispatcher.wants("alert")
    hooks.append(Webhook(url="http://127.0.0.1:9/hook", events=("alert",)))
    assert dispatcher.wants("alert") and not dispatcher.wants("call")
    dispatcher.start()
    try:
        assert bus.wanted("alert") and not bus.wanted("call")
    finally:
        dispatcher.stop()
