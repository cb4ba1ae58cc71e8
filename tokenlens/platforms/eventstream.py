"""AWS event-stream framing (`application/vnd.amazon.eventstream`), as Bedrock streams its answers.

Each message: total length (4 bytes, big-endian), headers length (4), CRC32 of those 8 bytes (4), the headers,
the payload, CRC32 of everything before it (4). A header: name length (1), name, value type (1), value.

`EventStreamDecoder` is incremental (feed bytes split anywhere), bounded (a message longer than `max_message`
is refused: `EventStreamError`) and checks both CRCs. It only reads: the bytes the client gets are never
touched by it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

CONTENT_TYPE = "application/vnd.amazon.eventstream"
PRELUDE = 12
MIN_MESSAGE = PRELUDE + 4
MAX_MESSAGE = 16 * 1024 * 1024  # Bedrock's chunks are a few KB; anything near this is not an event stream

HeaderValue = bool | int | bytes | str


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad length, CRC, header type, or a message too long)."""


@dataclass(frozen=True)
class Message:
    headers: dict[str, HeaderValue]
    payload: bytes
    raw: bytes = b""  # the whole message as it came (prelude and CRCs included)

    @property
    def event_type(self) -> str | None:
        value = self.headers.get(":event-type")
        return value if isinstance(value, str) else None

    @property
    def message_type(self) -> str:
        value = self.headers.get(":message-type")
        return value if isinstance(value, str) else "event"


# value type -> fixed size of the value (None: 2-byte length prefix follows)
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _headers(data: bytes) -> dict[str, HeaderValue]:
    out: dict[str, HeaderValue] = {}
    i = 0
    while i < len(data):
        name_len = data[i]
        i += 1
        name = data[i : i + name_len].decode("utf-8", "replace")
        i += name_len
        if i >= len(data):
            raise EventStreamError("header without a value type")
        kind = data[i]
        i += 1
        value: HeaderValue
        if kind in (0, 1):
            value = kind == 0
        elif kind in _FIXED:
            size = _FIXED[kind]
            raw = data[i : i + size]
            if len(raw) != size:
                raise EventStreamError("header value cut short")
            value = raw if kind == 9 else int.from_bytes(raw, "big", signed=True)
            i += size
        elif kind in (6, 7):
            if i + 2 > len(data):
                raise EventStreamError("header value cut short")
            (size,) = struct.unpack_from(">H", data, i)
            i += 2
            raw = data[i : i + size]
            if len(raw) != size:
                raise EventStreamError("header value cut short")
            value = raw.decode("utf-8", "replace") if kind == 7 else raw
            i += size
        else:
            raise EventStreamError(f"unknown header value type {kind}")
        out[name] = value
    return out


def parse_message(frame: bytes) -> Message:
    """One whole message (its CRCs checked)."""
    if len(frame) < MIN_MESSAGE:
        raise EventStreamError("message shorter than its prelude")
    total, headers_len, prelude_crc = struct.unpack_from(">III", frame, 0)
    if zlib.crc32(frame[:8]) != prelude_crc:
        raise EventStreamError("prelude CRC mismatch")
    if total != len(frame) or headers_len > total - MIN_MESSAGE:
        raise EventStreamError("inconsistent message lengths")
    (message_crc,) = struct.unpack_from(">I", frame, total - 4)
    if zlib.crc32(frame[: total - 4]) != message_crc:
        raise EventStreamError("message CRC mismatch")
    headers = _headers(frame[PRELUDE : PRELUDE + headers_len])
    return Message(headers, frame[PRELUDE + headers_len : total - 4], frame)


@dataclass
class EventStreamDecoder:
    """Feed bytes as they arrive; whole messages come out. Memory is bounded by `max_message`."""

    max_message: int = MAX_MESSAGE
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> Iterator[Message]:
        self._buffer += data
        while len(self._buffer) >= PRELUDE:
            total, headers_len, prelude_crc = struct.unpack_from(">III", self._buffer, 0)
            if zlib.crc32(bytes(self._buffer[:8])) != prelude_crc:
                raise EventStreamError("prelude CRC mismatch")
            if total < MIN_MESSAGE or total > self.max_message or headers_len > total - MIN_MESSAGE:
                raise EventStreamError(f"message length {total} out of bounds")
            if len(self._buffer) < total:
                return
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            yield parse_message(frame)

    def pending_bytes(self) -> bytes:
        """The bytes of an incomplete message, handed over (the buffer is emptied)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held (a stream cut mid-message leaves some)."""
        return len(self._buffer)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """A message with string headers (for tests and local answers)."""
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = PRELUDE + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    return head + struct.pack(">I", zlib.crc32(head))
