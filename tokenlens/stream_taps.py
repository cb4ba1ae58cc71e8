"""Stream taps: what a streamed answer passes through on its way to the client (set by the upstream stage).

`StreamTap` passes every chunk on at once and untouched and keeps a decoded copy for the record;
`UsageChunkStripper` undoes a usage request the gateway added (docs/gateway.md#metering): the client gets the stream it asked for;
`GuardedTap` runs the response guardrails on what the tap forwards (set by the response-guardrails stage).
"""

from __future__ import annotations

import logging
import re
import time

from tokenlens.encoding import StreamDecoder
from tokenlens.exchange import Exchange
from tokenlens.guardrails.stream import StreamGuard
from tokenlens.usage import is_usage_only_chunk, split_events

log = logging.getLogger(__name__)

# With include_usage, every chunk carries `"usage": null`. Quotes inside JSON strings are escaped, so an
# unescaped `"usage": null` in the bytes can only be that key.
_USAGE_NULL = re.compile(rb'\s*,\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*')


class StreamTap:
    """Passes every chunk on at once and untouched; keeps a decoded copy for the record."""

    def __init__(self, exchange: Exchange, decoder: StreamDecoder | None) -> None:
        self.exchange = exchange
        self.decoder = decoder
        exchange.stream_undecodable = decoder is None

    def keep(self, data: bytes) -> None:
        if self.exchange.first_chunk_at is None:
            self.exchange.first_chunk_at = time.time()
        if self.decoder is None:
            return
        try:
            self.exchange.chunks.append(self.decoder.decode(data))
        except Exception:
            self.decoder, self.exchange.stream_undecodable = None, True

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if not data:
            return []
        self.keep(data)
        return data


class UsageChunkStripper(StreamTap):
    """A tap that undoes the usage request the client did not make (uncompressed SSE only).

    It removes the usage-only chunk and the `"usage": null` field of every other chunk, so the client gets
    the stream it asked for. Complete events go on as soon as they are complete; only a partial event waits.
    """

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(exchange, None)
        self.exchange.stream_undecodable = False
        self.pending = b""

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if not data:
            rest, self.pending = self.pending, b""
            return [rest] if rest else []
        self.keep(data)
        self.exchange.chunks.append(data)
        events, self.pending = split_events(self.pending + data)
        out = [
            _USAGE_NULL.sub(b"", event) if b'"usage"' in event else event
            for event in events
            if not _is_usage_event(event)
        ]
        if len(out) == 1:
            return out[0]
        return b"".join(out) if out else []


def _is_usage_event(event: bytes) -> bool:
    if b'"usage"' not in event:
        return False
    for line in event.splitlines():
        if line.startswith(b"data:"):
            return is_usage_only_chunk(line[5:].strip())
    return False


class GuardedTap:
    """The upstream tap first (it keeps the raw copy for metering), then the guard on what the tap forwards."""

    def __init__(self, tap: object, guard: StreamGuard) -> None:
        self.tap = tap
        self.guard = guard

    def __call__(self, data: bytes) -> list[bytes]:
        """Bytes for the client as a list: nothing to send is `[]`, never `b""`, which mitmproxy would write as
        an empty chunk, and an empty chunk ends a chunked body (the guard holds events back, so this happens)."""
        out = self.tap(data) if callable(self.tap) else data
        passed = out if isinstance(out, bytes) else b"".join(out)
        held_before, pending_before = len(self.guard.held), self.guard.pending
        try:
            if not data:
                sent = (self.guard(passed) if passed else b"") + self.guard(b"")
            else:
                sent = self.guard(passed) if passed else b""
        except Exception as exc:
            log.warning("response guardrail failed on a stream: %s", type(exc).__name__)
            self.guard.holding = False
            try:  # fail open: lose nothing, and let out nothing already redacted
                earlier = b"".join(self.guard.send_held(h) for h in self.guard.held[:held_before])
            except Exception:
                earlier = b"".join(h.event for h in self.guard.held[:held_before])
            self.guard.held.clear()
            self.guard.pending = b""
            sent = (
                earlier + pending_before + passed
                if self.guard.g.fail_open
                else self.guard._stop(["guardrail_error"])
            )
        return [sent] if sent else []
