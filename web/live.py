"""The live feed: WebSocket `GET /api/live` (flask-sock), one JSON text message per bus event.

Each connection subscribes to `AppDeps.bus` and sends `{"type": ..., "data": {...}}` until the client goes
away. The server pings every `PING_INTERVAL` seconds and closes a connection that did not answer the previous
ping, so a dead client is noticed; the subscription is always removed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, current_app
from flask_sock import Sock

from tokenlens.app import AppDeps

log = logging.getLogger(__name__)

PING_INTERVAL = 20.0
POLL = 0.5  # how often the loop notices a closed connection when no event arrives
MAX_CLIENT_MESSAGE = 64 * 1024

sock = Sock()


def server_options() -> dict[str, Any]:
    return {"ping_interval": PING_INTERVAL, "max_message_size": MAX_CLIENT_MESSAGE}


@sock.route("/api/live")
def live(ws: Any) -> None:
    deps: AppDeps = current_app.extensions["tokenlens"]
    with deps.bus.subscribe() as sub:
        try:
            while ws.connected:
                message = sub.get(timeout=POLL)
                if message is not None:
                    ws.send(json.dumps(message, default=str, separators=(",", ":")))
                while ws.receive(timeout=0) is not None:
                    pass  # the feed is one-way; discard what the client sends
        except OSError:  # the socket broke under a send: the client is gone
            log.debug("live client went away", exc_info=True)


def init_app(app: Flask) -> None:
    app.config.setdefault("SOCK_SERVER_OPTIONS", server_options())
    sock.init_app(app)
