"""Response guardrails on a stream: the text deltas are scanned as they pass, with a window across chunks.

`StreamGuard(...)` is fed the decoded bytes of the answer. In `warn` mode every chunk goes on at once; matches
are recorded. In `block` mode (and `redact`, which cannot rewrite text split across events safely, so it
stops the stream the same way) only complete events go on, and the events holding text that could still be
the beginning of a match are held back (`hold_back`: the last word, a trailing run of digits and separators, a
trailing run of capitals and digits; at most HOLD_MAX characters) until the text after them shows it is not.
A model writes an e-mail address or a phone number over several events; without holding back, the client
would have read most of it when the match completes. When a match completes, the held events are dropped
and one provider-format error event goes instead; everything after it is dropped too.
"""

from __future__ import annotations

import json
from typing import Any

from tokenlens.config import Guardrails
from tokenlens.guardrails.engine import Finding, compile_rules, text_matches
from tokenlens.providers import error_body
from tokenlens.usage import StreamParser

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
        self.held: list[
            tuple[bytes, int]
        ] = []  # scanned events not yet sent, with the text length after each
        self.sse: bool | None = None

    def action_of(self, rule: str) -> str:
        action = self.actions.get(rule, self.pii_action)
        return "block" if action == "redact" else action

    def _scan(self, data: bytes) -> list[str]:
        """Feed bytes; the rules that block among the new matches."""
        self.parser.feed(data)
        if not self.parser.new_text:
            return []
        self.window += "".join(self.parser.new_text)
        self.parser.new_text.clear()
        blocking = []
        for m in text_matches(self.g, "response", self.window):
            start = self.offset + m.start
            if start < self.reported_to:
                continue
            action = self.action_of(m.rule)
            self.findings.append(Finding(m.rule, action, "output", start, m.end - m.start))
            self.reported_to = self.offset + m.end
            if action == "block":
                blocking.append(m.rule)
        if len(self.window) > WINDOW:
            cut = len(self.window) - WINDOW
            self.window, self.offset = self.window[cut:], self.offset + cut
        return blocking

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
            blocking = self._scan(rest) if rest else []
            if blocking:
                self.held.clear()
                return self._stop(blocking)
            held, self.held = b"".join(event for event, _ in self.held), []
            return held + rest
        if not self.holding or not self.sse:
            blocking = self._scan(data)
            if blocking and self.holding:
                return self._stop(blocking)
            return data
        buffer = self.pending + data
        out: list[bytes] = []
        start = 0
        while True:
            end = _event_end(buffer, start)
            if end < 0:
                break
            event = buffer[start:end]
            blocking = self._scan(event)
            if blocking:
                self.held.clear()
                out.append(self._stop(blocking))
                self.pending = b""
                return b"".join(out)
            self.held.append((event, self._text_seen()))
            start = end
        self.pending = buffer[start:]
        safe = self._text_seen() - hold_back(self.window)
        while self.held and self.held[0][1] <= safe:
            out.append(self.held.pop(0)[0])
        return b"".join(out)

    def _text_seen(self) -> int:
        return self.offset + len(self.window)


def _event_end(buffer: bytes, start: int) -> int:
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := buffer.find(sep, start)) >= 0]
    return min(ends) if ends else -1
