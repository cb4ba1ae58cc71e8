"""Sessions and conversations (docs/gateway.md and docs/analytics-api.md).

A call that carries `X-TokenLens-Session` belongs to that session, and its `turn` counts the session's calls.
Without the header, calls are grouped into **conversations** by continuity: a request whose message list
strictly extends an earlier request's message list (same source, same system prompt) continues that
conversation, one turn later. Two conversations from one source stay apart as long as their histories differ.

`ConversationIndex.assign` runs in the writer thread (a deferred analysis), with bounded state: an LRU of
message-prefix hashes per source and a TTL. Restarting the gateway forgets the index (a conversation that goes
on after a restart starts again at turn 1 under a new id); session turns are counted again from 1 as well.
It also names, in the record's `details["tools"]`, the tools the answer this request continues called
(`called_tools`, read from the request's history).

The read side: `sessions_summary` lists runs (sessions, and conversations of calls without a session) from
the session rollups (`tokenlens.store.rollups`, migration 9); `session_timeline` shows one run turn by turn
from its calls, with the figures computed by the rollups' own code.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from tokenlens.exchange import GENERATION_KINDS
from tokenlens.records import iso_utc
from tokenlens.store.rollups import SESSION_FACT_COLUMNS, tools_called

if TYPE_CHECKING:
    from tokenlens.exchange import Exchange
    from tokenlens.records import CallRecord
    from tokenlens.store import Store

MAX_PREFIXES = 50_000  # request-hash entries kept (LRU)
MAX_SESSIONS = 10_000  # session turn counters kept (LRU)
IDLE_TTL_S = 6 * 3600  # a conversation idle this long is forgotten
_SYSTEM_ROLES = frozenset({"system", "developer"})


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def split_conversation(api: str, body: Mapping[str, Any]) -> tuple[Any, list[Any]] | None:
    """(system prompt, messages) of a request in any of the three formats; None when it has no message list.

    OpenAI leading system/developer messages and `instructions` count as the system prompt.
    """
    if api == "google":
        contents = body.get("contents")
        if isinstance(contents, str):
            contents = [contents]
        if not isinstance(contents, list):
            return None
        system = body.get("systemInstruction", body.get("system_instruction"))
        return [system, body.get("tools")], list(contents)
    if api == "anthropic":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        return [body.get("system"), body.get("tools")], list(messages)
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        elif isinstance(messages, list) and not all(isinstance(m, Mapping) for m in messages):
            return None  # embedding inputs, token arrays
    if not isinstance(messages, list):
        return None
    lead = 0
    while (
        lead < len(messages)
        and isinstance(messages[lead], Mapping)
        and messages[lead].get("role") in _SYSTEM_ROLES
    ):
        lead += 1
    return [body.get("instructions"), messages[:lead], body.get("tools")], list(messages[lead:])


def prefix_hashes(scope: str, system: Any, messages: Sequence[Any]) -> list[bytes]:
    """Chained hashes: element i identifies (scope, system prompt, messages[: i + 1])."""
    current = _digest(scope.encode(), _canonical(system))
    out = []
    for message in messages:
        current = _digest(current, _canonical(message))
        out.append(current)
    return out


@dataclass
class _Entry:
    conversation_id: str
    turn: int
    seen: float
    ok: bool


@dataclass(frozen=True)
class Assignment:
    conversation_id: str | None
    turn: int | None


class ConversationIndex:
    """Infers conversation ids and turn numbers. Used from one thread only (the writer)."""

    def __init__(
        self,
        max_prefixes: int = MAX_PREFIXES,
        max_sessions: int = MAX_SESSIONS,
        ttl_s: float = IDLE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_prefixes, self.max_sessions, self.ttl_s, self.clock = (
            max_prefixes,
            max_sessions,
            ttl_s,
            clock,
        )
        self._prefixes: OrderedDict[bytes, _Entry] = OrderedDict()
        self._sessions: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._prefixes)

    def _lookup(self, key: bytes, now: float) -> _Entry | None:
        entry = self._prefixes.get(key)
        if entry is None:
            return None
        if now - entry.seen > self.ttl_s:
            del self._prefixes[key]
            return None
        return entry

    def _remember(self, key: bytes, entry: _Entry) -> None:
        self._prefixes[key] = entry
        self._prefixes.move_to_end(key)
        while len(self._prefixes) > self.max_prefixes:
            self._prefixes.popitem(last=False)

    def _session_turn(self, session_id: str, now: float) -> int:
        count, seen = self._sessions.pop(session_id, (0, now))
        if now - seen > self.ttl_s * 4:
            count = 0
        self._sessions[session_id] = (count + 1, now)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return count + 1

    def assign(
        self,
        call_id: str,
        source: str,
        session_id: str | None,
        api: str,
        body: Mapping[str, Any] | None,
        *,
        ok: bool = True,
    ) -> Assignment:
        """The conversation and turn of one call (`ok`: it was answered, so it can be continued)."""
        now = self.clock()
        split = split_conversation(api, body) if body is not None else None
        conversation_id: str | None = None
        turn: int | None = None
        if split is not None and split[1]:
            system, messages = split
            hashes = prefix_hashes(f"{source}\x00{session_id or ''}", system, messages)
            found = self._lookup(hashes[-1], now)
            if found is not None and not found.ok:
                # the same request again after a failure: a retry of that turn
                conversation_id, turn = found.conversation_id, found.turn
            else:
                for key in reversed(hashes[:-1]):
                    earlier = self._lookup(key, now)
                    if earlier is not None:
                        conversation_id, turn = earlier.conversation_id, earlier.turn + 1
                        self._prefixes.move_to_end(key)
                        break
            if conversation_id is None:
                conversation_id, turn = f"conv-{call_id}", 1
            assert turn is not None
            self._remember(hashes[-1], _Entry(conversation_id, turn, now, ok))
        if session_id is not None:
            turn = self._session_turn(session_id, now)
        return Assignment(conversation_id, turn)

    def record(self, exchange: Exchange, record: CallRecord) -> None:
        """Deferred analysis: fills the record's `conversation_id` and `turn`."""
        found = self.assign(
            record.id,
            record.source,
            record.session_id,
            exchange.api,
            exchange.request_json if exchange.kind in GENERATION_KINDS else None,
            ok=record.outcome in ("ok", "cached"),
        )
        record.conversation_id, record.turn = found.conversation_id, found.turn
        body = exchange.request_json if exchange.kind in GENERATION_KINDS else None
        split = split_conversation(exchange.api, body) if body is not None else None
        called = called_tools(exchange.api, split[1]) if split is not None else []
        if called:
            record.details["tools"] = {"called": called}


