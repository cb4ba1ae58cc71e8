"""Checks shared by the end-to-end tests: a record against the simulator's usage and published prices."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from provider_sim import Simulator
from published_prices import expected_cost

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
VOLATILE = {"id", "created", "created_at", "responseId", "createTime", "request_id", "msg_id"}


def assert_metered(
    call: Mapping[str, Any],
    sim: Simulator,
    provider: str,
    kind: str,
    request_json: Mapping[str, Any],
    price_model: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    usage = sim.expected_usage(provider, kind, request_json, dict(headers or {}))
    assert {f: call[f] for f in TOKEN_FIELDS} == {f: usage[f] or 0 for f in TOKEN_FIELDS}
    for split in ("cache_write_5m_tokens", "cache_write_1h_tokens"):
        if usage.get(split) is not None:
            assert call[split] == usage[split]
    assert call["usage_source"] == "provider"
    assert call["priced"] is True
    assert call["cost_usd"] == pytest.approx(expected_cost(price_model, usage), rel=1e-9, abs=1e-15)
    assert call["outcome"] == "ok" and call["status"] == 200


def without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def sse_events(raw: bytes) -> list[Any]:
    """A stream's events with ids and timestamps removed: what must be identical direct and through the gateway."""
    events: list[Any] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        fields: list[Any] = []
        for line in block.split(b"\n"):
            name, _, value = line.partition(b":")
            text = value.strip()
            try:
                fields.append((name.decode(), without_volatile(json.loads(text))))
            except ValueError:
                fields.append((name.decode(), text.decode()))
        events.append(fields)
    return events
