"""Waste and heatmap stages: queued on the request, filled in the writer thread, stored with the call."""

from __future__ import annotations

import json

from mitmproxy import http
from mitmproxy.test import taddons

from mitm_helpers import gateway_flow
from tokenlens.addons.heatmap import TokenHeatmap
from tokenlens.addons.ingress import Ingress
from tokenlens.addons.recorder import Recorder
from tokenlens.addons.waste import WasteDetector
from tokenlens.app import AppDeps
from tokenlens.tokens import get_encoding

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You answer questions about geography."},
        {"role": "user", "content": "Please name a river."},
        {"role": "assistant", "content": "The Seine."},
        {"role": "user", "content": "And a mountain?"},
    ],
}
PROMPT_TOKENS = 1237  # what the provider reports: the sections are scaled to it


def run(deps: AppDeps, body: dict[str, object], prompt_tokens: int) -> dict[str, object]:
    flow = gateway_flow("/proxy/openai/v1/chat/completions", body, {"X-TokenLens-Source": "heat-test"})
    stages = [Ingress(deps), WasteDetector(deps), TokenHeatmap(deps)]
    with taddons.context(*stages):
        for stage in stages:
            stage.request(flow)  # type: ignore[attr-defined]
    answer = {
        "id": "c",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 7, "total_tokens": prompt_tokens + 7},
    }
    flow.response = http.Response.make(200, json.dumps(answer), {"content-type": "application/json"})
    Recorder(deps).response(flow)
    assert deps.writer.flush()
    calls, _ = deps.store.list_calls(source="heat-test")
    return calls[0].to_dict()


def test_heatmap_sections_add_up_to_the_recorded_input_tokens(deps: AppDeps) -> None:
    call = run(deps, CHAT, PROMPT_TOKENS)
    heat = call["details"]["heatmap"]  # type: ignore[index]
    sections = [heat[s] for s in ("system", "tools", "context", "history", "query")]
    assert call["input_tokens"] == PROMPT_TOKENS and sum(sections) == PROMPT_TOKENS
    assert heat["scaled"] is True and heat["tools"] == 0 and heat["context"] == 0
    assert heat["history"] > heat["query"] > 0 and heat["turns"] == 2
    assert call["complexity"] == 1  # 1000+ input tokens; nothing else


def test_waste_tokens_on_the_record(deps: AppDeps) -> None:
    enc = get_encoding("o200k_base")
    assert enc is not None
    call = run(deps, CHAT, PROMPT_TOKENS)
    please = len(enc.encode_ordinary(" Please"))
    assert call["waste_tokens"] == please
    waste = call["details"]["waste"]  # type: ignore[index]
    assert waste["by_type"]["filler"] == please
    assert waste["cost_usd"] == please * 0.15 / 1e6  # gpt-4o-mini input: $0.15 per million


def test_a_clean_request_records_zero_waste(deps: AppDeps) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Name a river."}]}
    call = run(deps, body, 12)
    assert call["waste_tokens"] == 0 and call["complexity"] == 0
