import json

from mitmproxy.test import taddons

from mitm_helpers import WEB_PORT, gateway_flow
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.ingress import Ingress
from tokenlens.app import AppDeps

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


def test_a_foreign_host_on_the_gateway_port_is_refused(deps: AppDeps) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 reaches the gateway port with its own Host."""
    ingress = Ingress(deps)
    flow = gateway_flow("/api/calls", method="GET", host="evil.example", port=8420)
    with taddons.context(ingress):
        ingress.request(flow)
    assert flow.response is not None and flow.response.status_code == 403


def test_plain_http_proxying_to_port_80_still_passes(deps: AppDeps) -> None:
    ingress = Ingress(deps)
    flow = gateway_flow("/", method="GET", host="example.com", port=80)
    flow.request.headers["host"] = "example.com"
    with taddons.context(ingress):
        ingress.request(flow)
    assert flow.response is None and flow.request.host == "example.com"