# ---------------------------------------------------------------------------------------------- tool calls

_CALL_ITEM_SUFFIX = "_call"  # Responses input items: function_call, custom_tool_call, local_shell_call, ...
MAX_TOOL_NAMES = 64


def _name(value: Any) -> str:
    return str(value)[:64] if value is not None else "tool"


def called_tools(api: str, messages: Sequence[Any]) -> list[str]:
    """The tools the model asked for in the answer this request continues: the tool calls of the last
    assistant message of its history (Anthropic `tool_use`, OpenAI `tool_calls` / `function_call`, Responses
    `*_call` input items, Gemini `functionCall`); empty when that answer called none."""
    names: list[str] = []
    if api == "openai" and any(isinstance(m, Mapping) and "role" not in m and "type" in m for m in messages):
        collecting = False
        for item in reversed(messages):
            if not isinstance(item, Mapping):
                break
            kind = str(item.get("type") or "")
            if kind.endswith("_output"):
                if collecting:
                    break
                continue
            if kind.endswith(_CALL_ITEM_SUFFIX):
                collecting = True
                names.append(_name(item.get("name") or kind.removesuffix(_CALL_ITEM_SUFFIX)))
                continue
            if item.get("role") == "assistant" and not collecting:
                break
            if collecting and item.get("role") != "assistant":
                break
        names.reverse()
        return names[:MAX_TOOL_NAMES]
    assistant = "model" if api == "google" else "assistant"
    last = next(
        (m for m in reversed(messages) if isinstance(m, Mapping) and m.get("role") == assistant), None
    )
    if last is None:
        return []
    if api == "google":
        parts = last.get("parts")
        for part in parts if isinstance(parts, list) else ():
            call = part.get("functionCall") if isinstance(part, Mapping) else None
            if isinstance(call, Mapping):
                names.append(_name(call.get("name")))
    elif api == "anthropic":
        content = last.get("content")
        for block in content if isinstance(content, list) else ():
            if isinstance(block, Mapping) and block.get("type") in ("tool_use", "server_tool_use"):
                names.append(_name(block.get("name")))
    else:
        calls = last.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, Mapping) else None
            names.append(_name(function.get("name") if isinstance(function, Mapping) else None))
        legacy = last.get("function_call")
        if isinstance(legacy, Mapping):
            names.append(_name(legacy.get("name")))
    return names[:MAX_TOOL_NAMES]


# ---------------------------------------------------------------------------------------------- read side
#
# The list reads the session rollups (`tokenlens.store.rollups`, one row per run); one run's timeline reads
# its calls (indexed on session_id and conversation_id) and computes the same totals with the same code.

# sources that name a coding agent (the User-Agent families of tokenlens.providers that are agents, not SDKs)
AGENTS = frozenset(
    {
        "claude-code",
        "codex",
        "gemini-cli",
        "aider",
        "cline",
        "roo-code",
        "kilo-code",
        "continue",
        "cursor",
        "opencode",
        "goose",
        "openhands",
    }
)


