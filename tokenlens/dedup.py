"""The dedup cache (docs/gateway.md#the-pipeline, stage 7): identical requests answered within a TTL, in memory.

The key is a SHA-256 over the provider, endpoint, query (secrets removed), routed model, canonical request body
and a hash of the credential: the credential itself is never kept. Entries are bounded in number and bytes
(least recently used first out); lookups are O(1). Nothing here does I/O; the cache is used from the proxy's
event loop, and `Entry.cost` is filled in later by the writer thread (one attribute write).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_ENTRY_BYTES = 8 * 1024 * 1024
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


def credential_digest(headers: Iterable[tuple[str, str]], query_key: str | None = None) -> str:
    """A hash that tells credentials apart without keeping them."""
    h = hashlib.sha256()
    wanted = {name: "" for name in CREDENTIAL_HEADERS}
    for name, value in headers:
        low = name.lower()
        if low in wanted:
            wanted[low] = value
    for name in CREDENTIAL_HEADERS:
        h.update(name.encode() + b"\0" + wanted[name].encode("utf-8", "surrogatepass") + b"\0")
    h.update((query_key or "").encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def canonical_body(body: Mapping[str, Any] | None, raw: bytes) -> bytes:
    """The body with key order and whitespace normalised (the raw bytes when it is not JSON)."""
    if body is None:
        return raw
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def request_key(
    *,
    provider: str,
    endpoint: str,
    query: str,
    model: str | None,
    body: bytes,
    credential: str,
) -> str:
    h = hashlib.sha256()
    for piece in (provider, endpoint, query, model or "", credential):
        h.update(piece.encode("utf-8", "surrogatepass") + b"\0")
    h.update(body)
    return h.hexdigest()


@dataclass
class Cost:
    """The cost of the original call, filled in by the writer thread once the call is metered."""

    usd: float | None = None


@dataclass
class Entry:
    """One answer: replayed as one response with the same status and content type."""

    call_id: str
    status: int
    headers: dict[str, str]
    body: bytes
    stored_at: float
    cost: Cost = field(default_factory=Cost)
    hits: int = 0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.body) + 256


class DedupStore:
    """A TTL and LRU cache bounded in entries and bytes."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, ttl_s: float, now: float | None = None) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = time.time() if now is None else now
        if now - entry.stored_at > ttl_s:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        entry.hits += 1
        return entry

    def put(self, key: str, entry: Entry) -> bool:
        """Keep `entry` (False when it is too big to keep)."""
        if entry.size > min(MAX_ENTRY_BYTES, self.max_bytes) or self.max_entries < 1:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.bytes += entry.size
        self.trim()
        return True

    def trim(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries or self.bytes > self.max_bytes):
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
