"""Waste in a request body (SPEC section 10): whitespace bloat, polite filler, repeated instructions, empty
messages.

`analyze_waste(api, body, model)` is pure and works offline: the gateway runs it in the writer thread and
`tokenlens analyze` on a file, and both give the same figure. Tokens are counted with the local tokenizer
(`tokens.count_tokens`, not scaled to the provider's count) and priced at the model's own input rate.
Only the wasted fragments are tokenized, so a 50 KB prompt costs well under a couple of milliseconds.
A prefix resent across calls is not waste (it is a prompt-caching opportunity, see `insights`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokenlens.pricing import Pricer
from tokenlens.prompt_parts import Part, request_parts
from tokenlens.tokens import MESSAGE_OVERHEAD, count_tokens
from tokenlens.usage import Usage

WASTE_TYPES = ("whitespace", "filler", "repeated_instruction", "empty_message")

# Patterns that start with a literal, so that the regex engine jumps from one candidate to the next.
_BREAKS = re.compile(r"\n[ \t\r\n]*")
_SPACES = re.compile(r"  +")
_JSON_INDENT = re.compile(r"\r?\n[ \t]*")
# Matched on lower-cased text, without a leading word-boundary assertion so that the regex engine can skip
# ahead on the first characters; the boundary before a match is checked by hand.
_FILLER = re.compile(
    r"(?:"
    r"i hope this (?:message|email|note) finds you well"
    r"|sorry to bother you"
    r"|i would (?:really |greatly |truly )?(?:appreciate|be (?:very |so |really )?grateful)(?: it)?"
    r"(?: if you could)?"
    r"|i'd (?:really )?appreciate(?: it)?(?: if you could)?"
    r"|would you (?:please )?be so kind(?: as to)?"
    r"|if you (?:don't|do not) mind"
    r"|thank you (?:so|very) much(?: in advance)?"
    r"|thanks (?:so much|a lot|a ton|in advance)"
    r"|thank you(?: in advance)?"
    r"|many thanks"
    r"|kindly"
    r"|please"
    r")\b[,!.]?"
)
_FILLER_ANCHORS = (
    "pleas",
    "thank",
    "kindly",
    "apprecia",
    "grateful",
    "mind",
    "bother",
    "finds you",
    "so kind",
)
_SENTENCE = re.compile(r"[^\n.!?]+[.!?]*")
_MIN_SENTENCE_CHARS = 24
_MIN_SENTENCE_WORDS = 4
_STRIP = " \t\r.!?,;:"
_INSTRUCTION_ROLES = frozenset({"system", "developer", "user"})


@dataclass
class WasteFinding:
    type: str  # one of WASTE_TYPES
    where: str  # "system", "tools", "messages[3]"
    tokens: int
    count: int = 1  # occurrences folded into this finding
    cost_usd: float | None = None
    example: str | None = None  # the filler phrase (never message text)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "where": self.where,
            "tokens": self.tokens,
            "count": self.count,
            "cost_usd": self.cost_usd,
        }
        if self.example is not None:
            out["example"] = self.example
        return out


@dataclass
class WasteReport:
    findings: list[WasteFinding] = field(default_factory=list)
    input_rate_usd_per_mtok: float | None = None  # None when the model's price is unknown

    @property
    def tokens(self) -> int:
        return sum(f.tokens for f in self.findings)

    @property
    def cost_usd(self) -> float | None:
        if self.input_rate_usd_per_mtok is None:
            return None
        return sum(((f.cost_usd or 0.0) for f in self.findings), 0.0)

    def by_type(self) -> dict[str, int]:
        out = dict.fromkeys(WASTE_TYPES, 0)
        for f in self.findings:
            out[f.type] += f.tokens
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "input_rate_usd_per_mtok": self.input_rate_usd_per_mtok,
            "by_type": self.by_type(),
            "findings": [f.to_dict() for f in self.findings],
        }


@functools.lru_cache(maxsize=8192)
def _tokens(text: str) -> int:
    """Tokens of a short fragment (whitespace runs and phrases repeat a lot, so they are cached)."""
    return count_tokens(text)


def _count(text: str) -> int:
    return _tokens(text) if len(text) <= 256 else count_tokens(text)


def _where(part: Part) -> str:
    if part.message is not None:
        return f"messages[{part.message}]"
    return part.section


def _looks_like_indented_json(text: str) -> bool:
    stripped = text.strip()
    if len(stripped) < 2 or stripped[0] not in "{[" or "\n" not in stripped:
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


def whitespace_tokens(text: str) -> int:
    """Tokens that removing whitespace bloat from `text` would save.

    Three or more line breaks in a row become two, spaces at the end of a line go, repeated spaces between
    words become one; pretty-printed JSON loses its line breaks and indentation. Indentation at the start of
    a line of prose or code is kept.
    """
    if not text or ("  " not in text and "\n" not in text and "\t" not in text):
        return 0
    if _looks_like_indented_json(text):
        return sum(_count(m.group()) for m in _JSON_INDENT.finditer(text))
    wasted = 0
    if "\n" in text:
        for m in _BREAKS.finditer(text):
            start = m.start()
            before = start
            while before > 0 and text[before - 1] in " \t\r":
                before -= 1
            if before < start and before > 0 and text[before - 1] != "\n":
                wasted += _count(text[before:start].rstrip("\r"))  # spaces at the end of a line
            run = m.group()
            breaks = run.count("\n")
            indent = run[run.rindex("\n") + 1 :]
            kept = "\n" * min(breaks, 2) + indent
            if run != kept:
                wasted += max(0, _count(run) - _count(kept))
    if "  " in text:
        n = len(text)
        for m in _SPACES.finditer(text):
            start, end = m.start(), m.end()
            if start == 0 or text[start - 1] in "\n\t":
                continue  # indentation
            if end == n:
                wasted += _count(m.group())  # trailing at the end of the text
            elif text[end] not in "\r\n":
                wasted += _count(m.group()[1:])  # between words
    return wasted


def filler_matches(text: str) -> list[str]:
    """The polite filler phrases in `text` (as written)."""
    lower = text.lower()
    if not any(anchor in lower for anchor in _FILLER_ANCHORS):
        return []
    out = []
    for m in _FILLER.finditer(lower):
        start = m.start()
        if start and lower[start - 1].isalnum():
            continue
        out.append(text[start : m.end()])
    return out


class _Findings:
    """Folds findings of one type and place into one entry."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], WasteFinding] = {}

    def add(self, kind: str, where: str, tokens: int, example: str | None = None) -> None:
        if tokens <= 0:
            return
        found = self.items.get((kind, where))
        if found is None:
            self.items[(kind, where)] = WasteFinding(kind, where, tokens, 1, example=example)
        else:
            found.tokens += tokens
            found.count += 1


