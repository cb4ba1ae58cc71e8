"""Cost of a call from its normalised usage (docs/gateway.md#metering).

Prices come from genai-prices' data: the snapshot bundled with the installed package, or a newer file the
user fetched with ``tokenlens prices update`` (`tokenlens.price_data` swaps it in with `set_snapshot`; never
fetched here, nothing starts `genai_prices.UpdatePrices`), with the user's `pricing:` overrides on top.

Order of lookup in `Pricer.price(provider, model, usage)`:
1. An override whose name equals the model (case-insensitive, a leading ``models/`` ignored). An override with
   ``family: true`` also prices the model's dated and versioned names: the name with one trailing date or
   version suffix removed (``-YYYY-MM-DD``, ``-YYYYMMDD``, ``@YYYYMMDD``, ``-MM-DD``, ``-MMDD``, ``-NNN``,
   ``-latest``) equals the override's name. Without it, an override for ``gpt-4o`` leaves
   ``gpt-4o-2024-05-13`` (which has its own price) alone.
2. genai-prices, within our provider: ``openai``, ``anthropic``, ``google`` and any other name that is a
   genai-prices provider id (``groq``, ``deepseek``, ``mistral``...). The model is tried as given (path
   prefixes such as ``models/`` removed), then its undated base. A user-added provider that is not a
   genai-prices provider (``ollama``) is priced only by an override: ``deepseek-r1:8b`` there is not
   DeepSeek's cloud model.
3. Otherwise the call is unpriced: ``cost_usd`` None, never $0.

Every price names what it used in `Price.price_source`: the genai-prices model id when the name is one the
entry lists, ``inferred:<model id>`` when the name was matched by stripping a suffix or by a pattern (a
guess, shown as such), ``override`` for the user's prices.

The four parts of a price sum to ``cost_usd``: ``input_cost_usd`` is the uncached input (input tokens minus
cache reads and writes, every modality) plus per-request charges that are neither input nor output tokens
(web searches); ``cache_read_cost_usd`` every cached modality; ``cache_write_cost_usd`` both Anthropic TTLs.
Each modality the usage reports (``Usage.modality_tokens``: text, image, audio, video; Gemini documents as
images, as genai-prices does) is priced at its own rate where the price has one, else at the plain rate.

Service tiers select genai-prices price variants (`price_context`): OpenAI ``service_tier`` (``default``,
``flex``, ``priority``, ``fast``...), Gemini ``serviceTier`` (``flex``, ``priority``; requested or reported),
``batch`` (``processing: batch``) and Anthropic ``speed: fast``. An Anthropic batch answer that also says
``speed: fast`` is billed at batch rates: fast mode is not offered on the Message Batches API and does not
stack with the batch discount (genai-prices' Anthropic notes, pydantic/genai-prices#429).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from tokenlens.config import PriceOverride, PriceRates, Settings, replace_section
from tokenlens.platforms import PRICE_PROVIDER
from tokenlens.usage import Usage

if TYPE_CHECKING:  # genai-prices (with pydantic, ~11 MiB) is imported by the first price, not at start
    from genai_prices import types as gp

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)
_KNOWN_PROVIDERS = ("openai", "anthropic", "google")

# ---- overrides -----------------------------------------------------------------------------------------------
# The user's prices are the configuration's own `PriceOverride` (USD per million tokens, validated by the
# config; `PriceTier` for context tiers, `PriceRates` for service tiers).

BASE_RATES: tuple[str, ...] = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
"""The plain rates of an override (USD per million tokens)."""
MODALITY_RATES: tuple[str, ...] = tuple(
    f"{part}_{modality}"
    for part in ("input", "output", "cache_read")
    for modality in ("text", "image", "audio", "video")
)
"""Per-modality rates of an override: ``input_audio``, ``output_image``, ``cache_read_audio``..."""
RATE_KEYS: tuple[str, ...] = BASE_RATES + MODALITY_RATES

# our rate name -> genai-prices price key
_PRICE_KEYS: dict[str, str] = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    **{f"input_{m}": f"input_{m}_mtok" for m in ("text", "image", "audio", "video")},
    **{f"output_{m}": f"output_{m}_mtok" for m in ("text", "image", "audio", "video")},
    **{f"cache_read_{m}": f"cache_{m}_read_mtok" for m in ("text", "image", "audio", "video")},
}


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
    # The record's `price_source`: the genai-prices model id, ``inferred:<model id>`` or ``override``.
    price_source: str | None = None
    # A provider the price data covers does not have this model (the data may predate it: a warning).
    unknown_model: bool = False


UNPRICED = Price(cost_usd=None)

# ---- price data ----------------------------------------------------------------------------------------------

_lock = threading.Lock()
_snapshot: Any = None  # None: the bundled one
_generation = 0


def current_snapshot() -> Any:
    """The genai-prices `DataSnapshot` prices come from (a fetched file once `set_snapshot` was called)."""
    if _snapshot is not None:
        return _snapshot
    from genai_prices import data_snapshot

    return data_snapshot._bundled_snapshot()


def set_snapshot(snapshot: Any) -> None:
    """Use another genai-prices `DataSnapshot` (None: the bundled one) from the next price on: one atomic
    swap; caches are keyed by the data's generation, so no price mixes two data sets."""
    global _snapshot, _generation
    with _lock:
        _snapshot, _generation = snapshot, _generation + 1


