"""`tokenlens top` in a real terminal (tmux): it shows a call just made, pauses, filters and quits on keys."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import pytest

from harness.gateway import Clients, Gateway

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)"
)


def capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def pane_title(session: str) -> str:
    return subprocess.run(
        ["tmux", "display-message", "-p", "-t", session, "#{pane_title}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def wait_for(session: str, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not on screen:\n{screen}")


def test_top_shows_a_call_just_made_and_quits_on_q(clients: Clients, gateway: Gateway) -> None:
    session = f"tltop-{uuid.uuid4().hex[:8]}"
    command = (
        f"TOKENLENS_HOME={gateway.home} TOKENLENS_CONFIG={gateway.config} "
        f"{sys.executable} -m tokenlens top --port {gateway.port}; echo TOP-EXITED-$?; sleep 30"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40", command], check=True)
    try:
        wait_for(session, "● live")
        clients.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        screen = wait_for(session, clients.source)
        assert "gpt-4o-mini" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "p"], check=True)
        wait_for(session, "PAUSED")
        subprocess.run(["tmux", "send-keys", "-t", session, "p", "f", "nomatch-xyz", "Enter"], check=True)
        screen = wait_for(session, "filter 'nomatch-xyz'")
        assert "gpt-4o-mini" not in screen  # the calls table is filtered
        assert clients.source not in screen  # and so is the sources panel
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_for(session, "TOP-EXITED-0")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_top_shows_a_hostile_model_name_escaped(clients: Clients, gateway: Gateway) -> None:
    """A model name with Rich markup and terminal escapes (any web page could send it) is shown, not obeyed."""
    session = f"tltop-{uuid.uuid4().hex[:8]}"
    command = (
        f"TOKENLENS_HOME={gateway.home} TOKENLENS_CONFIG={gateway.config} "
        f"{sys.executable} -m tokenlens top --port {gateway.port}; echo TOP-EXITED-$?; sleep 30"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "40", command], check=True)
    try:
        wait_for(session, "● live")
        title_before = pane_title(session)
        hostile = "[/]x\x1b]2;pwned\x07y\x1b[2J\u202ez"
        clients.openai().chat.completions.create(model=hostile, messages=[{"role": "user", "content": "hi"}])
        screen = wait_for(session, clients.source)
        assert "[/]x\\x1b]2;pwned\\x07y" in screen, screen  # the cell is cut to the column's width
        assert "TOP-EXITED" not in screen
        assert pane_title(session) == title_before != "pwned"
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_for(session, "TOP-EXITED-0")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
