"""Cost of a call from its normalised usage (SPEC section 7).

Prices come from the genai-prices snapshot bundled with the installed package (never fetched: nothing here
starts `genai_prices.UpdatePrices`), with the user's `pricing:` overrides on top.

Order of lookup in `Pricer.price(provider, model, usage)`:
1. An override whose name equals the model (case-insensitive, a leading ``models/`` ignored), else an
   override whose name equals the model's *undated base*: the name with one trailing date or version
   suffix removed: ``-YYYY-MM-DD``, ``-YYYYMMDD``, ``@YYYYMMDD``, ``-MM-DD``, ``-MMDD``, ``-NNN`` or
   ``-latest`` (so an override for ``gpt-4o`` also prices ``gpt-4o-2024-08-06``).
2. genai-prices, for our provider name: ``openai``, ``anthropic`` and ``google`` (and any other name that is a
   genai-prices provider id, e.g. ``groq``, ``deepseek``, ``mistral``) are looked up within that provider;
   any other user-added provider (e.g. ``ollama``) without a provider id, i.e. by genai-prices' own model-name
   matching. The model is tried as given (path prefixes such as ``models/`` removed), then its undated base.
3. Otherwise the call is unpriced: ``cost_usd`` None, never $0.

The four parts of a price sum to ``cost_usd``: ``input_cost_usd`` is the uncached input (input tokens minus
cache reads and writes, audio included) plus per-request charges that are neither input nor output tokens
(web searches); ``cache_write_cost_usd`` covers both Anthropic TTLs (5 minutes and 1 hour, each at its rate).
Service tiers select genai-prices price variants: OpenAI ``service_tier`` (priority, flex, fast...),
Anthropic ``batch`` (as ``processing: batch``) and ``fast`` (as ``speed: fast``).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices import types as gp

from tokenlens.usage import Usage

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)
_KNOWN_PROVIDERS = ("openai", "anthropic", "google")


@dataclass(frozen=True)
class PriceOverride:
    """User prices in USD per MILLION tokens; cache_read and cache_write default to the input price."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True)
class Price:
    cost_usd: Decimal | None
    input_cost_usd: Decimal | None = None
    output_cost_usd: Decimal | None = None
    cache_read_cost_usd: Decimal | None = None
    cache_write_cost_usd: Decimal | None = None
    priced: bool = False
    source: str = "unpriced"  # "override" | "genai-prices" | "unpriced"
    model_ref: str | None = None  # the override name or the genai-prices model id that matched


UNPRICED = Price(cost_usd=None)

# ---- model names -------------------------------------------------------------------------------------------

_DATE_SUFFIX = re.compile(
    r"(?:[-@](?:(?:19|20)\d{2}-\d{2}-\d{2}|(?:19|20)\d{6}|\d{2}-\d{2}|\d{4}|\d{3}|latest))$", re.IGNORECASE
)


def undated(model: str) -> str:
    """The model name without one trailing date/version suffix (see the module docstring)."""
    return _DATE_SUFFIX.sub("", model)


def _clean(model: str) -> str:
    """Lower-case name without API path prefixes (``models/``, ``publishers/google/models/``)."""
    m = model.strip().lower()
    if m.startswith(("models/", "tunedmodels/", "publishers/", "projects/")):
        m = m.rsplit("/", 1)[-1]
    return m


# ---- genai-prices resolution and compiled prices -----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Resolved:
    """A genai-prices model found for (provider, name); hashed by identity for the price cache."""

    provider: gp.Provider
    model: gp.ModelInfo
    date_only: bool  # every price constraint is a start date, so compiled prices can be cached per day


def _genai_provider_id(provider: str) -> str | None:
    p = provider.lower()
    if p in _KNOWN_PROVIDERS:
        return p
    if any(gp_provider.id == p for gp_provider in data_snapshot.get_snapshot().providers):
        return p
    return None


def _find(name: str, provider_id: str | None) -> tuple[gp.Provider, gp.ModelInfo] | None:
    try:
        return data_snapshot.get_snapshot().find_provider_model(name, None, provider_id, None)
    except LookupError:
        return None


def _has_only_date_constraints(model: gp.ModelInfo) -> bool:
    constraints: list[Any] = []
    if isinstance(model.prices, list):
        constraints += [c.constraint for c in model.prices]
    constraints += [v.constraint for v in model.price_variants or ()]
    return all(c is None or isinstance(c, gp.StartDateConstraint) for c in constraints)


@functools.lru_cache(maxsize=4096)
def _resolve(provider: str, model: str) -> _Resolved | None:
    """genai-prices model for our provider name and a model name, trying the name then its undated base."""
    provider_id = _genai_provider_id(provider)
    name = _clean(model)
    candidates = [name]
    base = undated(name)
    if base != name and base:
        candidates.append(base)
    for cand in candidates:
        found = _find(cand, provider_id)
        if found is not None:
            prov, info = found
            return _Resolved(prov, info, _has_only_date_constraints(info))
    return None


@functools.cache
def _registry() -> Any:
    from genai_prices.data_units import unit_data
    from genai_prices.units import UnitRegistry

    return UnitRegistry(unit_data)


