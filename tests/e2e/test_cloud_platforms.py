"""Azure OpenAI, Vertex AI and Bedrock through a real gateway, with the official clients (issue 23).

The module's gateway sends each platform's base-URL calls (`/proxy/azure`, `/proxy/vertex`, `/proxy/bedrock`)
to one TLS simulator (`platforms.<name>.endpoint`), which speaks each platform's wire format and checks its
auth: Bedrock requests must carry a valid SigV4 signature made with the simulator's fake AWS key, Vertex ones
the simulator's bearer token. The gateway signs Bedrock calls itself with fake credentials from its environment
(the standard AWS chain) and gets Vertex tokens from google-auth's default credentials (an `authorized_user`
file whose token endpoint is the simulator). In HTTPS_PROXY mode the real host names are intercepted and
redirected to the same simulator, the request unchanged.

Expected tokens come from the simulator's plan for the body it received; costs from the published prices in
`published_prices.py`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from harness.gateway import Gateway, start_gateway, stop_gateway
from provider_sim import Simulator
from provider_sim import platforms as sim_platforms
from published_prices import expected_cost

pytestmark = pytest.mark.e2e

KNOBS = {"x-sim-cache-read": "40", "x-sim-cache-write": "30"}
HAIKU_BEDROCK_US = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
HAIKU_BEDROCK_GLOBAL = "global.anthropic.claude-haiku-4-5-20251001-v1:0"
HAIKU_VERTEX = "claude-haiku-4-5@20251001"
USER = [{"role": "user", "content": "Say hello from the cloud platform, please."}]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    started = Simulator().start()
    yield started
    started.stop()


def service_account_file(token_uri: str) -> dict[str, str]:
    """A Google service-account key file (a fresh RSA key) whose token endpoint is the simulator's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "type": "service_account",
        "project_id": "my-project",
        "private_key_id": "sim-key-1",
        "private_key": pem.decode(),
        "client_email": "gateway@my-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("platforms-home")
    adc = home / "adc.json"
    adc.write_text(json.dumps(service_account_file(f"{sim.url}/token")))
    config = home / "config.yaml"
    config.write_text(
        f"server:\n  upstream_ca: {sim.ca_file}\n"
        "platforms:\n"
        f"  azure: {{endpoint: '{sim.https_url}'}}\n"
        f"  vertex: {{endpoint: '{sim.https_url}'}}\n"
        f"  bedrock: {{region: us-east-1, endpoint: '{sim.https_url}'}}\n"
        "guardrails: {pii_detection: {enabled: true, action: redact},"
        " response_pii_detection: {enabled: true, action: redact}}\n"
        f"routing: {{aliases: [{{from: team-haiku, to: '{HAIKU_BEDROCK_GLOBAL}'}}]}}\n"
        "quotas: {kill_switches: [stopped-agent]}\n"
    )
    env = {
        "AWS_ACCESS_KEY_ID": sim_platforms.AWS_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": sim_platforms.AWS_SECRET_KEY,
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "GOOGLE_APPLICATION_CREDENTIALS": str(adc),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        running = start_gateway(home, config, {"platforms": sim})
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


@pytest.fixture
def source(request: pytest.FixtureRequest) -> str:
    return f"cloud-{request.node.name[:40]}-{os.urandom(3).hex()}"


def _one_call(gw: Gateway, source: str) -> dict[str, Any]:
    calls = gw.wait_calls(source, count=1)
    assert len(calls) == 1, calls
    return calls[0]


def _check(call: dict[str, Any], expected: dict[str, int | None], price_key: str) -> None:
    for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        assert call[key] == (expected.get(key) or 0), (key, call, expected)
    assert call["usage_source"] == "provider"
    assert call["priced"] is True
    assert call["cost_usd"] == pytest.approx(expected_cost(price_key, expected), abs=1e-12)


# --- Azure OpenAI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_azure_openai_deployment(gw: Gateway, sim: Simulator, source: str, stream: bool) -> None:
    import openai

    client = openai.AzureOpenAI(
        azure_endpoint=f"{gw.url}/proxy/azure",
        api_key="azure-key",
        api_version="2024-10-21",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="chat-prod", messages=USER, stream=True, stream_options={"include_usage": True}
            )  # type: ignore[arg-type]
        )
        usage = chunks[-1].usage
        assert usage is not None
    else:
        answer = client.chat.completions.create(model="chat-prod", messages=USER)  # type: ignore[arg-type]
        assert answer.model == "gpt-4o-2024-11-20"
    sent = sim.last_request
    assert sent.path == "/openai/deployments/chat-prod/chat/completions"
    assert "api-version=2024-10-21" in sent.query and sent.headers["api-key"] == "azure-key"
    call = _one_call(gw, source)
    assert (call["provider"], call["response_model"], call["stream"]) == (
        "azure",
        "gpt-4o-2024-11-20",
        stream,
    )
    _check(call, sim.expected_usage("openai", "chat", sent.json()), "azure/gpt-4o")


