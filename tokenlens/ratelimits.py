"""Provider rate-limit headroom (docs/analytics-api.md, `/api/usage/rate-limits`).

The providers' own headers (`anthropic-ratelimit-*`, `x-ratelimit-*`, `retry-after`) are read as they pass,
and the latest per provider and credential is kept in memory (`RateLimitBook`). A credential is known only by
a short salted hash (`credential_hash`); the key itself is never kept. When a limit's remaining share falls
under 10%, one `alert` is published per limit window; a 429 from the provider is counted and alerted once per
retry window too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from tokenlens.records import iso_utc, parse_iso

if TYPE_CHECKING:
    from tokenlens.exchange import Exchange
    from tokenlens.records import SettledFacts
    from tokenlens.store import Store

PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
RETRY_AFTER = "retry-after"
LOW_SHARE = 0.10
SALT_FILE = "credential-salt"
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")

_OPENAI = re.compile(r"^x-ratelimit-(limit|remaining|reset)-(.+)$")
_ANTHROPIC = re.compile(r"^anthropic-ratelimit-(.+)-(limit|remaining|reset)$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def is_rate_limit_header(name: str) -> bool:
    lower = name.lower()
    return lower == RETRY_AFTER or lower.startswith(PREFIXES)


def rate_limit_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The rate-limit headers among `headers` (name, value) pairs, with lower-case names."""
    return {k.lower(): v for k, v in headers if is_rate_limit_header(k)}


_RAW_PREFIXES = tuple(prefix.encode() for prefix in PREFIXES)
_RAW_RETRY_AFTER = RETRY_AFTER.encode()
_RAW_CREDENTIAL_HEADERS = frozenset(name.encode() for name in CREDENTIAL_HEADERS)


