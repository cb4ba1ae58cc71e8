"""The PII detector's gates never lose a match: the gated scan equals the same detectors run over the whole text.

The gates (tokenlens/guardrails/pii.py) only decide where the regexes run; here each one is replaced by the
plain full-text pass it stands for, and the findings must be identical, on the labelled set, on the same
examples buried in 8 KB of prose, code and JSON, and on cases made to sit at the edges of each gate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenlens.guardrails import pii
from tokenlens.guardrails.pii import Match, find_pii

DATA = Path(__file__).parent.parent / "data" / "guardrails"

PROSE = (
    "Our onboarding guide explains how new engineers set up their laptop and request access to the "
    "repositories. Each team keeps a page about its services and the key dashboards worth watching. "
)
CODE = (
    "def handler(event, context):\n    return {'status': 200, 'id': 42}  # release 2.4.1 on 2023-09-30\n"
    "    tokens = count(text)  # token: budget of 1,234,567 (room 4.12)\n"
)
RECORDS = (
    '{"id": "req_01HXYZ8K2M3N4P5Q6R7S8T9U0V", "created_at": "2024-05-01T12:34:56Z", "tokens": 1234, '
    '"sha": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "api_key": "<redacted>"}\n'
)
FILLERS = {"prose": PROSE, "code": CODE, "records": RECORDS}

EDGE_CASES = [
    "userPassword: Xk9#mQ2$vLp7",  # camelCase keyword (no word boundary before `password`)
    'config = {"DB_PASSWD" : "s3cr3t!Value"}',
    "AWSSecretAccessKey=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "export CLIENT-SECRET='9fQ!x2LmZ0pR'",
    "auth_token:abc123def456ghi",
    "Authorization uses sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4 today",
    "x-sk_live_4eC39HqLyjWDarjtT1zdp7dc and rk_test_51H8abcdefghijklmnop",
    "AKIAIOSFODNN7EXAMPLE AIzaSyD-1234567890abcdefghijklmnopqrstu",
    "ghp_1234567890abcdefghijklmnopqrstuvwxyzAB github_pat_11ABCDEFG0123456789_abcdefghij",
    "xoxb-123456789012-abcdefABCDEF glpat-abcdefghij0123456789 hf_abcdefghijklmnopqrstuvwxyzABCD",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "Größe: 4111 1111 1111 1111 und +44 20 7946 0958, Adresse fe80::1ff:fe23:4567:890a",
    "İstanbul office password: hunter2!xyz and card 4111-1111-1111-1111",  # lower() changes the length
    "server 2001:db8:85a3::8a2e:370:7334 at 12:34:56 and 10:00:00:00",
    "hosts a:b:c:d:e:f:1:2, fe80::1:2:3, 2001:db8::8:800:200c:417a and 1::2:3:4:5:6:7",
    "link fe80::1ff:fe23:4567 is down",
    "password\u00a0: Xk9#mQ2$vLp7 (a no-break space before the colon)",
    "dates +2023-09-30, (2023-09-30), 2023-09-30 555-123-4567 and 12/31/2024",
    "IBAN DE89 3704 0044 0532 0130 00, GB82WEST12345698765432 and ref DE00",
    "call (415) 555-2671 or 020 7946 0958; SSN 078-05-1120; ip 192.168.1.20",
]


def _examples() -> list[str]:
    texts = [json.loads(line)["text"] for line in (DATA / "pii.jsonl").read_text().splitlines() if line]
    texts += [
        json.loads(line)["text"] for line in (DATA / "injection.jsonl").read_text().splitlines() if line
    ]
    return texts + EDGE_CASES


def _buried(text: str, filler: str) -> list[str]:
    pad = filler * (8_000 // len(filler))
    return [pad + text, text + "\n" + pad, pad[:4_000] + " " + text + " " + pad[:4_000]]


def _ungated_keyword_secrets(text: str, lowered: str) -> Iterator[Match]:
    """Each keyword secret as one regular expression over the whole text (what the gated search stands for)."""
    for secret in pii._KEYWORD_SECRETS:
        whole = re.compile(f"(?i:{secret.keyword})" + secret.value.pattern)
        for m in whole.finditer(text):
            if secret.valid is None or secret.valid(m.group(1)):
                yield Match("pii.secret", "SECRET", m.start(1), m.end(1))


def _ungated(monkeypatch: pytest.MonkeyPatch) -> None:
    every_hint = b" ".join(h for key in pii._KEY_FORMATS for h in key.hint_bytes)
    monkeypatch.setattr(pii, "_long_token_runs", lambda text: every_hint)
    monkeypatch.setattr(pii, "_keyword_secrets", _ungated_keyword_secrets)
    monkeypatch.setattr(pii, "_number_runs", pii._NUMBER_RUN.finditer)
    monkeypatch.setattr(pii, "_ipv6_hints", pii._IPV6_HINT.finditer)
    monkeypatch.setattr(pii, "_may_hold_iban", lambda text: True)


def test_edge_cases_are_found_at_all() -> None:
    """The edge cases exercise the gates only if they hold matches of every kind."""
    found = {m.rule for text in EDGE_CASES for m in find_pii(text)}
    assert found == {"pii.secret", "pii.card", "pii.phone", "pii.ip", "pii.iban", "pii.ssn"}


@pytest.mark.parametrize("style", sorted(FILLERS))
def test_gated_scan_equals_the_full_scan(style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [buried for text in _examples() for buried in _buried(text, FILLERS[style])]
    gated = [find_pii(text) for text in texts]
    _ungated(monkeypatch)
    full = [find_pii(text) for text in texts]
    differing = [(text[:80], g, f) for text, g, f in zip(texts, gated, full, strict=True) if g != f]
    assert not differing
    alone = sum(len(find_pii(text)) for text in _examples())
    assert alone > 50 and sum(len(f) for f in full) >= 3 * alone  # real findings, in every position


def test_examples_alone_equal_the_full_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _examples()
    gated = [find_pii(text) for text in texts]
    _ungated(monkeypatch)
    assert gated == [find_pii(text) for text in texts]


def test_a_plain_date_is_skipped_but_a_phone_written_like_one_is_not() -> None:
    assert find_pii("released on 2023-09-30 as planned") == []
    assert [m.rule for m in find_pii("call +2023-09-30 now")] == ["pii.phone"]


def test_keyword_secret_values_are_found_after_any_spelling_of_the_keyword() -> None:
    for text, value in (
        ("userPassword: Xk9#mQ2$vLp7", "Xk9#mQ2$vLp7"),
        ('"api_key": "a1b2c3d4e5f6g7h8"', "a1b2c3d4e5f6g7h8"),
        (
            "AWSSecretAccessKey=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
    ):
        [match] = find_pii(PROSE * 50 + text + " " + PROSE * 50)
        start = len(PROSE) * 50 + text.index(value)
        assert (match.rule, match.start, match.end) == ("pii.secret", start, start + len(value))


def test_addresses_close_together_are_each_found() -> None:
    text = "hosts 2001:db8::1:2:3, fe80::1:2:3 and 1::2:3:4:5:6:7 (IPv6), 10.0.0.7 / 10.0.0.8"
    found = [text[m.start : m.end] for m in find_pii(text)]
    assert found == ["2001:db8::1:2:3", "fe80::1:2:3", "1::2:3:4:5:6:7", "10.0.0.7", "10.0.0.8"]


def test_keyword_spellings_are_the_keyword_patterns_languages() -> None:
    for secret in pii._KEYWORD_SECRETS:
        spellings = secret.keyword_spellings
        assert all(re.fullmatch(secret.keyword, s) for s in spellings)
        assert len(set(spellings)) == len(spellings)
    assert (
        len(pii._KEYWORD_SECRETS[0].keyword_spellings) == 13
    )  # aws_?secret_?(?:access_?)?key | secretaccesskey
    assert len(pii._KEYWORD_SECRETS[1].keyword_spellings) == 17  # 2 + 5 x ("_", "-", "")
    assert pii._spellings("a(?:b|cd)?[_-]e") == ("ab_e", "ab-e", "acd_e", "acd-e", "a_e", "a-e")
    for unsupported in ("a+", "a.b", "[a-z]x", "(a)", "a{2}", "(?:a"):
        with pytest.raises(ValueError):
            pii._spellings(unsupported)


def test_the_digit_check_is_the_regex() -> None:
    for text in (
        "no digits here",
        "x9",
        "\u0663 arabic-indic",
        "superscript \u00b2 only",
        "caf\u00e9 7",
        "",
        "\u00e9t\u00e9",
    ):
        assert pii._has_digit(text) == (re.search(r"\d", text) is not None), text