def data_generation() -> int:
    return _generation


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


def _lists_name(logic: Any, name: str) -> bool:
    """Whether a genai-prices match logic names `name` exactly (an ``equals`` clause), not by a pattern."""
    from genai_prices import types as gp

    if isinstance(logic, gp.ClauseEquals):
        return logic.equals.lower() == name
    for attr in ("or_", "and_"):
        clauses = getattr(logic, attr, None)
        if isinstance(clauses, list):
            return any(_lists_name(c, name) for c in clauses)
    return False


# ---- genai-prices resolution and compiled prices -----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Resolved:
    """A genai-prices model found for (provider, name); hashed by identity for the price cache."""

    provider: gp.Provider
    model: gp.ModelInfo
    date_only: bool  # every price constraint is a start date, so compiled prices can be cached per day
    exact: bool  # the name is one the entry lists (else the price is inferred)


def _genai_provider_id(snapshot: Any, provider: str) -> str | None:
    p = provider.lower()
    p = PRICE_PROVIDER.get(p, p)  # the cloud platforms: vertex is "google", bedrock "aws"
    if p in _KNOWN_PROVIDERS:
        return p
    if any(gp_provider.id == p for gp_provider in snapshot.providers):
        return p
    return None


def _find(snapshot: Any, name: str, provider_id: str) -> tuple[gp.Provider, gp.ModelInfo] | None:
    try:
        return snapshot.find_provider_model(name, None, provider_id, None)
    except LookupError:
        return None


def _has_only_date_constraints(model: gp.ModelInfo) -> bool:
    from genai_prices import types as gp

    constraints: list[Any] = []
    if isinstance(model.prices, list):
        constraints += [c.constraint for c in model.prices]
    constraints += [v.constraint for v in model.price_variants or ()]
    return all(c is None or isinstance(c, gp.StartDateConstraint) for c in constraints)


@functools.lru_cache(maxsize=4096)
def _resolve_in(generation: int, provider: str, model: str) -> _Resolved | None:
    snapshot = current_snapshot()
    provider_id = _genai_provider_id(snapshot, provider)
    if provider_id is None:  # a user-added provider: only its overrides price it
        return None
    name = _clean(model)
    candidates = [name]
    base = undated(name)
    if base != name and base:
        candidates.append(base)
    for cand in candidates:
        found = _find(snapshot, cand, provider_id)
        if found is not None:
            prov, info = found
            exact = cand == name and (name == info.id.lower() or _lists_name(info.match, name))
            return _Resolved(prov, info, _has_only_date_constraints(info), exact)
    return None


def _resolve(provider: str, model: str) -> _Resolved | None:
    """genai-prices model for our provider name and a model name, trying the name then its undated base."""
    return _resolve_in(_generation, provider, model)