def _repeats(text: str, where: str, seen: set[str], findings: _Findings) -> None:
    """Sentences of `text` already said earlier in the request (or earlier in `text`)."""
    sentences = [x for x in _SENTENCE.findall(text) if len(x) >= _MIN_SENTENCE_CHARS]
    if not sentences:
        return
    keys = [x.lower().strip(_STRIP) for x in sentences]
    unique = set(keys)
    if len(unique) == len(keys) and seen.isdisjoint(unique):  # the common case, without a Python loop
        seen.update(k for k in unique if k.count(" ") + 1 >= _MIN_SENTENCE_WORDS)
        return
    for sentence, key in zip(sentences, keys, strict=True):
        if key in seen:
            findings.add("repeated_instruction", where, _count(" " + sentence.strip()))
        elif key.count(" ") + 1 >= _MIN_SENTENCE_WORDS:
            seen.add(key)


def find_waste(parts: list[Part]) -> list[WasteFinding]:
    """Findings (tokens, no cost) over the parts of one request."""
    findings = _Findings()
    seen: set[str] = set()
    by_message: dict[int | str, list[Part]] = {}
    for part in parts:
        if part.section != "tools":
            by_message.setdefault(part.message if part.message is not None else part.section, []).append(part)
        if not part.text:
            continue
        where = _where(part)
        findings.add("whitespace", where, whitespace_tokens(part.text))
        if part.section in ("system", "history", "query") and part.kind == "text":
            for phrase in filler_matches(part.text):
                findings.add("filler", where, _count(" " + phrase), phrase.lower().rstrip(",!."))
        if part.role in _INSTRUCTION_ROLES and part.kind == "text" and part.section != "context":
            _repeats(part.text, where, seen, findings)
    for key, message_parts in by_message.items():
        if any(p.kind != "text" for p in message_parts):
            continue
        text = "".join(p.text for p in message_parts)
        if not any(ch.isalnum() for ch in text):
            where = f"messages[{key}]" if isinstance(key, int) else str(key)
            findings.add("empty_message", where, MESSAGE_OVERHEAD + _count(text))
    return list(findings.items.values())


def input_rate(pricer: Pricer, provider: str, model: str | None) -> Decimal | None:
    """USD per million uncached input tokens of the model (None when it is not priced)."""
    if not model:
        return None
    price = pricer.price(provider, model, Usage(input_tokens=10_000))  # below every long-context tier
    return price.cost_usd * 100 if price.priced and price.cost_usd is not None else None


_default_pricer: Pricer | None = None


def _pricer() -> Pricer:
    global _default_pricer
    if _default_pricer is None:
        _default_pricer = Pricer()
    return _default_pricer


def analyze_waste(
    api: str,
    body: Mapping[str, Any],
    model: str | None = None,
    *,
    provider: str | None = None,
    pricer: Pricer | None = None,
) -> WasteReport:
    """Waste findings of a request body. `model` defaults to the body's; `provider` to the API format."""
    if model is None and isinstance(body.get("model"), str):
        model = str(body["model"])
    rate = input_rate(pricer or _pricer(), provider or api, model)
    report = WasteReport(find_waste(request_parts(api, body)))
    if rate is not None:
        report.input_rate_usd_per_mtok = float(rate)
        for f in report.findings:
            f.cost_usd = float(rate * f.tokens / 1_000_000)
    return report
