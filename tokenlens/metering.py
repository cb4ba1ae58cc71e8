"""Exchange → CallRecord: usage (provider-reported, else estimated), cost, timings, outcome (docs/gateway.md#metering and docs/analytics-api.md).

Runs where records are built, never on the proxy path: in the analysis process for most of the daemon's calls,
in the gateway's spool thread for a call with deferred analyses, in the writer thread inline (tests, tools).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from tokenlens.analyses import WASTE, AnalysisContext, run_analyses
from tokenlens.config import SettingsHolder
from tokenlens.encoding import decode_body
from tokenlens.exchange import METERED_KINDS, Exchange, hook_name, run_on_recorded, tell_cost
from tokenlens.platforms.metering import adjust_price, body_usage, pricing_models, summarize
from tokenlens.price_data import data_info, note_unknown, refresh
from tokenlens.pricing import Price, Pricer, data_generation, pricer_for
from tokenlens.records import CallRecord, bound_record, describe_failure
from tokenlens.store.spool import NOT_GIVEN, NotGiven
from tokenlens.tokens import estimate_output_tokens, estimate_request_tokens
from tokenlens.usage import Usage, with_request_tier
from tokenlens.waste import input_rate, waste_model

log = logging.getLogger(__name__)

RECENT_COSTS = 4096  # calls whose cost a builder keeps for the answer cache's hits


@dataclass(frozen=True)
class Metered:
    usage: Usage | None
    usage_source: str | None
    response_model: str | None
    complete: bool


def meter(ex: Exchange) -> Metered:
    """The call's usage: what the provider reported, or a local estimate when an answer was cut short."""
    if ex.outcome in ("blocked", "cached") or ex.kind not in METERED_KINDS and ex.kind != "count_tokens":
        return Metered(None, None, None, True)
    succeeded = ex.status is not None and 200 <= ex.status < 300
    if ex.streamed:
        summary = summarize(ex.provider, ex.api, ex.endpoint, ex.chunks)
        reported, model, final = summary.usage, summary.model, summary.usage_final
        complete, output_text = summary.complete and ex.error is None, summary.output_text
    else:
        reported, model = body_usage(
            ex.provider, ex.api, ex.endpoint, _response_body(ex) or b"", ex.response_headers
        )
        final, complete, output_text = reported is not None, ex.error is None, ""
    if reported is not None:
        # the tier and speed the request asked for, where the answer does not say (Gemini's serviceTier)
        reported = with_request_tier(reported, ex.api, ex.request_json)
    if reported is not None and final:
        return Metered(reported, "provider", model, complete)
    if not succeeded or ex.kind == "count_tokens" or (ex.stream_undecodable and reported is None):
        return Metered(reported, "provider" if reported else None, model, complete)
    # Cut before the usage arrived (or a 2xx without usage): estimate; keep any input side already reported.
    input_tokens = reported.input_tokens if reported and reported.input_tokens else None
    if input_tokens is None:
        input_tokens = estimate_request_tokens(ex.api, ex.request_json or {}) if ex.request_json else 0
    estimated = Usage(
        input_tokens=input_tokens,
        output_tokens=estimate_output_tokens(output_text) if output_text else 0,
        cache_read_tokens=reported.cache_read_tokens if reported else 0,
        cache_write_tokens=reported.cache_write_tokens if reported else 0,
        cache_write_5m_tokens=reported.cache_write_5m_tokens if reported else None,
        cache_write_1h_tokens=reported.cache_write_1h_tokens if reported else None,
        service_tier=reported.service_tier if reported else None,
        speed=reported.speed if reported else None,
    )
    return Metered(with_request_tier(estimated, ex.api, ex.request_json), "estimated", model, complete)


def _as_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def price_call(pricer: Pricer, ex: Exchange, metered: Metered) -> Price | None:
    """Price with the model the provider reported (most exact), falling back to the model called."""
    if metered.usage is None:
        return None
    price = None
    for model in pricing_models(ex.provider, metered.response_model, ex.model):
        price = pricer.price(ex.provider, model, metered.usage)
        if price.priced:
            return adjust_price(ex.provider, ex.endpoint, model, price)
    return price


