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


def redacting(api: str = "openai", endpoint: str = "/v1/chat/completions", **extra: Any) -> StreamGuard:
    guardrails: dict[str, Any] = {"response_pii_detection": {"enabled": True, "action": "redact"}, **extra}
    return StreamGuard(parse_settings({"guardrails": guardrails}).guardrails, api, endpoint)


def run(g: StreamGuard, events: list[bytes]) -> bytes:
    return b"".join(g(e) for e in events) + g(b"")


def chat_text(out: bytes) -> str:
    return "".join(
        json.loads(raw[6:])["choices"][0]["delta"]["content"]
        for raw in out.decode().split("\n\n")
        if raw.startswith("data: {")
    )


def test_redact_rewrites_a_match_split_across_events() -> None:
    g = redacting()
    pieces = [
        "Write to ",
        "maria",
        ".gon",
        "zalez",
        "@acme",
        "-corp",
        ".com",
        " or ",
        "+44",
        " 20",
        " 7946",
        " 0958",
        ".",
    ]
    out = run(g, [event(p) for p in pieces])
    assert chat_text(out) == "Write to [EMAIL_1] or [PHONE_1]."
    assert b"maria" not in out and b"7946" not in out and not g.stopped
    assert [(f.rule, f.action) for f in g.findings] == [("pii.email", "redact"), ("pii.phone", "redact")]


def test_redact_also_masks_the_text_repeated_at_the_end_of_a_responses_stream() -> None:
    def sse(kind: str, data: dict[str, Any], ascii_only: bool) -> bytes:
        body = json.dumps({"type": kind, **data}, ensure_ascii=ascii_only)
        return f"event: {kind}\ndata: {body}\n\n".encode()

    pieces = ["Ask ", "José", " Ruiz", " today"]
    text = "".join(pieces)
    events = [sse("response.output_text.delta", {"delta": p, "item_id": "m1"}, False) for p in pieces]
    events.append(sse("response.output_text.done", {"text": text, "item_id": "m1"}, False))
    message = {"type": "message", "content": [{"type": "output_text", "text": text}]}
    events.append(sse("response.completed", {"response": {"output": [message]}}, True))  # escaped: Jos\u00e9
    rule = {"name": "person", "pattern": "José Ruiz", "action": "redact"}
    g = redacting(endpoint="/v1/responses", custom_rules=[rule])
    out = run(g, events)
    assert b"Ruiz" not in out and not g.stopped
    assert out.count(b"Ask [PERSON_1] today") == 2  # the done event and the completed response
    deltas = [json.loads(line[6:])["delta"] for line in out.decode().splitlines() if '"delta"' in line]
    assert "".join(deltas) == "Ask [PERSON_1] today"


def test_redact_on_anthropic_and_gemini_events() -> None:
    def anthropic(text: str) -> bytes:
        data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        return b"event: content_block_delta\ndata: " + json.dumps(data).encode() + b"\n\n"

    def gemini(*texts: str) -> bytes:
        parts = [{"text": t} for t in texts]
        data = {"candidates": [{"content": {"parts": parts, "role": "model"}}]}
        return b"data: " + json.dumps(data).encode() + b"\r\n\r\n"

    pieces = ["SSN ", "078", "-05", "-1120", " on file"]
    out = run(redacting("anthropic", "/v1/messages"), [anthropic(p) for p in pieces])
    assert b"1120" not in out and b"[SSN_1]" in out
    out = run(
        redacting("google", "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
        [gemini(p) for p in pieces],
    )
    assert b"1120" not in out and b"[SSN_1]" in out
    several = redacting("google", "/v1beta/models/gemini-2.5-flash:streamGenerateContent")
    out = run(several, [gemini("SSN ", "078-05-1120"), gemini(" on file")])  # two text fields in one event
    assert several.stopped and b"1120" not in out and b'"error"' in out


def test_redact_stops_the_stream_when_the_match_began_in_text_already_sent() -> None:
    g = redacting(custom_rules=[{"name": "dog", "pattern": "the lazy dog", "action": "redact"}])
    out = run(g, [event(p) for p in ["the", " lazy", " dog", " sleeps"]])
    assert g.stopped and b"sleeps" not in out and b"custom.dog" in out


def test_redact_skips_events_without_text_inside_a_match() -> None:
    def anthropic(text: str) -> bytes:
        data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        return b"event: content_block_delta\ndata: " + json.dumps(data).encode() + b"\n\n"

    ping = b'event: ping\ndata: {"type": "ping"}\n\n'
    g = redacting("anthropic", "/v1/messages")
    out = run(g, [anthropic("Mail "), anthropic("ann"), ping, anthropic("@example.org"), anthropic(" now")])
    assert not g.stopped and b"ann@" not in out and b"[EMAIL_1]" in out and out.count(b"ping") == 2


def test_redact_of_a_match_growing_past_the_hold_stops_the_stream() -> None:
    key = ["-----BEGIN RSA PRIVATE KEY-----\n"] + ["MIIEpAIBAAKCAQEA7vb3xK9q2mPzLw8nT5rYcHd0F1jS\n"] * 12
    g = redacting()
    out = run(g, [event("Here: ")] + [event(p) for p in key] + [event("-----END RSA PRIVATE KEY-----")])
    assert g.stopped and b"MIIE" not in out and b"pii.secret" in out
