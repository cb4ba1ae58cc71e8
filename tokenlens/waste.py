"""Waste in a request body (docs/analytics-api.md#how-the-figures-are-computed): whitespace bloat, polite filler, repeated instructions, empty
messages.

`analyze_waste(api, body, model)` is pure and works offline: the gateway runs it in the writer thread and
`tokenlens analyze` on a file, and both give the same figure. Tokens are counted with the local tokenizer
(`tokens.count_tokens`, not scaled to the provider's count) and priced at the model's own input rate.
Only the wasted fragments are tokenized, and the texts are scanned with str methods, regexes that start with a
literal and (long ASCII texts) numpy, so a 50 KB prompt takes about half a millisecond (`bench/insights.py`).
A prefix resent across calls is not waste (it is a prompt-caching opportunity, see `insights`).
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokenlens.exchange import Exchange
from tokenlens.pricing import Pricer
from tokenlens.prompt_parts import Part, request_parts
from tokenlens.records import CallRecord
from tokenlens.tokens import MESSAGE_OVERHEAD, count_tokens
from tokenlens.usage import Usage, wire_format

WASTE_TYPES = ("whitespace", "filler", "repeated_instruction", "empty_message")

# Patterns that start with a literal, so that the regex engine jumps from one candidate to the next.
_JSON_INDENT = re.compile(r"\r?\n[ \t]*")
# A run of line breaks (spaces, tabs and CRs included) that is more than one or two breaks followed by an
# indentation, else a line break right after a space, tab or CR (spaces at the end of a line, maybe).
_BREAKS = re.compile(r"\n(?:[ \t\r]+\n|\n[ \t\r]*\n)[ \t\r\n]*|\n(?<=[ \t\r]\n)")
# Two or more spaces after a character other than a line break or a tab (not an indentation).
_SPACES = re.compile(r"  (?<=[^\n\t ]  ) *")
_SPACE_RUN = re.compile(r" +")
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
# _FILLER only runs around the matches of these seeds: every _FILLER match contains the start of a seed match
# at most `before` characters after its own start and `after` characters before its end (bounds over every
# occurrence of the seed's first character in every string _FILLER matches; the tests check them). A seed starts
# with one literal character, which the regex engine skips to much faster than it tries _FILLER at every "i",
# "t", "p"... of a text. Seeds: "thank" and "kind"; "please" and "appreciate"; "grateful"; "finds you",
# "bother you" and "you don't" / "you do not" (mind).
_FILLER_SEEDS: tuple[tuple[re.Pattern[str], int, int], ...] = (
    (re.compile(r"k(?<=thank)|kind"), 23, 27),
    (re.compile(r"p(?:lease|preciat)"), 18, 31),
    (re.compile(r"grateful"), 26, 43),
    (re.compile(r"you(?:(?<=finds you)|(?<=bother you)| do)"), 41, 37),
)
_SENTENCE = re.compile(r"[^\n.!?]+[.!?]*")  # a sentence and its end punctuation
_PUNCT_RUN = re.compile(r"\.\.+")  # two or more end punctuation marks, once "!" and "?" are "."
_MIN_SENTENCE_CHARS = 24
_MIN_SENTENCE_WORDS = 4
_STRIP = " \t\r.!?,;:"
_FEW_REPEATS = (
    64  # repeated sentences found with str.find; more, and the sentences are gone through one by one
)
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

    def price(self, rate: Decimal | None) -> None:
        """Cost each finding at the model's input rate (USD per million tokens; None: the model is unpriced)."""
        if rate is None:
            return
        self.input_rate_usd_per_mtok = float(rate)
        for f in self.findings:
            f.cost_usd = float(rate * f.tokens / 1_000_000)

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


def _run_tokens(run: str) -> int:
    """Tokens saved by cutting a run of line breaks (`_BREAKS`) to at most two, its indentation kept."""
    kept = "\n" * min(run.count("\n"), 2) + run[run.rindex("\n") + 1 :]
    return max(0, _count(run) - _count(kept)) if run != kept else 0


_short_run_tokens = functools.lru_cache(maxsize=1024)(_run_tokens)


def whitespace_tokens(text: str) -> int:
    """Tokens that removing whitespace bloat from `text` would save.

    Three or more line breaks in a row become two, spaces at the end of a line go, repeated spaces between
    words become one; pretty-printed JSON loses its line breaks and indentation. Indentation at the start of
    a line of prose or code is kept.
    """
    if not text or ("\n" not in text and "\t" not in text and "  " not in text):
        return 0
    if _looks_like_indented_json(text):
        return sum(_count(m.group()) for m in _JSON_INDENT.finditer(text))
    wasted = 0
    if "\n" in text:
        for m in _BREAKS.finditer(text):
            start, end = m.span()
            if start and text[start - 1] in " \t\r":
                before = start - 1
                while before > 0 and text[before - 1] in " \t\r":
                    before -= 1
                if before > 0 and text[before - 1] != "\n":  # not a blank line
                    trailing = text[before:start].rstrip("\r")
                    if trailing:
                        wasted += _count(trailing)  # spaces at the end of a line
            if end - start > 1:
                wasted += _short_run_tokens(m.group()) if end - start <= 256 else _run_tokens(m.group())
    n = len(text)
    for start, end in _space_runs(text):
        if end == n:
            wasted += _count(text[start:end])  # trailing at the end of the text
        elif text[end] not in "\r\n":
            wasted += _count(text[start + 1 : end])  # between words
    return wasted


