"""PII and secret detection with validation (Luhn, mod 97, octet ranges, key formats) to keep false alarms down.

Every search is linear in the text and most of the text is only looked at in C: each detector has a gate that
never misses a match of its regex (a translated copy of the text searched with `bytes.find`: long token runs
holding a key prefix, digit-and-separator stretches, `h:h` for IPv6, capitals-and-digits for IBANs; `:`/`=`
after `password`/`key`/`token` for keyword secrets), and runs its regex only where the gate opens. The e-mail
search expands around each `@` on a bounded slice; repetitions are bounded or unambiguous.
tests/core/test_guardrails_pii.py checks every gate against the ungated scan.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True, slots=True)
class Match:
    """One finding: the rule name (`pii.email`, `custom.x`), the placeholder type and where it is in the text."""

    rule: str
    kind: str  # placeholder type: EMAIL, PHONE, CARD, SSN, IBAN, IP, SECRET or the custom rule's name
    start: int
    end: int


# -- e-mail ------------------------------------------------------------------------------------------------

_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9._%+'-]{1,64}$")
_EMAIL_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)


def _emails(text: str) -> Iterator[Match]:
    at = text.find("@")
    last_end = 0
    while at >= 0:
        left = _EMAIL_LOCAL.search(text, max(last_end, at - 64), at)
        domain = _EMAIL_DOMAIN.match(text, at + 1, min(len(text), at + 256))
        if left and domain:
            start = left.start()
            while start < at and text[start] in ".-+'":
                start += 1
            if start < at and text[at - 1] != ".":
                yield Match("pii.email", "EMAIL", start, domain.end())
                last_end = domain.end()
        at = text.find("@", at + 1)


# -- numbers: cards, SSNs, phones ----------------------------------------------------------------------------

_NUMBER_RUN = re.compile(r"\d[\d \-.()]{5,40}\d")
_BAD_BEFORE = frozenset("_./=-")
_BAD_AFTER = frozenset("_/=")
_SEPARATORS = re.compile(r"[ \-.()]")
_CONTEXT_BACK = 40

_PHONE_WORDS = re.compile(
    r"(?:phone|tel|telephone|mobile|cell|call|text|sms|whatsapp|fax|reach|contact|ring|dial|number)\b[^\n]{0,25}$",
    re.IGNORECASE,
)
_SSN_WORDS = re.compile(r"(?:ssn|social security|social-security|ss#|ss no)[^\n]{0,25}$", re.IGNORECASE)
_NOT_CARD_WORDS = re.compile(
    r"(?:order|invoice|tracking|ticket|ref|reference|account id|customer id|id|isbn|serial|build|version)"
    r"\W{0,3}(?:number|no|#)?\W{0,3}$",
    re.IGNORECASE,
)
_DATE = re.compile(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})$")
_SSN_FORMAT = re.compile(r"^\d{3}-\d{2}-\d{4}$|^\d{3} \d{2} \d{4}$")
_US_PHONE = re.compile(r"^(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}$")
_NATIONAL_PHONE = re.compile(r"^0\d{1,4}(?:[ .-]\d{2,8}){1,4}$|^0\d{9,10}$")
_INTL_PHONE = re.compile(r"^\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?)(?:[ .-]?\d{2,4}){1,5}$")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_brand(digits: str) -> bool:
    """Issuer prefix and length of the major networks: an arbitrary Luhn-valid number is not enough."""
    n = len(digits)
    p2, p4 = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649 or p2 == 62:
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19
    if 300 <= int(digits[:3]) <= 305 or p2 in (36, 38):
        return 14 <= n <= 19
    return False


def _card_grouping(raw: str) -> bool:
    """Cards are written as one run or in groups of 4 (Amex 4-6-5), with one kind of separator."""
    groups = [g for g in _SEPARATORS.split(raw) if g]
    if len(groups) == 1:
        return True
    seps = set(re.findall(r"[ \-.]", raw))
    if len(seps) > 1 or "(" in raw:
        return False
    sizes = [len(g) for g in groups]
    return sizes in ([4, 6, 5], [4, 6, 4]) or all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _classify_number(text: str, start: int, raw: str) -> str | None:
    if len(raw) < 9:  # fewer than 9 characters cannot hold a phone, SSN or card number
        return None
    if (
        _DATE.match(raw)
        or raw.count(".") >= 2
        and "+" not in raw
        and " " not in raw
        and not _US_PHONE.match(raw)
    ):
        return None  # dates, versions, dotted quads (IPs have their own rule)
    digits = "".join(ch for ch in raw if ch.isdigit())
    n = len(digits)
    before = text[max(0, start - _CONTEXT_BACK) : start]
    if 13 <= n <= 19 and luhn_valid(digits) and _card_brand(digits) and _card_grouping(raw):
        if not _NOT_CARD_WORDS.search(before):
            return "card"
    if n == 9 and (_SSN_FORMAT.match(raw) or raw.isdigit() and _SSN_WORDS.search(before)):
        if _ssn_valid(digits) and (raw.isdigit() or _SSN_FORMAT.match(raw)):
            if "-" in raw or _SSN_WORDS.search(before):
                return "ssn"
    if raw.startswith("+"):
        return "phone" if 8 <= n <= 15 and _INTL_PHONE.match(raw) else None
    if _US_PHONE.match(raw) and n in (10, 11):
        return "phone"
    if _NATIONAL_PHONE.match(raw) and 10 <= n <= 11:
        grouped = not raw.isdigit()
        return "phone" if grouped or _PHONE_WORDS.search(before) else None
    if raw.isdigit() and 10 <= n <= 11 and _PHONE_WORDS.search(before) and not _NOT_CARD_WORDS.search(before):
        return "phone"
    return None


_NUMBER_KIND = {"card": ("pii.card", "CARD"), "ssn": ("pii.ssn", "SSN"), "phone": ("pii.phone", "PHONE")}


_RUN_TABLE = bytes(0x64 if chr(i) in "0123456789 -.()" else 0x20 for i in range(256))
_MIN_RUN = b"d" * 7  # the shortest `_NUMBER_RUN` match


def _number_runs(text: str) -> Iterator[re.Match[str]]:
    """`_NUMBER_RUN.finditer(text)`, run only on the stretches of digits and separators long enough to hold a
    match (found at C speed on a translated copy; offsets agree because the text is ASCII) and not a plain
    date (which `_numbers` would drop)."""
    if not text.isascii():
        yield from _NUMBER_RUN.finditer(text)
        return
    shape = text.encode("ascii").translate(_RUN_TABLE)
    at = shape.find(_MIN_RUN)
    while at >= 0:
        end = shape.find(b" ", at)
        if end < 0:
            end = len(shape)
        region = text[at:end]
        digits = region.strip(" -.()")  # a match starts and ends with a digit
        if len(digits) >= 7 and not (
            _DATE.match(digits) and region[0] not in "(+" and text[at - 1 : at] != "+"
        ):
            yield from _NUMBER_RUN.finditer(text, at, end)
        at = shape.find(_MIN_RUN, end)


def _numbers(text: str) -> Iterator[Match]:
    """Cards, SSNs and phones from one pass over digit runs (a leading `+` or `(` and the neighbours are
    checked here)."""
    n = len(text)
    for m in _number_runs(text):
        start, end = m.start(), m.end()
        if start > 0 and text[start - 1] in "(+":
            start -= 1
            if start > 0 and text[start] == "(" and text[start - 1] == "+":
                start -= 1
        prev = text[start - 1] if start > 0 else " "
        nxt = text[end] if end < n else " "
        raw = text[start:end]
        if raw.count(".") == 3 and raw.replace(".", "").isdigit() and not (prev.isalnum() or prev in "._"):
            if not (nxt.isalnum() or nxt == "." and end + 1 < n and text[end + 1].isdigit()):
                if _ipv4_reportable(text, start, raw):
                    yield Match("pii.ip", "IP", start, end)
            continue
        if prev.isalnum() or prev in _BAD_BEFORE or nxt.isalnum() or nxt in _BAD_AFTER:
            continue
        if nxt in ".-" and end + 1 < n and text[end + 1].isdigit():
            continue
        raw = text[start:end]
        if raw.startswith("(") and ")" not in raw:
            raw, start = raw[1:], start + 1
        while raw.endswith(")") and raw.count(")") > raw.count("("):
            raw = raw[:-1]
        kind = _classify_number(text, start, raw)
        if kind is not None:
            rule, label = _NUMBER_KIND[kind]
            yield Match(rule, label, start, start + len(raw))


# -- IBAN ----------------------------------------------------------------------------------------------------

_IBAN = re.compile(
    r"(?<![A-Za-z0-9])([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)(?![A-Za-z0-9])"
)
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28, "CZ": 24,
    "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29,
}  # fmt: skip


def iban_valid(compact: str) -> bool:
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


_IBAN_START = re.compile(r"[A-Z][A-Z]\d\d")


_IBAN_TABLE = bytes(
    0x41 if 0x41 <= i <= 0x5A else 0x64 if 0x30 <= i <= 0x39 or i >= 0x80 else 0x20 for i in range(256)
)


def _may_hold_iban(text: str) -> bool:
    """Two capitals then two digits somewhere (non-ASCII counts as a digit: `\\d` is Unicode)."""
    return b"AAdd" in text.encode("utf-8", "surrogatepass").translate(_IBAN_TABLE)


def _ibans(text: str) -> Iterator[Match]:
    if not _may_hold_iban(text):
        return
    for start in _IBAN_START.finditer(text):
        m = _IBAN.match(text, start.start())
        if m is None:
            continue
        if iban_valid(m.group(1).replace(" ", "")):
            yield Match("pii.iban", "IBAN", m.start(1), m.end(1))


# -- IP addresses ----------------------------------------------------------------------------------------------

_IPV6 = re.compile(r"(?<![\w:])((?:[0-9A-Fa-f]{1,4}:){1,7}(?::|(?::?[0-9A-Fa-f]{1,4}){1,7}))(?![\w:])")
_IPV6_HINT = re.compile(r"[0-9A-Fa-f]::?[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")
_VERSION_WORDS = re.compile(r"\b(?:version|ver|v|release|build|oid)\W{0,2}$", re.IGNORECASE)


def _ip_reportable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (address.is_loopback or address.is_unspecified)


def _ipv4_reportable(text: str, start: int, raw: str) -> bool:
    if _VERSION_WORDS.search(text, max(0, start - 12), start):
        return False
    try:
        return _ip_reportable(ipaddress.IPv4Address(raw))
    except ValueError:
        return False


_HEX_TABLE = bytes(
    0x68 if chr(i) in "0123456789abcdefABCDEF" else 0x3A if i == 0x3A else 0x20 for i in range(256)
)


_COLON_RUN = re.compile(
    rb":h{1,4}:h{1,4}:"
)  # in the hex shape; starts with a literal, so `re` jumps to colons


def _ipv6_hints(text: str) -> Iterator[re.Match[str]]:
    """`_IPV6_HINT.finditer(text)`, tried only where the text has three colons with hex digits between them
    (every hint holds `:h:h:` one or two characters after its start), found in a translated copy; offsets agree
    because the text is ASCII."""
    if not text.isascii():
        yield from _IPV6_HINT.finditer(text)
        return
    resume = 0
    for run in _COLON_RUN.finditer(text.encode("ascii").translate(_HEX_TABLE)):
        for start in (run.start() - 1, run.start() - 2):
            if start >= resume and (hint := _IPV6_HINT.match(text, start)) is not None:
                resume = hint.end()
                yield hint
                break


def _ips(text: str) -> Iterator[Match]:
    """IPv6 (IPv4 comes out of the digit runs in `_numbers`)."""
    for hint in _ipv6_hints(text):
        # the address around this hint (not the first one in reach: two addresses can sit within 40 characters)
        around = (
            m
            for m in _IPV6.finditer(text, max(0, hint.start() - 40), hint.end() + 40)
            if m.start(1) <= hint.start() < m.end(1)
        )
        m = next(around, None)
        if m is not None:
            candidate = m.group(1)
            if candidate.count(":") < 2:
                continue
            try:
                address6 = ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            if _ip_reportable(address6):
                yield Match("pii.ip", "IP", m.start(1), m.end(1))


# -- secrets ----------------------------------------------------------------------------------------------------


def _entropy(value: str) -> float:
    counts: dict[str, int] = {}
    for ch in value:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _jwt_valid(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded)


def _mixed(token: str) -> bool:
    """A real key mixes letters and digits; `sk-this-is-not-a-key` is prose."""
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token) and _entropy(token) >= 3.0


@dataclass(frozen=True)
class _KeyFormat:
    """A key with a recognisable shape (`sk-...`, `AKIA...`, a JWT): run only when a long token holds a hint."""

    hints: tuple[str, ...]
    regex: re.Pattern[str]
    valid: Callable[[str], bool] | None = None

    @cached_property
    def hint_bytes(self) -> tuple[bytes, ...]:
        return tuple(h.encode() for h in self.hints)


_KEY_FORMATS: tuple[_KeyFormat, ...] = (
    _KeyFormat(
        ("sk-",),
        re.compile(
            r"(?<![\w-])sk-(?:ant-[a-z0-9]{2,10}-|proj-|svcacct-|admin-|or-v1-)?[A-Za-z0-9_-]{20,200}"
        ),
        _mixed,
    ),
    _KeyFormat(("sk_", "rk_"), re.compile(r"(?<![\w])[sr]k_(?:live|test)_[A-Za-z0-9]{16,120}"), _mixed),
    _KeyFormat(
        ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "AIPA"),
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ),
    _KeyFormat(("AIza",), re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])")),
    _KeyFormat(
        ("gh", "github_pat_"), re.compile(r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{22,255})")
    ),
    _KeyFormat(("xox",), re.compile(r"(?<![\w])xox[abposr]-[A-Za-z0-9-]{10,200}"), _mixed),
    _KeyFormat(("glpat-",), re.compile(r"(?<![\w])glpat-[A-Za-z0-9_-]{20,}")),
    _KeyFormat(("hf_",), re.compile(r"(?<![\w])hf_[A-Za-z]{30,40}(?![\w])")),
    _KeyFormat(
        ("eyJ",),
        re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{4,8000}\.[A-Za-z0-9_-]{8,2000}"),
        _jwt_valid,
    ),
)
# Every key format above is a run of at least 11 token characters ([A-Za-z0-9_-], or \w for a few) that holds
# one of its hints, so a text without such a run costs one pass at C speed. Non-ASCII bytes count as token
# characters (\w matches letters of any script), which only makes the gate open more often.
_MIN_KEY_RUN = 11
_TOKEN_TABLE = bytes(
    0x61 if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "_-") or i >= 0x80 else 0x20
    for i in range(256)
)
_LONG_RUNS = re.compile(b"a" * _MIN_KEY_RUN + b"+")  # a literal prefix: `re` skips to candidates quickly
_HINT_FIRST_BYTES = frozenset(h[:1] for key in _KEY_FORMATS for h in key.hint_bytes)


def _long_token_runs(text: str) -> bytes:
    """The runs of >= 11 token characters in the text, joined by spaces (usually a small fraction of it)."""
    encoded = text.encode("utf-8", "surrogatepass")
    shape = encoded.translate(_TOKEN_TABLE)
    return b" ".join(encoded[m.start() : m.end()] for m in _LONG_RUNS.finditer(shape))


@dataclass(frozen=True)
class _KeywordSecret:
    """`password: ...`, `aws_secret_access_key = ...`: a keyword (any case), `:` or `=`, then the value.

    The keyword ends with one of `ends`; the value is looked for only after such an end followed by an
    assignment, and the keyword only in the few characters before it (in the lower-cased text)."""

    ends: tuple[str, ...]
    keyword: str  # lower-case regular expression
    value: re.Pattern[str]  # from the end of the keyword; group 1 is the secret
    valid: Callable[[str], bool] | None = None

    @cached_property
    def keyword_spellings(self) -> tuple[str, ...]:
        """Every string `keyword` matches (its language is finite), for one `str.endswith` at each end word."""
        return _spellings(self.keyword)

    @cached_property
    def keyword_any_case(self) -> re.Pattern[str]:
        return re.compile(f"(?:{self.keyword})\\Z", re.IGNORECASE)


def _spellings(pattern: str) -> tuple[str, ...]:
    """Every string a pattern of literals, `[..]` sets of single characters, `(?:..)` groups, `|` and `?` matches;
    ValueError for anything else (a pattern whose language is not such a finite list)."""

    def alternatives(i: int) -> tuple[list[str], int]:
        out, i = sequence(i)
        while i < len(pattern) and pattern[i] == "|":
            more, i = sequence(i + 1)
            out += more
        return out, i

    def sequence(i: int) -> tuple[list[str], int]:
        out = [""]
        while i < len(pattern) and pattern[i] not in "|)":
            if pattern.startswith("(?:", i):
                atom, i = alternatives(i + 3)
                if pattern[i : i + 1] != ")":
                    raise ValueError(pattern)
                i += 1
            elif pattern[i] == "[":
                close = pattern.index("]", i)
                atom = list(pattern[i + 1 : close])
                if "-" in atom[1:-1] or "\\" in atom or "^" in atom:
                    raise ValueError(pattern)
                i = close + 1
            elif pattern[i].isalnum() or pattern[i] in "_- ":
                atom, i = [pattern[i]], i + 1
            else:
                raise ValueError(pattern)
            if pattern[i : i + 1] == "?":
                atom, i = [*atom, ""], i + 1
            out = [a + b for a in out for b in atom]
        return out, i

    strings, end = alternatives(0)
    if end != len(pattern):
        raise ValueError(pattern)
    return tuple(dict.fromkeys(strings))


_ASSIGN = r"[\"']?\s{0,3}[:=]"
_KEYWORD_SECRETS: tuple[_KeywordSecret, ...] = (
    _KeywordSecret(
        ("key",),
        r"aws_?secret_?(?:access_?)?key|secretaccesskey",
        re.compile(_ASSIGN + r"\s{0,3}[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"),
    ),
    _KeywordSecret(
        ("password", "passwd", "key", "secret", "token"),
        r"password|passwd|api[_-]?key|client[_-]?secret|secret[_-]?key|auth[_-]?token|access[_-]?token",
        re.compile(_ASSIGN + r"\s{0,3}[\"']?([^\s\"',;]{8,200})"),
        lambda v: "<" not in v and any(c.isdigit() or not c.isalnum() for c in v) and _entropy(v) >= 2.8,
    ),
)
_END_WORDS = tuple(sorted({w for s in _KEYWORD_SECRETS for w in s.ends}))
_END_WORD = re.compile("|".join(_END_WORDS), re.IGNORECASE)
_ASSIGNS = re.compile(_ASSIGN)
_KEYWORD_BACK = 24  # the longest keyword (`aws_secret_access_key`) starts 18 characters before its end word
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY( BLOCK)?-----")


def _assigned_words() -> tuple[re.Pattern[str], ...]:
    """One regex per group of end words sharing their first four letters (`passw(?:ord|d)`), each the literal
    prefix `re` skips to at C speed, followed by an assignment (a lookahead)."""
    groups: dict[str, list[str]] = {}
    for word in _END_WORDS:
        groups.setdefault(word[:4], []).append(word)
    patterns = []
    for words in groups.values():
        if any(a != b and b.startswith(a) for a in words for b in words):  # one match per position
            raise ValueError(f"an end word starts another of its group: {words}")
        prefix = os.path.commonprefix(words)
        rest = "|".join(re.escape(w[len(prefix) :]) for w in words)
        patterns.append(re.compile(f"{re.escape(prefix)}(?:{rest})(?={_ASSIGN})"))
    return tuple(patterns)


_ASSIGNED_WORDS = _assigned_words()


def _assignments(lowered: str) -> list[tuple[int, str]]:
    """(end of the keyword, its end word) for every end word followed by `:` or `=`, in text order."""
    found = [(m.end(), m.group()) for rx in _ASSIGNED_WORDS for m in rx.finditer(lowered)]
    found.sort()
    return found


def _keyword_secrets(text: str, lowered: str) -> Iterator[Match]:
    if len(lowered) == len(text):
        assignments, haystack, any_case = _assignments(lowered), lowered, False
    else:  # lower-casing moved offsets (a few scripts): work on the text itself
        ends = (m for m in _END_WORD.finditer(text) if _ASSIGNS.match(text, m.end()))
        assignments, haystack, any_case = [(m.end(), m.group().lower()) for m in ends], text, True
    for secret in _KEYWORD_SECRETS:
        keyword, spellings = secret.keyword_any_case, secret.keyword_spellings
        consumed = 0
        for end, word in assignments:
            if word not in secret.ends:
                continue
            start = max(consumed, end - _KEYWORD_BACK)
            if not (
                keyword.search(haystack, start, end) if any_case else haystack.endswith(spellings, start, end)
            ):
                continue
            value = secret.value.match(text, end)
            if value is None:
                continue
            consumed = value.end()
            if secret.valid is None or secret.valid(value.group(1)):
                yield Match("pii.secret", "SECRET", value.start(1), value.end(1))


def _secrets(text: str, lowered: str) -> Iterator[Match]:
    runs = _long_token_runs(text)
    # the first byte of each hint looked for first (one `memchr`): most hints then need no search of their own
    firsts = {b for b in _HINT_FIRST_BYTES if b in runs} if runs else set()
    for key in _KEY_FORMATS:
        if firsts and any(h[:1] in firsts and h in runs for h in key.hint_bytes):
            for m in key.regex.finditer(text):
                if key.valid is None or key.valid(m.group()):
                    yield Match("pii.secret", "SECRET", m.start(), m.end())
    yield from _keyword_secrets(text, lowered)
    if "-----BEGIN" in text:
        for m in _PEM_BEGIN.finditer(text):
            end = text.find("-----END", m.end())
            close = text.find("-----", end + 8) if end >= 0 else -1
            stop = close + 5 if close >= 0 else min(len(text), m.end() + 4096)
            yield Match("pii.secret", "SECRET", m.start(), stop)


# -- all together ------------------------------------------------------------------------------------------------

PRIORITY = {
    "pii.secret": 0,
    "pii.card": 1,
    "pii.iban": 2,
    "pii.ssn": 3,
    "pii.email": 4,
    "pii.ip": 5,
    "pii.phone": 6,
}


def resolve_overlaps(matches: list[Match]) -> list[Match]:
    """Keep non-overlapping matches: the earliest, then the higher-priority rule, then the longest."""
    ordered = sorted(matches, key=lambda m: (m.start, PRIORITY.get(m.rule, 9), -(m.end - m.start)))
    kept: list[Match] = []
    for m in ordered:
        if kept and m.start < kept[-1].end:
            continue
        kept.append(m)
    return kept


def _has_digit(text: str) -> bool:
    """`re.search(r"\\d", text)`: in ASCII text a search for each digit (`memchr`), in other text the regex (`\\d`
    is any Unicode digit)."""
    if text.isascii():
        return any(d in text for d in "0123456789")
    return re.search(r"\d", text) is not None


def find_pii(text: str) -> list[Match]:
    """Every validated PII or secret match in `text`, non-overlapping, in order."""
    if len(text) < 6:
        return []
    found: list[Match] = []
    lowered = text.lower()
    found.extend(_secrets(text, lowered))
    if "@" in text:
        found.extend(_emails(text))
    if _has_digit(text):
        found.extend(_numbers(text))
        found.extend(_ibans(text))
    found.extend(_ips(text))
    return resolve_overlaps(found)
