"""Waste detection on crafted requests in the three formats (docs/analytics-api.md#how-the-figures-are-computed), and its fast paths checked
against the plain rules (whole-text regexes, one match at a time)."""

from __future__ import annotations

import itertools
import json
import re
import re._constants as C
import re._parser as sre_parser
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenlens.prompt_parts import Part
from tokenlens.tokens import get_encoding
from tokenlens.waste import (
    _FILLER,
    _FILLER_SEEDS,
    _charwise_lower,
    _sentence_keys,
    _sentences_with,
    analyze_waste,
    filler_matches,
    find_waste,
    whitespace_tokens,
)

# Published input prices, USD per million tokens.
GPT_4O = 2.50
CLAUDE_SONNET_4_6 = 3.00
GEMINI_25_FLASH = 0.30


def tok(text: str) -> int:
    enc = get_encoding("o200k_base")
    assert enc is not None
    return len(enc.encode_ordinary(text))


def by_type(api: str, body: dict[str, Any], model: str | None = None) -> dict[str, int]:
    return analyze_waste(api, body, model).by_type()


CLEAN = [
    (
        "openai",
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Italy?"},
            ],
        },
    ),
    ("openai", {"model": "gpt-4o", "instructions": "Be terse.", "input": "Name three prime numbers."}),
    (
        "anthropic",
        {
            "model": "claude-sonnet-4-6",
            "system": "You are terse.",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
        },
    ),
    (
        "google",
        {
            "systemInstruction": {"parts": [{"text": "Be terse."}]},
            "contents": [{"role": "user", "parts": [{"text": "Name a planet."}]}],
        },
    ),
]


@pytest.mark.parametrize(("api", "body"), CLEAN)
def test_a_clean_request_shows_zero_waste(api: str, body: dict[str, Any]) -> None:
    report = analyze_waste(api, body, body.get("model", "gemini-2.5-flash"))
    assert report.tokens == 0 and report.findings == [] and report.cost_usd == 0


def test_filler_in_any_role_is_counted_and_priced_at_the_input_rate() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Please list two fruits."},
            {"role": "assistant", "content": "Apple and pear. Thank you so much for asking!"},
            {"role": "user", "content": "Great."},
        ],
    }
    report = analyze_waste("openai", body)
    expected = tok(" Please") + tok(" Thank you so much")
    assert report.by_type()["filler"] == expected
    assert report.cost_usd == pytest.approx(expected * GPT_4O / 1e6)
    assert {f.where for f in report.findings} == {"messages[0]", "messages[1]"}


def test_filler_in_a_gemini_system_instruction() -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "Kindly answer briefly."}]},
        "contents": [{"role": "user", "parts": [{"text": "Name a planet."}]}],
    }
    report = analyze_waste("google", body, "gemini-2.5-flash")
    assert report.by_type()["filler"] == tok(" Kindly")
    assert report.cost_usd == pytest.approx(tok(" Kindly") * GEMINI_25_FLASH / 1e6)


def test_trailing_and_repeated_spaces_in_an_anthropic_request() -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "system": "Rules here.   \nNext.",
        "messages": [{"role": "user", "content": "one      two"}],
    }
    report = analyze_waste("anthropic", body)
    expected = tok("   ") + tok("     ")
    assert report.by_type()["whitespace"] == expected > 0
    assert report.cost_usd == pytest.approx(expected * CLAUDE_SONNET_4_6 / 1e6)


def test_blank_line_runs_count_only_beyond_one_blank_line() -> None:
    run = "\n \n  \n\t\n\n"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"First part.{run}Second part."}]}
    assert by_type("openai", body)["whitespace"] == tok(run) - tok("\n\n") > 0


def test_over_indented_json_tool_result() -> None:
    pretty = '{\n        "a": 1,\n        "b": [\n                2\n        ]\n}'
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Read the tool output."},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": pretty},
        ],
    }
    expected = sum(tok(run) for run in ("\n        ", "\n        ", "\n                ", "\n        ", "\n"))
    assert by_type("openai", body)["whitespace"] == expected