def _space_runs(text: str) -> list[tuple[int, int]]:
    """The runs of two or more spaces that follow a character other than a space, a line break or a tab (not
    an indentation). Vectorized for long ASCII texts: the regex engine stops at every single space."""
    if len(text) < 4096 or not text.isascii():  # below that, numpy's fixed cost is more than the regex's
        return [m.span() for m in _SPACES.finditer(text)]
    import numpy as np  # here, not at import: a process that never sees such a text does not load numpy

    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    space = codes == 32
    before = codes[:-2]
    starts = np.flatnonzero(space[1:-1] & space[2:] & (before != 32) & (before != 10) & (before != 9)) + 1
    return [m.span() for start in starts.tolist() if (m := _SPACE_RUN.match(text, start))]


def filler_matches(text: str, lower: str | None = None) -> list[str]:
    """The polite filler phrases in `text` (as written); `lower` is `text.lower()` if the caller has it."""
    if lower is None:
        lower = text.lower()
    n = len(lower)
    most = n // 128  # more seeds than that, and one pass over the whole text is cheaper
    windows: list[tuple[int, int]] = []
    for seed, before, after in _FILLER_SEEDS:
        for m in seed.finditer(lower):
            windows.append((m.start() - before, m.start() + after + 1))
            if len(windows) > most:
                break
        if len(windows) > most:
            windows = [(0, n)]
            break
    windows.sort()
    out = []
    count, i = len(windows), 0
    while i < count:
        # Overlapping windows are merged: no match crosses a merged window's edge and the character after a
        # match (for `\b` and the punctuation) is inside it, so these are the matches of the whole text.
        start, end = windows[i]
        i += 1
        while i < count and windows[i][0] <= end:
            end = max(end, windows[i][1])
            i += 1
        for m in _FILLER.finditer(lower, max(0, start), min(n, end)):
            begin = m.start()
            if not begin or not lower[begin - 1].isalnum():
                out.append(text[begin : m.end()])
    return out


def _charwise_lower(text: str) -> bool:
    """Whether `text.lower()` lower-cases character by character (same length, no context): every character
    but U+0130 (two characters lower-cased) and the capital sigma (final form depends on what follows)."""
    return text.isascii() or ("\u0130" not in text and "\u03a3" not in text)


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


def _sentence_keys(lower: str) -> list[str] | None:
    """The keys (lower-cased, stripped) of the sentences (`_SENTENCE`) of `lower` that are at least
    _MIN_SENTENCE_CHARS long, end punctuation included, in any order; `lower` must be lower-cased character by
    character. The keys `_SENTENCE.findall` gives, several times faster (str.split); None for a text with a NUL.

    The text is cut at every "." (also "!" and "?") and line break; a NUL marks a piece that punctuation ends,
    so that its length counts one punctuation mark. Longer runs of punctuation are added afterwards.
    """
    if "\0" in lower:
        return None
    text = lower.replace("!", ".").replace("?", ".")
    pieces = text.replace(".", "\0.").replace("\n", ".").split(".")
    min_chars, strip = _MIN_SENTENCE_CHARS, _STRIP + "\0"
    keys = [piece.strip(strip) for piece in pieces if len(piece) >= min_chars]
    if "\0" in pieces:  # a short sentence reaches the length with two or more punctuation marks
        for m in _PUNCT_RUN.finditer(text):
            start, end = m.span()
            begin = max(text.rfind(".", 0, start), text.rfind("\n", 0, start)) + 1
            if 0 < start - begin < min_chars - 1 and end - begin >= min_chars:
                keys.append(text[begin:start].strip(strip))
    return keys


