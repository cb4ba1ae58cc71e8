import json

import pytest
from mitmproxy.test import taddons

from mitm_helpers import WEB_PORT, gateway_flow
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.ingress import Ingress
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "max_tokens": 50,
}


def test_base_url_call_is_rewritten_to_the_upstream(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow(
        "/proxy/openai/nightly/v1/chat/completions?x=1",
        CHAT,
        {"X-TokenLens-Tag-Team": "core", "X-TokenLens-Session": "s-1", "Authorization": "Bearer sk-test"},
    )
    with taddons.context(ingress):
        ingress.request(flow)
    assert flow.request.url == "https://api.openai.com/v1/chat/completions?x=1"
    assert flow.request.headers["host"] == "api.openai.com"
    assert flow.request.headers["authorization"] == "Bearer sk-test"
    assert not [h for h in flow.request.headers if h.lower().startswith("x-tokenlens-")]
    exchange = exchange_of(flow)
    assert exchange is not None
    assert (exchange.provider, exchange.endpoint, exchange.kind, exchange.mode) == (
        "openai",
        "/v1/chat/completions",
        "chat",
        "base_url",
    )
    assert (exchange.source, exchange.tags, exchange.session_id) == ("nightly", {"team": "core"}, "s-1")
    assert (exchange.requested_model, exchange.stream_requested, exchange.max_tokens) == (
        "gpt-4o-mini",
        True,
        50,
    )


def test_dashboard_paths_go_to_the_web_app_with_host_kept(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow("/api/calls?limit=5", method="GET")
    with taddons.context(ingress):
        ingress.request(flow)
    assert (flow.request.host, flow.request.port, flow.request.path) == (
        "127.0.0.1",
        WEB_PORT,
        "/api/calls?limit=5",
    )
    assert flow.request.headers["host"] == "localhost:8420"
    assert exchange_of(flow) is None


def test_explicit_proxy_traffic_to_a_provider_host_is_a_call(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow("/v1/chat/completions", CHAT, host="api.openai.com", port=443, scheme="https")
    with taddons.context(ingress):
        ingress.request(flow)
    exchange = exchange_of(flow)
    assert exchange is not None and exchange.mode == "proxy" and exchange.provider == "openai"
    assert flow.request.url == "https://api.openai.com/v1/chat/completions"


def test_other_hosts_pass_untouched(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow("/proxy/openai/v1/x", CHAT, host="example.com", port=80)
    with taddons.context(ingress):
        ingress.request(flow)
    assert exchange_of(flow) is None
    assert flow.request.url == "http://example.com/proxy/openai/v1/x"


def test_unknown_provider_gets_a_404_in_openai_format(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow("/proxy/mistral/v1/chat/completions", CHAT)
    with taddons.context(ingress):
        ingress.request(flow)
    assert flow.response is not None and flow.response.status_code == 404
    error = json.loads(flow.response.content or b"")["error"]
    assert "mistral" in error["message"] and error["code"] == "unknown_provider"
    exchange = exchange_of(flow)
    assert exchange is not None and exchange.provider == "mistral"


def test_gemini_model_comes_from_the_path_and_key_is_not_kept(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow(
        "/proxy/google/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=SECRET",
        {"contents": []},
    )
    with taddons.context(ingress):
        ingress.request(flow)
    exchange = exchange_of(flow)
    assert exchange is not None
    assert (
        exchange.model == "gemini-2.5-flash"
        and exchange.kind == "stream_generate"
        and exchange.stream_requested
    )
    assert "SECRET" not in exchange.endpoint
    assert flow.request.query["key"] == "SECRET"


def test_a_body_that_is_not_json_is_forwarded_as_it_is(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow("/proxy/openai/v1/chat/completions", b"{not json")
    with taddons.context(ingress):
        ingress.request(flow)
    exchange = exchange_of(flow)
    assert exchange is not None and exchange.request_json is None and exchange.model is None
    assert flow.request.content == b"{not json"


def test_flows_already_answered_are_left_alone(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow("/proxy/openai/v1/chat/completions", CHAT)
    flow.live = False
    with taddons.context(ingress):
        ingress.request(flow)
    assert exchange_of(flow) is None and flow.request.host == "localhost"


def test_plain_http_proxying_to_port_80_still_passes(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow("/", method="GET", host="example.com", port=80)
    flow.request.headers["host"] = "example.com"
    with taddons.context(ingress):
        ingress.request(flow)
    assert flow.response is None and flow.request.host == "example.com"


def deep_body(depth: int) -> bytes:
    return (
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "j": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


def test_deep_json_is_refused_and_recorded_never_forwarded(deps: AppDeps) -> None:
    """Finding 1: 2,000 levels raised RecursionError after the rewrite, so the call went upstream ungated."""
    ingress = Ingress(deps)
    flow = gateway_flow(
        "/proxy/openai/v1/chat/completions", deep_body(2000), {"X-TokenLens-Source": "killed"}
    )
    with taddons.context(ingress):
        ingress.request(flow)
    assert flow.response is not None and flow.response.status_code == 400
    assert flow.response.headers["x-tokenlens-blocked-by"] == "request"
    assert "nested" in json.loads(flow.response.content or b"")["error"]["message"]
    exchange = exchange_of(flow)
    assert exchange is not None and exchange.outcome == "blocked" and exchange.source == "killed"
    assert flow.request.host == "localhost"  # never pointed at the upstream


def test_a_request_ingress_cannot_read_is_refused(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unexpected error while reading a request refuses it (503), it is never forwarded."""
    import tokenlens.addons.ingress as module

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "model_from_request", broken)
    ingress = Ingress(deps)
    flow = gateway_flow("/proxy/openai/v1/chat/completions", CHAT)
    with taddons.context(ingress):
        ingress.request(flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.request.host == "localhost"
    exchange = exchange_of(flow)
    assert exchange is not None and exchange.outcome == "blocked"


@pytest.mark.parametrize(
    "body", [b"\xef\xbb\xbf" + json.dumps(CHAT).encode(), json.dumps(CHAT).encode() + b"\x00"]
)
def test_json_with_a_bom_or_a_trailing_nul_is_read_for_the_gates(deps: AppDeps, body: bytes) -> None:
    """Finding 2: such a body was "not JSON", so no gate saw its model or text; it is forwarded unchanged."""
    ingress = Ingress(deps)
    flow = gateway_flow("/proxy/openai/v1/chat/completions", body)
    with taddons.context(ingress):
        ingress.request(flow)
    exchange = exchange_of(flow)
    assert exchange is not None and exchange.request_json == CHAT and exchange.model == "gpt-4o-mini"
    assert flow.request.content == body


@pytest.mark.parametrize(
    "path, kind",
    [
        ("/proxy/anthropic/V1/messages", "messages"),  # an upstream that routes case-insensitively serves it
        ("/proxy/google/models/gemini-2.0-flash:generateContent", "generate"),  # no version segment
    ],
)
def test_a_model_call_without_a_usual_version_segment_is_still_gated(
    deps: AppDeps, path: str, kind: str
) -> None:
    """A path the gateway reads as a model call is a call, so the gates check it: passing it as traffic
    outside the API would let a lenient upstream serve it ungated and unrecorded."""
    deps.settings.replace(parse_settings({"providers": {"anthropic": {}, "google": {}}}))
    ingress = Ingress(deps)
    flow = gateway_flow(path, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []})
    with taddons.context(ingress):
        ingress.request(flow)
    exchange = exchange_of(flow)
    assert exchange is not None and exchange.kind == kind
    assert exchange.is_call and "passthrough" not in exchange.details


def test_a_provider_added_after_start_is_routed(deps: AppDeps) -> None:
    """The upstreams follow the settings: a provider added while the gateway runs serves the next call."""
    ingress = Ingress(deps)
    before = gateway_flow("/proxy/mistral/v1/chat/completions", CHAT)
    with taddons.context(ingress):
        ingress.request(before)
    assert before.response is not None and before.response.status_code == 404
    deps.settings.replace(
        parse_settings({"providers": {"mistral": {"upstream": "https://api.mistral.ai", "format": "openai"}}})
    )
    after = gateway_flow("/proxy/mistral/v1/chat/completions", CHAT)
    with taddons.context(ingress):
        ingress.request(after)
    assert after.response is None
    assert after.request.url == "https://api.mistral.ai/v1/chat/completions"
    exchange = exchange_of(after)
    assert exchange is not None and exchange.provider == "mistral"
