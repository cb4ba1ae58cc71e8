"""Response guardrails on a stream: the text deltas are scanned as they pass, with a window across chunks.

`StreamGuard(...)` is fed the decoded bytes of the answer. In `warn` mode every chunk goes on at once; matches
are recorded. In `block` and `redact` mode only complete events go on, and the events holding text that could
still be the beginning of a match are held back (`hold_back`: the last word, a trailing run of digits and
separators, a trailing run of capitals and digits; at most HOLD_MAX characters) until the text after them
shows it is not. A model writes an e-mail address or a phone number over several events; without holding back,
the client would have read most of it when the match completes.

When a `block` match completes, the held events are dropped and one provider-format error event goes instead;
everything after it is dropped too. When a `redact` match completes inside the held events, those events are
rewritten: the first gets the placeholder (`[EMAIL_1]`) where the match began, the others lose their part of
it, and every later event that repeats the text (OpenAI's responses API sends the whole text again at the end)
has the value replaced too. A match that cannot be rewritten that way (its beginning already sent, or an
event with several text fields) stops the stream as `block` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tokenlens.config import Guardrails
from tokenlens.guardrails.engine import Finding, Placeholders, compile_rules, text_matches
from tokenlens.providers import error_body
from tokenlens.usage import StreamParser, split_events

WINDOW = 512  # characters of earlier text kept so a match split across chunks is still seen
HOLD_MAX = 256  # characters of text held back at most (a long word or number is released past this)
_NUMBER_CHARS = frozenset("0123456789 -.()+/")


def hold_back(text: str) -> int:
    """How many trailing characters of `text` could still grow into a match: the last word (an address, a key),
    a trailing run of digits and separators (a phone or card number) or of capitals, digits and spaces (an
    IBAN in groups), whichever starts earliest; at most HOLD_MAX."""
    n = len(text)
    floor = max(0, n - HOLD_MAX)
    start = n
    while start > floor and not text[start - 1].isspace():
        start -= 1
    number = n
    while number > floor and text[number - 1] in _NUMBER_CHARS:
        number -= 1
    if any(c.isdigit() for c in text[number:]):
        start = min(start, number)
    grouped = n
    while grouped > floor and (
        text[grouped - 1].isupper() or text[grouped - 1].isdigit() or text[grouped - 1] == " "
    ):
        grouped -= 1
    if sum(c.isdigit() for c in text[grouped:]) >= 2:
        start = min(start, grouped)
    return n - start


class _TextParser(StreamParser):
    """The usage stream parser, with the text deltas handed over as they are parsed."""

    def __init__(self, api: str, endpoint: str) -> None:
        super().__init__(api, endpoint)
        self.new_text: list[str] = []

    def _add_text(self, v: Any) -> None:
        if isinstance(v, str) and v:
            self.new_text.append(v)


def error_event(api: str, endpoint: str, message: str) -> bytes:
    """The in-stream error a client of this provider understands (its SDK raises on it)."""
    body = json.loads(error_body(api, 400, message, "guardrail"))  # type: ignore[arg-type]
    if api == "anthropic":
        return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"
    if api == "google":
        return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"
    if endpoint.endswith("/responses"):
        event = {"type": "error", "code": "guardrail", "message": message, "param": None, **body}
        return b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"
    return b"data: " + json.dumps(body).encode() + b"\n\n"


@dataclass
class Held:
    """A complete event scanned but not sent yet, with where its text sits in the answer's text."""

    event: bytes
    start: int  # offset of its text in the whole answer's text
    end: int
    text: str  # its text (one piece, or several joined)
    pieces: int  # text fields it carries
    cuts: list[tuple[int, int, str]] = field(default_factory=list)  # redactions: (from, to, replacement)

    def rewritten(self) -> bytes | None:
        """The event with its text redacted; None when its text field cannot be found exactly once."""
        if not self.cuts:
            return self.event
        text, last = [], 0
        for a, b, replacement in sorted(self.cuts):
            text.append(self.text[last:a] + replacement)
            last = b
        return _replace_value(self.event, self.text, "".join(text) + self.text[last:])