def _repeats(text: str, lower: str, where: str, seen: set[str], findings: _Findings) -> None:
    """Sentences of `text` already said earlier in the request (or earlier in `text`); `lower` is
    `text.lower()`. `seen` holds the keys of the earlier sentences (at least those of _MIN_SENTENCE_WORDS words,
    the only ones that count)."""
    keys = _sentence_keys(lower) if _charwise_lower(text) else None
    if keys is not None:
        if seen.isdisjoint(keys):
            size = len(seen)
            seen.update(keys)
            if len(seen) == size + len(keys):  # the common case: nothing repeated
                return
            seen.difference_update(keys)  # none of them was there before
        unique = set(keys)
        repeated = seen.intersection(unique)
        found = None
        if len(keys) - len(unique) + len(repeated) <= _FEW_REPEATS:
            if len(unique) < len(keys):
                repeated.update(key for key, n in Counter(keys).items() if n > 1)
            relevant = [key for key in repeated if key.count(" ") + 1 >= _MIN_SENTENCE_WORDS]
            expected = sum(map(keys.count, relevant))
            found = _sentences_with(text, lower, relevant, expected) if expected <= _FEW_REPEATS else None
        if found is not None:
            earlier = seen.intersection(relevant)
            for key, sentence in found:
                if key in earlier:
                    findings.add("repeated_instruction", where, _count(" " + sentence.strip()))
                else:
                    earlier.add(key)
            seen.update(unique)
            return
    for sentence in _SENTENCE.findall(text):  # one sentence at a time
        if len(sentence) < _MIN_SENTENCE_CHARS:
            continue
        key = sentence.lower().strip(_STRIP)
        if key.count(" ") + 1 < _MIN_SENTENCE_WORDS:
            continue
        if key in seen:
            findings.add("repeated_instruction", where, _count(" " + sentence.strip()))
        else:
            seen.add(key)


def _sentences_with(text: str, lower: str, keys: list[str], expected: int) -> list[tuple[str, str]] | None:
    """(key, sentence as written), in order, of the sentences of `text` at least _MIN_SENTENCE_CHARS long whose
    key is one of `keys`, found with str.find; `lower` is `text.lower()`, lower-cased character by character.
    None unless there are `expected` of them (or when there are many places to look at)."""
    marks = lower.replace("!", ".").replace("?", ".")
    n = len(marks)
    found: list[tuple[int, str, str]] = []
    tries, start, stop = 0, 0, -1  # the text between two breaks around the last place looked at
    for key in keys:
        at = marks.find(key)
        while at >= 0:
            tries += 1
            if tries > 4 * _FEW_REPEATS:
                return None
            end = at + len(key)
            if not start <= at <= end <= stop:
                start = max(marks.rfind(".", 0, at), marks.rfind("\n", 0, at)) + 1
                dot, line = marks.find(".", end), marks.find("\n", end)
                stop = min(dot if dot >= 0 else n, line if line >= 0 else n)
            if not marks[start:at].strip(_STRIP) and not marks[end:stop].strip(_STRIP):  # the whole sentence
                close = stop
                while close < n and marks[close] == ".":
                    close += 1
                if close - start >= _MIN_SENTENCE_CHARS:
                    found.append((start, key, text[start:close]))
            at = marks.find(key, at + 1)
    if len(found) != expected:
        return None
    return [(key, sentence) for _, key, sentence in sorted(found)]


def find_waste(parts: list[Part]) -> list[WasteFinding]:
    """Findings (tokens, no cost) over the parts of one request."""
    findings = _Findings()
    seen: set[str] = set()
    by_message: dict[int | str, list[Part]] = {}
    for part in parts:
        if part.section != "tools":
            by_message.setdefault(part.message if part.message is not None else part.section, []).append(part)
        text = part.text
        if not text:
            continue
        where = _where(part)
        findings.add("whitespace", where, whitespace_tokens(text))
        if part.kind != "text":
            continue
        filler = part.section in ("system", "history", "query")
        instruction = part.role in _INSTRUCTION_ROLES and part.section != "context"
        if not (filler or instruction):
            continue
        lower = text.lower()
        if filler:
            for phrase in filler_matches(text, lower):
                findings.add("filler", where, _count(" " + phrase), phrase.lower().rstrip(",!."))
        if instruction:
            _repeats(text, lower, where, seen, findings)
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
    report = WasteReport(find_waste(request_parts(api, body)))
    report.price(input_rate(pricer or _pricer(), provider or api, model))
    return report


def waste_model(exchange: Exchange) -> str | None:
    """The model a call's waste is priced at: the routed model, else the one its body names."""
    body = exchange.request_json
    if exchange.model is None and body is not None and isinstance(body.get("model"), str):
        return str(body["model"])
    return exchange.model


def record_waste(
    exchange: Exchange, record: CallRecord, rate: Decimal | None, parts: list[Part] | None = None
) -> None:
    """Deferred: the waste report of the call's request, priced at `rate` (`input_rate` of `waste_model`).
    `parts`: the request's `request_parts` when the caller has them already (the heatmap reads them too)."""
    if exchange.request_json is None:
        return
    if parts is None:
        parts = request_parts(wire_format(exchange.api, exchange.kind), exchange.request_json)
    report = WasteReport(find_waste(parts))
    report.price(rate)
    record.waste_tokens = report.tokens
    record.details["waste"] = report.to_dict()