def rate_limit_header_fields(fields: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """`rate_limit_headers` of raw header fields decoded as Latin-1, decoding only the rate-limit ones."""
    out: dict[str, str] = {}
    for key, value in fields:
        lower = key.lower()
        if lower == _RAW_RETRY_AFTER or lower.startswith(_RAW_PREFIXES):
            out[key.decode("latin-1").lower()] = value.decode("latin-1")
    return out


def credential_header_fields(fields: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers `credential_of` reads, from raw header fields decoded as Latin-1 (lower-case names)."""
    return {
        key.decode("latin-1").lower(): value.decode("latin-1")
        for key, value in fields
        if key.lower() in _RAW_CREDENTIAL_HEADERS
    }


def load_salt(home: Path) -> bytes:
    """The per-installation salt of credential hashes (created once, mode 0600); random when unwritable."""
    path = home / SALT_FILE
    try:
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    except OSError:
        pass
    salt = os.urandom(32)
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(salt)
    except OSError:
        pass
    return salt


def credential_of(headers: Mapping[str, str] | Any, url: str = "") -> str | None:
    """The API key a request carries (header or `?key=`), or None. Never store what this returns."""
    for name in CREDENTIAL_HEADERS:
        value = headers.get(name)
        if value:
            text = str(value).strip()
            if text.lower().startswith("bearer "):
                text = text[7:].strip()
            if text:
                return text
    if "key=" in url:
        for name, value in parse_qsl(urlsplit(url).query):
            if name == "key" and value:
                return value
    return None


def credential_hash(salt: bytes, credential: str | None) -> str:
    """A short salted hash naming a credential (`none` when the request carried none)."""
    if not credential:
        return "none"
    return hashlib.blake2b(credential.encode(), key=salt[:64], digest_size=6).hexdigest()


def _duration_s(text: str) -> float | None:
    """OpenAI's reset durations: `6ms`, `1s`, `1m30.5s`, `2h`."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def reset_at(value: str, now: float) -> float | None:
    """Epoch seconds of a reset header: an RFC 3339 time, a duration (`6ms`, `1m30s`) or seconds."""
    text = value.strip()
    if not text:
        return None
    try:
        return now + float(text)
    except ValueError:
        pass
    seconds = _duration_s(text)
    if seconds is not None:
        return now + seconds
    try:
        return parse_iso(text)
    except ValueError:
        return None


def retry_after_s(value: str | None, now: float) -> float | None:
    """`retry-after` as seconds from now (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def parse_limits(headers: Mapping[str, str], now: float) -> dict[str, dict[str, Any]]:
    """Limits by name (`requests`, `tokens`, `input-tokens`...): limit, remaining, reset as given, resets_at."""
    limits = _limits(headers, now)
    for item in limits.values():
        item["resets_at"] = _resets_at_text(item)
    return limits


def _resets_at_text(item: Mapping[str, Any]) -> str | None:
    when = item["_resets_at"]
    return iso_utc(when) if when is not None else None


def _limits(headers: Mapping[str, str], now: float) -> dict[str, dict[str, Any]]:
    """`parse_limits` with `resets_at` left None: the book keeps these per call and writes the time as text
    (`_resets_at_text`) only when it is shown."""
    raw: dict[str, dict[str, str]] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-ratelimit-"):
            if m := _OPENAI.match(lower):
                raw.setdefault(m.group(2), {})[m.group(1)] = value
        elif lower.startswith("anthropic-ratelimit-") and (m := _ANTHROPIC.match(lower)):
            raw.setdefault(m.group(1), {})[m.group(2)] = value
    out: dict[str, dict[str, Any]] = {}
    for name, values in sorted(raw.items()):
        limit, remaining = _int(values.get("limit")), _int(values.get("remaining"))
        reset = values.get("reset")
        out[name] = {
            "limit": limit,
            "remaining": remaining,
            "remaining_share": round(remaining / limit, 4) if limit and remaining is not None else None,
            "reset": reset,
            "resets_at": None,
            "_resets_at": reset_at(reset, now) if reset else None,
        }
    return out


@dataclass
class _State:
    provider: str
    credential: str
    updated: float = 0.0
    limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    retry_after_s: float | None = None
    last_status: int | None = None
    calls: int = 0
    rate_limited: int = 0  # 429s received from the provider
    last_429: float | None = None
    last_429_model: str | None = None


class RateLimitBook:
    """The latest rate-limit headers per (provider, credential hash), thread-safe.

    `observe` is called where the gateway hands a finished call on (`record`, an `Exchange.on_recorded`); the
    alerts it decides are published once calls are settled, when the book runs as a record listener
    (`__call__`).
    """

    def __init__(
        self, publish: Callable[[str, dict[str, Any]], None] | None = None, low: float = LOW_SHARE
    ) -> None:
        self.publish = publish
        self.low = low
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], _State] = {}
        self._alerted: dict[tuple[str, str, str], float] = {}  # limit -> end of the window alerted
        self._pending: list[dict[str, Any]] = []

    def observe(
        self,
        provider: str,
        credential: str,
        status: int | None,
        headers: Mapping[str, str],
        *,
        model: str | None = None,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Take in one answer's headers; returns the alerts it raised (also queued for publishing)."""
        now = time.time() if now is None else now
        limits = _limits(headers, now)
        retry = retry_after_s(headers.get(RETRY_AFTER), now)
        alerts: list[dict[str, Any]] = []
        with self._lock:
            state = self._states.setdefault((provider, credential), _State(provider, credential))
            state.calls += 1
            state.last_status = status
            if limits:
                state.limits, state.updated = limits, now
            state.retry_after_s = retry
            for name, item in limits.items():
                key = (provider, credential, name)
                share = item["remaining_share"]
                if share is None or share >= self.low:
                    self._alerted.pop(key, None)
                    continue
                window_end = item["_resets_at"] or now + 60.0
                if key in self._alerted and now < self._alerted[key]:
                    continue
                self._alerted[key] = window_end
                alerts.append(
                    {
                        "kind": "rate_limit_low",
                        "provider": provider,
                        "credential": credential,
                        "limit": name,
                        "limit_value": item["limit"],
                        "remaining": item["remaining"],
                        "remaining_share": share,
                        "resets_at": _resets_at_text(item),
                        "message": f"{provider} {name} rate limit: {item['remaining']} of {item['limit']} left "
                        f"(under {round(self.low * 100)}%) for credential {credential}",
                    }
                )
            if status == 429:
                state.rate_limited += 1
                state.last_429, state.last_429_model = now, model
                key = (provider, credential, "429")
                if key not in self._alerted or now >= self._alerted[key]:
                    self._alerted[key] = now + (retry if retry is not None else 60.0)
                    alerts.append(
                        {
                            "kind": "rate_limited",
                            "provider": provider,
                            "credential": credential,
                            "model": model,
                            "retry_after_s": retry,
                            "message": f"{provider} answered 429 (rate limited) for credential {credential}",
                        }
                    )
            self._pending.extend(alerts)
        return alerts

    def __call__(self, records: Sequence[SettledFacts]) -> None:
        """Record listener: publish the alerts decided while the batch was built."""
        with self._lock:
            pending, self._pending = self._pending, []
        if self.publish is not None:
            for alert in pending:
                self.publish("alert", alert)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every (provider, credential) seen, most recently updated first."""
        with self._lock:
            states = sorted(self._states.values(), key=lambda s: -max(s.updated, s.last_429 or 0.0))
            return [
                {
                    "provider": s.provider,
                    "credential": s.credential,
                    "updated": iso_utc(s.updated) if s.updated else None,
                    "limits": {
                        n: {
                            **{k: v for k, v in i.items() if not k.startswith("_")},
                            "resets_at": _resets_at_text(i),
                        }
                        for n, i in s.limits.items()
                    },
                    "low": sorted(
                        n
                        for n, i in s.limits.items()
                        if i["remaining_share"] is not None and i["remaining_share"] < self.low
                    ),
                    "retry_after_s": s.retry_after_s,
                    "last_status": s.last_status,
                    "calls": s.calls,
                    "rate_limited_calls": s.rate_limited,
                    "last_429": iso_utc(s.last_429) if s.last_429 else None,
                    "last_429_model": s.last_429_model,
                }
                for s in states
            ]

    def record(self, credential: str, headers: Mapping[str, str], exchange: Exchange) -> None:
        """Take in a finished call's headers (`Exchange.on_recorded`); a provider 429 keeps its credential hash
        in the call's details."""
        if exchange.outcome in ("blocked", "cached"):
            return
        now = exchange.ended or exchange.started
        self.observe(exchange.provider, credential, exchange.status, headers, model=exchange.model, now=now)
        if exchange.status == 429:
            exchange.details["rate_limit"] = {
                "credential": credential,
                "retry_after_s": retry_after_s(headers.get(RETRY_AFTER), now),
            }


def rate_limited_calls(store: Store, days: int, tz: tzinfo, limit: int = 100) -> dict[str, Any]:
    """The 429s the providers answered in the last `days` days (not the gateway's own budget/quota 429s):
    counts per provider and the latest calls, newest first."""
    from tokenlens.insights import window
    from tokenlens.store.reads import provider_429s

    start, end = window(days, tz)
    rows = provider_429s(store, start, end)
    by_provider: dict[str, int] = {}
    for row in rows:
        by_provider[row["provider"]] = by_provider.get(row["provider"], 0) + 1
    latest = []
    for row in rows[:limit]:
        try:
            details = json.loads(row["details"] or "{}")
        except ValueError:
            details = {}
        info = details.get("rate_limit") if isinstance(details, dict) else None
        latest.append(
            {
                "call_id": row["id"],
                "ts": iso_utc(row["ts"]),
                "provider": row["provider"],
                "model": row["model"],
                "source": row["source"],
                "credential": info.get("credential") if isinstance(info, dict) else None,
                "retry_after_s": info.get("retry_after_s") if isinstance(info, dict) else None,
            }
        )
    return {"total": len(rows), "by_provider": by_provider, "latest": latest}