class StreamGuard:
    def __init__(self, g: Guardrails, api: str, endpoint: str) -> None:
        self.g = g
        self.api = api
        self.endpoint = endpoint
        self.parser = _TextParser(api, endpoint)
        action = g.response_pii_detection.action
        rules = compile_rules(g.custom_rules)
        self.actions = {r.rule: r.action for r in rules}
        self.pii_action = action
        self.holding = action != "warn" or any(r.action != "warn" for r in rules)
        self.window = ""
        self.offset = 0  # characters of text before the window
        self.reported_to = 0  # absolute end of the last reported match
        self.findings: list[Finding] = []
        self.stopped = False
        self.pending = b""
        self.held: list[Held] = []
        self.sse: bool | None = None
        self.last_pieces: list[str] = []
        self.growing_from: int | None = None  # start of a match to redact that may still grow
        self.placeholders = Placeholders()
        self.redacted: dict[str, str] = {}  # value -> placeholder, for the events that repeat the text

    def action_of(self, rule: str) -> str:
        action = self.actions.get(rule, self.pii_action)
        return "block" if action == "redact" and not (self.holding and self.sse) else action

    def _scan(self, data: bytes, final: bool = False) -> tuple[list[str], list[tuple[str, str, int, int]]]:
        """Feed bytes; the rules that block among the new matches, and the matches to redact as (rule, kind,
        start, end) in the whole answer's text. The event's text pieces are left in `self.last_pieces`.

        A match to redact that reaches into the text still held back, or to the end of the text, may still
        grow (`+44 20 7946` before ` 0958` arrives; a key block before its END line): it is left for a later
        scan, or the last one (`final`, at the end of the stream); one still growing HOLD_MAX characters after
        its start stops the stream instead."""
        self.parser.feed(data)
        self.last_pieces = list(self.parser.new_text)
        if not self.parser.new_text and not (final and self.window):
            return [], []
        self.window += "".join(self.parser.new_text)
        self.parser.new_text.clear()
        growing = len(self.window) if final else len(self.window) - hold_back(self.window)
        self.growing_from = None
        blocking, redacting = [], []
        for m in text_matches(self.g, "response", self.window):
            start = self.offset + m.start
            if start < self.reported_to:
                continue
            action = self.action_of(m.rule)
            if action == "redact" and not final and (m.end > growing or m.end == len(self.window)):
                if self._text_seen() - start <= HOLD_MAX:
                    self.growing_from = start  # hold what it covers until it is complete
                    break
                action = "block"  # still growing past what is held back (a key block): no safe rewrite
            self.findings.append(Finding(m.rule, action, "output", start, m.end - m.start))
            self.reported_to = self.offset + m.end
            if action == "block":
                blocking.append(m.rule)
            elif action == "redact":
                redacting.append((m.rule, m.kind, start, self.offset + m.end))
        if len(self.window) > WINDOW:
            cut = len(self.window) - WINDOW
            self.window, self.offset = self.window[cut:], self.offset + cut
        return blocking, redacting

    def _redact(self, kind: str, start: int, end: int) -> bool:
        """Rewrite the held events that carry text[start:end]; False when that cannot be done safely."""
        if not self.held or start < self.held[0].start:
            return False  # its beginning has been sent
        touched = [h for h in self.held if h.start < end and h.end > start and h.end > h.start]
        if any(h.pieces != 1 for h in touched):
            return False
        value = "".join(h.text[max(start, h.start) - h.start : min(end, h.end) - h.start] for h in touched)
        placeholder = self.placeholders(kind, value)
        for i, h in enumerate(touched):
            h.cuts.append(
                (max(start, h.start) - h.start, min(end, h.end) - h.start, "" if i else placeholder)
            )
        if any(h.rewritten() is None for h in touched):
            for h in touched:
                h.cuts.pop()
            return False
        self.redacted[value] = placeholder
        return True

    def send_held(self, held: Held) -> bytes:
        """The bytes a held event goes out as: with its redactions and every redacted value replaced."""
        event = held.rewritten() or held.event
        for value, placeholder in self.redacted.items():
            if any(json.dumps(value, ensure_ascii=e)[1:-1].encode() in event for e in (False, True)):
                event = _replace_in_strings(event, value, placeholder)
        return event

    def _stop(self, rules: list[str]) -> bytes:
        self.stopped = True
        message = (
            f"TokenLens guardrail stopped this response: rule {', '.join(dict.fromkeys(rules))} matched."
        )
        if self.sse is False:  # Gemini's streamed JSON array: close it with the error as its last element
            return b",\r\n" + error_event(self.api, self.endpoint, message)[6:].strip() + b"]"
        return error_event(self.api, self.endpoint, message)

    def __call__(self, data: bytes) -> bytes:
        """Decoded bytes in, bytes for the client out (b"" at the end flushes what is held)."""
        if self.stopped:
            return b""
        if self.sse is None and data.strip():
            self.sse = data.lstrip()[:1] not in (b"[", b"{")
        if not data:
            rest, self.pending = self.pending, b""
            if rest and self.holding and self.sse:  # an event without its blank line: held like the others
                rest = self._hold(rest) or b""
            if self.stopped:
                return rest
            blocking = self._decide(*self._scan(b"", final=True)) if self.holding and self.sse else []
            if not self.holding or not self.sse:
                blocking = self._scan(rest)[0] if rest else []
                if blocking and self.holding:
                    return self._stop(blocking)
                return rest
            if blocking:
                self.held.clear()
                return self._stop(blocking)
            held = b"".join(self.send_held(h) for h in self.held)
            self.held = []
            return held
        if not self.holding or not self.sse:
            blocking = self._scan(data)[0]
            if blocking and self.holding:
                return self._stop(blocking)
            return data
        events, self.pending = split_events(self.pending + data)
        for event in events:
            stop = self._hold(event)
            if stop is not None:
                self.pending = b""
                return stop
        out: list[bytes] = []
        safe = self._text_seen() - hold_back(self.window)
        if self.growing_from is not None:
            safe = min(safe, self.growing_from)
        while self.held and self.held[0].end <= safe:
            out.append(self.send_held(self.held.pop(0)))
        return b"".join(out)

    def _hold(self, event: bytes) -> bytes | None:
        """Scan one complete event and hold it; the error event when a match stops the stream."""
        text_start = self._text_seen()
        found = self._scan(event)
        pieces = self.last_pieces
        self.held.append(Held(event, text_start, self._text_seen(), "".join(pieces), len(pieces)))
        blocking = self._decide(*found)
        if not blocking:
            return None
        self.held.clear()
        return self._stop(blocking)

    def _decide(self, blocking: list[str], redacting: list[tuple[str, str, int, int]]) -> list[str]:
        """Redact what can be; the rules that stop the stream (blocking ones, and redactions that failed)."""
        for rule, kind, start, end in redacting:
            if not self._redact(kind, start, end):
                blocking.append(rule)
        return blocking

    def _text_seen(self) -> int:
        return self.offset + len(self.window)


