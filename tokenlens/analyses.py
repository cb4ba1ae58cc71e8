"""The record analyses: what annotates a call's record and nothing else needs (waste, heatmap and complexity,
conversations). A stage names the ones a call gets (`Exchange.analyses`); they run where records are built for
the store: in the analysis process (`tokenlens.analysis`), or in the writer thread when the gateway runs inline
(tests, tools). Nothing on the request path or in the budgets waits for them.

Each analysis reads the call (`Exchange`: its request, wire format, model) and writes its record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from tokenlens.config import SettingsHolder
from tokenlens.exchange import Exchange
from tokenlens.heatmap import record_heatmap
from tokenlens.pricing import pricer_for
from tokenlens.prompt_parts import Part, request_parts
from tokenlens.records import CallRecord, describe_failure
from tokenlens.sessions import ConversationIndex
from tokenlens.store.spool import NOT_GIVEN, NotGiven
from tokenlens.usage import wire_format
from tokenlens.waste import input_rate, record_waste, waste_model

log = logging.getLogger(__name__)

WASTE = "waste"
HEATMAP = "heatmap"
CONVERSATION = "conversation"


@dataclass
class AnalysisContext:
    """What the analyses keep between calls: the settings (pricing overrides) and the conversation index; and
    the input rate the gateway priced the current call's waste at (`SpooledCall.input_rate`), when it did."""

    settings: SettingsHolder
    conversations: ConversationIndex = field(default_factory=ConversationIndex)
    input_rate: Decimal | None | NotGiven = NOT_GIVEN
    # the current call's `request_parts` once an analysis read them (waste and heatmap both do), else None; set
    # only on the call's own copy of the context (`run_analyses`), which two threads never share
    parts: list[Part] | None = None


def _request_parts(context: AnalysisContext, exchange: Exchange) -> list[Part] | None:
    """The current call's request parts, built once for all its analyses (None when its request is unread)."""
    if exchange.request_json is None:
        return None
    if context.parts is None:
        context.parts = request_parts(wire_format(exchange.api, exchange.kind), exchange.request_json)
    return context.parts


Analysis = Callable[[AnalysisContext, Exchange, CallRecord], None]


def _waste(context: AnalysisContext, exchange: Exchange, record: CallRecord) -> None:
    rate = context.input_rate
    if isinstance(rate, NotGiven):  # inline, or a spool line without it: priced here (loads the price data)
        pricer = pricer_for(context.settings.get().pricing)
        rate = input_rate(pricer, exchange.provider, waste_model(exchange))
    record_waste(exchange, record, rate, _request_parts(context, exchange))


def _heatmap(context: AnalysisContext, exchange: Exchange, record: CallRecord) -> None:
    record_heatmap(exchange, record, _request_parts(context, exchange))


def _conversation(context: AnalysisContext, exchange: Exchange, record: CallRecord) -> None:
    context.conversations.record(exchange, record)


ANALYSES: dict[str, Analysis] = {WASTE: _waste, HEATMAP: _heatmap, CONVERSATION: _conversation}


def run_analyses(
    context: AnalysisContext, names: Sequence[str], exchange: Exchange, record: CallRecord
) -> None:
    """Run the named analyses on a call's record, in order; one that fails is logged (its type only: the
    message may quote the body) and the others still run. They get a copy of `context` of their own (the
    shared conversation index and input rate, and this call's request parts): the record writer's spill thread
    may analyse another call at the same time."""
    call_context = replace(context, parts=None)
    for name in names:
        analysis = ANALYSES.get(name)
        if analysis is None:
            log.error("unknown record analysis %r for call %s", name[:40], record.id)
            continue
        try:
            analysis(call_context, exchange, record)
        except Exception as exc:
            log.error("record analysis %s failed for call %s: %s", name, record.id, describe_failure(exc))
