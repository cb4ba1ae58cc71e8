"""HTTP content-encoding: whole bodies and incremental stream decoders (gzip, deflate, br, zstd)."""

from __future__ import annotations

import sys
import zlib
from typing import Protocol

import brotli

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd


class StreamDecoder(Protocol):
    def decode(self, data: bytes) -> bytes: ...


class _Identity:
    def decode(self, data: bytes) -> bytes:
        return data


class _Zlib:
    def __init__(self, wbits: int) -> None:
        self._obj = zlib.decompressobj(wbits)

    def decode(self, data: bytes) -> bytes:
        return self._obj.decompress(data)


class _Deflate:
    """`deflate` is zlib-wrapped by the standard and raw in practice: try the first, fall back to the second."""

    def __init__(self) -> None:
        self._obj: zlib._Decompress | None = None
        self._first = b""

    def decode(self, data: bytes) -> bytes:
        if self._obj is None:
            self._first += data
            if len(self._first) < 2:
                return b""
            wbits = (
                zlib.MAX_WBITS
                if (self._first[0] & 0x0F) == 8 and int.from_bytes(self._first[:2]) % 31 == 0
                else -15
            )
            self._obj = zlib.decompressobj(wbits)
            data, self._first = self._first, b""
        return self._obj.decompress(data)


class _Brotli:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def decode(self, data: bytes) -> bytes:
        return bytes(self._obj.process(data))


class _Zstd:
    def __init__(self) -> None:
        self._obj = zstd.ZstdDecompressor()

    def decode(self, data: bytes) -> bytes:
        out = self._obj.decompress(data)
        while self._obj.eof and self._obj.unused_data:
            rest = self._obj.unused_data
            self._obj = zstd.ZstdDecompressor()
            out += self._obj.decompress(rest)
        return out


def stream_decoder(content_encoding: str | None) -> StreamDecoder | None:
    """An incremental decoder for the encoding, identity for none, None when the encoding is unknown."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return _Identity()
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Deflate()
    if encoding == "br":
        return _Brotli()
    if encoding == "zstd":
        return _Zstd()
    return None


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """The body decoded; undecodable or unknown encodings give the raw bytes back."""
    decoder = stream_decoder(content_encoding)
    if decoder is None or isinstance(decoder, _Identity):
        return body
    try:
        return decoder.decode(body)
    except Exception:
        return body
