"""Sessions and conversations (SPEC sections 5 and 9).

A call that carries `X-TokenLens-Session` belongs to that session, and its `turn` counts the session's calls.
Without the header, calls are grouped into **conversations** by continuity: a request whose message list
strictly extends an earlier request's message list (same source, same system prompt) continues that
conversation, one turn later. Two conversations from one source stay apart as long as their histories differ.

`ConversationIndex.assign` runs in the writer thread (a deferred analysis), with bounded state: an LRU of
message-prefix hashes per source and a TTL. Restarting the gateway forgets the index (a conversation that goes
on after a restart starts again at turn 1 under a new id); session turns are counted again from 1 as well.
The read side (`sessions_summary`, `session_timeline`) aggregates the stored calls.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from tokenlens.exchange import GENERATION_KINDS
from tokenlens.records import iso_utc

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


# ---------------------------------------------------------------------------------------------- read side

_FIELDS = (
    "id",
    "ts",
    "provider",
    "source",
    "model",
    "outcome",
    "session_id",
    "conversation_id",
    "turn",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "input_cost_usd",
    "cache_read_cost_usd",
    "cache_write_cost_usd",
    "priced",
    "latency_ms",
    "waste_tokens",
    "complexity",
)


def _history(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """(history tokens, history cost) per row, rows in time order: the part of each call's input that
    re-sends the previous call of the same conversation (its input plus its answer)."""
    last: dict[str, tuple[int, int]] = {}
    out = []
    for row in rows:
        conversation = row["conversation_id"]
        inp = int(row["input_tokens"] or 0)
        tokens = 0
        if conversation is not None and conversation in last and inp:
            prev_in, prev_out = last[conversation]
            tokens = min(inp, prev_in + prev_out)
        cost = 0.0
        if tokens and inp:
            side = sum(
                float(row[k] or 0.0)
                for k in ("input_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd")
            )
            cost = side * tokens / inp
        if conversation is not None and inp:
            last[conversation] = (inp, int(row["output_tokens"] or 0))
        out.append((tokens, cost))
    return out


def _r(value: float, digits: int = 9) -> float:
    return round(float(value), digits)


def _summary(group_id: str, kind: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    history = _history(rows)
    cost = sum(float(r["cost_usd"] or 0.0) for r in rows)
    history_cost = sum(c for _, c in history)
    growth = [int(r["input_tokens"] or 0) for r in rows if r["input_tokens"]]
    steps = [b - a for a, b in zip(growth, growth[1:], strict=False)]
    start, end = rows[0]["ts"], rows[-1]["ts"] + float(rows[-1]["latency_ms"] or 0.0) / 1000
    conversations = {r["conversation_id"] for r in rows if r["conversation_id"]}
    return {
        "id": group_id,
        "kind": kind,
        "sources": sorted({r["source"] for r in rows}),
        "calls": len(rows),
        "turns": max((int(r["turn"] or 0) for r in rows), default=0),
        "conversations": len(conversations),
        "cost_usd": _r(cost),
        "unpriced_calls": sum(1 for r in rows if not r["priced"]),
        "input_tokens": sum(int(r["input_tokens"] or 0) for r in rows),
        "output_tokens": sum(int(r["output_tokens"] or 0) for r in rows),
        "started": iso_utc(start),
        "ended": iso_utc(end),
        "duration_s": round(end - start, 3),
        "models": sorted({r["model"] for r in rows if r["model"]}),
        "context_growth": growth,
        "avg_growth_per_turn": round(sum(steps) / len(steps), 1) if steps else 0.0,
        "history_tokens": sum(t for t, _ in history),
        "history_cost_usd": _r(history_cost),
        "history_share": round(history_cost / cost, 4) if cost else 0.0,
    }


def _select(store: Store, condition: Callable[[Any], Any]) -> list[dict[str, Any]]:
    call = store.models.Call
    query = call.select(*(getattr(call, f) for f in _FIELDS)).where(condition(call))
    with store.connection():
        return list(query.order_by(call.ts.asc(), call.id.asc()).dicts().execute())


def _grouped(rows: Iterable[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row[key] is not None:
            out.setdefault(row[key], []).append(row)
    return out


def sessions_summary(store: Store, days: int, tz: tzinfo, limit: int = 200) -> dict[str, Any]:
    """Sessions (by header) and conversations (inferred, calls without a session) of the last `days` days,
    newest first: cost, calls, turns, duration, models, context growth and history share."""
    from tokenlens.insights import window

    start, end = window(days, tz)
    rows = _select(
        store,
        lambda c: (
            (c.ts >= start) & (c.ts < end) & (c.session_id.is_null(False) | c.conversation_id.is_null(False))
        ),
    )
    sessions = [_summary(k, "session", v) for k, v in _grouped(rows, "session_id").items()]
    loose = [r for r in rows if r["session_id"] is None]
    conversations = [_summary(k, "conversation", v) for k, v in _grouped(loose, "conversation_id").items()]
    for items in (sessions, conversations):
        items.sort(key=lambda i: i["started"], reverse=True)
    return {"days": days, "sessions": sessions[:limit], "conversations": conversations[:limit]}


def session_timeline(store: Store, group_id: str) -> dict[str, Any] | None:
    """One session (or, when no session has that id, one conversation) turn by turn; None when unknown."""
    kind = "session"
    rows = _select(store, lambda c: c.session_id == group_id)
    if not rows:
        kind = "conversation"
        rows = _select(store, lambda c: c.conversation_id == group_id)
    if not rows:
        return None
    out = _summary(group_id, kind, rows)
    previous: dict[str | None, int] = {}
    timeline = []
    for row, (history_tokens, history_cost) in zip(rows, _history(rows), strict=True):
        inp = int(row["input_tokens"] or 0)
        conversation = row["conversation_id"]
        growth = inp - previous[conversation] if conversation in previous and inp else None
        if inp:
            previous[conversation] = inp
        timeline.append(
            {
                "turn": row["turn"],
                "call_id": row["id"],
                "ts": iso_utc(row["ts"]),
                "conversation_id": conversation,
                "source": row["source"],
                "provider": row["provider"],
                "model": row["model"],
                "outcome": row["outcome"],
                "input_tokens": inp,
                "output_tokens": int(row["output_tokens"] or 0),
                "context_growth_tokens": growth,
                "history_tokens": history_tokens,
                "history_cost_usd": _r(history_cost),
                "cost_usd": row["cost_usd"],
                "latency_ms": row["latency_ms"],
                "waste_tokens": row["waste_tokens"],
                "complexity": row["complexity"],
            }
        )
    out["timeline"] = timeline
    return out