def build_record(
    ex: Exchange,
    pricer: Pricer,
    *,
    store_bodies: bool = True,
    analyse: Callable[[Exchange, CallRecord], None] | None = None,
) -> CallRecord:
    """The call's record; every number in it within `tokenlens.records` bounds and its text storable
    (`bound_record`), so that the store never refuses it. The exchange's `on_recorded` hooks run first (they
    may add details), then the metering, its deferred analyses and `analyse` (the record analyses), its
    `on_cost` hooks last."""
    run_on_recorded(ex)
    metered = meter(ex)
    usage = metered.usage
    ended = ex.ended if ex.ended is not None else ex.started
    first = ex.first_chunk_at if ex.streamed else ended
    if ex.outcome in ("blocked", "cached"):
        outcome = ex.outcome
    elif ex.error is not None or ex.status is None or ex.status >= 400:
        outcome = "error"
    else:
        outcome = "ok"
    record = CallRecord(
        id=ex.id,
        ts=ex.started,
        provider=ex.provider,
        endpoint=ex.endpoint,
        source=ex.source,
        tags=dict(ex.tags),
        requested_model=ex.requested_model,
        model=ex.model,
        response_model=metered.response_model,
        stream=ex.streamed or (ex.stream_requested and ex.status is not None and ex.status < 300),
        status=ex.status,
        outcome=outcome,  # type: ignore[arg-type]
        blocked_by=ex.blocked_by,
        error=ex.error,
        usage_source=metered.usage_source,  # type: ignore[arg-type]
        session_id=ex.session_id,
        saved_usd=ex.saved_usd,
        latency_ms=round((ended - ex.started) * 1000, 3),
        ttft_ms=round((first - ex.started) * 1000, 3) if first is not None and outcome != "error" else None,
        max_tokens=ex.max_tokens,
        attempts=ex.attempts,
        fallback_from=ex.fallback_from,
        guardrail_flags=list(ex.guardrail_flags),
        details=dict(ex.details),
        waste_tokens=ex.waste_tokens,
        complexity=ex.complexity,
        mode=ex.mode,
        transport=ex.transport,
        request_id=ex.response_headers.get("x-request-id")
        or ex.response_headers.get("request-id")
        or ex.response_headers.get("x-amzn-requestid"),  # Bedrock
        request_body=ex.request_body if store_bodies else None,
        response_body=_response_body(ex) if store_bodies else None,
    )
    if usage is not None:
        record.input_tokens = usage.input_tokens
        record.output_tokens = usage.output_tokens
        record.cache_read_tokens = usage.cache_read_tokens
        record.cache_write_tokens = usage.cache_write_tokens
        record.cache_write_5m_tokens = usage.cache_write_5m_tokens
        record.cache_write_1h_tokens = usage.cache_write_1h_tokens
        record.reasoning_tokens = usage.reasoning_tokens
        record.service_tier = usage.service_tier
        record.modality_tokens = usage.modality_dict()
    price = price_call(pricer, ex, metered)
    if price is not None:
        record.price_source = price.price_source
        if price.unknown_model and usage is not None and (usage.input_tokens or usage.output_tokens):
            model = record.response_model or ex.model
            record.details["pricing"] = {"warning": unknown_model_warning(model)}
            note_unknown(ex.provider, model)
        record.priced = price.priced
        record.cost_usd = _as_float(price.cost_usd)
        record.input_cost_usd = _as_float(price.input_cost_usd)
        record.output_cost_usd = _as_float(price.output_cost_usd)
        record.cache_read_cost_usd = _as_float(price.cache_read_cost_usd)
        record.cache_write_cost_usd = _as_float(price.cache_write_cost_usd)
    elif outcome != "ok":
        # Blocked, answered from cache, or failed before any usage: nothing was consumed, known to cost $0.
        record.priced, record.cost_usd = True, 0.0
    for deferred in ex.deferred:
        try:
            deferred(ex, record)
        except Exception as exc:  # the message may quote the body: only its type and place are logged
            log.error(
                "deferred analysis %s failed for call %s: %s",
                hook_name(deferred),
                ex.id,
                describe_failure(exc),
            )
    if analyse is not None:
        analyse(ex, record)
    record = bound_record(record)
    tell_cost(ex, record.cost_usd)
    return record