def _r(value: float, digits: int = 9) -> float:
    return round(float(value), digits)


def _unattributed(row: Mapping[str, Any]) -> float:
    """What a run's cost parts leave of its cost (costs imported without parts), so the parts sum to it."""
    from tokenlens.analytics import COST_PARTS, unattributed

    return unattributed(_r(row["cost_usd"] or 0.0), [_r(row[k] or 0.0) for k in COST_PARTS])


def _item(row: Mapping[str, Any], parts: Sequence[Mapping[str, Any]], conversations: int) -> dict[str, Any]:
    """A list item from a `session_run` row and its `session_model` rows (most expensive first)."""
    cost = float(row["cost_usd"] or 0.0)
    history_cost = float(row["history_cost_usd"] or 0.0)
    inp = int(row["input_tokens"] or 0)
    input_calls = int(row["input_calls"] or 0)
    first, last = row["first_input"], row["last_input"]
    growth = (int(last) - int(first)) / (input_calls - 1) if input_calls > 1 and first is not None else 0.0
    sources: list[str] = []
    for part in parts:
        if part["source"] not in sources:
            sources.append(part["source"])
    by_model: dict[tuple[str, str], dict[str, Any]] = {}
    for part in parts:
        if not part["model"]:
            continue
        entry = by_model.setdefault(
            (part["provider"], part["model"]),
            {"provider": part["provider"], "model": part["model"], "calls": 0, "cost_usd": 0.0},
        )
        entry["calls"] += int(part["calls"] or 0)
        entry["cost_usd"] += float(part["cost_usd"] or 0.0)
    models = sorted(by_model.values(), key=lambda m: (-m["cost_usd"], -m["calls"], m["model"]))
    return {
        "id": row["group_id"],
        "kind": row["kind"],
        "agent": next((s for s in sources if s in AGENTS), None),
        "sources": sorted(sources),
        "models": sorted({m["model"] for m in models}),
        "by_model": [{**m, "cost_usd": _r(m["cost_usd"])} for m in models],
        "calls": int(row["calls"]),
        "turns": int(row["turns"] or 0),
        "conversations": conversations,
        "tool_calls": int(row["tool_calls"] or 0),
        "cost_usd": _r(cost),
        **{k: _r(row[k] or 0.0) for k in ("input_cost_usd", "output_cost_usd", "cache_read_cost_usd")},
        "cache_write_cost_usd": _r(row["cache_write_cost_usd"] or 0.0),
        "unattributed_cost_usd": _unattributed(row),
        "unpriced_calls": int(row["unpriced_calls"] or 0),
        "error_calls": int(row["error_calls"] or 0),
        "blocked_calls": int(row["blocked_calls"] or 0),
        "cached_calls": int(row["cached_calls"] or 0),
        "input_tokens": inp,
        "output_tokens": int(row["output_tokens"] or 0),
        "cache_read_tokens": int(row["cache_read_tokens"] or 0),
        "cache_write_tokens": int(row["cache_write_tokens"] or 0),
        "reasoning_tokens": int(row["reasoning_tokens"] or 0),
        "cache_hit_rate": round(min(1.0, int(row["cache_read_tokens"] or 0) / inp), 4) if inp else 0.0,
        "started": iso_utc(row["first_ts"]),
        "last_call": iso_utc(row["last_ts"]),
        "ended": iso_utc(row["ended"]),
        "duration_s": round(float(row["ended"]) - float(row["first_ts"]), 3),
        "context_start_tokens": first,
        "context_end_tokens": last,
        "avg_growth_per_turn": round(growth, 1),
        "history_tokens": int(row["history_tokens"] or 0),
        "history_cost_usd": _r(history_cost),
        "history_share": round(history_cost / cost, 4) if cost else 0.0,
    }


def _parts(models: Mapping[tuple[Any, ...], Sequence[float]]) -> list[dict[str, Any]]:
    """`session_model`-shaped rows from `accumulate_runs` model totals, most expensive first."""
    names = ("calls", "cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    parts = [
        {"source": k[2], "model": k[3], "provider": k[4], **dict(zip(names, v, strict=True))}
        for k, v in models.items()
    ]
    parts.sort(key=lambda i: (-float(i["cost_usd"]), -int(i["calls"]), i["model"]))
    return parts