def _group(unit: Any) -> str:
    """Which part of the price a genai-prices unit belongs to: input, output, cache_read or cache_write."""
    dims = unit.dimensions
    token_type = dims.get("token_type")
    if token_type in ("cache_read", "cache_write"):
        return str(token_type)
    if dims.get("direction") == "output":
        return "output"
    return "input"


@dataclass(frozen=True)
class _Compiled:
    units: dict[str, Any]  # usage key -> unit, for the priced units (requests excluded)
    prices: tuple[tuple[Any, Any, str], ...]  # (unit, Decimal | TieredPrices, group)
    has_requests: bool


def _compile(model_price: gp.ModelPrice) -> _Compiled:
    """Price keys of a resolved ModelPrice, validated once (as genai-prices' own calc does)."""
    from genai_prices.validation import validate_priced_units

    registry = _registry()
    items = []
    for key, value in model_price.__dict__.items():
        if key.startswith("_") or value is None:
            continue
        try:
            unit = registry.unit_for_price_key(key)
        except KeyError:
            continue
        items.append((unit, value, _group(unit)))
    validate_priced_units(tuple(u for u, _, _ in items), registry)
    units = {u.usage_key: u for u, _, _ in items if u.usage_key != "requests"}
    return _Compiled(units, tuple(items), any(u.usage_key == "requests" for u, _, _ in items))


@functools.lru_cache(maxsize=4096)
def _compiled_for(resolved: _Resolved, context: tuple[tuple[str, str], ...], day: date) -> _Compiled:
    return _compile(_model_price(resolved, context, datetime(day.year, day.month, day.day, 12, tzinfo=UTC)))


def _model_price(resolved: _Resolved, context: tuple[tuple[str, str], ...], when: datetime) -> gp.ModelPrice:
    ctx = dict(context) if context else None
    model = resolved.model
    # as ModelInfo.calc_price: a model borrowed from a fallback provider ignores the request context
    if ctx and not any(model is m for m in resolved.provider.models):
        ctx = None
    return model.get_prices(when, ctx)


def _price_context(provider: str, usage: Usage) -> tuple[tuple[str, str], ...]:
    """genai-prices price_context for the reported service tier (see the module docstring)."""
    tier = (usage.service_tier or "").lower()
    if not tier:
        return ()
    if tier == "batch":
        return (("processing", "batch"),)
    if provider == "anthropic":
        return (("speed", "fast"),) if tier == "fast" else ()
    if provider == "google" or tier in ("auto", "standard", "default"):
        return ()
    return (("service_tier", tier),)


def _genai_usage(usage: Usage, *, with_details: bool = True) -> SimpleNamespace:
    """genai-prices usage keys from ours, made consistent so that no derived count is negative."""
    inp = usage.input_tokens
    out = usage.output_tokens
    cr = min(usage.cache_read_tokens, inp)
    cw = min(usage.cache_write_tokens, inp - cr)
    w1 = usage.cache_write_1h_tokens
    w5 = usage.cache_write_5m_tokens
    vals: dict[str, int] = {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": cr,
        "cache_write_tokens": cw,
        "web_searches": usage.web_search_requests,
    }
    if w1 is not None and w1 <= cw:
        vals["cache_write_1h_tokens"] = w1
        vals["cache_write_5m_tokens"] = cw - w1
    elif w5 is not None and w5 <= cw and w1 is None:
        vals["cache_write_5m_tokens"] = w5
    if with_details:
        vals["input_audio_tokens"] = min(usage.input_audio_tokens, inp - cr - cw)
        vals["output_audio_tokens"] = min(usage.output_audio_tokens, out)
        vals["output_reasoning_tokens"] = min(usage.reasoning_tokens, out - vals["output_audio_tokens"])
    return SimpleNamespace(**vals)


def _calc(compiled: _Compiled, usage: SimpleNamespace) -> dict[str, Decimal]:
    from genai_prices.decompose import compute_leaf_values

    counts = compute_leaf_values(set(compiled.units), usage, compiled.units)
    if compiled.has_requests:
        counts["requests"] = 1
    total_input = usage.input_tokens
    parts = {"input": _ZERO, "output": _ZERO, "cache_read": _ZERO, "cache_write": _ZERO}
    for unit, price, group in compiled.prices:
        parts[group] += gp.calc_unit_price(price, counts.get(unit.usage_key), total_input, unit.per)
    return parts


# ---- the pricer --------------------------------------------------------------------------------------------


def _dec(v: float | None) -> Decimal | None:
    return None if v is None else Decimal(str(v))


