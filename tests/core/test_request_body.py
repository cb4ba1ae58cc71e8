"""Reading request bodies for the gates: bounded, and lenient where an upstream could be."""

from __future__ import annotations

import codecs
import gzip
import json
import zlib

import pytest

from tokenlens.request_body import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    BodyRefused,
    decode_content,
    parse_json_object,
    read_request_body,
)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}


def nested(depth: int) -> bytes:
    return b'{"model": "gpt-4o", "j": ' + b"[" * depth + b"]" * depth + b"}"


def test_deep_nesting_is_refused_not_raised() -> None:
    """~1,500 levels made json.loads raise RecursionError on the proxy path (issue 17, finding 1)."""
    for depth in (MAX_DEPTH + 1, 2_000, 100_000):
        with pytest.raises(BodyRefused, match="nested"):
            read_request_body(nested(depth))
        assert parse_json_object(nested(depth)) is None


def test_nesting_up_to_the_limit_is_read() -> None:
    # the object itself is one level, so the list may nest MAX_DEPTH - 1 levels
    assert read_request_body(nested(MAX_DEPTH - 1)).json is not None


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "[" * 5000}]}).encode()
    assert read_request_body(body).json == json.loads(body)


@pytest.mark.parametrize(
    "bom, codec",
    [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF32_BE, "utf-32-be")],
)
def test_a_byte_order_mark_is_still_json(bom: bytes, codec: str) -> None:
    """Finding 2: a BOM made the body "not JSON", so it passed unscanned and unbudgeted."""
    read = read_request_body(bom + json.dumps(CHAT).encode(codec))
    assert read.json == CHAT


@pytest.mark.parametrize("tail", [b"\x00", b"\x00\x00garbage", b" \n}", b"\xff\xfe"])
def test_trailing_bytes_are_read_as_a_lenient_upstream_would(tail: bytes) -> None:
    read = read_request_body(json.dumps(CHAT).encode() + tail)
    assert read.json == CHAT and read.lenient


@pytest.mark.parametrize("separator", [b"", b"\n", b"\x00 ", b",", b";\r\n"])
@pytest.mark.parametrize("second", [b"{}", b'{"model": "gpt-5", "messages": []}', b"[1]"])
def test_a_second_json_value_is_refused(separator: bytes, second: bytes) -> None:
    """An upstream that reads the last of several JSON values would get a request the gates never read."""
    with pytest.raises(BodyRefused, match="more than one JSON value"):
        read_request_body(json.dumps(CHAT).encode() + separator + second)


def test_text_that_is_not_json_is_kept_as_text() -> None:
    read = read_request_body(b"call me at alice@example.com")
    assert read.json is None and read.text == "call me at alice@example.com"
    assert read_request_body(b"[1, 2]").text == "[1, 2]"
    assert read_request_body(b"  ").json is None


def test_size_and_list_bounds() -> None:
    with pytest.raises(BodyRefused, match="larger"):
        read_request_body(b" " * (MAX_BODY_BYTES + 1))
    many = json.dumps({"model": "m", "messages": [{}] * (MAX_LIST_ITEMS + 1)}).encode()
    with pytest.raises(BodyRefused, match="messages"):
        read_request_body(many)


def test_compressed_bodies_are_read_and_bounded() -> None:
    raw = json.dumps(CHAT).encode()
    assert decode_content(gzip.compress(raw), "gzip") == raw
    assert decode_content(zlib.compress(raw), "deflate") == raw
    assert decode_content(b"not gzip", "gzip") == b"not gzip"  # gated as the bytes it is
    bomb = gzip.compress(b"\x00" * (MAX_BODY_BYTES + 10))
    with pytest.raises(BodyRefused, match="larger"):
        decode_content(bomb, "gzip")
    with pytest.raises(BodyRefused, match="br"):
        decode_content(raw, "br")


def test_every_member_of_a_multi_member_gzip_body_is_read() -> None:
    # RFC 1952 allows several members; gzip.decompress (and Go's reader) return them all, so an upstream sees
    # the whole text. Reading only the first member would gate a harmless prefix and pass the rest unchecked.
    first, second = b'{"model": "gpt-4o", "messages": [', b'{"role": "user", "content": "hidden"}]}'
    body = gzip.compress(first) + gzip.compress(second)
    assert gzip.decompress(body) == first + second
    assert decode_content(body, "gzip") == first + second
    bomb = gzip.compress(b"x") + gzip.compress(b"\0" * (MAX_BODY_BYTES + 1))
    with pytest.raises(BodyRefused):
        decode_content(bomb, "gzip")
