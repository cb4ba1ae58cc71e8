"""`tokenlens top`: a live terminal view of calls, spend and blocks, fed by the daemon's WebSocket.

Keys: p pause/resume, f filter (type text, Enter to apply, Esc to clear), q quit. When the daemon goes away
the view says so and reconnects by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import typer
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from simple_websocket import Client, ConnectionClosed

from tokenlens.cli.common import (
    ConfigOption,
    DataDirOption,
    auth_headers,
    daemon_get,
    daemon_url,
    load_cli_settings,
)
from tokenlens.cli.terminal import printable
from tokenlens.config import ServerSettings
from tokenlens.money import format_usd

RATE_WINDOW_S = 300
MAX_ROWS = 200


@dataclass
class TopState:
    """What the view shows; fed by live events, read by the renderer."""

    calls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_ROWS))
    connected: bool = False
    status_line: str = "connecting…"
    today_usd: float = 0.0
    blocks: int = 0
    paused: bool = False
    filter_text: str = ""
    typing_filter: str | None = None
    recent_spend: deque[tuple[float, float]] = field(default_factory=deque)
    by_source: dict[str, float] = field(default_factory=dict)

    def add(self, event: dict[str, Any]) -> None:
        if event.get("type") not in ("call", "block"):
            return
        call = event.get("data") or {}
        cost = float(call.get("cost_usd") or 0.0)
        self.today_usd += cost
        self.recent_spend.append((time.monotonic(), cost))
        source = str(call.get("source") or "unknown")
        self.by_source[source] = self.by_source.get(source, 0.0) + cost
        if event.get("type") == "block" or call.get("outcome") == "blocked":
            self.blocks += 1
        if not self.paused:
            self.calls.appendleft(call)

    def spend_rate_per_hour(self) -> float:
        cutoff = time.monotonic() - RATE_WINDOW_S
        while self.recent_spend and self.recent_spend[0][0] < cutoff:
            self.recent_spend.popleft()
        return sum(cost for _, cost in self.recent_spend) * 3600 / RATE_WINDOW_S

    def visible(self) -> list[dict[str, Any]]:
        needle = self.filter_text.lower()
        rows = [c for c in self.calls if not needle or needle in json.dumps(c).lower()]
        return rows

    def source_spend(self) -> dict[str, float]:
        """Spend per source for the sources panel: every call seen since start, or, with a filter, the calls
        the filter keeps (of the last `MAX_ROWS`), so the panel shows what the calls table shows."""
        if not self.filter_text:
            return self.by_source
        out: dict[str, float] = {}
        for call in self.visible():
            source = str(call.get("source") or "unknown")
            out[source] = out.get(source, 0.0) + float(call.get("cost_usd") or 0.0)
        return out


def _money(value: Any) -> str:
    return "unpriced" if value is None else format_usd(float(value))


def _cell(value: object, style: str = "") -> Text:
    """A table cell of call data: escaped for the terminal, and a `Text`, so Rich never reads it as markup."""
    return Text(printable(value), style=style)


def render(state: TopState, height: int) -> Group:
    connection = (
        Text("● live", style="green") if state.connected else Text("● " + state.status_line, style="red")
    )
    header = Text.assemble(
        "TokenLens top  ",
        connection,
        f"   spend today {format_usd(state.today_usd)}   rate {format_usd(state.spend_rate_per_hour())}/h"
        f"   blocks {state.blocks}",
        ("   PAUSED" if state.paused else "", "yellow"),
    )
    calls = Table(expand=True, box=None, header_style="bold")
    for column in ("time", "source", "model", "status", "in→out", "cost", "ms"):
        calls.add_column(column, no_wrap=True)
    for call in state.visible()[: max(3, height - 14)]:
        status = str(call.get("status") or "-")
        style = "red" if call.get("outcome") in ("error", "blocked") else ""
        calls.add_row(
            _cell(str(call.get("ts", ""))[11:19]),
            _cell(call.get("source") or "-"),
            _cell(call.get("model") or "-"),
            _cell(
                status if call.get("outcome") != "blocked" else f"{status} {call.get('blocked_by')}", style
            ),
            _cell(f"{call.get('input_tokens', 0)}→{call.get('output_tokens', 0)}"),
            _cell(_money(call.get("cost_usd"))),
            _cell(f"{call.get('latency_ms') or 0:.0f}"),
        )
    sources = Table(box=None, expand=True, header_style="bold")
    sources.add_column("source")
    sources.add_column(
        "spend (matching calls)" if state.filter_text else "spend (this view)", justify="right"
    )
    for name, cost in sorted(state.source_spend().items(), key=lambda item: -item[1])[:5]:
        sources.add_row(_cell(name), format_usd(cost))
    if state.typing_filter is not None:
        keys = Text(f"filter: {printable(state.typing_filter)}▏ (Enter apply, Esc clear)")
    else:
        shown = f"  filter '{printable(state.filter_text)}'" if state.filter_text else ""
        keys = Text(f"p pause  f filter  q quit{shown}", style="dim")
    return Group(header, Panel(calls, title="calls"), Panel(sources, title="sources"), keys)


def _listen(
    server: ServerSettings, events: queue.Queue[dict[str, Any]], stop: threading.Event, state: TopState
) -> None:
    """Feed `events` from /api/live; reconnect with back-off when the daemon goes away."""
    url = daemon_url(server).replace("http://", "ws://") + "/api/live"
    delay = 0.5
    while not stop.is_set():
        try:
            ws = Client.connect(url, headers=auth_headers(server))
        except Exception:
            state.connected, state.status_line = (
                False,
                f"daemon not reachable at {daemon_url(server)}, retrying",
            )
            stop.wait(delay)
            delay = min(delay * 2, 5.0)
            continue
        state.connected, delay = True, 0.5
        try:
            while not stop.is_set():
                message = ws.receive(timeout=0.5)
                if message is not None:
                    events.put(json.loads(message))
        except (ConnectionClosed, OSError, ValueError):
            pass
        finally:
            state.connected, state.status_line = False, "connection lost, reconnecting"
            with contextlib.suppress(Exception):
                ws.close()


@contextlib.contextmanager
def _cbreak() -> Iterator[bool]:
    """Single-key input when stdin is a terminal; yields whether keys can be read."""
    if not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _read_key(timeout: float) -> str | None:
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return os.read(sys.stdin.fileno(), 1).decode(errors="ignore") if ready else None


def handle_key(state: TopState, key: str) -> bool:
    """Apply one key; False means quit."""
    if state.typing_filter is not None:
        if key in ("\r", "\n"):
            state.filter_text, state.typing_filter = state.typing_filter, None
        elif key == "\x1b":
            state.filter_text, state.typing_filter = "", None
        elif key in ("\x7f", "\b"):
            state.typing_filter = state.typing_filter[:-1]
        elif key.isprintable():
            state.typing_filter += key
        return True
    if key in ("q", "Q", "\x03"):
        return False
    if key in ("p", "P"):
        state.paused = not state.paused
    elif key in ("f", "F", "/"):
        state.typing_filter = ""
    return True


def top(
    port: Annotated[
        int | None, typer.Option("--port", help="The gateway's port (default server.port, 8420).")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Live terminal view of calls, spend and blocks (keys: p pause, f filter, q quit)."""
    settings, _ = load_cli_settings(config, data_dir)
    server = ServerSettings(
        **{**settings.server.__dict__, "port": port if port is not None else settings.server.port}
    )
    state = TopState()
    try:
        state.today_usd = float(daemon_get(server, "/api/status").get("today_usd") or 0.0)
        for call in reversed(daemon_get(server, "/api/calls", limit=50).get("calls", [])):
            state.calls.appendleft(call)
    except httpx.HTTPError:
        state.status_line = "daemon not running yet, waiting"
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    stop = threading.Event()
    listener = threading.Thread(target=_listen, args=(server, events, stop, state), daemon=True)
    listener.start()
    try:
        with _cbreak() as keys, Live(auto_refresh=False, screen=True, redirect_stderr=False) as live:
            running = True
            while running:
                while not events.empty():
                    state.add(events.get_nowait())
                live.update(render(state, live.console.height), refresh=True)
                key = _read_key(0.25) if keys else None
                if not keys:
                    time.sleep(0.25)
                if key:
                    running = handle_key(state, key)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