def _data_lines(event: bytes) -> tuple[list[bytes], int] | None:
    """The event's lines and the index of its one `data:` line (None when it has none or several)."""
    lines = event.split(b"\n")
    data = [i for i, line in enumerate(lines) if line.startswith(b"data:")]
    return (lines, data[0]) if len(data) == 1 else None


def _rewrite_strings(event: bytes, change: Any) -> bytes | None:
    """The event with `change(str) -> str | None` applied to every string in its JSON data (None: unchanged);
    None when the event is not one JSON `data:` line."""
    found = _data_lines(event)
    if found is None:
        return None
    lines, at = found
    raw = lines[at][5:]
    end = b"\r" if raw.endswith(b"\r") else b""
    try:
        data = json.loads(raw)
    except ValueError:
        return None

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            new = change(node)
            return node if new is None else new
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        return node

    lines[at] = b"data: " + json.dumps(walk(data), ensure_ascii=False, separators=(",", ":")).encode() + end
    return b"\n".join(lines)


def _replace_value(event: bytes, old: str, new: str) -> bytes | None:
    """The event with the one JSON string equal to `old` set to `new`; None unless exactly one is."""
    count = 0

    def change(value: str) -> str | None:
        nonlocal count
        if value != old:
            return None
        count += 1
        return new

    rewritten = _rewrite_strings(event, change)
    return rewritten if count == 1 else None


def _replace_in_strings(event: bytes, value: str, placeholder: str) -> bytes:
    """The event with `value` replaced by `placeholder` inside every JSON string (the answer's whole text
    repeated at the end of a stream)."""
    rewritten = _rewrite_strings(event, lambda s: s.replace(value, placeholder) if value in s else None)
    return rewritten if rewritten is not None else event
