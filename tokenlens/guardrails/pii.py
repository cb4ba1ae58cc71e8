"""PII and secret detection with validation (Luhn, mod 97, octet ranges, key formats) to keep false alarms down.

Every search is linear in the text: literal hints (`@`, `sk-`, `AKIA`, ...) gate the regexes, the e-mail
search expands around each `@` on a bounded slice, and repetitions are bounded or unambiguous.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass


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
    digits = "".join(ch for ch in raw if ch.isdigit())
    n = len(digits)
    before = text[max(0, start - _CONTEXT_BACK) : start]
    if (
        _DATE.match(raw)
        or raw.count(".") >= 2
        and "+" not in raw
        and " " not in raw
        and not _US_PHONE.match(raw)
    ):
        return None  # dates, versions, dotted quads (IPs have their own rule)
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


def _numbers(text: str) -> Iterator[Match]:
    """Cards, SSNs and phones from one pass over digit runs (the run regex starts with a digit, so `re` can
    skip quickly to candidates; a leading `+` or `(` and the neighbours are checked here)."""
    n = len(text)
    for m in _NUMBER_RUN.finditer(text):
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


def _ibans(text: str) -> Iterator[Match]:
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


def _ips(text: str) -> Iterator[Match]:
    """IPv6 (IPv4 comes out of the digit runs in `_numbers`)."""
    for hint in _IPV6_HINT.finditer(text):
        m = _IPV6.search(text, max(0, hint.start() - 40), hint.end() + 40)
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
class _SecretPattern:
    hints: tuple[str, ...]
    regex: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    group: int = 0
    lower_hints: bool = False


_SECRETS: tuple[_SecretPattern, ...] = (
    _SecretPattern(
        ("sk-",),
        re.compile(
            r"(?<![\w-])sk-(?:ant-[a-z0-9]{2,10}-|proj-|svcacct-|admin-|or-v1-)?[A-Za-z0-9_-]{20,200}"
        ),
        _mixed,
    ),
    _SecretPattern(("sk_", "rk_"), re.compile(r"(?<![\w])[sr]k_(?:live|test)_[A-Za-z0-9]{16,120}"), _mixed),
    _SecretPattern(
        ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "AIPA"),
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ),
    _SecretPattern(("AIza",), re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])")),
    _SecretPattern(
        ("gh", "github_pat_"), re.compile(r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{22,255})")
    ),
    _SecretPattern(("xox",), re.compile(r"(?<![\w])xox[abposr]-[A-Za-z0-9-]{10,200}"), _mixed),
    _SecretPattern(("glpat-",), re.compile(r"(?<![\w])glpat-[A-Za-z0-9_-]{20,}")),
    _SecretPattern(("hf_",), re.compile(r"(?<![\w])hf_[A-Za-z]{30,40}(?![\w])")),
    _SecretPattern(
        ("eyJ",),
        re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{4,8000}\.[A-Za-z0-9_-]{8,2000}"),
        _jwt_valid,
    ),
    _SecretPattern(
        ("aws_secret", "secret_access_key", "secretaccesskey"),
        re.compile(
            r"(?i:aws_?secret_?(?:access_?)?key|secretaccesskey)[\"']?\s{0,3}[:=]\s{0,3}[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        None,
        1,
        True,
    ),
    _SecretPattern(
        ("password", "passwd", "api_key", "apikey", "api-key", "secret", "token"),
        re.compile(
            r"(?i:password|passwd|api[_-]?key|client[_-]?secret|secret[_-]?key|auth[_-]?token|access[_-]?token)"
            r"[\"']?\s{0,3}[:=]\s{0,3}[\"']?([^\s\"',;]{8,200})"
        ),
        lambda v: _entropy(v) >= 2.8 and any(c.isdigit() or not c.isalnum() for c in v) and "<" not in v,
        1,
        True,
    ),
)
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY( BLOCK)?-----")


def _secrets(text: str, lowered: str) -> Iterator[Match]:
    for pattern in _SECRETS:
        haystack = lowered if pattern.lower_hints else text
        if not any(h in haystack for h in pattern.hints):
            continue
        for m in pattern.regex.finditer(text):
            value = m.group(pattern.group)
            if pattern.valid is None or pattern.valid(value):
                yield Match("pii.secret", "SECRET", m.start(pattern.group), m.end(pattern.group))
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


def find_pii(text: str) -> list[Match]:
    """Every validated PII or secret match in `text`, non-overlapping, in order."""
    if len(text) < 6:
        return []
    found: list[Match] = []
    lowered = text.lower()
    found.extend(_secrets(text, lowered))
    if "@" in text:
        found.extend(_emails(text))
    if any(ch.isdigit() for ch in text[:64]) or re.search(r"\d", text):
        found.extend(_numbers(text))
        found.extend(_ibans(text))
    found.extend(_ips(text))
    return resolve_overlaps(found)
