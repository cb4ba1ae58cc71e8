"""Reading a request body for the gates: bounded, and at least as lenient as an upstream could be.

The gates (budget, quota, guardrails) decide on the parsed body, so what they read must be what the provider
would read. `read_request_body`:
- refuses what cannot be checked safely (`BodyRefused`, answered 400): a body over `MAX_BODY_BYTES`, nesting
  deeper than `MAX_DEPTH` (JSON nested ~1,500 levels makes the parser raise `RecursionError`; every walker
  after it recurses too), a message list longer than `MAX_LIST_ITEMS`;
- parses JSON with a byte-order mark (UTF-8, UTF-16 and UTF-32, as `json.loads` detects them);
- reads JSON followed by trailing bytes (a NUL, garbage) as the object it starts with, as a lenient upstream
  parser would, so such a body is gated on its content instead of passing as "not JSON"; but a body holding a
  second JSON object or array after the first is refused: an upstream that reads the last one would get a
  request the gates never read;
- returns anything else as text, which the guardrails still scan.
The body that goes upstream is never changed here.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 128
MAX_LIST_ITEMS = 100_000
LIST_FIELDS = ("messages", "contents", "input", "requests", "tools")
_OPENING = (ord("["), ord("{"))
_SEPARATORS = " \t\r\n\x00,;"  # what may stand between two JSON values a reader takes one by one


class BodyRefused(ValueError):
    """A body the gates cannot check safely; the message says why (no body text in it)."""

    code = "invalid_request_body"


@dataclass(frozen=True)
class RequestBody:
    json: dict[str, Any] | None  # the JSON object the gates read (None when the body is not one)
    text: str | None = None  # the body as text when it is not a JSON object (guardrails scan it)
    lenient: bool = False  # read past a byte-order mark or trailing bytes that strict JSON refuses


def decode_content(raw: bytes, content_encoding: str) -> bytes:
    """The body under its `Content-Encoding`, decompressed to at most `MAX_BODY_BYTES` (no zip bomb).

    gzip and deflate are read; a body that does not decompress is gated as the bytes it is; any other
    encoding (br, zstd, several at once) cannot be checked here and is refused."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BodyRefused(f"request bodies with Content-Encoding {encoding[:40]!r} are not accepted")
    attempts = (zlib.MAX_WBITS | 32,) if encoding != "deflate" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    for wbits in attempts:
        try:
            return _inflate(raw, wbits, several=encoding != "deflate")
        except zlib.error:
            continue
    return raw


def _inflate(raw: bytes, wbits: int, several: bool) -> bytes:
    """`raw` decompressed, bounded; with `several`, every gzip member (RFC 1952), as `gzip.decompress` reads
    them: an upstream sees all of them, so the gates must too. Raises zlib.error for a first member that does
    not decompress."""
    parts: list[bytes] = []
    size = 0
    rest = raw
    while True:
        decompressor = zlib.decompressobj(wbits)
        try:
            part = decompressor.decompress(rest, MAX_BODY_BYTES + 1 - size)
        except zlib.error:
            if not parts:
                raise
            break  # trailing bytes after a whole member: what a lenient reader ignores
        size += len(part)
        if size > MAX_BODY_BYTES or decompressor.unconsumed_tail:
            raise BodyRefused(f"request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        parts.append(part)
        rest = decompressor.unused_data
        if not several or not decompressor.eof or not rest.strip(b"\0"):
            return b"".join(parts)
    return b"".join(parts)


def _depth_over(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (breadth first: no recursion, whatever the depth)."""
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            deeper.extend([c for c in children if type(c) is dict or type(c) is list])
        level = deeper
    return False


def _check_shape(raw: bytes, value: Any) -> None:
    if not isinstance(value, dict | list):
        return
    # Depth can only exceed the limit when the body has more opening brackets than the limit.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth_over(value, MAX_DEPTH):
        raise BodyRefused(f"request body is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key in LIST_FIELDS:
            items = value.get(key)
            if isinstance(items, list) and len(items) > MAX_LIST_ITEMS:
                raise BodyRefused(f"request body has more than {MAX_LIST_ITEMS} items in {key!r}")


def _decode(raw: bytes) -> str:
    encoding = json.detect_encoding(raw)
    return raw.decode(encoding, errors="replace").lstrip("\ufeff")


def _leading_value(text: str) -> Any:
    """The JSON value a body starts with, ignoring trailing bytes; raises ValueError when there is none and
    `BodyRefused` when another JSON object or array follows it."""
    start = len(text) - len(text.lstrip())
    value, end = json.JSONDecoder().raw_decode(text, start)
    if text[end:].lstrip(_SEPARATORS)[:1] in ("{", "["):
        raise BodyRefused("request body holds more than one JSON value")
    return value


def read_request_body(raw: bytes) -> RequestBody:
    """The body as the gates read it. Raises `BodyRefused` for a body that cannot be checked safely."""
    if len(raw) > MAX_BODY_BYTES:
        raise BodyRefused(f"request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
    if not raw.strip():
        return RequestBody(None)
    lenient = False
    try:
        value: Any = json.loads(raw)
    except RecursionError:
        raise BodyRefused(f"request body is nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError):
        text = _decode(raw)
        try:
            value = _leading_value(text)
            lenient = True
        except RecursionError:
            raise BodyRefused(f"request body is nested more than {MAX_DEPTH} levels deep") from None
        except BodyRefused:
            raise
        except ValueError:
            return RequestBody(None, text)
    _check_shape(raw, value)
    if isinstance(value, dict):
        return RequestBody(value, None, lenient)
    return RequestBody(None, _decode(raw))


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """A body (a request or an answer) as a JSON object, or None when it is empty, not JSON, not an object,
    or too large or deep to walk safely. Strict JSON only (a byte-order mark allowed)."""
    if not body:
        return None
    try:
        value = json.loads(body)
        _check_shape(body, value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
