"""6. Token heatmap: system / tools / context / history / query split of the input.

The request hook only queues the analysis (`exchange.deferred`); in the writer thread it estimates the
sections locally, scales them to the provider-reported input total (`details["heatmap"]`), scores the call's
complexity (`complexity`) and fingerprints its stable prefix for the prompt-caching report.
"""

from __future__ import annotations

from mitmproxy import http

from tokenlens.addons._flowstate import pending_call
from tokenlens.app import AppDeps
from tokenlens.complexity import complexity_score
from tokenlens.exchange import GENERATION_KINDS, Exchange
from tokenlens.heatmap import prefix_fingerprint, scale_sections, sections_of, uses_prompt_cache
from tokenlens.prompt_parts import request_parts
from tokenlens.records import CallRecord
from tokenlens.usage import wire_format

MIN_CACHEABLE_PREFIX = 1024  # the providers' minimum prompt length for caching


def record_heatmap(exchange: Exchange, record: CallRecord) -> None:
    """Deferred: heatmap, complexity and prefix fingerprint of the call."""
    body = exchange.request_json
    if body is None:
        return
    api = wire_format(exchange.api, exchange.kind)
    heat = sections_of(request_parts(api, body), api, exchange.model)
    measured = record.input_tokens > 0 and record.outcome in ("ok", "error")
    sections = scale_sections(heat.sections, record.input_tokens) if measured else dict(heat.sections)
    detail: dict[str, object] = {
        **sections,
        "scaled": measured,
        "estimated_total": heat.total,
        "turns": heat.turns,
        "messages": heat.messages,
    }
    prefix = prefix_fingerprint(api, body)
    if prefix is not None:
        detail["prefix"] = {
            "hash": prefix,
            "tokens": sections["system"] + sections["tools"],
            "cache_used": record.cache_read_tokens > 0
            or record.cache_write_tokens > 0
            or uses_prompt_cache(body, exchange.request_body),
        }
    record.details["heatmap"] = detail
    input_tokens = record.input_tokens if measured else heat.total
    record.complexity = complexity_score(api, body, input_tokens, record.output_tokens, heat.turns)


class TokenHeatmap:
    name = "tokenlens.heatmap"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = pending_call(flow)
        if exchange is None or exchange.request_json is None or exchange.kind not in GENERATION_KINDS:
            return
        exchange.deferred.append(record_heatmap)