def resolve(provider: str, model: str) -> tuple[gp.Provider, gp.ModelInfo, bool] | None:
    """(genai-prices provider, model entry, exact) for our provider and a model name, or None."""
    found = _resolve(provider.lower(), model)
    return None if found is None else (found.provider, found.model, found.exact)


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
    # genai-prices' leaf decomposition of the priced units, worked out once: (usage key, the usage keys of the
    # priced units below it), most specific first (the order `compute_leaf_values` sorts them in).
    leaves: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _leaf_plan(units: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """What `genai_prices.decompose.compute_leaf_values` works out on every call: each priced unit with the
    priced units it contains (`is_descendant_or_self`), in its order."""
    from genai_prices.decompose import is_descendant_or_self

    ordered = sorted(units.values(), key=lambda unit: (-len(unit.dimensions), unit.usage_key))
    return tuple(
        (
            unit.usage_key,
            tuple(d.usage_key for d in ordered if d is not unit and is_descendant_or_self(unit, d)),
        )
        for unit in ordered
    )


def _leaf_counts(compiled: _Compiled, usage: SimpleNamespace) -> dict[str, int]:
    """`compute_leaf_values` for whole-number usage (what `_genai_usage` makes), with the plan worked out
    once: each unit's count less its descendants' leaves; ValueError when one would be negative."""
    counts: dict[str, int] = {}
    for key, below in compiled.leaves:
        leaf = (getattr(usage, key, None) or 0) - sum(counts[d] for d in below)
        if leaf < 0:
            raise ValueError(f"Invalid usage data: the more specific usage under {key} exceeds it")
        counts[key] = leaf
    return counts


def _compile(model_price: Any) -> _Compiled:
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
    has_requests = any(u.usage_key == "requests" for u, _, _ in items)
    return _Compiled(units, tuple(items), has_requests, _leaf_plan(units))


@functools.lru_cache(maxsize=4096)
def _compiled_for(resolved: _Resolved, context: tuple[tuple[str, str], ...], day: date) -> _Compiled:
    return _compile(_model_price(resolved, context, datetime(day.year, day.month, day.day, 12, tzinfo=UTC)))


def _model_price(resolved: _Resolved, context: tuple[tuple[str, str], ...], when: datetime) -> Any:
    ctx = dict(context) if context else None
    model = resolved.model
    # as ModelInfo.calc_price: a model borrowed from a fallback provider ignores the request context
    if ctx and not any(model is m for m in resolved.provider.models):
        ctx = None
    return model.get_prices(when, ctx)


def price_context(provider: str, usage: Usage) -> tuple[tuple[str, str], ...]:
    """genai-prices `price_context` for the call's service tier and speed (see the module docstring)."""
    tier = (usage.service_tier or "").lower()
    speed = (usage.speed or "").lower()
    if tier == "batch":
        return (("processing", "batch"),)
    if provider == "anthropic":
        return (("speed", "fast"),) if "fast" in (tier, speed) else ()
    if not tier or tier in ("auto", "standard", "unspecified", "on_demand"):
        return ()
    if provider == "google":
        return (("service_tier", tier),) if tier in ("flex", "priority") else ()
    return (("service_tier", tier),)


def _genai_usage(usage: Usage, *, with_details: bool = True) -> SimpleNamespace:
    """genai-prices usage keys from ours (whole numbers), made consistent so that no derived count is
    negative."""
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
        by_modality: dict[tuple[str, str], int] = {}
        for part, modality, tokens in usage.modality_tokens:
            by_modality[part, modality] = by_modality.get((part, modality), 0) + tokens

        def m(part: str, modality: str) -> int:
            return by_modality.get((part, modality), 0)

        vals["input_audio_tokens"] = max(usage.input_audio_tokens, m("input", "audio"))
        vals["output_audio_tokens"] = max(usage.output_audio_tokens, m("output", "audio"))
        vals["output_reasoning_tokens"] = min(usage.reasoning_tokens, out)
        for part, prefix in (("input", "input_{}_tokens"), ("output", "output_{}_tokens")):
            vals[prefix.format("text")] = m(part, "text")
            vals[prefix.format("image")] = m(part, "image") + m(part, "document")
            vals[prefix.format("video")] = m(part, "video")
        vals["cache_text_read_tokens"] = m("cache_read", "text")
        vals["cache_audio_read_tokens"] = m("cache_read", "audio")
        vals["cache_image_read_tokens"] = m("cache_read", "image") + m("cache_read", "document")
        vals["cache_video_read_tokens"] = m("cache_read", "video")
    return SimpleNamespace(**vals)


def _calc(compiled: _Compiled, usage: SimpleNamespace) -> dict[str, Decimal]:
    from genai_prices import types as gp

    counts: dict[str, Any] = _leaf_counts(compiled, usage)
    if compiled.has_requests:
        counts["requests"] = 1
    total_input = usage.input_tokens
    parts = {"input": _ZERO, "output": _ZERO, "cache_read": _ZERO, "cache_write": _ZERO}
    for unit, price, group in compiled.prices:
        parts[group] += gp.calc_unit_price(price, counts.get(unit.usage_key), total_input, unit.per)
    return parts


def _calc_parts(compiled: _Compiled, usage: Usage) -> dict[str, Decimal]:
    try:
        return _calc(compiled, _genai_usage(usage))
    except ValueError:  # inconsistent details: price without the modality split
        return _calc(compiled, _genai_usage(usage, with_details=False))


def _price_of(parts: dict[str, Decimal], source: str, ref: str, price_source: str) -> Price:
    return Price(
        cost_usd=sum(parts.values(), _ZERO),
        input_cost_usd=parts["input"],
        output_cost_usd=parts["output"],
        cache_read_cost_usd=parts["cache_read"],
        cache_write_cost_usd=parts["cache_write"],
        priced=True,
        source=source,
        model_ref=ref,
        price_source=price_source,
    )


# ---- overrides as genai-prices prices ----------------------------------------------------------------------


def _tier_name(context: tuple[tuple[str, str], ...]) -> str | None:
    """The service tier an override's `service_tiers` is keyed by: batch, fast, flex, priority..."""
    ctx = dict(context)
    if ctx.get("processing") == "batch":
        return "batch"
    if ctx.get("speed") == "fast":
        return "fast"
    return ctx.get("service_tier")


def rates_of(rates: PriceRates) -> dict[str, float]:
    """The rates an override, a context tier or a service tier sets (`RATE_KEYS` order, unset ones left out)."""
    return {key: float(value) for key in RATE_KEYS if (value := getattr(rates, key)) is not None}


def _with_defaults(explicit: Mapping[str, float]) -> dict[str, float]:
    """Rates with the defaults filled in: cache rates from the input rate, ``cache_write_1h`` from
    ``cache_write``, and the cached part of a modality with its own input rate at the cache-read rate."""
    rates = dict(explicit)
    rates.setdefault("cache_read", rates["input"])
    rates.setdefault("cache_write", rates["input"])
    rates.setdefault("cache_write_1h", rates["cache_write"])
    for modality in ("text", "image", "audio", "video"):
        if f"input_{modality}" in rates:
            rates.setdefault(f"cache_read_{modality}", rates["cache_read"])
    return rates


def _override_compiled(ov: PriceOverride, tier: str | None) -> _Compiled:
    """An override as a genai-prices ModelPrice (context tiers as TieredPrices), compiled like a data entry.

    Rates: the override's, then a context tier's on top (the whole call at the tier's rates when its input is
    above the tier's size), then the service tier's on top (at every context size); unspecified ones default
    as `_with_defaults` says.
    """
    from genai_prices import types as gp

    explicit = rates_of(ov)
    service_rates = ov.service_tiers.get(tier) if tier is not None else None
    service = rates_of(service_rates) if service_rates is not None else {}
    base = _with_defaults({**explicit, **service})
    tiers = [(t.above, _with_defaults({**explicit, **rates_of(t), **service})) for t in ov.tiers]
    names = set(base).union(*(set(r) for _, r in tiers))
    prices: dict[str, Any] = {}
    for name in names:
        part = (
            "output" if name.startswith("output") else "cache_read" if name.startswith("cache") else "input"
        )
        base_value = base.get(name, base[part])
        steps = [gp.Tier(start=above, price=Decimal(str(r.get(name, base_value)))) for above, r in tiers]
        value = Decimal(str(base_value))
        prices[_PRICE_KEYS[name]] = gp.TieredPrices(base=value, tiers=steps) if steps else value
    _fill_joins(prices)
    return _compile(gp.ModelPrice(**prices))


def _fill_joins(prices: dict[str, Any]) -> None:
    """Price the overlap of a modality rate and a token-type rate that the override leaves out (the 1-hour
    write of audio) at the token-type rate: the override says what cache writes cost, whatever the modality."""
    registry = _registry()
    changed = True
    while changed:
        changed = False
        units = [registry.unit_for_price_key(k) for k in prices]
        for i, a in enumerate(units):
            for b in units[i + 1 :]:
                if not a.is_compatible_with(b):
                    continue
                join = registry.find_join(a, b)
                if join is None or join.price_key in prices:
                    continue
                plain = a if "modality" not in a.dimensions else b
                prices[join.price_key] = prices[plain.price_key]
                changed = True
                break
            if changed:
                break


# ---- the pricer --------------------------------------------------------------------------------------------


class Pricer:
    """Prices calls: overrides first, then genai-prices, else unpriced. Thread-safe; lookups are cached."""

    def __init__(self, overrides: Mapping[str, PriceOverride] | None = None) -> None:
        self._overrides: dict[str, PriceOverride] = {_clean(k): v for k, v in (overrides or {}).items()}
        self._compiled: dict[tuple[str, str | None], _Compiled] = {}

    def override_for(self, model: str) -> tuple[str, PriceOverride] | None:
        """(override name, override) that applies to `model`: its exact name, else a ``family: true``
        override named by its undated base."""
        if not self._overrides:
            return None
        name = _clean(model)
        found = self._overrides.get(name)
        if found is not None:
            return name, found
        base = undated(name)
        found = self._overrides.get(base)
        if found is not None and found.family:
            return base, found
        return None

    def price(self, provider: str, model: str | None, usage: Usage, *, when: datetime | None = None) -> Price:
        """Cost of one call. `when` (default now) selects dated prices; never raises."""
        if not model:
            return UNPRICED
        try:
            ov = self.override_for(model)
            if ov is not None:
                return self._override_price(provider.lower(), ov[0], ov[1], usage)
            return self._genai_price(provider.lower(), model, usage, when)
        except Exception:
            log.warning("pricing failed for %s/%s", provider, model, exc_info=True)
            return UNPRICED

    def _override_price(self, provider: str, name: str, ov: PriceOverride, usage: Usage) -> Price:
        tier = _tier_name(price_context(provider, usage))
        key = (name, tier if tier in ov.service_tiers else None)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _override_compiled(ov, key[1])
        return _price_of(_calc_parts(compiled, usage), "override", name, "override")

    def _genai_price(self, provider: str, model: str, usage: Usage, when: datetime | None) -> Price:
        resolved = _resolve(provider, model)
        if resolved is None:
            # a model of a provider the data covers may be newer than the data; a local one is just local
            known = _genai_provider_id(current_snapshot(), provider) is not None
            return dataclasses.replace(UNPRICED, unknown_model=known)
        when = when or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        context = price_context(provider, usage)
        if resolved.date_only:
            compiled = _compiled_for(resolved, context, when.astimezone(UTC).date())
        else:
            compiled = _compile(_model_price(resolved, context, when))
        model_id = resolved.model.id
        source = model_id if resolved.exact else f"inferred:{model_id}"
        return _price_of(_calc_parts(compiled, usage), "genai-prices", model_id, source)

    def genai_total(
        self, provider: str, model: str, usage: Usage, *, when: datetime | None = None
    ) -> Decimal:
        """genai-prices' own `calc_price` total for the same lookup (a cross-check; raises LookupError)."""
        resolved = _resolve(provider.lower(), model)
        if resolved is None:
            raise LookupError(model)
        ctx = dict(price_context(provider.lower(), usage)) or None
        calc = current_snapshot().calc(
            _genai_usage(usage), resolved.model.id, resolved.provider.id, None, when, ctx
        )
        return calc.total_price


OVERRIDE_KEYS: frozenset[str] = frozenset(RATE_KEYS) | {"tiers", "service_tiers", "family"}


def _plain_entry(entry: Any) -> Any:
    """An override entry as the file's data: a mapping or None as it is, an object by its attributes."""
    if entry is None or isinstance(entry, Mapping):
        return entry
    return {key: value for key in sorted(OVERRIDE_KEYS) if (value := getattr(entry, key, None)) is not None}


def from_settings(pricing_section: Mapping[str, Any]) -> dict[str, PriceOverride]:
    """Overrides from a ``pricing:`` section: `Settings.pricing` (its overrides as they are) or the file's
    plain data, validated as the configuration validates it (ConfigError, a ValueError, naming the key).
    Entries may also be objects with those attributes. Shape: ``{model: {input, output, cache_read,
    cache_write, cache_write_1h, <modality rates>, tiers: [{above, <rates>}], service_tiers: {tier:
    {<rates>}}, family}}``."""
    section = pricing_section or {}
    plain = {str(m): _plain_entry(e) for m, e in section.items() if not isinstance(e, PriceOverride)}
    parsed = replace_section(Settings(), "pricing", plain).pricing if plain else {}
    return {
        str(model): entry if isinstance(entry, PriceOverride) else parsed[str(model)]
        for model, entry in section.items()
    }


# ---- one pricer per pricing section ------------------------------------------------------------------------

_PRICERS_KEPT = 8
_pricers: dict[int, tuple[Mapping[str, PriceOverride], Pricer]] = {}
_pricers_lock = threading.Lock()


def pricer_for(pricing: Mapping[str, PriceOverride]) -> Pricer:
    """The one Pricer of a pricing section (`Settings.pricing`): built on first use and shared by every part
    of the gateway (keyed by the section object; the last few sections are kept). A changed section is a new
    object, so it gets a new pricer; an unchanged one keeps its pricer and the overrides it compiled."""
    found = _pricers.get(id(pricing))
    if found is not None and found[0] is pricing:
        return found[1]
    with _pricers_lock:
        found = _pricers.get(id(pricing))
        if found is not None and found[0] is pricing:
            return found[1]
        pricer = Pricer(pricing)
        if len(_pricers) >= _PRICERS_KEPT:
            del _pricers[next(iter(_pricers))]  # the oldest
        _pricers[id(pricing)] = (pricing, pricer)
        return pricer
