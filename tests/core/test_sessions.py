"""Conversation inference (continuity per source, interleaving, retries, session turns, bounded state), the
tool calls read from a request's history, and the runs list and one run's timeline over a store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from harness.clock import today_from
from tokenlens.exchange import Exchange
from tokenlens.records import CallRecord
from tokenlens.sessions import (
    ConversationIndex,
    called_tools,
    session_timeline,
    sessions_summary,
    split_conversation,
)
from tokenlens.store import Store, open_store


def chat(*contents: str, system: str = "be brief") -> dict[str, Any]:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]
    return {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": system}, *messages]}


def test_a_request_that_extends_an_earlier_one_continues_its_conversation() -> None:
    index = ConversationIndex()
    first = index.assign("c1", "agent", None, "openai", chat("hi"))
    second = index.assign("c2", "agent", None, "openai", chat("hi", "hello", "more"))
    third = index.assign("c3", "agent", None, "openai", chat("hi", "hello", "more", "ok", "again"))
    assert (first.conversation_id, first.turn) == ("conv-c1", 1)
    assert (second.conversation_id, second.turn) == ("conv-c1", 2)
    assert (third.conversation_id, third.turn) == ("conv-c1", 3)


def test_interleaved_conversations_sources_and_system_prompts_stay_apart() -> None:
    index = ConversationIndex()
    a1 = index.assign("a1", "agent", None, "openai", chat("trip"))
    b1 = index.assign("b1", "agent", None, "openai", chat("tcp"))
    a2 = index.assign("a2", "agent", None, "openai", chat("trip", "ok", "sintra"))
    b2 = index.assign("b2", "agent", None, "openai", chat("tcp", "ok", "more"))
    other_source = index.assign("x", "other", None, "openai", chat("trip", "ok", "sintra"))
    other_system = index.assign("y", "agent", None, "openai", chat("trip", "ok", "sintra", system="verbose"))
    assert (a2.conversation_id, a2.turn) == (a1.conversation_id, 2)
    assert (b2.conversation_id, b2.turn) == (b1.conversation_id, 2)
    assert a1.conversation_id != b1.conversation_id
    assert (other_source.conversation_id, other_source.turn) == ("conv-x", 1)
    assert (other_system.conversation_id, other_system.turn) == ("conv-y", 1)


def test_the_same_first_request_twice_is_two_runs_but_a_retry_after_a_failure_is_the_same_turn() -> None:
    index = ConversationIndex()
    assert index.assign("r1", "agent", None, "openai", chat("task")).conversation_id == "conv-r1"
    assert index.assign("r2", "agent", None, "openai", chat("task")).conversation_id == "conv-r2"
    failed = index.assign("f1", "agent", None, "openai", chat("other"), ok=False)
    retry = index.assign("f2", "agent", None, "openai", chat("other"))
    assert (retry.conversation_id, retry.turn) == (failed.conversation_id, 1)


def test_session_turns_count_the_calls_of_the_session() -> None:
    index = ConversationIndex()
    turns = [
        index.assign(
            "s1",
            "agent",
            "run-1",
            "anthropic",
            {"system": "s", "messages": [{"role": "user", "content": "a"}]},
        ),
        index.assign("s2", "agent", "run-1", "openai", {"input": [1.0, 2.0]}),  # no message list: turn only
        index.assign("s3", "agent", "run-2", "anthropic", {"messages": [{"role": "user", "content": "a"}]}),
        index.assign(
            "s4", "agent", "run-1", "google", {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
        ),
    ]
    assert [t.turn for t in turns] == [1, 2, 1, 3]
    assert turns[1].conversation_id is None and turns[0].conversation_id == "conv-s1"
    assert index.assign("n", "agent", None, "openai", None).turn is None


def test_state_is_bounded_and_idle_conversations_expire() -> None:
    now = [1000.0]
    index = ConversationIndex(max_prefixes=10, ttl_s=60, clock=lambda: now[0])
    for i in range(50):
        index.assign(f"c{i}", "agent", None, "openai", chat(f"q{i}"))
    assert len(index) == 10
    index.assign("k1", "agent", None, "openai", chat("keep"))
    now[0] += 61
    late = index.assign("k2", "agent", None, "openai", chat("keep", "ok", "next"))
    assert (late.conversation_id, late.turn) == ("conv-k2", 1)


def test_split_conversation_reads_the_three_formats() -> None:
    assert split_conversation("openai", {"input": "hi"}) == (
        [None, [], None],
        [{"role": "user", "content": "hi"}],
    )
    system, messages = split_conversation("google", {"contents": [{"parts": [{"text": "x"}]}]}) or (None, [])
    assert len(messages) == 1
    assert split_conversation("anthropic", {"prompt": "x"}) is None


# ---------------------------------------------------------------------------------------------- tool calls


def test_called_tools_are_the_tool_calls_of_the_answer_the_request_continues() -> None:
    anthropic = [
        {"role": "user", "content": "fix the test"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "name": "Read"}, {"type": "text", "text": "x"}],
        },
        {"role": "user", "content": [{"type": "tool_result", "content": "..."}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "name": "Bash"}, {"type": "tool_use", "name": "Edit"}],
        },
        {"role": "user", "content": [{"type": "tool_result"}, {"type": "tool_result"}]},
    ]
    assert called_tools("anthropic", anthropic) == ["Bash", "Edit"]
    chat = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "search"}}, {"function": {"name": "open"}}],
        },
        {"role": "tool", "content": "a"},
        {"role": "tool", "content": "b"},
    ]
    assert called_tools("openai", chat) == ["search", "open"]
    assert called_tools("openai", [*chat, {"role": "assistant", "content": "done"}, {"role": "user"}]) == []
    responses = [
        {"role": "user", "content": "list files"},
        {"type": "reasoning", "summary": []},
        {"type": "message", "role": "assistant", "content": []},
        {"type": "function_call", "name": "shell", "call_id": "1"},
        {"type": "local_shell_call", "call_id": "2"},
        {"type": "function_call_output", "call_id": "1", "output": "a"},
        {"type": "local_shell_call_output", "call_id": "2", "output": "b"},
    ]
    assert called_tools("openai", responses) == ["shell", "local_shell"]
    gemini = [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather"}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather"}}]},
    ]
    assert called_tools("google", gemini) == ["get_weather"]
    assert called_tools("anthropic", [{"role": "user", "content": "first turn"}]) == []


# ---------------------------------------------------------------------------------------------- read side

RATE_IN, RATE_READ, RATE_OUT = 3.0, 0.3, 15.0  # USD per million tokens, written here


def _call(i: int, ts: float, inp: int, read: int, out: int, tools: list[str], **fields: Any) -> CallRecord:
    c_in, c_read, c_out = (inp - read) * RATE_IN / 1e6, read * RATE_READ / 1e6, out * RATE_OUT / 1e6
    return CallRecord(
        id=f"call-{i}",
        ts=ts,
        provider="anthropic",
        endpoint="/v1/messages",
        model="claude-sonnet-4-6",
        input_tokens=inp,
        cache_read_tokens=read,
        output_tokens=out,
        cost_usd=c_in + c_read + c_out,
        input_cost_usd=c_in,
        cache_read_cost_usd=c_read,
        cache_write_cost_usd=0.0,
        output_cost_usd=c_out,
        priced=True,
        latency_ms=2000.0,
        turn=i + 1,
        details={"tools": {"called": tools}} if tools else {},
        **fields,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(None, tmp_path)
    yield opened
    opened.close()


def test_a_run_listed_and_shown_turn_by_turn(store: Store) -> None:
    now = today_from(3600)
    spec = [  # (input, cache read, output, tools the request names, conversation)
        (10_000, 0, 500, [], "main"),
        (11_000, 9_500, 300, ["Read", "Read"], "main"),
        (2_000, 0, 800, [], "sub"),
        (12_500, 10_800, 200, ["Bash"], "main"),
    ]
    calls = [
        _call(
            i,
            now + 30 * i,
            inp,
            read,
            out,
            tools,
            source="claude-code",
            session_id="run-1",
            conversation_id=c,
        )
        for i, (inp, read, out, tools, c) in enumerate(spec)
    ]
    store.insert_calls(calls[:2])
    store.insert_calls(calls[2:])
    listing = sessions_summary(store, 1, UTC)
    (item,) = listing["sessions"]
    assert listing["conversations"] == [] and listing["next"] == {"session": None, "conversation": None}
    cost = sum(c.cost_usd or 0 for c in calls)
    history = [0, min(11_000, 10_000 + 500), 0, min(12_500, 11_000 + 300)]
    history_cost = [
        h * (c.input_cost_usd + c.cache_read_cost_usd) / c.input_tokens  # type: ignore[operator]
        for h, c in zip(history, calls, strict=True)
    ]
    assert item["id"] == "run-1" and item["kind"] == "session" and item["agent"] == "claude-code"
    assert (item["calls"], item["turns"], item["conversations"], item["tool_calls"]) == (4, 4, 2, 3)
    assert item["cost_usd"] == pytest.approx(cost, abs=1e-9)
    assert item["cache_hit_rate"] == pytest.approx(20_300 / 35_500, abs=1e-4)
    assert item["duration_s"] == pytest.approx(90 + 2.0, abs=1e-3)
    assert item["models"] == ["claude-sonnet-4-6"]
    assert item["history_tokens"] == sum(history)
    assert item["history_cost_usd"] == pytest.approx(sum(history_cost), abs=1e-9)  # rounded to 1e-9
    assert item["history_share"] == pytest.approx(sum(history_cost) / cost, abs=1e-4)
    assert (item["context_start_tokens"], item["context_end_tokens"]) == (10_000, 12_500)
    assert item["avg_growth_per_turn"] == pytest.approx((12_500 - 10_000) / 3, abs=0.05)
    run = session_timeline(store, "run-1")
    assert run is not None
    assert {k: v for k, v in run.items() if k not in ("timeline", "context_growth")} == item
    assert run["context_growth"] == [10_000, 11_000, 2_000, 12_500]
    turns = run["timeline"]
    assert [t["call_id"] for t in turns] == [c.id for c in calls]
    assert [t["history_tokens"] for t in turns] == history
    assert [t["context_growth_tokens"] for t in turns] == [None, 1_000, None, 1_500]
    assert [t["tool_calls"] for t in turns] == [["Read", "Read"], ["Bash"], None, None]
    for t, c, h in zip(turns, calls, history_cost, strict=True):
        input_side = (c.input_cost_usd or 0) + (c.cache_read_cost_usd or 0)
        assert t["new_input_cost_usd"] == pytest.approx(input_side - h, rel=1e-6, abs=1e-12)
    assert session_timeline(store, "nope") is None


def test_conversations_without_a_session_are_their_own_runs(store: Store) -> None:
    now = today_from(600)
    calls = [
        _call(0, now, 1_000, 0, 100, [], source="my-script", conversation_id="conv-a"),
        _call(1, now + 5, 1_300, 0, 100, [], source="my-script", conversation_id="conv-a"),
        _call(2, now + 9, 900, 0, 50, [], source="codex", conversation_id="conv-b"),
    ]
    store.insert_calls(calls)
    listing = sessions_summary(store, 1, UTC, kind="conversation")
    assert "sessions" not in listing
    assert [i["id"] for i in listing["conversations"]] == ["conv-b", "conv-a"]  # newest first
    assert [i["agent"] for i in listing["conversations"]] == ["codex", None]
    timeline = session_timeline(store, "conv-a")
    assert timeline is not None and timeline["kind"] == "conversation"
    assert timeline["history_tokens"] == 1_100


def test_the_writer_stage_names_the_tools_in_the_record() -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "name": "Grep"}]},
            {"role": "user", "content": [{"type": "tool_result", "content": "3 matches"}]},
        ],
    }
    exchange = Exchange("x1", 1.0, "anthropic", "anthropic", "/v1/messages", "messages", "base_url")
    exchange.request_json = body
    record = CallRecord(id="x1", ts=1.0, provider="anthropic", endpoint="/v1/messages", session_id="s")
    ConversationIndex().record(exchange, record)
    assert record.details["tools"] == {"called": ["Grep"]}
    assert (record.conversation_id, record.turn) == ("conv-x1", 1)
    body["messages"] = body["messages"][:1]
    first = CallRecord(id="x2", ts=2.0, provider="anthropic", endpoint="/v1/messages")
    ConversationIndex().record(exchange, first)
    assert "tools" not in first.details
