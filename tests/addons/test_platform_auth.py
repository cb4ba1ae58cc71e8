"""The platforms on the proxy path: ingress routes `/proxy/<platform>/...` and the platforms' hosts; the
platform_auth stage signs, adds tokens, keeps client-signed requests unchanged, and fails closed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.test import taddons

from harness.deps import app_deps
from mitm_helpers import WEB_PORT, gateway_flow
from provider_sim import platforms as sim
from tokenlens.addons._flowstate import exchange_of
from tokenlens.addons.ingress import Ingress
from tokenlens.addons.platform_auth import PlatformAuth
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings

INVOKE = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "hi"}],
}
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[AppDeps]:
    settings = parse_settings({"platforms": {"bedrock": {"region": "us-east-1"}}})
    with app_deps(tmp_path, settings, prepare=None, web_port=WEB_PORT) as made:
        yield made


@pytest.fixture
def no_cloud_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-adc.json"))


async def _through(deps: AppDeps, flow: Any) -> None:
    ingress, auth = Ingress(deps), PlatformAuth(deps)
    with taddons.context(ingress, auth):
        ingress.request(flow)
        pending = auth.request(flow)
        if pending is not None:
            await pending


async def test_bedrock_base_url_call_is_routed_tagged_and_signed(
    deps: AppDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", sim.AWS_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", sim.AWS_SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    flow = gateway_flow(f"/proxy/bedrock/nightly/model/{HAIKU}/invoke-with-response-stream", INVOKE)
    await _through(deps, flow)
    req = flow.request
    assert flow.response is None
    assert (
        req.url
        == f"https://bedrock-runtime.us-east-1.amazonaws.com/model/{HAIKU}/invoke-with-response-stream"
    )
    exchange = exchange_of(flow)
    assert exchange is not None
    assert (exchange.provider, exchange.api, exchange.kind, exchange.model, exchange.source) == (
        "bedrock",
        "anthropic",
        "messages",
        HAIKU,
        "nightly",
    )
    assert exchange.stream_requested and exchange.max_tokens == 20
    headers = {k.lower(): v for k, v in req.headers.items()}
    assert sim.verify_sigv4(req.method, req.path, "", headers, req.raw_content or b"") is None


async def test_no_credentials_refuses_instead_of_sending_unsigned(
    deps: AppDeps, no_cloud_credentials: None
) -> None:
    flow = gateway_flow(f"/proxy/bedrock/model/{HAIKU}/invoke", INVOKE)
    await _through(deps, flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert b"sign" in flow.response.content
    exchange = exchange_of(flow)
    assert exchange is not None and exchange.outcome == "blocked"
    vertex = gateway_flow(
        "/proxy/vertex/v1/projects/p/locations/global/publishers/anthropic/models/claude-haiku-4-5:rawPredict",
        {"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": []},
    )
    await _through(deps, vertex)
    assert vertex.response is not None and vertex.response.status_code == 503
    assert vertex.request.headers.get("authorization") is None


async def test_a_platform_without_its_config_is_refused_with_the_key_to_set(deps: AppDeps) -> None:
    flow = gateway_flow("/proxy/azure/openai/deployments/d/chat/completions?api-version=1", {"messages": []})
    await _through(deps, flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert b"platforms.azure.resource" in flow.response.content
    assert b'"error"' in flow.response.content  # OpenAI's error format


async def test_client_bearer_credentials_pass_through(deps: AppDeps, no_cloud_credentials: None) -> None:
    flow = gateway_flow(
        f"/proxy/bedrock/model/{HAIKU}/converse", {"messages": []}, {"Authorization": "Bearer abc"}
    )
    await _through(deps, flow)
    assert flow.response is None and flow.request.headers["authorization"] == "Bearer abc"


def test_a_client_signed_request_keeps_its_signed_headers_and_is_not_changed(deps: AppDeps) -> None:
    auth_header = (
        "AWS4-HMAC-SHA256 Credential=AKID/20261207/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date;x-tokenlens-source, Signature=" + "0" * 64
    )
    host = "bedrock-runtime.us-east-1.amazonaws.com"
    headers = {
        "host": host,
        "authorization": auth_header,
        "x-amz-date": "20261207T000000Z",
        "X-TokenLens-Source": "signed-agent",
        "X-TokenLens-Tag-Team": "core",
    }
    flow = gateway_flow(f"/model/{HAIKU}/invoke", INVOKE, headers, host=host, port=443, scheme="https")
    flow.request.headers["host"] = host
    ingress, auth = Ingress(deps), PlatformAuth(deps)
    with taddons.context(ingress, auth):
        ingress.request(flow)
        assert flow.request.headers["x-tokenlens-source"] == "signed-agent"  # signed: kept
        assert "x-tokenlens-tag-team" not in flow.request.headers  # not signed: removed as usual
        exchange = exchange_of(flow)
        assert exchange is not None and exchange.mode == "proxy" and exchange.source == "signed-agent"
        assert exchange.signed_headers == {"host", "x-amz-date", "x-tokenlens-source"}
        assert auth.request(flow) is None and flow.response is None  # unchanged: it goes as it came
        flow.request.content = flow.request.content.replace(b"hi", b"[EMAIL_1]")  # a stage redacts it
        assert auth.request(flow) is None
    assert flow.response is not None and flow.response.status_code == 400
    assert b"signed by the client" in flow.response.content
