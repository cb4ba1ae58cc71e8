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

# One pass over a text finds every kind of whitespace bloat without overlaps.
_WHITESPACE = re.compile(
    r"(?P<blank>\n[ \t]*(?:\n[ \t]*){2,})"  # three or more line breaks in a row (blank lines)
    r"|(?P<trail>[ \t]+(?=\r?\n))"  # spaces before a line break
    r"|(?P<inner>(?<=\S)[ \t]{2,}(?=\S))"  # repeated spaces between words
)
_JSON_INDENT = re.compile(r"\r?\n[ \t]*")
_FILLER = re.compile(
    r"\b(?:"
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
    r")\b[,!.]?",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^\n.!?]+[.!?]?")
_MIN_SENTENCE_CHARS = 24
_MIN_SENTENCE_WORDS = 4
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
        return sum((f.cost_usd or 0.0) for f in self.findings)

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
    """Tokens that removing whitespace bloat from `text` would save."""
    if not text or ("  " not in text and "\n" not in text and "\t" not in text):
        return 0
    if _looks_like_indented_json(text):
        return sum(_count(m.group()) for m in _JSON_INDENT.finditer(text))
    wasted = 0
    for m in _WHITESPACE.finditer(text):
        kind, run = m.lastgroup, m.group()
        if kind == "blank":
            wasted += max(0, _count(run) - _count("\n\n"))
        elif kind == "trail":
            wasted += _count(run)
        else:
            wasted += _count(run[1:])
    return wasted


def filler_matches(text: str) -> list[str]:
    return [m.group() for m in _FILLER.finditer(text)]


def _normalise(sentence: str) -> str:
    return " ".join(sentence.lower().split()).strip(" .!?,;:")


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
            for m in _SENTENCE.finditer(part.text):
                sentence = m.group()
                if len(sentence) < _MIN_SENTENCE_CHARS:
                    continue
                key = _normalise(sentence)
                if key.count(" ") + 1 < _MIN_SENTENCE_WORDS:
                    continue
                if key in seen:
                    findings.add("repeated_instruction", where, _count(" " + sentence.strip()))
                else:
                    seen.add(key)
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
    price = pricer.price(provider, model, Usage(input_tokens=1_000_000))
    return price.cost_usd if price.priced else None


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
