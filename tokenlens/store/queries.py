"""The `Store`: writes and the queries shared by the web API and the CLI; export and import formats."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import logging
import math
import re
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import peewee as pw

from tokenlens.records import (
    CALL_FIELDS,
    FLOAT_BOUNDS,
    INT_BOUNDS,
    MAX_FLAGS,
    MAX_JSON_DEPTH,
    MAX_NAME_CHARS,
    MAX_TAGS,
    MAX_TEXT_CHARS,
    MAX_TS,
    MIN_TS,
    MODALITY_GROUPS,
    MODALITY_NAMES,
    TEXT_FIELDS,
    CallRecord,
    bound_modality_tokens,
    iso_utc,
    new_call_id,
    parse_iso,
    storable_text,
)
from tokenlens.store.db import StoreLocation
from tokenlens.store.migrations import (
    apply_migrations,
    current_version,
    pending_migrations,
    unknown_migrations,
)
from tokenlens.store.models import bind_model, bind_models, record_to_values, row_to_record
from tokenlens.store.rollups import add_to_rollups, sums
from tokenlens.usage import Usage

if TYPE_CHECKING:
    from tokenlens.store.models import BoundModels

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_INSERT_CHUNK = 200  # rows per INSERT statement (43 columns: far below SQLite's variable limit)
_PAGE = 1000  # rows per page when streaming
_DRIVER_ERRORS = pw.ExceptionWrapper(pw.EXCEPTIONS)  # type: ignore[attr-defined]


class PricerLike(Protocol):
    """What `import_lines` needs of `tokenlens.pricing.Pricer`."""

    def price(self, provider: str, model: str, usage: Usage, *, when: datetime | None = None) -> Any: ...


# ---------------------------------------------------------------------------------------------- time zones


def day_start(day: date, tz: tzinfo) -> float:
    """Epoch seconds of midnight starting `day` in `tz`."""
    return datetime.combine(day, time.min, tzinfo=tz).timestamp()


def today(tz: tzinfo, now: float | None = None) -> date:
    return datetime.fromtimestamp(_time.time() if now is None else now, tz).date()


def month_bounds(tz: tzinfo, now: float | None = None) -> tuple[float, float]:
    """(start, end) epoch seconds of the current calendar month in `tz`."""
    first = today(tz, now).replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return day_start(first, tz), day_start(following, tz)


def day_bounds(tz: tzinfo, now: float | None = None) -> tuple[float, float]:
    """(start, end) epoch seconds of the current calendar day in `tz`."""
    current = today(tz, now)
    return day_start(current, tz), day_start(current + timedelta(days=1), tz)


def parse_since(text: str, tz: tzinfo) -> float:
    """`--since` / `?since=`: a date alone (YYYY-MM-DD) is midnight in `tz`; else an ISO 8601 timestamp.

    Raises ValueError on anything else.
    """
    value = text.strip()
    try:
        if len(value) == 10:
            return day_start(date.fromisoformat(value), tz)
        return parse_iso(value)
    except ValueError as exc:
        raise ValueError(f"since: expected a date (YYYY-MM-DD) or an ISO 8601 time, got {text!r}") from exc


# ---------------------------------------------------------------------------------------------- cursors


def encode_cursor(ts: float, call_id: str) -> str:
    """The opaque `next` cursor: URL-safe base64 of the JSON pair [ts, id] of the last row returned."""
    raw = json.dumps([ts, call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        ts, call_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not isinstance(call_id, str):
            raise ValueError
        if not math.isfinite(ts):
            raise ValueError
        return float(ts), call_id
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise ValueError("before: not a cursor returned as `next` by this API") from exc


# ---------------------------------------------------------------------------------------------- export


def jsonl_line(record: CallRecord) -> str:
    """One export line (with its newline): `record.to_dict()` as compact JSON."""
    return json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return value


def _csv_text(row: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue()


def csv_header() -> str:
    """The CSV header line: the Call fields in `CALL_FIELDS` order."""
    return _csv_text(CALL_FIELDS)


def csv_line(record: CallRecord) -> str:
    """One CSV row (with its newline): ts in ISO 8601 UTC, tags and guardrail flags as JSON, null empty."""
    data = record.to_dict()
    return _csv_text([_csv_value(data[name]) for name in CALL_FIELDS])


def export_lines(store: Store, fmt: str, since_ts: float | None = None) -> Iterator[str]:
    """The export, oldest first, as text lines: `fmt` is "jsonl" or "csv" (with a header)."""
    if fmt == "csv":
        yield csv_header()
        for record in store.iter_calls(since_ts):
            yield csv_line(record)
    elif fmt == "jsonl":
        for record in store.iter_calls(since_ts):
            yield jsonl_line(record)
    else:
        raise ValueError(f"format: expected csv or jsonl, got {fmt!r}")


def chunk_text(lines: Iterable[str], size: int = 64 * 1024) -> Iterator[str]:
    """Join lines into chunks of about `size` characters (one write per chunk, not per line)."""
    buffer: list[str] = []
    length = 0
    for line in lines:
        buffer.append(line)
        length += len(line)
        if length >= size:
            yield "".join(buffer)
            buffer, length = [], 0
    if buffer:
        yield "".join(buffer)


# ---------------------------------------------------------------------------------------------- import


MAX_IMPORT_LINE_BYTES = 128 * 1024 * 1024  # twice the largest request body the gateway reads (64 MiB)


class LineTooLong:
    """What `bounded_lines` yields in place of a line over the limit (its bytes are read past, never kept)."""


LINE_TOO_LONG = LineTooLong()


def bounded_lines(stream: Any, limit: int = MAX_IMPORT_LINE_BYTES) -> Iterator[bytes | LineTooLong]:
    """The lines of a binary stream (anything with `readline(size)`), none held longer than `limit` bytes:
    a longer one is skipped to its end and reported as `LINE_TOO_LONG`, so one huge line cannot fill memory."""
    while line := stream.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
            pass
        yield LINE_TOO_LONG


@dataclass
class ImportResult:
    imported: int = 0
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"imported": self.imported, "skipped": self.skipped, "errors": self.errors}


REQUIRED_IMPORT_FIELDS = ("ts", "provider", "model", "input_tokens", "output_tokens")
_STR_FIELDS = ("provider", "endpoint", "source")
_OPT_STR_FIELDS = tuple(f for f in TEXT_FIELDS if f not in ("id", *_STR_FIELDS))
_INT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "attempts",
)
_OPT_INT_FIELDS = (
    "status",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "turn",
    "max_tokens",
    "waste_tokens",
    "complexity",
)
_COST_FIELDS = (
    "cost_usd",
    "input_cost_usd",
    "output_cost_usd",
    "cache_read_cost_usd",
    "cache_write_cost_usd",
)
_OPT_FLOAT_FIELDS = (*_COST_FIELDS, "saved_usd", "latency_ms", "ttft_ms")
_BOOL_FIELDS = ("stream", "priced")
_ENUM_FIELDS: dict[str, tuple[str | None, ...]] = {
    "outcome": ("ok", "error", "blocked", "cached"),
    "usage_source": ("provider", "estimated", None),
    "mode": ("base_url", "proxy"),
    "transport": ("http", "websocket"),
}
_BODY_IMPORT_FIELDS = ("request_body", "response_body")
IMPORTED_FIELDS = frozenset(
    ("id", "ts", "tags", "guardrail_flags", "details", "modality_tokens")
    + _STR_FIELDS
    + _OPT_STR_FIELDS
    + _INT_FIELDS
    + _OPT_INT_FIELDS
    + _OPT_FLOAT_FIELDS
    + _BOOL_FIELDS
    + tuple(_ENUM_FIELDS)
)


class LineError(ValueError):
    """A line that cannot be imported; `field` names the field at fault (None when it is the line itself)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?|[\[\]{}]')