def test_instruction_repeated_within_a_request() -> None:
    sentence = "Always answer in formal British English."
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "system": f"You are a tutor. {sentence}",
        "messages": [{"role": "user", "content": f"{sentence} What is a verb?"}],
    }
    report = analyze_waste("anthropic", body)
    assert report.by_type()["repeated_instruction"] == tok(" " + sentence)
    assert report.by_type()["filler"] == 0


def test_repeated_instruction_in_gemini_contents_and_not_in_assistant_turns() -> None:
    sentence = "Reply with a single short sentence only."
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": sentence + " Hi."}]},
            {"role": "model", "parts": [{"text": sentence}]},  # the model quoting it is not an instruction
            {"role": "user", "parts": [{"text": sentence + " Bye."}]},
        ]
    }
    assert by_type("google", body, "gemini-2.5-flash")["repeated_instruction"] == tok(" " + sentence)


@pytest.mark.parametrize(
    ("api", "body", "empty_text"),
    [
        (
            "openai",
            {
                "model": "gpt-4o",
                "messages": [
                    {"role": "user", "content": "Hi there."},
                    {"role": "assistant", "content": "  "},
                    {"role": "user", "content": "Tell me a joke."},
                ],
            },
            "  ",
        ),
        (
            "anthropic",
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "..."}]},
                    {"role": "assistant", "content": "Yes?"},
                    {"role": "user", "content": "Tell me a joke."},
                ],
            },
            "...",
        ),
        (
            "google",
            {
                "contents": [
                    {"role": "user", "parts": [{"text": ""}]},
                    {"role": "user", "parts": [{"text": "Tell me a joke."}]},
                ]
            },
            "",
        ),
    ],
)
def test_empty_or_near_empty_messages(api: str, body: dict[str, Any], empty_text: str) -> None:
    report = analyze_waste(api, body, body.get("model", "gemini-2.5-flash"))
    assert report.by_type()["empty_message"] == 4 + tok(empty_text)  # message overhead + its text


def test_assistant_tool_call_without_text_is_not_empty() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    }
    assert analyze_waste("openai", body).tokens == 0


def test_unpriced_model_keeps_tokens_without_cost() -> None:
    report = analyze_waste(
        "openai", {"model": "my-local-model", "messages": [{"role": "user", "content": "Please help."}]}
    )
    assert report.tokens == tok(" Please") and report.cost_usd is None


# ---- the fast paths give what the plain rules give ---------------------------------------------------------
# tokenlens.waste finds filler only around literal seeds, splits sentences with str.split and skips most line
# breaks with one regex; the references below apply the rules one match at a time over the whole text.

STRIP = " \t\r.!?,;:"


def ref_whitespace(text: str) -> int:
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and "\n" in stripped:
        try:
            json.loads(stripped)
        except ValueError:
            pass
        else:
            return sum(tok(m.group()) for m in re.finditer(r"\r?\n[ \t]*", text))
    wasted = 0
    for m in re.finditer(r"\n[ \t\r\n]*", text):
        start = before = m.start()
        while before > 0 and text[before - 1] in " \t\r":
            before -= 1
        if 0 < before < start and text[before - 1] != "\n":
            wasted += tok(text[before:start].rstrip("\r"))
        run = m.group()
        kept = "\n" * min(run.count("\n"), 2) + run[run.rindex("\n") + 1 :]
        wasted += max(0, tok(run) - tok(kept))
    for m in re.finditer(r"  +", text):
        start, end = m.span()
        if start == 0 or text[start - 1] in "\n\t":
            continue
        if end == len(text):
            wasted += tok(m.group())
        elif text[end] not in "\r\n":
            wasted += tok(m.group()[1:])
    return wasted


def ref_filler(text: str) -> list[str]:
    lower = text.lower()
    return [
        text[m.start() : m.end()]
        for m in _FILLER.finditer(lower)
        if not (m.start() and lower[m.start() - 1].isalnum())
    ]


def ref_sentences(text: str) -> list[str]:
    return [x for x in re.findall(r"[^\n.!?]+[.!?]*", text) if len(x) >= 24]