def test_azure_stream_without_include_usage(gw: Gateway, sim: Simulator, source: str) -> None:
    """A stream the client did not ask usage for: the gateway asks for it and removes the usage chunk again
    (as for OpenAI), so the client gets the stream it asked for and the record is exact."""
    import openai

    client = openai.AzureOpenAI(
        azure_endpoint=f"{gw.url}/proxy/azure",
        api_key="azure-key",
        api_version="2024-10-21",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    chunks = list(client.chat.completions.create(model="chat-prod", messages=USER, stream=True))  # type: ignore[arg-type]
    assert chunks and all(chunk.usage is None for chunk in chunks) and all(chunk.choices for chunk in chunks)
    sent = sim.last_request
    assert sent.json()["stream_options"] == {"include_usage": True}
    call = _one_call(gw, source)
    _check(call, sim.expected_usage("openai", "chat", sent.json()), "azure/gpt-4o")


def test_azure_and_vertex_in_https_proxy_mode(
    gw: Gateway, sim: Simulator, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clients keep their real endpoints; HTTPS_PROXY mode intercepts the platforms' hosts and meters them."""
    import anthropic
    import openai

    monkeypatch.setenv("HTTPS_PROXY", gw.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(gw.ca_bundle()))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    azure = openai.AzureOpenAI(
        azure_endpoint="https://my-resource.openai.azure.com",
        api_key="azure-key",
        api_version="2024-10-21",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    azure.chat.completions.create(model="chat-prod", messages=USER)  # type: ignore[arg-type]
    azure_request = sim.last_request
    assert azure_request.headers["host"] == "my-resource.openai.azure.com"
    vertex = anthropic.AnthropicVertex(
        region="global",
        project_id="my-project",
        access_token=sim_platforms.VERTEX_TOKEN,
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    vertex.messages.create(model=HAIKU_VERTEX, max_tokens=50, messages=USER)  # type: ignore[arg-type]
    vertex_request = sim.last_request
    assert vertex_request.headers["host"] == "aiplatform.googleapis.com"
    calls = {c["provider"]: c for c in gw.wait_calls(source, count=2)}
    assert {c["mode"] for c in calls.values()} == {"proxy"}
    _check(calls["azure"], sim.expected_usage("openai", "chat", azure_request.json()), "azure/gpt-4o")
    expected = sim.expected_usage("anthropic", "messages", vertex_request.json())
    _check(calls["vertex"], expected, "vertex/claude-haiku-4-5")


def test_azure_openai_v1_api(gw: Gateway, sim: Simulator, source: str) -> None:
    import openai

    client = openai.OpenAI(
        base_url=f"{gw.url}/proxy/azure/openai/v1",
        api_key="azure-key",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    answer = client.chat.completions.create(model="mini", messages=USER)  # type: ignore[arg-type]
    assert answer.model == "gpt-4o-mini-2024-07-18"
    assert sim.last_request.path == "/openai/v1/chat/completions"
    call = _one_call(gw, source)
    assert (call["provider"], call["requested_model"]) == ("azure", "mini")
    _check(call, sim.expected_usage("openai", "chat", sim.last_request.json()), "azure/gpt-4o-mini")


@pytest.mark.parametrize("stream", [False, True])
def test_azure_openai_v1_responses(gw: Gateway, sim: Simulator, source: str, stream: bool) -> None:
    import openai

    client = openai.OpenAI(
        base_url=f"{gw.url}/proxy/azure/openai/v1",
        api_key="azure-key",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    if stream:
        events = list(client.responses.create(model="chat-prod", input="Hello Azure.", stream=True))
        assert events[-1].type == "response.completed"
    else:
        answer = client.responses.create(model="chat-prod", input="Hello Azure.")
        assert answer.model == "gpt-4o-2024-11-20"
    sent = sim.last_request
    assert sent.path == "/openai/v1/responses"
    call = _one_call(gw, source)
    assert (call["provider"], call["response_model"], call["stream"]) == (
        "azure",
        "gpt-4o-2024-11-20",
        stream,
    )
    _check(call, sim.expected_usage("openai", "responses", sent.json()), "azure/gpt-4o")


# --- Vertex AI --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_gemini_with_google_genai(gw: Gateway, sim: Simulator, source: str, stream: bool) -> None:
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    client = genai.Client(
        vertexai=True,
        project="my-project",
        location="us-central1",
        credentials=google.oauth2.credentials.Credentials(token=sim_platforms.VERTEX_TOKEN),
        http_options=types.HttpOptions(
            base_url=f"{gw.url}/proxy/vertex", headers={"X-TokenLens-Source": source}
        ),
    )
    if stream:
        chunks = list(
            client.models.generate_content_stream(model="gemini-2.5-flash", contents="Hello Vertex")
        )
        assert chunks[-1].usage_metadata is not None
    else:
        client.models.generate_content(model="gemini-2.5-flash", contents="Hello Vertex")
    sent = sim.last_request
    assert "/locations/us-central1/publishers/google/models/gemini-2.5-flash:" in sent.path
    call = _one_call(gw, source)
    assert (call["provider"], call["model"], call["stream"]) == ("vertex", "gemini-2.5-flash", stream)
    _check(call, sim.expected_usage("google", "generate", sent.json()), "vertex/gemini-2.5-flash")


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_claude_with_anthropic_vertex(gw: Gateway, sim: Simulator, source: str, stream: bool) -> None:
    import anthropic

    client = anthropic.AnthropicVertex(
        region="us-east5",
        project_id="my-project",
        access_token=sim_platforms.VERTEX_TOKEN,
        base_url=f"{gw.url}/proxy/vertex/v1",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source, **KNOBS},
    )
    if stream:
        with client.messages.stream(model=HAIKU_VERTEX, max_tokens=100, messages=USER) as events:  # type: ignore[arg-type]
            events.get_final_message()
    else:
        client.messages.create(model=HAIKU_VERTEX, max_tokens=100, messages=USER)  # type: ignore[arg-type]
    sent = sim.last_request
    method = "streamRawPredict" if stream else "rawPredict"
    assert sent.path.endswith(f"/publishers/anthropic/models/{HAIKU_VERTEX}:{method}")
    call = _one_call(gw, source)
    assert (call["provider"], call["model"], call["stream"]) == ("vertex", HAIKU_VERTEX, stream)
    expected = sim.expected_usage("anthropic", "messages", sent.json(), KNOBS)
    assert expected["cache_read_tokens"] and expected["cache_write_tokens"]
    _check(call, expected, "vertex/regional/claude-haiku-4-5")  # us-east5: Vertex's regional price


def test_vertex_token_added_by_the_gateway(gw: Gateway, sim: Simulator, source: str) -> None:
    """No Authorization from the client (Claude Code's CLAUDE_CODE_SKIP_VERTEX_AUTH): the gateway adds a token
    from google-auth's default credentials; the simulator only answers with that token."""
    body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 50, "messages": USER}
    path = f"/v1/projects/p/locations/global/publishers/anthropic/models/{HAIKU_VERTEX}:rawPredict"
    response = httpx.post(f"{gw.url}/proxy/vertex{path}", json=body, headers={"X-TokenLens-Source": source})
    assert response.status_code == 200, response.text
    assert sim.last_request.headers["authorization"] == f"Bearer {sim_platforms.VERTEX_TOKEN}"
    call = _one_call(gw, source)
    _check(call, sim.expected_usage("anthropic", "messages", body), "vertex/claude-haiku-4-5")


# --- Bedrock ------------------------------------------------------------------------------------------------


def _unsigned_bedrock(gw: Gateway, source: str) -> Any:
    """AnthropicBedrock with client signing off, as CLAUDE_CODE_SKIP_BEDROCK_AUTH does: the gateway signs."""
    import anthropic

    class Unsigned(anthropic.AnthropicBedrock):
        def _prepare_request(self, request: Any) -> None:
            return None

    return Unsigned(
        aws_region="us-east-1",
        base_url=f"{gw.url}/proxy/bedrock",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source, **KNOBS},
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", [HAIKU_BEDROCK_US, HAIKU_BEDROCK_GLOBAL])
def test_bedrock_invoke_signed_by_the_gateway(
    gw: Gateway, sim: Simulator, source: str, stream: bool, model: str
) -> None:
    client = _unsigned_bedrock(gw, source)
    if stream:
        with client.messages.stream(model=model, max_tokens=100, messages=USER) as events:
            final = events.get_final_message()
    else:
        final = client.messages.create(model=model, max_tokens=100, messages=USER)
    sent = sim.last_request
    action = "invoke-with-response-stream" if stream else "invoke"
    assert sent.path == f"/model/{model}/{action}"
    assert sent.headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=" + sim_platforms.AWS_ACCESS_KEY
    )
    assert final.usage.output_tokens > 0
    call = _one_call(gw, source)
    assert (call["provider"], call["model"], call["stream"]) == ("bedrock", model, stream)
    assert call["response_model"] == "claude-haiku-4-5-20251001"
    region = "global" if model.startswith("global.") else "regional"
    expected = sim.expected_usage("anthropic", "messages", {**sent.json(), "model": model}, KNOBS)
    _check(call, expected, f"bedrock/{region}/claude-haiku-4-5")


@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_converse_signed_by_the_gateway(
    gw: Gateway, sim: Simulator, source: str, stream: bool
) -> None:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"{gw.url}/proxy/bedrock",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )

    def tag(request: Any, **_: Any) -> None:
        request.headers["X-TokenLens-Source"] = source
        for key, value in KNOBS.items():
            request.headers[key] = value

    client.meta.events.register("before-send.bedrock-runtime.*", tag)
    kwargs: dict[str, Any] = {
        "modelId": HAIKU_BEDROCK_US,
        "messages": [{"role": "user", "content": [{"text": "Hello from Converse."}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 200},
    }
    if stream:
        events = list(client.converse_stream(**kwargs)["stream"])
        usage = events[-1]["metadata"]["usage"]
    else:
        usage = client.converse(**kwargs)["usage"]
    sent = sim.last_request
    assert unquote(sent.path) == f"/model/{HAIKU_BEDROCK_US}/{'converse-stream' if stream else 'converse'}"
    p = sim.plan("anthropic", "messages", sim_platforms.converse_as_messages(sent.json()), KNOBS)
    assert usage["inputTokens"] == p.prompt and usage["cacheReadInputTokens"] == p.cache_read
    call = _one_call(gw, source)
    assert (call["provider"], call["model"], call["stream"], call["max_tokens"]) == (
        "bedrock",
        HAIKU_BEDROCK_US,
        stream,
        200,
    )
    expected = p.normalized()
    expected["cache_write_5m_tokens"] = expected["cache_write_tokens"]
    _check(call, expected, "bedrock/regional/claude-haiku-4-5")


def test_a_request_signed_for_the_gateway_is_refused(gw: Gateway, sim: Simulator, source: str) -> None:
    import anthropic

    client = anthropic.AnthropicBedrock(
        aws_access_key=sim_platforms.AWS_ACCESS_KEY,
        aws_secret_key=sim_platforms.AWS_SECRET_KEY,
        aws_region="us-east-1",
        base_url=f"{gw.url}/proxy/bedrock",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
    )
    before = len(sim.requests)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=HAIKU_BEDROCK_US, max_tokens=10, messages=USER)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "HTTPS_PROXY" in message and "CLAUDE_CODE_SKIP_BEDROCK_AUTH" in message
    assert len(sim.requests) == before
    call = _one_call(gw, source)
    assert (call["outcome"], call["provider"]) == ("blocked", "bedrock")


def test_boto3_gets_bedrocks_error_format(gw: Gateway, sim: Simulator, source: str) -> None:
    """A refusal on a Bedrock route is written as Bedrock writes errors, so boto3 raises its usual ClientError
    with the exception's name and the message (here: a request signed for the gateway's own address)."""
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"{gw.url}/proxy/bedrock",
        aws_access_key_id=sim_platforms.AWS_ACCESS_KEY,
        aws_secret_access_key=sim_platforms.AWS_SECRET_KEY,
    )
    client.meta.events.register(
        "before-sign.bedrock-runtime.*",
        lambda request, **_: request.headers.__setitem__("X-TokenLens-Source", source),
    )
    before = len(sim.requests)
    with pytest.raises(ClientError) as raised:
        client.converse(modelId=HAIKU_BEDROCK_US, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "HTTPS_PROXY" in error["Message"] and "CLAUDE_CODE_SKIP_BEDROCK_AUTH" in error["Message"]
    assert len(sim.requests) == before
    assert _one_call(gw, source)["outcome"] == "blocked"


def test_gates_apply_in_both_modes(gw: Gateway, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill switch refuses Bedrock calls signed by the gateway (boto3 gets AccessDeniedException) and calls the
    client signed in HTTPS_PROXY mode (the Anthropic SDK gets its PermissionDeniedError); nothing goes upstream."""
    import anthropic
    import boto3
    import httpx2
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    before = len(sim.requests)
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"{gw.url}/proxy/bedrock",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    client.meta.events.register(
        "before-send.bedrock-runtime.*",
        lambda request, **_: request.headers.__setitem__("X-TokenLens-Source", "stopped-agent"),
    )
    with pytest.raises(ClientError) as raised:
        client.converse(modelId=HAIKU_BEDROCK_US, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    monkeypatch.setenv("HTTPS_PROXY", gw.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    signed = anthropic.AnthropicBedrock(
        aws_access_key=sim_platforms.AWS_ACCESS_KEY,
        aws_secret_key=sim_platforms.AWS_SECRET_KEY,
        aws_region="us-east-1",
        max_retries=0,
        default_headers={"X-TokenLens-Source": "stopped-agent"},
        http_client=httpx2.Client(verify=str(gw.ca_bundle())),
    )
    with pytest.raises(anthropic.PermissionDeniedError):
        signed.messages.create(model=HAIKU_BEDROCK_US, max_tokens=10, messages=USER)  # type: ignore[arg-type]
    assert len(sim.requests) == before
    records = gw.wait_calls("stopped-agent", count=2)
    assert [(r["outcome"], r["blocked_by"], r["mode"]) for r in records] == [
        ("blocked", "kill_switch", "base_url"),
        ("blocked", "kill_switch", "proxy"),
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_signed_by_the_client_in_https_proxy_mode(
    gw: Gateway, sim: Simulator, source: str, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """The client signs for the real Bedrock host; the gateway meters the call and relays it unchanged: the
    simulator receives exactly the bytes the client sent, and its signature check passes."""
    import anthropic
    import httpx2

    monkeypatch.setenv("HTTPS_PROXY", gw.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(gw.ca_bundle()))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sent: list[Any] = []
    client = anthropic.AnthropicBedrock(
        aws_access_key=sim_platforms.AWS_ACCESS_KEY,
        aws_secret_key=sim_platforms.AWS_SECRET_KEY,
        aws_region="us-east-1",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source, **KNOBS},
        http_client=httpx2.Client(verify=str(gw.ca_bundle()), event_hooks={"request": [sent.append]}),
    )
    if stream:
        with client.messages.stream(model=HAIKU_BEDROCK_US, max_tokens=100, messages=USER) as events:  # type: ignore[arg-type]
            final = events.get_final_message()
    else:
        final = client.messages.create(model=HAIKU_BEDROCK_US, max_tokens=100, messages=USER)  # type: ignore[arg-type]
    assert final.usage.output_tokens > 0
    received = sim.last_request
    original = sent[-1]
    assert received.path == original.url.raw_path.decode().partition("?")[0]
    assert received.path.endswith("/invoke-with-response-stream" if stream else "/invoke")
    assert received.body == original.content
    assert {k.lower(): v for k, v in original.headers.items()} == received.headers  # every header, as sent
    assert received.headers["host"] == "bedrock-runtime.us-east-1.amazonaws.com"
    signed = original.headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "x-tokenlens-source" in signed
    for name in signed:
        assert received.headers[name] == original.headers[name], name
    assert received.headers["authorization"] == original.headers["authorization"]
    problem = sim_platforms.verify_sigv4(
        received.method, received.path, received.query, received.headers, received.body
    )
    assert problem is None
    call = _one_call(gw, source)
    assert (call["provider"], call["mode"], call["model"], call["stream"]) == (
        "bedrock",
        "proxy",
        HAIKU_BEDROCK_US,
        stream,
    )
    expected = sim.expected_usage("anthropic", "messages", {**received.json(), "model": "x"}, KNOBS)
    _check(call, expected, "bedrock/regional/claude-haiku-4-5")


PII = [{"role": "user", "content": "Write to jane.doe@example.com about the invoice."}]


def test_the_gateway_signs_after_redaction(gw: Gateway, sim: Simulator, source: str) -> None:
    """Base-URL mode with client signing off: redaction changes the body, then the gateway signs what is sent."""
    client = _unsigned_bedrock(gw, source)
    client.messages.create(model=HAIKU_BEDROCK_US, max_tokens=50, messages=PII)
    sent = sim.last_request
    assert b"jane.doe@example.com" not in sent.body
    assert sim_platforms.verify_sigv4(sent.method, sent.path, sent.query, sent.headers, sent.body) is None
    call = _one_call(gw, source)
    assert call["outcome"] == "ok" and call["guardrail_flags"]


def test_a_client_signed_request_is_never_changed(
    gw: Gateway, sim: Simulator, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY mode: redaction would break the client's signature, so the call is refused (in the
    provider's format, with a message saying why and what to do), never sent changed."""
    import anthropic
    import httpx2

    monkeypatch.setenv("HTTPS_PROXY", gw.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = anthropic.AnthropicBedrock(
        aws_access_key=sim_platforms.AWS_ACCESS_KEY,
        aws_secret_key=sim_platforms.AWS_SECRET_KEY,
        aws_region="us-east-1",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
        http_client=httpx2.Client(verify=str(gw.ca_bundle())),
    )
    before = len(sim.requests)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=HAIKU_BEDROCK_US, max_tokens=50, messages=PII)  # type: ignore[arg-type]
    assert "signed by the client" in str(raised.value) and "CLAUDE_CODE_SKIP_BEDROCK_AUTH" in str(
        raised.value
    )
    assert len(sim.requests) == before
    call = _one_call(gw, source)
    assert (call["outcome"], call["mode"], call["provider"]) == ("blocked", "proxy", "bedrock")


def test_routing_rewrites_the_bedrock_path_before_the_gateway_signs(
    gw: Gateway, sim: Simulator, source: str
) -> None:
    """An alias on Bedrock: the model is in the path, so routing rewrites the path (never adds a body `model`,
    which Bedrock refuses), and the gateway signs the routed request."""
    client = _unsigned_bedrock(gw, source)
    client.messages.create(model="team-haiku", max_tokens=50, messages=USER)
    sent = sim.last_request
    assert sent.path == f"/model/{HAIKU_BEDROCK_GLOBAL}/invoke" and "model" not in sent.json()
    call = _one_call(gw, source)
    assert (call["requested_model"], call["model"], call["endpoint"]) == (
        "team-haiku",
        HAIKU_BEDROCK_GLOBAL,
        f"/model/{HAIKU_BEDROCK_GLOBAL}/invoke",
    )
    expected = sim.expected_usage("anthropic", "messages", {**sent.json(), "model": "m"}, KNOBS)
    _check(call, expected, "bedrock/global/claude-haiku-4-5")


def test_a_client_signed_request_is_not_routed(
    gw: Gateway, sim: Simulator, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anthropic
    import httpx2

    monkeypatch.setenv("HTTPS_PROXY", gw.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = anthropic.AnthropicBedrock(
        aws_access_key=sim_platforms.AWS_ACCESS_KEY,
        aws_secret_key=sim_platforms.AWS_SECRET_KEY,
        aws_region="us-east-1",
        max_retries=0,
        default_headers={"X-TokenLens-Source": source},
        http_client=httpx2.Client(verify=str(gw.ca_bundle())),
    )
    before = len(sim.requests)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="team-haiku", max_tokens=50, messages=USER)
    assert "signed by the client" in str(raised.value) and "routing" in str(raised.value)
    assert len(sim.requests) == before
    assert _one_call(gw, source)["outcome"] == "blocked"


def test_config_needs_no_platform_for_other_providers(tmp_path: Path) -> None:
    """A platform name a user gave to a provider of their own keeps its meaning (their provider wins)."""
    from tokenlens.addons._platforms import base_url_platform

    assert base_url_platform("/proxy/azure/openai/v1/chat/completions", {}) == "azure"
    assert base_url_platform("/proxy/azure/v1/chat/completions", {"azure": object()}) is None


# --- Claude Code on Bedrock and on Vertex, through the gateway ---------------------------------------------------

CLAUDE_QUIET = {
    "DISABLE_TELEMETRY": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}


def _claude(gw: Gateway, sim: Simulator, tmp: Path, env: dict[str, str]) -> tuple[Any, list[Any]]:
    import subprocess

    from harness.agents import require_agents

    agents = require_agents()
    home = tmp / "home"
    home.mkdir()
    start = len(sim.requests)
    sim.set_default_headers(KNOBS)  # cached prefixes on every answer: cache reads and writes metered too
    try:
        done = subprocess.run(
            [str(agents.claude), "-p", "Say hi in one short sentence.", "--output-format", "json"],
            env={"PATH": agents.path_env(), "HOME": str(home), **CLAUDE_QUIET, **env},
            cwd=tmp,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=90,
        )
    finally:
        sim.set_default_headers({})
    return done, list(sim.requests)[start:]


def _claude_model_calls(sim: Simulator, requests: list[Any], suffix: str) -> list[Any]:
    return [r for r in requests if r.method == "POST" and unquote(r.path).endswith(suffix)]


def test_claude_code_on_bedrock_is_metered(gw: Gateway, sim: Simulator, tmp_path: Path) -> None:
    """CLAUDE_CODE_USE_BEDROCK=1 with the gateway as ANTHROPIC_BEDROCK_BASE_URL and client signing skipped: the
    gateway signs each call (the simulator refuses unsigned ones) and meters it exactly, at Bedrock's prices
    for the model id Claude Code calls (a "us." geographic profile: the regional price)."""
    done, requests = _claude(
        gw,
        sim,
        tmp_path,
        {
            "CLAUDE_CODE_USE_BEDROCK": "1",
            "ANTHROPIC_BEDROCK_BASE_URL": f"{gw.url}/proxy/bedrock",
            "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1",
            "AWS_REGION": "us-east-1",
            "ANTHROPIC_MODEL": HAIKU_BEDROCK_US,
        },
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["is_error"] is False
    calls = _claude_model_calls(sim, requests, "/invoke-with-response-stream")
    assert calls, [r.path for r in requests]
    records = _records_of(gw, "claude-code", len(calls), "bedrock")
    assert len(records) == len(calls)
    for req, record in zip(calls, records, strict=True):
        assert req.headers["authorization"].startswith(
            "AWS4-HMAC-SHA256 Credential=" + sim_platforms.AWS_ACCESS_KEY
        )
        assert (record["model"], record["stream"], record["source"]) == (
            HAIKU_BEDROCK_US,
            True,
            "claude-code",
        )
        expected = sim.expected_usage(
            "anthropic", "messages", {**req.json(), "model": "m"}, {**KNOBS, **req.headers}
        )
        assert expected["cache_read_tokens"] and expected["cache_write_tokens"]
        _check(record, expected, "bedrock/regional/claude-haiku-4-5")
    _same_totals_as_claude_code(json.loads(done.stdout), records)


def test_claude_code_on_vertex_is_metered(gw: Gateway, sim: Simulator, tmp_path: Path) -> None:
    """CLAUDE_CODE_USE_VERTEX=1 with the gateway as ANTHROPIC_VERTEX_BASE_URL and client auth skipped: the gateway
    adds the token (google-auth default credentials) and meters each call, at Vertex's price for the region
    called (us-east5: regional, 10% above the global price for Claude 4.5 models)."""
    done, requests = _claude(
        gw,
        sim,
        tmp_path,
        {
            "CLAUDE_CODE_USE_VERTEX": "1",
            "ANTHROPIC_VERTEX_BASE_URL": f"{gw.url}/proxy/vertex/v1",
            "CLAUDE_CODE_SKIP_VERTEX_AUTH": "1",
            "ANTHROPIC_VERTEX_PROJECT_ID": "my-project",
            "CLOUD_ML_REGION": "us-east5",
            "ANTHROPIC_MODEL": HAIKU_VERTEX,
        },
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["is_error"] is False
    calls = _claude_model_calls(sim, requests, ":streamRawPredict")
    assert calls, [r.path for r in requests]
    records = _records_of(gw, "claude-code", len(calls), "vertex")
    assert len(records) == len(calls)
    for req, record in zip(calls, records, strict=True):
        assert "/locations/us-east5/" in req.path
        assert req.headers["authorization"] == f"Bearer {sim_platforms.VERTEX_TOKEN}"
        assert (record["model"], record["stream"], record["source"]) == (HAIKU_VERTEX, True, "claude-code")
        expected = sim.expected_usage(
            "anthropic", "messages", {**req.json(), "model": "m"}, {**KNOBS, **req.headers}
        )
        assert expected["cache_read_tokens"] and expected["cache_write_tokens"]
        _check(record, expected, "vertex/regional/claude-haiku-4-5")
    _same_totals_as_claude_code(json.loads(done.stdout), records)


def _same_totals_as_claude_code(result: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Claude Code's own usage totals (`--output-format json`) are the records' (its input is the uncached
    part, ours all input)."""
    usage = result["usage"]
    read = sum(r["cache_read_tokens"] for r in records)
    write = sum(r["cache_write_tokens"] for r in records)
    assert usage["input_tokens"] == sum(r["input_tokens"] for r in records) - read - write
    assert usage["output_tokens"] == sum(r["output_tokens"] for r in records)
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (read, write)


def _records_of(gw: Gateway, source: str, count: int, provider: str) -> list[dict[str, Any]]:
    """The newest `count` records of `source` on `provider`, oldest first."""
    deadline = time.monotonic() + 15
    while True:
        found = [c for c in gw.calls(source=source, limit=1000) if c["provider"] == provider]
        if len(found) >= count or time.monotonic() > deadline:
            return list(reversed(found[:count]))
        time.sleep(0.1)


@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_invoke_of_another_model_uses_bedrocks_counts(
    gw: Gateway, sim: Simulator, source: str, stream: bool
) -> None:
    """Llama on InvokeModel has its own body: the tokens come from Bedrock's count headers (non-streamed) or the
    stream's invocation metrics; priced at Bedrock's Llama 3.1 8B rate ($0.22 in and out per million,
    aws.amazon.com/bedrock/pricing)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"{gw.url}/proxy/bedrock",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    client.meta.events.register(
        "before-send.bedrock-runtime.*",
        lambda request, **_: request.headers.__setitem__("X-TokenLens-Source", source),
    )
    body = json.dumps({"prompt": "Tell me about llamas in two lines.", "max_gen_len": 64})
    model = "meta.llama3-1-8b-instruct-v1:0"
    if stream:
        chunks = list(client.invoke_model_with_response_stream(modelId=model, body=body)["body"])
        assert len(chunks) > 1
    else:
        json.loads(client.invoke_model(modelId=model, body=body)["body"].read())
    p = sim.plan("anthropic", "messages", sim_platforms.llama_as_messages(json.loads(body)))
    call = _one_call(gw, source)
    assert (call["provider"], call["model"], call["stream"]) == ("bedrock", model, stream)
    assert (call["input_tokens"], call["output_tokens"]) == (p.prompt, p.output_tokens)
    assert call["cost_usd"] == pytest.approx((p.prompt + p.output_tokens) * 0.22 / 1_000_000, abs=1e-12)
    assert str(call["request_id"]).startswith("req_011Sim")  # the answer's x-amzn-RequestId


def _guardrails(gw: Gateway, body: dict[str, Any]) -> None:
    response = httpx.put(f"{gw.url}/api/config/guardrails", json=body, timeout=10)
    assert response.status_code == 200, response.text


def test_response_guardrails_on_bedrock_event_streams(gw: Gateway, sim: Simulator, source: str) -> None:
    """Bedrock's streamed answers are scanned inside their event-stream frames: `redact` rewrites the text in
    re-encoded frames the SDKs accept, `block` ends the stream with an exception frame the SDKs raise."""
    import anthropic
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import EventStreamError

    original = httpx.get(f"{gw.url}/api/config/guardrails", timeout=10).json()

    def rule(action: str) -> dict[str, Any]:
        return {
            "response_pii_detection": {"enabled": True, "action": "warn"},
            "custom_rules": [{"name": "lazy-dog", "pattern": "lazy dog", "action": action}],
        }

    client = _unsigned_bedrock(gw, source)
    converse = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"{gw.url}/proxy/bedrock",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    converse.meta.events.register(
        "before-send.bedrock-runtime.*",
        lambda request, **_: request.headers.__setitem__("X-TokenLens-Source", source),
    )
    message = [{"role": "user", "content": [{"text": "Say the sentence."}]}]

    def converse_text() -> str:
        events = converse.converse_stream(modelId=HAIKU_BEDROCK_US, messages=message)["stream"]
        return "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)

    def invoke_text() -> str:
        with client.messages.stream(model=HAIKU_BEDROCK_US, max_tokens=100, messages=USER) as events:
            return "".join(events.text_stream)

    try:
        _guardrails(gw, rule("redact"))
        for text in (invoke_text(), converse_text()):
            assert (
                "lazy dog" not in text and "[LAZY_DOG_1]" in text and text.startswith("The quick brown fox")
            )
        _guardrails(gw, rule("block"))
        with pytest.raises(anthropic.APIStatusError, match="lazy-dog"):
            invoke_text()
        with pytest.raises(EventStreamError, match="lazy-dog"):
            converse_text()
    finally:
        _guardrails(gw, original)
    records = gw.wait_calls(source, count=4)
    assert [(r["outcome"], r["blocked_by"]) for r in records] == [
        ("ok", None),
        ("ok", None),
        ("blocked", "guardrail"),
        ("blocked", "guardrail"),
    ]
    assert all(r["output_tokens"] > 0 and r["stream"] for r in records)  # the upstream answered: metered