def unknown_model_warning(model: str | None) -> str:
    """What a record says when the price data does not know its model (it may be newer than the data)."""
    info = data_info()
    return (
        f"{model} is not in the price data in use ({info['source']}, {info['date'] or 'date unknown'}); "
        "it may be newer than the data: run `tokenlens prices update` or add a pricing override"
    )


def _response_body(ex: Exchange) -> bytes | None:
    """The answer as text bytes: the decoded stream copy, or the body with its content-encoding undone."""
    if ex.streamed:
        return b"".join(ex.chunks) if ex.chunks else None
    if ex.response_body is None:
        return None
    return decode_body(ex.response_body, ex.response_headers.get("content-encoding"))


class RecordBuilder:
    """`build_record` with the pricer of the current settings' overrides (`tokenlens.pricing.pricer_for`);
    with `analyses`, the call's record analyses too (inline: no analysis process)."""

    def __init__(
        self, settings: SettingsHolder, home: Path | None = None, analyses: AnalysisContext | None = None
    ) -> None:
        self.settings = settings
        self.home = home  # where `tokenlens prices update` keeps newer price data (checked once a second)
        self.analyses = analyses
        self._rates_key: tuple[Pricer, int] | None = None
        self._rates: dict[tuple[str, str | None], Decimal | None] = {}
        self._costs: dict[str, float | None] = {}  # the latest calls' costs, for the answer cache's hits

    def pricer(self) -> Pricer:
        refresh(self.home)
        return pricer_for(self.settings.get().pricing)

    def waste_input_rate(self, exchange: Exchange) -> Decimal | None | NotGiven:
        """The input rate the waste analysis costs the call's findings at (`waste.input_rate` of the model the
        analysis uses), for the analysis process; NOT_GIVEN when the call has no waste analysis. Kept per
        provider and model for the current pricer and price data (a price takes ~60 us)."""
        if WASTE not in exchange.analyses or exchange.request_json is None:
            return NOT_GIVEN
        model = waste_model(exchange)
        pricer = self.pricer()
        key = (pricer, data_generation())
        if key != self._rates_key:
            self._rates_key, self._rates = key, {}
        found = self._rates.get((exchange.provider, model), NOT_GIVEN)
        if isinstance(found, NotGiven):
            if len(self._rates) >= 4096:
                self._rates.clear()
            found = self._rates[(exchange.provider, model)] = input_rate(pricer, exchange.provider, model)
        return found

    def __call__(self, exchange: Exchange) -> CallRecord:
        pricer = self.pricer()
        store_bodies = self.settings.get().storage.store_bodies
        analyse = None
        if self.analyses is not None and exchange.analyses:
            context = self.analyses
            rate = self.waste_input_rate(exchange)  # kept per model: not priced again for each call
            if not isinstance(rate, NotGiven):
                context = dataclasses.replace(context, input_rate=rate)
            analyse = functools.partial(run_analyses, context, exchange.analyses)
        record = build_record(exchange, pricer, store_bodies=store_bodies, analyse=analyse)
        self.note(record)
        return record

    def note(self, record: CallRecord) -> None:
        """An answer from the cache saved what the call it repeats cost: known here when that call was metered
        after the hit was answered (both were built here, the original first); kept for the last calls."""
        if record.outcome == "cached" and record.saved_usd is None:
            dedup = record.details.get("dedup")
            original = dedup.get("hit_of") if isinstance(dedup, dict) else None
            if isinstance(original, str):
                record.saved_usd = self._costs.get(original)
        elif record.cost_usd is not None:
            if len(self._costs) >= RECENT_COSTS:
                del self._costs[next(iter(self._costs))]
            self._costs[record.id] = record.cost_usd