def check_json_depth(text: str, limit: int) -> None:
    """Raise `LineError` when the JSON text nests containers deeper than `limit`, before it is parsed.

    `json.loads` recurses once per level (about 1,000 levels raise `RecursionError`), so the depth is
    measured on the text, in a loop: strings are skipped whole (their brackets do not count) and the other
    brackets counted. On text that is not valid JSON the count is never lower than what the parser would
    reach before it fails. The error names the top-level field under which the limit was passed (whose own
    depth is one less: the line's object is the first level).
    """
    if text.count("[") + text.count("{") <= limit:  # cannot be deeper than the number of openings
        return
    depth = 0
    key: str | None = None
    for token in _JSON_TOKENS.finditer(text):
        mark = token.group()
        if mark in ("[", "{"):
            depth += 1
            if depth > limit:
                if key is None:
                    raise LineError(None, f"nested more than {limit} levels deep")
                raise LineError(key, f"{key}: nested more than {limit - 1} levels deep")
        elif mark in ("]", "}"):
            depth -= 1
            if depth < 0:
                return  # not JSON: the parser fails at this bracket, at most as deep as counted so far
        elif depth == 1 and token.group(1) is not None:
            key = mark[1 : mark.rindex('"')][:MAX_NAME_CHARS]


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_line(text: str) -> Any:
    """One JSON line, parsed with bounded nesting (`MAX_JSON_DEPTH` below the line's object) and finite
    numbers only (no NaN, Infinity, or a literal like 1e400 that would become one)."""
    check_json_depth(text, MAX_JSON_DEPTH + 1)
    return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)


