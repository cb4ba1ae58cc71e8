"""The price data in use: genai-prices' snapshot bundled with the installed package, or a newer one that
`tokenlens prices update` fetched (or read from a file) and keeps in the data directory (docs/cli.md and docs/gateway.md#metering).

Nothing here runs on its own: a file is fetched only by the command, never at run time. The gateway reads
`$TOKENLENS_HOME/prices.json` at start (`load`) and, when the command replaced it, from the next call on
(`refresh`, called by the writer thread at most once a second; the swap is one assignment in
`tokenlens.pricing.set_snapshot`). A file that does not validate is refused by the command and, if one is
found at start, ignored with a warning (the bundled data stays in use).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import types
from datetime import UTC, date, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from tokenlens import pricing

log = logging.getLogger(__name__)

DATA_FILE = "prices.json"
META_FILE = "prices.meta.json"
# Where genai-prices publishes its data (the URL its own `UpdatePrices` fetches).
DEFAULT_URL = (
    "https://raw.githubusercontent.com/pydantic/genai-prices/refs/heads/main/prices/new_data/v2/data.json"
)
REQUIRED_PROVIDERS = ("openai", "anthropic", "google")
MAX_BYTES = 64 * 1024 * 1024
UNKNOWN_KEPT = 20


class PriceDataError(ValueError):
    """Price data that cannot be used (not the genai-prices format, or prices that do not compute)."""


_state_lock = threading.Lock()
_state: dict[str, Any] = {"source": "bundled", "path": None, "mtime": None, "meta": {}, "checked": 0.0}
_unknown: dict[tuple[str, str], float] = {}


UPDATER = "genai_prices.update_prices"


def without_updater() -> None:
    """Stand a stub in for genai-prices' updater (`UpdatePrices`, which its package imports with an HTTP client:
    ~6 MiB of a process) before the first price: TokenLens never fetches prices at run time (`prices update`
    does, in a process of its own). For the long-running processes (the gateway, its analysis process); a
    process that imported genai-prices already keeps it as it is."""
    if "genai_prices" in sys.modules or UPDATER in sys.modules:
        return
    stub = types.ModuleType(UPDATER, "genai-prices' updater, left out: TokenLens never fetches at run time")

    def not_here(*args: object, **kwargs: object) -> None:
        raise RuntimeError("genai-prices' updater is not loaded in this process (`tokenlens prices update`)")

    for name in ("UpdatePrices", "wait_prices_updated_sync", "wait_prices_updated_async"):
        setattr(stub, name, not_here)
    sys.modules[UPDATER] = stub


def update_url() -> str:
    try:
        from genai_prices import update_prices

        return str(getattr(update_prices, "DEFAULT_UPDATE_URL", DEFAULT_URL))
    except Exception:  # pragma: no cover - an install without the updater's dependencies
        return DEFAULT_URL


def _newest_start(providers: list[Any], today: date | None = None) -> date | None:
    """The newest start date, not after today, of any price in the data: the data is at least that recent
    (prices scheduled for later dates do not count)."""
    today = today or datetime.now(UTC).date()
    newest: date | None = None
    for provider in providers:
        for model in provider.models:
            constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
            constraints += [v.constraint for v in getattr(model, "price_variants", None) or ()]
            for c in constraints:
                start = getattr(c, "start_date", None)
                if isinstance(start, date) and start <= today and (newest is None or start > newest):
                    newest = start
    return newest


def parse(raw: bytes) -> Any:
    """A genai-prices `DataSnapshot` from the published JSON (a list of providers), validated: the three
    providers are there with models, and every model's current prices compile. Raises `PriceDataError`."""
    from genai_prices import data_snapshot
    from genai_prices import types as gp

    if len(raw) > MAX_BYTES:
        raise PriceDataError(f"larger than {MAX_BYTES // (1024 * 1024)} MB")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser's limit
        raise PriceDataError(f"not JSON: {exc}") from None
    if not isinstance(data, list):
        raise PriceDataError("expected the genai-prices data format: a JSON list of providers")
    try:
        providers = gp._providers_from_raw(data)
    except Exception as exc:
        raise PriceDataError(f"not the genai-prices data format: {str(exc)[:300]}") from None
    ids = {p.id: p for p in providers}
    for needed in REQUIRED_PROVIDERS:
        if needed not in ids or not ids[needed].models:
            raise PriceDataError(f"no prices for provider {needed!r}")
    now = datetime.now(UTC)
    for provider in providers:
        for model in provider.models:
            try:
                pricing._compile(model.get_prices(now))
            except Exception as exc:
                raise PriceDataError(f"{provider.id}/{model.id}: prices do not compute: {exc}") from None
    return data_snapshot.DataSnapshot(providers=providers, from_auto_update=False)


