"""Rate-limit headers: parsing, credential hashing, one alert per window, 429s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenlens.ratelimits import (
    RateLimitBook,
    credential_hash,
    credential_header_fields,
    credential_of,
    load_salt,
    parse_limits,
    rate_limit_header_fields,
    rate_limit_headers,
    reset_at,
)

NOW = 1_800_000_000.0


def openai_headers(remaining: int, limit: int = 100) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": "1m30s",
    }


def test_parses_openai_and_anthropic_headers() -> None:
    limits = parse_limits(openai_headers(42), NOW)
    assert limits["requests"]["limit"] == 100 and limits["requests"]["remaining"] == 42
    assert limits["requests"]["remaining_share"] == 0.42
    assert limits["requests"]["_resets_at"] == NOW + 90
    anthropic = parse_limits(
        {
            "anthropic-ratelimit-input-tokens-limit": "1000",
            "anthropic-ratelimit-input-tokens-remaining": "10",
            "anthropic-ratelimit-input-tokens-reset": "2027-01-15T08:00:00Z",
        },
        NOW,
    )
    assert anthropic["input-tokens"]["remaining"] == 10
    assert anthropic["input-tokens"]["resets_at"] == "2027-01-15T08:00:00.000Z"
    assert list(anthropic["input-tokens"]) == [
        "limit",
        "remaining",
        "remaining_share",
        "reset",
        "resets_at",
        "_resets_at",
    ]
    assert reset_at("6ms", NOW) == NOW + 0.006 and reset_at("2", NOW) == NOW + 2


def test_only_rate_limit_headers_are_kept() -> None:
    kept = rate_limit_headers(
        [("X-RateLimit-Limit-Tokens", "5"), ("Retry-After", "3"), ("Authorization", "k")]
    )
    assert kept == {"x-ratelimit-limit-tokens": "5", "retry-after": "3"}


def test_raw_header_fields_give_what_the_decoded_headers_give() -> None:
    fields = [
        (b"X-RateLimit-Limit-Tokens", b"5"),
        (b"content-type", b"application/json"),
        (b"Retry-After", b"3"),
        (b"anthropic-ratelimit-requests-remaining", b"7"),
        (b"x-ratelimit-limit-tokens", b"6"),
        (b"Authorization", b"Bearer k1"),
        (b"X-Api-Key", b"k2"),
        (b"x-\xe9ratelimit", b"\xe9"),
    ]
    decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields]
    assert rate_limit_header_fields(fields) == rate_limit_headers(decoded)
    assert rate_limit_header_fields(fields) == {
        "x-ratelimit-limit-tokens": "6",
        "retry-after": "3",
        "anthropic-ratelimit-requests-remaining": "7",
    }
    credentials = credential_header_fields(fields)
    assert credentials == {"authorization": "Bearer k1", "x-api-key": "k2"}
    assert credential_of(credentials) == credential_of({k.lower(): v for k, v in decoded}) == "k1"


def test_credential_hash_never_contains_the_key(tmp_path: Path) -> None:
    salt = load_salt(tmp_path)
    assert load_salt(tmp_path) == salt and (tmp_path / "credential-salt").stat().st_mode & 0o077 == 0
    key = "sk-proj-abcdefghijklmnop"
    assert credential_of({"authorization": f"Bearer {key}"}) == key
    assert credential_of({"x-goog-api-key": key}) == key
    assert credential_of({}, f"https://x/v1beta/models/m:generateContent?alt=sse&key={key}") == key
    hashed = credential_hash(salt, key)
    assert key not in hashed and len(hashed) == 12 and hashed == credential_hash(salt, key)
    assert hashed != credential_hash(b"another salt", key) and credential_hash(salt, None) == "none"


def test_warns_once_per_window_under_ten_percent() -> None:
    published: list[tuple[str, dict[str, Any]]] = []
    book = RateLimitBook(lambda kind, data: published.append((kind, data)))
    assert book.observe("openai", "abc", 200, openai_headers(50), now=NOW) == []
    first = book.observe("openai", "abc", 200, openai_headers(9), now=NOW + 1)
    assert [a["limit"] for a in first] == ["requests"] and first[0]["remaining"] == 9
    assert book.observe("openai", "abc", 200, openai_headers(5), now=NOW + 2) == []  # same window
    assert book.observe("openai", "other", 200, openai_headers(5), now=NOW + 2) != []  # another credential
    assert book.observe("openai", "abc", 200, openai_headers(4), now=NOW + 200) != []  # the window reset
    book([])
    assert [kind for kind, _ in published] == ["alert"] * 3
    (item,) = [i for i in book.snapshot() if i["credential"] == "abc"]
    assert item["limits"]["requests"]["remaining"] == 4 and item["low"] == ["requests"]
    assert "_resets_at" not in item["limits"]["requests"]


def test_counts_429s_and_alerts_once_per_retry_window() -> None:
    book = RateLimitBook()
    alerts = book.observe("anthropic", "k", 429, {"retry-after": "30"}, model="claude-haiku-4-5", now=NOW)
    assert [a["kind"] for a in alerts] == ["rate_limited"]
    assert book.observe("anthropic", "k", 429, {"retry-after": "30"}, now=NOW + 5) == []
    (item,) = book.snapshot()
    assert (item["rate_limited_calls"], item["retry_after_s"], item["last_429_model"]) == (2, 30.0, None)
