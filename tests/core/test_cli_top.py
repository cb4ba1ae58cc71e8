"""`tokenlens top`'s renderer: call data with Rich markup or terminal escapes is shown, never acted on."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tokenlens.cli.top import TopState, handle_key, render

HOSTILE = {
    "markup close": "[/]",
    "markup style": "[bold red]loud[/bold red]",
    "markup link": "[link=http://evil.example]click[/link]",
    "osc title": "\x1b]0;pwned\x07",
    "clear screen": "\x1b[2J",
    "c1 csi": "\x9b2J",
    "bidi override": "\u202egnp.exe",
    "emoji code": ":skull:",
}
ESCAPED = {"\x1b": "\\x1b", "\x07": "\\x07", "\x9b": "\\x9b", "\u202e": "\\u202e"}  # written out by hand
RAW_SEQUENCES = ("\x1b]0;pwned", "\x07", "\x1b[2J", "\x9b", "\u202e")


def screen(state: TopState, color: bool) -> str:
    out = io.StringIO()
    console = Console(
        file=out,
        width=400,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
    )
    console.print(render(state, 60))
    return out.getvalue()


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_source_model_and_gate_are_shown_escaped(name: str, color: bool) -> None:
    value = HOSTILE[name]
    state = TopState()
    call = {
        "ts": "2026-12-07T03:04:05.000Z",
        "source": f"src{value}",
        "model": f"mod{value}",
        "status": 429,
        "outcome": "blocked",
        "blocked_by": f"gate{value}",
        "input_tokens": 1,
        "output_tokens": 2,
        "cost_usd": 0.5,
        "latency_ms": 3,
    }
    state.add({"type": "block", "data": call})
    text = screen(state, color)
    for raw in RAW_SEQUENCES:
        assert raw not in text
    if not color:
        assert "\x1b" not in text  # nothing at all for the terminal to interpret
    expected = "".join(ESCAPED.get(c, c) for c in value)
    for shown in (f"src{expected}", f"mod{expected}", f"gate{expected}"):
        assert shown in text, f"{shown!r} not in the view"


def test_amounts_are_never_shown_as_zero() -> None:
    state = TopState()
    call = {
        "ts": "2026-12-07T03:04:05.000Z",
        "source": "cheap",
        "model": "gpt-4o-mini",
        "status": 200,
        "outcome": "ok",
        "input_tokens": 60,
        "output_tokens": 3,
        "cost_usd": 0.000011,
        "latency_ms": 3,
    }
    state.add({"type": "call", "data": call})
    text = screen(state, False)
    assert "$0.000011" in text and "$0.0000 " not in text


def test_the_sources_panel_follows_the_filter() -> None:
    state = TopState()
    for source, model, cost in (
        ("billing-bot", "gpt-4o-mini", 0.25),
        ("billing-bot", "claude-haiku-4-5", 0.5),
        ("search-agent", "gpt-4o-mini", 1.25),
    ):
        call = {"ts": "2026-12-07T03:04:05.000Z", "source": source, "model": model, "status": 200}
        state.add({"type": "call", "data": {**call, "outcome": "ok", "cost_usd": cost}})

    def panel(text: str) -> str:
        return text[text.index("sources") :]

    everything = panel(screen(state, False))
    assert "billing-bot" in everything and "search-agent" in everything
    assert "$0.75" in everything and "$1.25" in everything

    handle_key(state, "f")
    for key in "haiku\r":
        handle_key(state, key)
    assert state.filter_text == "haiku"
    filtered = panel(screen(state, False))
    assert "search-agent" not in filtered  # none of its calls is a haiku call
    assert "billing-bot" in filtered and "$0.50" in filtered and "$0.75" not in filtered

    handle_key(state, "f")
    handle_key(state, "\x1b")  # Esc clears the filter: every source again
    assert "search-agent" in panel(screen(state, False))
