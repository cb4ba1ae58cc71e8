"""Conversation inference: continuity per source, interleaving, retries, session turns, bounded state."""

from __future__ import annotations

from typing import Any

from tokenlens.sessions import ConversationIndex, split_conversation


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