def _as_int(name: str, value: Any) -> int:
    low, high = INT_BOUNDS[name]
    if isinstance(value, bool):
        raise LineError(name, f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    else:
        raise LineError(name, f"{name}: expected an integer, got {value!r}")
    if result < 0 and low == 0:
        raise LineError(name, f"{name}: must not be negative")
    if not low <= result <= high:
        raise LineError(name, f"{name}: must be between {low} and {high}")
    return result


def _as_float(name: str, value: Any) -> float:
    low, high = FLOAT_BOUNDS.get(name, (MIN_TS, MAX_TS))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LineError(name, f"{name}: expected a number, got {value!r}")
    if isinstance(value, int) and abs(value) > 2**53 or not math.isfinite(value):
        raise LineError(name, f"{name}: must be between {low:g} and {high:g}")
    if value < 0 and low == 0:
        raise LineError(name, f"{name}: must not be negative")
    if not low <= value <= high:
        raise LineError(name, f"{name}: must be between {low:g} and {high:g}")
    return float(value)


def _as_text(name: str, value: Any, limit: int, *, nullable: bool = True) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        kind = "a string or null" if nullable else "a string"
        raise LineError(name, f"{name}: expected {kind}, got {value!r:.80}")
    if len(value) > limit:
        raise LineError(name, f"{name}: longer than {limit} characters")
    if storable_text(value) != value:
        raise LineError(name, f"{name}: holds a NUL character or a lone surrogate")
    return value


def _text_limit(name: str) -> int:
    return MAX_TEXT_CHARS if name in ("endpoint", "error") else MAX_NAME_CHARS


def _parse_import_line(data: dict[str, Any]) -> dict[str, Any]:
    """Validated CallRecord keyword arguments (without costs when `cost_usd` is absent).

    Every number must be finite and within the bounds of `tokenlens.records` (`INT_BOUNDS`, `FLOAT_BOUNDS`,
    `MIN_TS`..`MAX_TS`), every text within `MAX_NAME_CHARS` (`MAX_TEXT_CHARS` for `endpoint` and `error`),
    at most `MAX_TAGS` tags and `MAX_FLAGS` guardrail flags; a line that is not is refused (`LineError`).
    """
    for name in REQUIRED_IMPORT_FIELDS:
        if name not in data:
            raise LineError(name, f"missing field {name!r}")
        # `model` may be null (a call recorded before any model was known, as exported); the others not
        if data[name] is None and name != "model":
            raise LineError(name, f"{name}: must not be null")
    values: dict[str, Any] = {}
    raw_ts = data["ts"]
    if isinstance(raw_ts, str):
        try:
            values["ts"] = parse_iso(raw_ts)
        except ValueError:
            raise LineError("ts", f"ts: not an ISO 8601 time: {raw_ts[:64]!r}") from None
        if not MIN_TS <= values["ts"] < MAX_TS:
            raise LineError("ts", f"ts: must be between {iso_utc(MIN_TS)} and {iso_utc(MAX_TS)}")
    else:
        values["ts"] = _as_float("ts", raw_ts)
    if data.get("id") is not None:
        if not isinstance(data["id"], str) or not data["id"].strip():
            raise LineError("id", "id: expected a non-empty string")
        values["id"] = _as_text("id", data["id"], MAX_NAME_CHARS)
    for name in _STR_FIELDS:
        if data.get(name) is not None:
            values[name] = _as_text(name, data[name], _text_limit(name), nullable=False)
    for name in _OPT_STR_FIELDS:
        if name in data:
            values[name] = _as_text(name, data[name], _text_limit(name))
    for name in _INT_FIELDS:
        if data.get(name) is not None:
            values[name] = _as_int(name, data[name])
    for name in _OPT_INT_FIELDS:
        if name in data:
            values[name] = None if data[name] is None else _as_int(name, data[name])
    for name in _OPT_FLOAT_FIELDS:
        if name in data:
            values[name] = None if data[name] is None else _as_float(name, data[name])
    for name in _BOOL_FIELDS:
        if data.get(name) is not None:
            if not isinstance(data[name], bool):
                raise LineError(name, f"{name}: expected true or false, got {data[name]!r:.80}")
            values[name] = data[name]
    for name, allowed in _ENUM_FIELDS.items():
        if name in data and (data[name] is not None or None in allowed):
            if data[name] not in allowed:
                choices = ", ".join(str(a) for a in allowed if a is not None)
                raise LineError(name, f"{name}: expected one of {choices}, got {data[name]!r:.80}")
            values[name] = data[name]
    if data.get("tags") is not None:
        values["tags"] = _parse_tags(data["tags"])
    if data.get("guardrail_flags") is not None:
        flags = data["guardrail_flags"]
        if not isinstance(flags, list) or not all(isinstance(f, dict) for f in flags):
            raise LineError("guardrail_flags", "guardrail_flags: expected a list of objects")
        if len(flags) > MAX_FLAGS:
            raise LineError("guardrail_flags", f"guardrail_flags: more than {MAX_FLAGS}")
        values["guardrail_flags"] = flags
    if data.get("details") is not None:
        if not isinstance(data["details"], dict):
            raise LineError("details", "details: expected an object")
        values["details"] = data["details"]
    if data.get("modality_tokens") is not None:
        values["modality_tokens"] = _parse_modality_tokens(data["modality_tokens"])
    for name in _BODY_IMPORT_FIELDS:
        if isinstance(data.get(name), str):
            values[name] = data[name].encode("utf-8", "replace")
    return values


def _parse_modality_tokens(value: Any) -> dict[str, dict[str, int]] | None:
    """``{"input": {"text": 120, "image": 1290}, ...}``: known parts and modalities, counts in bounds."""
    what = "modality_tokens: expected {part: {modality: tokens}}"
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise LineError("modality_tokens", what)
    for group, counts in value.items():
        if group not in MODALITY_GROUPS:
            raise LineError("modality_tokens", f"modality_tokens: unknown part {group!r:.40}")
        for modality, count in counts.items():
            if modality not in MODALITY_NAMES:
                raise LineError("modality_tokens", f"modality_tokens: unknown modality {modality!r:.40}")
            try:
                _as_int("input_tokens", count)  # a count of tokens, in the bounds of `input_tokens`
            except LineError as exc:
                message = str(exc).removeprefix("input_tokens: ")
                raise LineError(
                    "modality_tokens", f"modality_tokens: {group}.{modality}: {message}"
                ) from None
    return bound_modality_tokens(value)


def _parse_tags(tags: Any) -> dict[str, str]:
    if not isinstance(tags, dict) or not all(isinstance(k, str) for k in tags):
        raise LineError("tags", "tags: expected an object")
    if len(tags) > MAX_TAGS:
        raise LineError("tags", f"tags: more than {MAX_TAGS}")
    out: dict[str, str] = {}
    for key, value in tags.items():
        text = value if isinstance(value, str) else json.dumps(value)
        _as_text("tags", key, MAX_NAME_CHARS)
        _as_text("tags", text, MAX_TEXT_CHARS)
        out[key] = text
    return out


def _check_costs(values: dict[str, Any]) -> None:
    """Computed costs obey the same bounds as given ones (absurd token counts at a high price)."""
    for name in _COST_FIELDS:
        if values.get(name) is not None:
            _as_float(name, values[name])


def _line_error(number: int, exc: Exception) -> dict[str, Any]:
    """An `errors` entry: the line number, the field at fault when known, and what is wrong."""
    entry: dict[str, Any] = {"line": number, "error": str(exc)[:300]}
    field_name = getattr(exc, "field", None)
    if field_name is not None:
        entry["field"] = field_name
    return entry


def _decimal_to_float(value: Any) -> float | None:
    return None if value is None else float(value)


_PART_FIELDS = _COST_FIELDS[1:]
_PART_SLACK = 1e-6  # relative tolerance of given parts over `cost_usd` (rounding in the exporting tool)


def _attribute_parts(values: dict[str, Any], pricer: PricerLike | None) -> None:
    """The cost parts of a line that gives `cost_usd` (docs/analytics-api.md: a breakdown always sums to its total).

    - `cost_usd` null: the call is unpriced; parts are kept as given (an export imports back unchanged) but
      no view counts the parts of a call without a cost (`tokenlens.store.rollups`).
    - Some parts given: they are kept as given (a missing one is null); together they must not exceed
      `cost_usd` (a `LineError` otherwise). What they leave of `cost_usd` is reported as unattributed.
    - No part given: the call's tokens are priced at the model's rates (the prices in force at `ts`) and each
      part is that price's part scaled by `cost_usd / computed cost`, so the parts keep the model's split and
      sum to the given `cost_usd` (the largest part takes the float rounding). The record's `cost_usd`, `priced`
      and `price_source` stay as given.
    - No part given and the model is unpriced, or its tokens cost nothing (no tokens given): the parts stay
      null and the whole `cost_usd` is unattributed.

    "Unattributed" is never stored: the views report `unattributed_cost_usd` as `cost_usd` minus the four
    parts, so it also covers records imported before this rule.
    """
    cost = values.get("cost_usd")
    if cost is None:
        return
    given = [values[name] for name in _PART_FIELDS if values.get(name) is not None]
    if given:
        if sum(given) > cost * (1 + _PART_SLACK) + 1e-9:
            raise LineError("cost_usd", "cost_usd: smaller than the sum of the cost parts given")
        return
    if cost <= 0:
        for name in _PART_FIELDS:
            values[name] = 0.0
        return
    priced = dict(values)
    _apply_price(priced, pricer)
    parts = [priced[name] or 0.0 for name in _PART_FIELDS]
    computed = sum(parts)
    if not priced["priced"] or computed <= 0:
        return
    scaled = [part * cost / computed for part in parts]
    largest = max(range(len(scaled)), key=lambda i: scaled[i])
    scaled[largest] = max(0.0, cost - sum(v for i, v in enumerate(scaled) if i != largest))
    for name, value in zip(_PART_FIELDS, scaled, strict=True):
        values[name] = value


def _apply_price(values: dict[str, Any], pricer: PricerLike | None) -> None:
    """Fill the cost fields from the tokens (unpriced when the pricer does not know the model)."""
    for name in _COST_FIELDS:
        values[name] = None
    values["priced"] = False
    if pricer is None or not values.get("model"):
        return
    usage = Usage(
        input_tokens=values.get("input_tokens", 0),
        output_tokens=values.get("output_tokens", 0),
        cache_read_tokens=values.get("cache_read_tokens", 0),
        cache_write_tokens=values.get("cache_write_tokens", 0),
        cache_write_5m_tokens=values.get("cache_write_5m_tokens"),
        cache_write_1h_tokens=values.get("cache_write_1h_tokens"),
        reasoning_tokens=values.get("reasoning_tokens", 0),
        service_tier=values.get("service_tier"),
        modality_tokens=tuple(
            (group, modality, count)
            for group, counts in (values.get("modality_tokens") or {}).items()
            for modality, count in counts.items()
        ),
    )
    try:
        when = datetime.fromtimestamp(values["ts"], UTC)  # the prices in force at the time of the call
        price = pricer.price(values["provider"], values["model"], usage, when=when)
    except Exception:
        log.warning("pricing an imported call failed; recorded as unpriced", exc_info=True)
        return
    if not getattr(price, "priced", False) or getattr(price, "cost_usd", None) is None:
        return
    for name in _COST_FIELDS:
        values[name] = _decimal_to_float(getattr(price, name, None))
    values["priced"] = True
    if values.get("price_source") is None:
        values["price_source"] = getattr(price, "price_source", None)


# ---------------------------------------------------------------------------------------------- the store


class Store:
    """One database of call records (SQLite or PostgreSQL), usable from any thread.

    Every method opens the calling thread's connection when it is not open yet and closes it again if it
    opened it; wrap several calls in `with store.connection():` to share one connection.
    """

    def __init__(
        self, db: pw.Database, location: StoreLocation, *, readonly: bool = False, home: Path | None = None
    ) -> None:
        self.db = db
        self.location = location
        self.readonly = readonly
        self.home = home  # the data directory (`--data-dir`): the writer's spill journal goes there
        self.models: BoundModels = bind_models(db)
        self._bound: dict[type[pw.Model], type[pw.Model]] = {}

    @property
    def kind(self) -> str:
        return self.location.kind

    def bound[M: pw.Model](self, model: type[M]) -> type[M]:
        """`model` bound to this store's database (for queries other modules define on their own models)."""
        found = self._bound.get(model)
        if found is None:
            found = self._bound[model] = bind_model(model, self.db)
        return found  # type: ignore[return-value]

    @contextmanager
    def connection(self) -> Iterator[pw.Database]:
        """The calling thread's connection, opened for the block (reused when already open)."""
        opened = self.db.connect(reuse_if_open=True)
        try:
            yield self.db
        finally:
            if opened and not self.db.in_transaction():
                self.db.close()

    def open_connection(self) -> bool:
        """Open the calling thread's connection unless it is open; whether this call opened it (then pass
        it to `close_connection`; for a connection that spans a web request)."""
        return bool(self.db.connect(reuse_if_open=True))

    def close_connection(self) -> None:
        """Close the calling thread's connection, unless it is closed or inside a transaction."""
        if not self.db.is_closed() and not self.db.in_transaction():
            self.db.close()

    def write_transaction(self) -> Any:
        """A write transaction (SQLite: BEGIN IMMEDIATE, so writers queue on busy_timeout, not deadlock)."""
        if isinstance(self.db, pw.SqliteDatabase):
            return self.db.atomic("IMMEDIATE")
        return self.db.atomic()

    def migrate(self) -> int:
        with self.connection():
            return apply_migrations(self.db)

    def schema_version(self) -> int:
        with self.connection():
            return current_version(self.db)

    def is_current(self) -> bool:
        """Whether every migration of this TokenLens, and no other, has been applied."""
        with self.connection():
            return not pending_migrations(self.db) and not unknown_migrations(self.db)

    def close(self) -> None:
        """Close the calling thread's connection (other threads close theirs at the end of their block)."""
        if not self.db.is_closed():
            self.db.close()

    # ------------------------------------------------------------------------------------------ writes

    def _bulk_insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        *,
        returning: str | None = None,
    ) -> set[Any] | None:
        """INSERT ... ON CONFLICT DO NOTHING of many rows, on the current connection.

        The hot path of the writer: building the statement with peewee's query builder costs ~0.2 ms per
        row of Python, so the SQL is written once here (same table and columns as the models) and run with
        the driver's bulk execution. With `returning` (PostgreSQL only), the values of that column for the
        rows actually inserted.
        """
        if not rows:
            return set() if returning else None
        names = ", ".join(f'"{c}"' for c in columns)
        one = "(" + ", ".join([self.db.param] * len(columns)) + ")"
        with _DRIVER_ERRORS:  # raise peewee's exception classes, as the query builder does
            cursor = self.db.cursor()
            if isinstance(self.db, pw.SqliteDatabase):
                cursor.executemany(
                    f'INSERT INTO "{table}" ({names}) VALUES {one} ON CONFLICT DO NOTHING', rows
                )
                return None
            inserted: set[Any] = set()
            suffix = f' RETURNING "{returning}"' if returning else ""
            for chunk in pw.chunked(rows, _INSERT_CHUNK):
                values = ", ".join([one] * len(chunk))
                flat = [value for row in chunk for value in row]
                cursor.execute(
                    f'INSERT INTO "{table}" ({names}) VALUES {values} ON CONFLICT DO NOTHING{suffix}', flat
                )
                if returning:
                    inserted.update(row[0] for row in cursor.fetchall())
            return inserted if returning else None

    def _stored_ids(self, ids: Sequence[str]) -> set[str]:
        """Ids among `ids` already in the call table (on the current connection)."""
        found: set[str] = set()
        for chunk in pw.chunked(list(ids), 500):
            sql = 'SELECT "id" FROM "call" WHERE "id" IN (' + ", ".join([self.db.param] * len(chunk)) + ")"
            found.update(str(row[0]) for row in self.db.execute_sql(sql, list(chunk)).fetchall())
        return found

    def insert_calls(self, records: Sequence[CallRecord], store_bodies: bool = True) -> None:
        """Insert records in one transaction; a record whose id is already stored is ignored.

        The usage rollups (`tokenlens.store.rollups`) get the calls actually inserted, in the same
        transaction.
        """
        if not records:
            return
        rows = [record_to_values(r) for r in records]
        bodies: list[tuple[Any, ...]] = []
        if store_bodies:
            for r in records:
                if r.request_body is not None or r.response_body is not None:
                    bodies.append((r.id, r.request_body, r.response_body))
        with self.connection(), self.write_transaction():
            sqlite = isinstance(self.db, pw.SqliteDatabase)
            # SQLite: the IMMEDIATE transaction holds the write lock, so the ids seen here are exact.
            known = self._stored_ids([r.id for r in records]) if sqlite else set()
            inserted = self._bulk_insert("call", CALL_FIELDS, rows, returning=None if sqlite else "id")
            self._bulk_insert("call_body", ("call_id", "request_body", "response_body"), bodies)
            fresh: dict[str, CallRecord] = {}
            for r in records:  # the first of several records with one id is the one inserted
                if r.id in fresh or r.id in known or (inserted is not None and r.id not in inserted):
                    continue
                fresh[r.id] = r
            with _DRIVER_ERRORS:
                add_to_rollups(self.db, fresh.values())

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        call_model = self.models.Call
        found: set[str] = set()
        with self.connection():
            for chunk in pw.chunked(list(ids), 500):
                query = call_model.select(call_model.id).where(call_model.id.in_(chunk))
                found.update(str(row[0]) for row in query.tuples().execute())
        return found

    def import_lines(
        self,
        lines: Iterable[str | bytes | LineTooLong],
        pricer: PricerLike | None,
        *,
        store_bodies: bool = True,
        batch: int = 500,
        on_inserted: Callable[[Sequence[CallRecord]], None] | None = None,
    ) -> ImportResult:
        """Import JSONL records (docs/analytics-api.md); see `ImportResult`. Blank lines are ignored. `on_inserted`
        gets each committed batch of records that were stored (those whose id was not known yet)."""
        result = ImportResult()
        pending: dict[str, CallRecord] = {}
        seen: set[str] = set()

        def flush() -> None:
            if not pending:
                return
            known = self.existing_ids(pending)
            fresh = [r for r in pending.values() if r.id not in known]
            self.insert_calls(fresh, store_bodies=store_bodies)
            if fresh and on_inserted is not None:
                on_inserted(fresh)
            result.imported += len(fresh)
            result.skipped += len(known)
            pending.clear()

        for number, raw in enumerate(lines, start=1):
            if isinstance(raw, LineTooLong):
                limit = MAX_IMPORT_LINE_BYTES // (1024 * 1024)
                result.errors.append({"line": number, "error": f"line longer than {limit} MiB"})
                continue
            try:
                text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            except UnicodeDecodeError:
                result.errors.append({"line": number, "error": "not valid UTF-8"})
                continue
            text = text.strip().lstrip("\ufeff")
            if not text:
                continue
            try:
                data = load_line(text)
            except LineError as exc:
                result.errors.append(_line_error(number, exc))
                continue
            except (ValueError, RecursionError) as exc:
                result.errors.append({"line": number, "error": f"invalid JSON: {str(exc)[:200]}"})
                continue
            if not isinstance(data, dict):
                result.errors.append({"line": number, "error": "expected a JSON object"})
                continue
            try:
                values = _parse_import_line(data)
                if "cost_usd" not in data:
                    _apply_price(values, pricer)
                    _check_costs(values)
                else:
                    _attribute_parts(values, pricer)
                    if "priced" not in values:
                        values["priced"] = values.get("cost_usd") is not None
                values.setdefault("id", new_call_id())
                values.setdefault("endpoint", "")
                record = CallRecord(**values)
            except (ValueError, TypeError) as exc:
                result.errors.append(_line_error(number, exc))
                continue
            if record.id in seen:
                result.skipped += 1
                continue
            seen.add(record.id)
            pending[record.id] = record
            if len(pending) >= batch:
                flush()
        flush()
        return result

    # ------------------------------------------------------------------------------------------ reads

    def count_calls(self) -> int:
        with self.connection():
            return int(self.models.Call.select().count())

    def list_calls(
        self,
        limit: int = DEFAULT_LIMIT,
        before: str | None = None,
        source: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        outcome: str | None = None,
    ) -> tuple[list[CallRecord], str | None]:
        """A page of calls, newest first by (ts, id), and the cursor of the next page (None on the last).

        `limit` is clamped to 1..1000. `before` is a cursor previously returned; ValueError when it is not.
        """
        limit = max(1, min(int(limit), MAX_LIMIT))
        call = self.models.Call
        query = call.select()
        if before:
            ts, call_id = decode_cursor(before)
            query = query.where((call.ts < ts) | ((call.ts == ts) & (call.id < call_id)))
        for column, value in (
            (call.source, source),
            (call.model, model),
            (call.provider, provider),
            (call.outcome, outcome),
        ):
            if value is not None:
                query = query.where(column == value)
        query = query.order_by(call.ts.desc(), call.id.desc()).limit(limit + 1)
        with self.connection():
            rows = _dict_rows(query)
        records = [row_to_record(row) for row in rows[:limit]]
        cursor = encode_cursor(records[-1].ts, records[-1].id) if len(rows) > limit else None
        return records, cursor

    def get_call(self, call_id: str, bodies: bool = True) -> CallRecord | None:
        call, body = self.models.Call, self.models.CallBody
        with self.connection():
            rows = _dict_rows(call.select().where(call.id == call_id))
            if not rows:
                return None
            body_rows = _dict_rows(body.select().where(body.call_id == call_id)) if bodies else []
        return row_to_record(rows[0], body_rows[0] if body_rows else None)

    def iter_calls(self, since_ts: float | None = None, *, page_size: int = _PAGE) -> Iterator[CallRecord]:
        """Every call (without bodies) oldest first, from `since_ts` on, read in pages (keyset)."""
        call = self.models.Call
        after: tuple[float, str] | None = None
        while True:
            query = call.select()
            if since_ts is not None:
                query = query.where(call.ts >= since_ts)
            if after is not None:
                ts, call_id = after
                query = query.where((call.ts > ts) | ((call.ts == ts) & (call.id > call_id)))
            query = query.order_by(call.ts.asc(), call.id.asc()).limit(page_size)
            with self.connection():
                rows = _dict_rows(query)
            for row in rows:
                yield row_to_record(row)
            if len(rows) < page_size:
                return
            after = (rows[-1]["ts"], rows[-1]["id"])

    def spend_between(self, start_ts: float, end_ts: float) -> float:
        """Sum of the priced costs of the calls with start_ts <= ts < end_ts (USD), from the hourly rollups."""
        with self.connection():
            row = sums(self.db, [start_ts, end_ts], measures=("cost_usd",))[0].get((), {})
        return _money(row.get("cost_usd"))

    def kpi(self, days: int, tz: tzinfo) -> dict[str, Any]:
        """Totals over the last `days` calendar days in `tz`, today included (docs/analytics-api.md `/api/usage/kpi`).

        Answered from the hourly rollups.

        `unpriced_calls` counts calls with no cost that needed one: outcome "ok", or any call that reported
        tokens. Blocked and failed calls without usage cost nothing and are not unpriced.
        """
        if days < 1:
            raise ValueError("days: must be at least 1")
        current = today(tz)
        start = day_start(current - timedelta(days=days - 1), tz)
        end = day_start(current + timedelta(days=1), tz)
        with self.connection():
            row = sums(self.db, [start, end])[0].get((), {})
        out: dict[str, Any] = {
            "total_cost_usd": _money(row.get("cost_usd")),
            "total_saved_usd": _money(row.get("saved_usd")),
        }
        for name in (
            "calls",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "unpriced_calls",
            "blocked_calls",
            "error_calls",
            "cached_calls",
        ):
            out[name] = int(row.get(name) or 0)
        out["days"] = days
        out["since"] = (current - timedelta(days=days - 1)).isoformat()
        return out


def _dict_rows(query: Any) -> list[dict[str, Any]]:
    """A query's rows as dicts (typed: the peewee stubs type `.dicts()` as model instances)."""
    return cast(list[dict[str, Any]], list(query.dicts().execute()))


def _money(value: Any) -> float:
    """A SQL sum of USD amounts as a float (0.0 for no rows), rounded to 1e-9 to hide float noise."""
    return round(float(value or 0.0), 9)