class Pricer:
    """Prices calls: overrides first, then genai-prices, else unpriced. Thread-safe; lookups are cached."""

    def __init__(self, overrides: Mapping[str, PriceOverride] | None = None) -> None:
        self._overrides: dict[str, PriceOverride] = {_clean(k): v for k, v in (overrides or {}).items()}

    def override_for(self, model: str) -> tuple[str, PriceOverride] | None:
        """(override name, override) that applies to `model`: exact name first, then its undated base."""
        if not self._overrides:
            return None
        name = _clean(model)
        for cand in (name, undated(name)):
            found = self._overrides.get(cand)
            if found is not None:
                return cand, found
        return None

    def price(self, provider: str, model: str | None, usage: Usage, *, when: datetime | None = None) -> Price:
        """Cost of one call. `when` (default now) selects dated prices; never raises."""
        if not model:
            return UNPRICED
        try:
            ov = self.override_for(model)
            if ov is not None:
                return _override_price(ov[0], ov[1], usage)
            return self._genai_price(provider.lower(), model, usage, when)
        except Exception:
            log.warning("pricing failed for %s/%s", provider, model, exc_info=True)
            return UNPRICED

    def _genai_price(self, provider: str, model: str, usage: Usage, when: datetime | None) -> Price:
        resolved = _resolve(provider, model)
        if resolved is None:
            return UNPRICED
        when = when or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        context = _price_context(provider, usage)
        if resolved.date_only:
            compiled = _compiled_for(resolved, context, when.astimezone(UTC).date())
        else:
            compiled = _compile(_model_price(resolved, context, when))
        try:
            parts = _calc(compiled, _genai_usage(usage))
        except ValueError:  # inconsistent details (e.g. cached audio): price without the modality split
            parts = _calc(compiled, _genai_usage(usage, with_details=False))
        return Price(
            cost_usd=sum(parts.values(), _ZERO),
            input_cost_usd=parts["input"],
            output_cost_usd=parts["output"],
            cache_read_cost_usd=parts["cache_read"],
            cache_write_cost_usd=parts["cache_write"],
            priced=True,
            source="genai-prices",
            model_ref=resolved.model.id,
        )

    def genai_total(
        self, provider: str, model: str, usage: Usage, *, when: datetime | None = None
    ) -> Decimal:
        """genai-prices' own `calc_price` total for the same lookup (a cross-check; raises LookupError)."""
        resolved = _resolve(provider.lower(), model)
        if resolved is None:
            raise LookupError(model)
        ctx = dict(_price_context(provider.lower(), usage)) or None
        calc = genai_prices.calc_price(
            _genai_usage(usage),
            resolved.model.id,
            provider_id=resolved.provider.id,
            genai_request_timestamp=when,
            price_context=ctx,
        )
        return calc.total_price


def _override_price(name: str, ov: PriceOverride, usage: Usage) -> Price:
    inp = _dec(ov.input) or _ZERO
    out = _dec(ov.output) or _ZERO
    cr_rate = _dec(ov.cache_read) if ov.cache_read is not None else inp
    cw_rate = _dec(ov.cache_write) if ov.cache_write is not None else inp
    assert cr_rate is not None and cw_rate is not None
    cr = min(usage.cache_read_tokens, usage.input_tokens)
    cw = min(usage.cache_write_tokens, usage.input_tokens - cr)
    uncached = usage.input_tokens - cr - cw
    parts = (
        inp * uncached / MILLION,
        out * usage.output_tokens / MILLION,
        cr_rate * cr / MILLION,
        cw_rate * cw / MILLION,
    )
    return Price(
        cost_usd=sum(parts, _ZERO),
        input_cost_usd=parts[0],
        output_cost_usd=parts[1],
        cache_read_cost_usd=parts[2],
        cache_write_cost_usd=parts[3],
        priced=True,
        source="override",
        model_ref=name,
    )


def _rate(entry: Any, key: str, model: str, required: bool) -> float | None:
    value = entry.get(key) if isinstance(entry, Mapping) else getattr(entry, key, None)
    if value is None:
        if required:
            raise ValueError(f"pricing.{model}.{key}: required (USD per million tokens)")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise ValueError(f"pricing.{model}.{key}: must be a number, got {value!r}")
    try:
        f = float(value)
    except ValueError:
        raise ValueError(f"pricing.{model}.{key}: must be a number, got {value!r}") from None
    if not f >= 0 or f == float("inf"):
        raise ValueError(f"pricing.{model}.{key}: must be a finite number >= 0, got {value!r}")
    return f


def from_settings(pricing_section: Mapping[str, Any]) -> dict[str, PriceOverride]:
    """Overrides from the config's ``pricing:`` section ``{model: {input, output, cache_read, cache_write}}``
    (USD per million tokens; entries may also be objects with those attributes). Raises ValueError naming
    the key on a bad entry."""
    out: dict[str, PriceOverride] = {}
    for model, entry in (pricing_section or {}).items():
        if isinstance(entry, PriceOverride):
            out[str(model)] = entry
            continue
        if isinstance(entry, Mapping):
            unknown = set(entry) - {"input", "output", "cache_read", "cache_write"}
            if unknown:
                raise ValueError(f"pricing.{model}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        elif entry is None:
            raise ValueError(f"pricing.{model}: expected {{input, output, cache_read, cache_write}}")
        input_rate = _rate(entry, "input", model, True)
        output_rate = _rate(entry, "output", model, True)
        assert input_rate is not None and output_rate is not None
        out[str(model)] = PriceOverride(
            input=input_rate,
            output=output_rate,
            cache_read=_rate(entry, "cache_read", model, False),
            cache_write=_rate(entry, "cache_write", model, False),
        )
    return out