@functools.lru_cache(maxsize=2)
def _newest_in_use(generation: int, today: date) -> date | None:
    """`_newest_start` of the data in use, once per data generation and day (a scan of every model, ~2 ms:
    `data_info` runs for each record of an unknown model and each `/api/status`)."""
    return _newest_start(pricing.current_snapshot().providers, today)


def describe(snapshot: Any) -> dict[str, Any]:
    providers = snapshot.providers
    newest = _newest_start(providers)
    return {
        "providers": len(providers),
        "models": sum(len(p.models) for p in providers),
        "newest_price_date": newest.isoformat() if newest else None,
    }


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install(home: Path, raw: bytes, source: str) -> dict[str, Any]:
    """Validate `raw`, keep it as `$TOKENLENS_HOME/prices.json` (atomically, with what it is in
    `prices.meta.json`) and use it in this process; the running gateway picks it up from its next call."""
    snapshot = parse(raw)
    home.mkdir(parents=True, exist_ok=True)
    meta = {
        "source": source,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sha256": hashlib.sha256(raw).hexdigest(),
        **describe(snapshot),
    }
    _write_atomic(home / META_FILE, json.dumps(meta, indent=2).encode())
    _write_atomic(home / DATA_FILE, raw)
    _use(home / DATA_FILE, snapshot, meta)
    return meta


def _use(path: Path, snapshot: Any, meta: dict[str, Any]) -> None:
    with _state_lock:
        _state.update(source="file", path=str(path), mtime=_mtime(path), meta=meta, checked=time.monotonic())
        pricing.set_snapshot(snapshot)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None


def _read_meta(home: Path) -> dict[str, Any]:
    try:
        meta = json.loads((home / META_FILE).read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def load(home: Path) -> None:
    """Use `$TOKENLENS_HOME/prices.json` when there is one (else, or when it is unusable, the bundled data)."""
    path = home / DATA_FILE
    mtime = _mtime(path)
    if mtime is None:
        with _state_lock:
            was_file = _state["source"] == "file"
            _state.update(source="bundled", path=None, mtime=None, meta={}, checked=time.monotonic())
            if was_file:
                pricing.set_snapshot(None)
        return
    try:
        raw = path.read_bytes()
        snapshot = parse(raw)
    except Exception as exc:  # refresh runs before each record is built: a bad file must never reach it
        log.warning("price data %s not used (%s); using the bundled prices", path, exc)
        with _state_lock:
            _state.update(mtime=mtime, checked=time.monotonic())
        return
    sha256 = hashlib.sha256(raw).hexdigest()
    meta = _read_meta(home)
    if meta.get("sha256") != sha256:  # a file put there by hand: the meta describes another one
        meta = {"source": str(path), "sha256": sha256, **describe(snapshot)}
    _use(path, snapshot, meta)


def refresh(home: Path | None, *, every_s: float = 1.0) -> None:
    """Reload the price data when `prices update` replaced (or removed) the file; at most every `every_s`."""
    if home is None:
        return
    now = time.monotonic()
    with _state_lock:
        if now - _state["checked"] < every_s:
            return
        _state["checked"] = now
        known = _state["mtime"]
    if _mtime(home / DATA_FILE) != known:
        load(home)


def note_unknown(provider: str, model: str | None) -> None:
    """A call met a model the price data does not know (shown on `/api/status`)."""
    if not model:
        return
    with _state_lock:
        _unknown[(provider, model)] = time.time()
        while len(_unknown) > UNKNOWN_KEPT:
            _unknown.pop(min(_unknown, key=_unknown.__getitem__))


@functools.cache
def _bundled_version() -> str:
    """The installed genai-prices version (read from its metadata files once)."""
    try:
        return package_version("genai-prices")
    except Exception:  # pragma: no cover
        return "unknown"


def data_info() -> dict[str, Any]:
    """What `/api/status` and `prices show` say of the data in use: its source, date and age."""
    with _state_lock:
        source, meta, path = _state["source"], dict(_state["meta"]), _state["path"]
        unknown = [
            {"provider": p, "model": m} for (p, m), _ in sorted(_unknown.items(), key=lambda kv: -kv[1])
        ]
    if source == "file":
        stamp = meta.get("fetched_at")
        day = stamp[:10] if isinstance(stamp, str) else None
        label = f"prices.json from {meta.get('source', path)}"
        newest = meta.get("newest_price_date")
    else:
        newest_date = _newest_in_use(pricing.data_generation(), datetime.now(UTC).date())
        newest = newest_date.isoformat() if newest_date else None
        day = newest
        label = f"genai-prices {_bundled_version()} (bundled)"
    age = None
    if day:
        try:
            age = (datetime.now(UTC).date() - date.fromisoformat(day)).days
        except ValueError:
            age = None
    return {
        "source": label,
        "kind": source,
        "path": path,
        "date": day,
        "age_days": age,
        "newest_price_date": newest,
        "fetched_at": meta.get("fetched_at"),
        "sha256": meta.get("sha256"),
        "unknown_models": unknown,
    }