def ref_repeated(parts: list[Part]) -> dict[str, int]:
    seen: set[str] = set()
    out: dict[str, int] = {}
    for p in parts:
        if p.kind != "text" or p.role not in ("system", "developer", "user") or p.section == "context":
            continue
        for sentence in ref_sentences(p.text):
            key = sentence.lower().strip(STRIP)
            if key in seen:
                where = f"messages[{p.message}]" if p.message is not None else p.section
                out[where] = out.get(where, 0) + tok(" " + sentence.strip())
            elif len(key.split(" ")) >= 4:
                seen.add(key)
    return out


def _language(items: Any) -> set[str]:
    """Every string a regex without unbounded repetition matches (word boundaries ignored)."""
    out = {""}
    for op, av in items:
        if op is C.LITERAL:
            options = {chr(av)}
        elif op is C.IN:
            options = {chr(v) for _, v in av}
        elif op is C.BRANCH:
            options = set().union(*(_language(branch) for branch in av[1]))
        elif op is C.SUBPATTERN:
            options = _language(av[-1])
        elif op is C.MAX_REPEAT:
            low, high, sub = av
            once = _language(sub)
            options = {"".join(p) for k in range(low, high + 1) for p in itertools.product(once, repeat=k)}
        else:
            assert op is C.AT, op
            options = {""}
        out = {a + b for a in out for b in options}
    return out


PHRASES = sorted(_language(sre_parser.parse(_FILLER.pattern)))


def test_filler_seeds_start_inside_every_phrase_within_their_bounds() -> None:
    assert "i hope this email finds you well" in PHRASES and "please," in PHRASES
    assert max(map(len, PHRASES)) == len("i would greatly be really grateful it if you could.")
    for phrase in PHRASES:
        assert any(seed.search(phrase) for seed, _, _ in _FILLER_SEEDS), phrase
        for seed, before, after in _FILLER_SEEDS:
            for i, ch in enumerate(phrase):
                if ch == seed.pattern[0]:
                    assert i <= before and len(phrase) - i <= after, (phrase, seed.pattern)


WORDS = [
    "PLEASE",
    "Thank You So Much",
    "unkindly",
    "displeased",
    "thanksgiving",
    "x" * 60,
    "Supercalifragilistic expialidocious!",
    "Always answer in formal British English.",
    "Reply with one short sentence!",
    "a b c d" + "!" * 17,
    "w x y z" + "." * 16,
    "one two three four?!",
    "abc def ghi jkl mno pq.",
    "abc def ghi jkl mno pqr.",
    "İstanbul is the biggest city of Turkey.",
    "ΣΟΦΟΣ ΛΟΓΟΣ ΕΙΝΑΙ ΑΥΤΟΣ ΕΔΩ ΠΑΝΤΑ.",
    "word",
    "é",
    "“quoted”",
    "\x00",
    ".",
    "...",
    "!",
    "?",
    ",",
    '{\n  "a": [\n    1\n  ]\n}',
]
SPACES = [" ", "  ", "    ", "\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n", "\t\n", "\n \n", " \r\n", "\r"]
fragments = st.one_of(st.sampled_from(PHRASES), st.sampled_from(WORDS), st.sampled_from(SPACES))
texts = st.lists(fragments, max_size=30).map("".join)
PROPERTY = settings(max_examples=300, derandomize=True, deadline=None, database=None)


@PROPERTY
@given(text=texts)
def test_whitespace_and_filler_match_the_plain_rules(text: str) -> None:
    assert whitespace_tokens(text) == ref_whitespace(text)
    assert filler_matches(text) == ref_filler(text)
    long = (" word" + text) * (5000 // (len(text) + 5) + 1)  # long ASCII texts take another path
    assert whitespace_tokens(long) == ref_whitespace(long)


def test_every_filler_phrase_in_context() -> None:
    for phrase in PHRASES:
        for text in (phrase, f"x{phrase}", f"So, {phrase.upper()}x", f"{phrase}{phrase} {'y' * 90}{phrase}!"):
            assert filler_matches(text) == ref_filler(text), text


@PROPERTY
@given(text=texts)
def test_sentence_keys_match_the_sentence_regex(text: str) -> None:
    if not _charwise_lower(text):
        return
    assert text.lower() == "".join(ch.lower() for ch in text)
    keys = _sentence_keys(text.lower())
    assert (
        keys is None
        if "\x00" in text
        else Counter(keys) == Counter(s.lower().strip(STRIP) for s in ref_sentences(text))
    )


def test_only_sentences_of_four_words_or_more_repeat() -> None:
    rule, word = "Always answer in formal British English.", "Supercalifragilistic expialidocious!"
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": f"{word} {word} {rule} {rule} {rule}"}],
    }
    assert by_type("openai", body)["repeated_instruction"] == 2 * tok(" " + rule)


