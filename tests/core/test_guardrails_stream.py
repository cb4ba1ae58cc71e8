"""StreamGuard: what a client of a guarded stream receives, event by event (tokenlens/guardrails/stream.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenlens.config import parse_settings
from tokenlens.guardrails.stream import HOLD_MAX, StreamGuard, hold_back


def guard(action: str) -> StreamGuard:
    settings = parse_settings({"guardrails": {"response_pii_detection": {"enabled": True, "action": action}}})
    return StreamGuard(settings.guardrails, "openai", "/v1/chat/completions")


def event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


def feed(g: StreamGuard, pieces: list[str]) -> list[tuple[str, str]]:
    """Send one event per piece; after each, the text the client has received so far (and its last event)."""
    received: list[tuple[str, str]] = []
    text = ""
    for piece in pieces + [None]:
        out = g(event(piece) if piece is not None else b"")
        for raw in out.decode().split("\n\n"):
            if raw.startswith("data: "):
                data: dict[str, Any] = json.loads(raw[6:])
                text += data["choices"][0]["delta"]["content"] if "choices" in data else "<error>"
        received.append((piece or "<end>", text))
    return received


@pytest.mark.parametrize(
    ("pieces", "secret"),
    [
        (["Write to ", "maria", ".gon", "zalez", "@acme", "-corp", ".com", " soon", "."], "maria"),
        (["Call me on ", "+44", " 20", " 7946", " 0958", " today", "."], "+44"),
        (["Card ", "4539", " 1488", " 0343", " 6467", " thanks"], "4539"),
        (["Pay to ", "GB82", " WEST", " 1234", " 5698", " 7654", " 32", " now"], "GB82"),
        (["key: ", "sk-proj-", "A1b2C3d4E5", "f6G7h8I9j0", "K1l2M3n4", " ok"], "sk-proj"),
    ],
    ids=["email", "phone", "card", "iban", "api-key"],
)
def test_block_never_delivers_a_part_of_the_match(pieces: list[str], secret: str) -> None:
    received = feed(guard("block"), pieces)
    final = received[-1][1]
    assert final.endswith("<error>")
    assert all(secret not in text for _, text in received)
    assert final.startswith(pieces[0].split(" ")[0])  # the text before the match was delivered


def test_block_delivers_clean_text_whole_and_one_word_behind() -> None:
    pieces = ["The", " quick", " brown", " fox", " jumps", " over", " 12", " lazy", " dogs", "."]
    received = feed(guard("block"), pieces)
    assert received[-1][1] == "".join(pieces)
    assert received[2] == (" brown", "The quick")  # the last word is held until the next one starts
    assert received[7] == (" lazy", "The quick brown fox jumps over 12")


def test_warn_delivers_every_event_at_once() -> None:
    pieces = ["Write to ", "maria", ".gonzalez@acme-corp.com", " soon"]
    received = feed(guard("warn"), pieces)
    assert [text for _, text in received[:-1]] == ["".join(pieces[: i + 1]) for i in range(len(pieces))]


@pytest.mark.parametrize(
    ("text", "held"),
    [
        ("hello world", "world"),
        ("hello world ", ""),
        ("call +44 20 79", " +44 20 79"),
        ("pay IBAN GB82 WEST 12", " IBAN GB82 WEST 12"),
        ("mail maria.gonzalez@acme", "maria.gonzalez@acme"),
        ("x" * 600, "x" * HOLD_MAX),
    ],
)
def test_hold_back(text: str, held: str) -> None:
    assert text[len(text) - hold_back(text) :] == held
