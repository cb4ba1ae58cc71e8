import json

from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.test import taddons

from mitm_helpers import gateway_flow
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.ingress import Ingress
from tokenlens.addons.recorder import KEPT_RESPONSE_HEADERS, Recorder, kept_headers
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
}


def started(deps: AppDeps) -> http.HTTPFlow:
    flow = gateway_flow("/proxy/openai/v1/chat/completions", CHAT, {"X-TokenLens-Source": "rec-test"})
    with taddons.context(Ingress(deps)):
        Ingress(deps).request(flow)
    return flow


def test_a_response_is_queued_and_lands_in_the_store(deps: AppDeps) -> None:
    flow = started(deps)
    flow.response = http.Response.make(
        200, json.dumps(ANSWER), {"content-type": "application/json", "x-request-id": "req_1"}
    )
    flow.response.timestamp_end = flow.request.timestamp_start + 0.5
    recorder = Recorder(deps)
    recorder.response(flow)
    recorder.response(flow)  # a second hook call must not record twice
    assert deps.writer.flush()
    calls, _ = deps.store.list_calls(source="rec-test")
    assert len(calls) == 1
    call = calls[0]
    assert (call.input_tokens, call.output_tokens, call.status, call.request_id) == (1000, 100, 200, "req_1")
    assert call.latency_ms == 500.0
    # gpt-4o-mini: $0.15 in, $0.60 out per million
    assert abs((call.cost_usd or 0) - (1000 * 0.15 + 100 * 0.60) / 1e6) < 1e-12


def test_an_error_is_recorded_with_its_message(deps: AppDeps) -> None:
    flow = started(deps)
    flow.error = mflow.Error("Client disconnected.")
    Recorder(deps).error(flow)
    assert deps.writer.flush()
    (call,) = deps.store.list_calls(source="rec-test")[0]
    assert (call.outcome, call.error, call.status) == ("error", "Client disconnected.", None)


def test_flows_that_are_not_provider_calls_are_ignored(deps: AppDeps) -> None:
    flow = gateway_flow("/api/calls", method="GET")
    flow.response = http.Response.make(200, b"{}")
    Recorder(deps).response(flow)
    assert exchange_of(flow) is None
    assert deps.writer.flush()
    assert deps.store.list_calls()[0] == []


def test_kept_headers_are_what_the_headers_mapping_gives() -> None:
    headers = http.Headers(
        [
            (b"X-Request-Id", b"req-1"),
            (b"Content-Type", b"application/json"),
            (b"x-other", b"o"),
            (b"x-request-id", b"req-2"),
            (b"content-encoding", b"caf\xc3\xa9 \xff"),
        ]
    )
    expected = {k: headers[k] for k in KEPT_RESPONSE_HEADERS if k in headers}
    assert kept_headers(headers) == expected
    assert list(kept_headers(headers).items()) == [
        ("content-type", "application/json"),
        ("content-encoding", "café \udcff"),
        ("x-request-id", "req-1, req-2"),
    ]
    assert kept_headers(http.Headers([(b"x-other", b"o")])) == {}


def test_traffic_that_is_not_a_call_is_counted_apart(deps: AppDeps) -> None:
    """Claude Code's `HEAD /` reachability check, preflights, non-API paths and a path the provider does not
    serve were recorded as failed calls (issue 16): they are forwarded, counted by reason, never stored."""
    ingress, recorder = Ingress(deps), Recorder(deps)
    cases = [
        ("HEAD", "/proxy/anthropic/", 200, "method"),
        ("OPTIONS", "/proxy/openai/v1/chat/completions", 204, "method"),
        ("GET", "/proxy/anthropic/", 404, "path"),
        ("GET", "/proxy/openai/v1/no-such-api", 404, "not_found"),
    ]
    deps.settings.replace(
        parse_settings({"providers": {"openai": {"upstream": "https://api.openai.com"}, "anthropic": {}}})
    )
    for method, path, status, _ in cases:
        flow = gateway_flow(path, method=method, headers={"X-TokenLens-Source": "passthrough-test"})
        with taddons.context(ingress):
            ingress.request(flow)
        assert flow.response is None and flow.request.host != "localhost", path  # forwarded upstream
        flow.response = http.Response.make(status, b"", {})
        recorder.response(flow)
    assert deps.writer.flush()
    calls, _ = deps.store.list_calls(source="passthrough-test")
    assert calls == []
    assert deps.passthrough.by_reason == {"method": 2, "path": 1, "not_found": 1}
    assert deps.passthrough.total == len(cases)


def test_model_listing_and_a_failed_model_call_stay_calls(deps: AppDeps) -> None:
    ingress, recorder = Ingress(deps), Recorder(deps)
    for method, path, status in (
        ("GET", "/proxy/openai/v1/models", 200),
        ("POST", "/proxy/openai/v1/chat/completions", 404),  # e.g. an unknown model: a failed call
    ):
        flow = gateway_flow(
            path, CHAT if method == "POST" else None, {"X-TokenLens-Source": "calls-test"}, method
        )
        with taddons.context(ingress):
            ingress.request(flow)
        flow.response = http.Response.make(status, b"{}", {"content-type": "application/json"})
        recorder.response(flow)
    assert deps.writer.flush()
    calls, _ = deps.store.list_calls(source="calls-test")
    assert len(calls) == 2 and deps.passthrough.total == 0