@PROPERTY
@given(text=texts, data=st.data())
def test_sentences_found_by_key_match_the_sentence_regex(text: str, data: st.DataObject) -> None:
    if not _charwise_lower(text) or "\x00" in text:
        return
    sentences = [(s.lower().strip(STRIP), s) for s in ref_sentences(text)]
    keys = data.draw(st.lists(st.sampled_from(sorted({k for k, _ in sentences} or {"x"})), unique=True))
    expected = [(k, s) for k, s in sentences if k in keys]
    assert _sentences_with(text, text.lower(), keys, len(expected)) in (expected, None)
    if len(expected) <= 16 and all(k for k in keys):
        assert _sentences_with(text, text.lower(), keys, len(expected)) == expected


@PROPERTY
@given(
    parts=st.lists(
        st.builds(
            Part,
            st.sampled_from(["system", "history", "query", "context"]),
            st.sampled_from(["system", "developer", "user", "assistant", "tool"]),
            st.sampled_from([None, 0, 1, 2]),
            st.sampled_from(["text", "text", "result"]),
            texts,
        ),
        max_size=6,
    )
)
def test_repeated_instructions_match_the_plain_rules(parts: list[Part]) -> None:
    found = {f.where: f.tokens for f in find_waste(parts) if f.type == "repeated_instruction"}
    assert found == ref_repeated(parts)


def test_a_50_kb_request_in_each_format() -> None:
    rule = "Always cite the source of every number."
    run = "\n\n\n   \n"

    def prose(first: int, count: int) -> tuple[str, int]:
        out, asks = [], 0
        for i in range(first, first + count):
            sentence = f"Record {i} of the gateway log shows the cost of call {i * 7}."
            if i % 10 == 0:
                out.append(f"Please read it. {sentence}{run}")
                asks += 1
            else:
                out.append(sentence + " ")
        out.append("End of the log.")
        return "".join(out), asks

    system, asks = prose(0, 120)
    system = f"You are a careful auditor. {rule} {system}"
    turns = [prose(1000 * (t + 1), 22) for t in range(8)]
    doc, doc_asks = prose(100_000, 420)
    question = f"{rule} Which call cost the most?"
    asks += doc_asks + sum(a for _, a in turns)
    history_oa = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, (t, _) in enumerate(turns)
    ]
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        (
            "openai",
            "gpt-4o",
            {
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": system},
                    *history_oa,
                    {"role": "user", "content": doc + " " + question},
                ],
            },
        ),
        (
            "anthropic",
            "claude-sonnet-4-6",
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 100,
                "system": system,
                "messages": [
                    *history_oa,
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": doc}, {"type": "text", "text": question}],
                    },
                ],
            },
        ),
        (
            "google",
            "gemini-2.5-flash",
            {
                "systemInstruction": {"parts": [{"text": system}]},
                "contents": [
                    *(
                        {"role": m["role"].replace("assistant", "model"), "parts": [{"text": m["content"]}]}
                        for m in history_oa
                    ),
                    {"role": "user", "parts": [{"text": doc}, {"text": question}]},
                ],
            },
        ),
    ]
    run_waste = tok(run) - tok("\n\n")
    assert run_waste > 0 and asks == 12 + 3 * 8 + 42
    for api, model, body in bodies:
        assert 45_000 < len(json.dumps(body)) < 60_000
        report = analyze_waste(api, body, model)
        assert report.by_type() == {
            "whitespace": asks * run_waste,
            "filler": asks * tok(" Please"),
            "repeated_instruction": tok(" " + rule),
            "empty_message": 0,
        }, api