def sessions_summary(
    store: Store,
    days: int,
    tz: tzinfo,
    limit: int = 200,
    *,
    kind: str | None = None,
    before: tuple[float, str] | None = None,
) -> dict[str, Any]:
    """Sessions (by header) and conversations (inferred, calls without a session) with a call in the last
    `days` days, newest first (by their first call), at most `limit` of each, from the session rollups.

    `kind` ("session" or "conversation") lists one kind only; `before` is the cursor of the last item of the
    previous page (`next[kind]`). Each run's figures cover all its calls, also those before the period."""
    from tokenlens.insights import window
    from tokenlens.store import encode_cursor
    from tokenlens.store.reads import session_runs

    start, end = window(days, tz)
    out: dict[str, Any] = {"days": days, "next": {}}
    kinds = (kind,) if kind else ("session", "conversation")
    found = session_runs(store, kinds, start, end, limit + 1, before)  # one more: is there a next page?
    for k in kinds:
        rows, parts, conversations = found[k]
        more, rows = len(rows) > limit, rows[:limit]
        out[f"{k}s"] = [
            _item(r, parts.get(r["group_id"], []), conversations.get(r["group_id"], 0)) for r in rows
        ]
        last = rows[-1] if more else None
        out["next"][k] = None if last is None else encode_cursor(last["first_ts"], last["group_id"])
    return out


_FIELDS = (
    *SESSION_FACT_COLUMNS,
    "priced",
    "waste_tokens",
    "complexity",
    "stream",
)


def session_timeline(store: Store, group_id: str) -> dict[str, Any] | None:
    """One session (or, when no session has that id, one conversation) turn by turn; None when unknown.

    The summary is computed from the run's calls with the code that fills the session rollups, so it equals
    the list's item while the calls are kept (retention removes calls, not rollups)."""
    from tokenlens.store.reads import run_calls
    from tokenlens.store.rollups import accumulate_runs, run_row, session_facts

    kind = "session"
    rows = run_calls(store, kind, group_id, _FIELDS)
    if not rows:
        kind = "conversation"
        rows = run_calls(store, kind, group_id, _FIELDS)
    if not rows:
        return None
    facts = [session_facts([row[f] for f in SESSION_FACT_COLUMNS]) for row in rows]
    totals = accumulate_runs(facts, {}, lambda c: (kind, group_id))
    conversations = len({key[2] for key in totals.conversations})
    out = _item(run_row(kind, group_id, totals.runs[(kind, group_id)]), _parts(totals.models), conversations)
    out["context_growth"] = [f.input_tokens for f in facts if f.input_tokens]
    # the tools an answer called are named by the next answered request of its conversation (its history);
    # unknown (None) for the last answer of a conversation
    answered: dict[int, list[str]] = {}
    last_ok: dict[str, int] = {}
    for index, (fact, row) in enumerate(zip(facts, rows, strict=True)):
        if fact.outcome != "ok" or fact.conversation_id is None:
            continue
        if fact.conversation_id in last_ok:
            answered[last_ok[fact.conversation_id]] = tools_called(row["details"])
        last_ok[fact.conversation_id] = index
    previous: dict[str | None, int] = {}
    timeline = []
    for index, (fact, row, (history_tokens, history_cost)) in enumerate(
        zip(facts, rows, totals.history, strict=True)
    ):
        inp = fact.input_tokens or 0
        conversation = fact.conversation_id
        growth = inp - previous[conversation] if conversation in previous and inp else None
        if inp:
            previous[conversation] = inp
        input_side = sum(
            float(v or 0.0)
            for v in (fact.input_cost_usd, fact.cache_read_cost_usd, fact.cache_write_cost_usd)
        )
        timeline.append(
            {
                "turn": fact.turn,
                "call_id": fact.id,
                "ts": iso_utc(fact.ts),
                "conversation_id": conversation,
                "source": fact.source,
                "provider": fact.provider,
                "model": fact.model,
                "outcome": fact.outcome,
                "priced": bool(row["priced"]),
                "stream": bool(row["stream"]),
                "input_tokens": inp,
                "output_tokens": int(fact.output_tokens or 0),
                "cache_read_tokens": int(fact.cache_read_tokens or 0),
                "cache_write_tokens": int(fact.cache_write_tokens or 0),
                "reasoning_tokens": int(fact.reasoning_tokens or 0),
                "context_growth_tokens": growth,
                "history_tokens": history_tokens,
                "history_cost_usd": _r(history_cost),
                "new_input_cost_usd": _r(max(0.0, input_side - history_cost)),
                "cost_usd": fact.cost_usd,
                "input_cost_usd": fact.input_cost_usd,
                "output_cost_usd": fact.output_cost_usd,
                "cache_read_cost_usd": fact.cache_read_cost_usd,
                "cache_write_cost_usd": fact.cache_write_cost_usd,
                "latency_ms": fact.latency_ms,
                "tool_calls": answered.get(index),
                "waste_tokens": row["waste_tokens"],
                "complexity": row["complexity"],
            }
        )
    out["timeline"] = timeline
    return out
