"""tokenlens.platforms: paths, hosts, upstreams, client signatures, the event-stream decoder, Bedrock usage,
gateway signing, and pricing on each platform (issue 23)."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from decimal import Decimal

import pytest

from provider_sim import platforms as sim
from published_prices import PRICES
from tokenlens.config import parse_settings
from tokenlens.platforms import (
    PlatformNotConfigured,
    base_url_upstream,
    client_signature,
    parse_path,
    platform_of_host,
    proxy_platform,
    split_base_url_path,
)
from tokenlens.platforms.auth import AwsSigner
from tokenlens.platforms.bedrock import (
    converse_body_usage,
    summarize_converse_stream,
    summarize_invoke_stream,
)
from tokenlens.platforms.eventstream import EventStreamDecoder, EventStreamError, encode_message
from tokenlens.platforms.metering import adjust_price, body_usage, pricing_models
from tokenlens.pricing import Pricer
from tokenlens.usage import Usage

# --- paths ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "path", "api", "wire", "kind", "model", "stream"),
    [
        (
            "azure",
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
            "openai",
            "openai",
            "chat",
            None,
            False,
        ),
        ("azure", "/openai/deployments/emb/embeddings", "openai", "openai", "embeddings", None, False),
        ("azure", "/openai/v1/responses", "openai", "openai", "responses", None, False),
        ("azure", "/openai/v1/models", "openai", "openai", "other", None, False),
        (
            "vertex",
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
            "google",
            "google",
            "stream_generate",
            "gemini-2.5-flash",
            True,
        ),
        (
            "vertex",
            "/v1beta1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:generateContent",
            "google",
            "google",
            "generate",
            "gemini-2.5-pro",
            False,
        ),
        (
            "vertex",
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-haiku-4-5@20251001:rawPredict",
            "anthropic",
            "anthropic",
            "messages",
            "claude-haiku-4-5@20251001",
            False,
        ),
        (
            "vertex",
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-opus-4-8:streamRawPredict",
            "anthropic",
            "anthropic",
            "messages",
            "claude-opus-4-8",
            True,
        ),
        (
            "vertex",
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict",
            "anthropic",
            "anthropic",
            "count_tokens",
            None,
            False,
        ),
        (
            "bedrock",
            "/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/invoke",
            "anthropic",
            "bedrock_invoke",
            "messages",
            "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            False,
        ),
        (
            "bedrock",
            "/model/anthropic.claude-opus-4-8-v1%3A0/invoke-with-response-stream",
            "anthropic",
            "bedrock_invoke",
            "messages",
            "anthropic.claude-opus-4-8-v1:0",
            True,
        ),
        (
            "bedrock",
            "/model/global.anthropic.claude-opus-4-8-v1:0/converse",
            "anthropic",
            "bedrock_converse",
            "messages",
            "global.anthropic.claude-opus-4-8-v1:0",
            False,
        ),
        ("bedrock", "/model/x/converse-stream", "anthropic", "bedrock_converse", "messages", "x", True),
        ("bedrock", "/guardrail/g1/version/1/apply", "anthropic", "bedrock_invoke", "other", None, False),
    ],
)
def test_paths(
    provider: str, path: str, api: str, wire: str, kind: str, model: str | None, stream: bool
) -> None:
    call = parse_path(provider, path)  # type: ignore[arg-type]
    assert (call.api, call.wire, call.kind, call.model, call.stream) == (api, wire, kind, model, stream)


def test_azure_deployment_is_not_a_model_and_arn_ids_are_decoded() -> None:
    call = parse_path("azure", "/openai/deployments/my%20dep/chat/completions")
    assert (call.deployment, call.model) == ("my dep", None)
    arn = (
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0"
    )
    encoded = arn.replace(":", "%3A").replace("/", "%2F")
    assert parse_path("bedrock", f"/model/{encoded}/invoke").model == arn


def test_base_url_path_tags() -> None:
    assert split_base_url_path("/ci/model/x/invoke") == ("ci", "/model/x/invoke")
    assert split_base_url_path("/model/x/invoke") == (None, "/model/x/invoke")
    assert split_base_url_path("/team-a/openai/deployments/d/chat/completions?api-version=1") == (
        "team-a",
        "/openai/deployments/d/chat/completions?api-version=1",
    )
    assert split_base_url_path("/v1/projects/p/locations/l") == (None, "/v1/projects/p/locations/l")
    assert split_base_url_path("/bot/v1beta1/projects/p")[0] == "bot"


# --- hosts and upstreams -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "platform"),
    [
        ("myres.openai.azure.com", 443, "azure"),
        ("MyRes.OpenAI.Azure.com", 443, "azure"),
        ("us-east5-aiplatform.googleapis.com", 443, "vertex"),
        ("aiplatform.googleapis.com", 443, "vertex"),
        ("bedrock-runtime.eu-west-3.amazonaws.com", 443, "bedrock"),
        ("bedrock-runtime-fips.us-east-1.amazonaws.com", 443, "bedrock"),
        ("bedrock.us-east-1.amazonaws.com", 443, None),  # the control plane: not model calls
        ("openai.azure.com.evil.example", 443, None),
        ("myres.openai.azure.com", 8443, None),
        ("generativelanguage.googleapis.com", 443, None),
    ],
)
def test_platform_hosts(host: str, port: int, platform: str | None) -> None:
    assert platform_of_host(host, port) == platform


def test_upstreams_from_config() -> None:
    def upstream(provider: str, path: str, config: dict[str, object]) -> str:
        settings = parse_settings({"platforms": config})
        return base_url_upstream(provider, parse_path(provider, path), settings.platforms)  # type: ignore[arg-type]

    gemini = "/v1/projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    assert (
        upstream("azure", "/openai/v1/responses", {"azure": {"resource": "acme"}})
        == "https://acme.openai.azure.com"
    )
    assert upstream("vertex", gemini, {}) == "https://europe-west4-aiplatform.googleapis.com"
    assert (
        upstream("vertex", gemini.replace("europe-west4", "global"), {})
        == "https://aiplatform.googleapis.com"
    )
    assert (
        upstream("vertex", gemini, {"vertex": {"region": "us-east5"}})
        == "https://us-east5-aiplatform.googleapis.com"
    )
    assert upstream("bedrock", "/model/x/invoke", {"bedrock": {"region": "eu-west-3"}}) == (
        "https://bedrock-runtime.eu-west-3.amazonaws.com"
    )
    assert (
        upstream("bedrock", "/model/x/invoke", {"bedrock": {"endpoint": "http://127.0.0.1:9/"}})
        == "http://127.0.0.1:9"
    )
    for provider, path in (("azure", "/openai/v1/responses"), ("bedrock", "/model/x/invoke")):
        with pytest.raises(PlatformNotConfigured, match=f"platforms.{provider}"):
            upstream(provider, path, {})


def test_a_redirected_platform_host_is_known_by_its_host_header() -> None:
    platforms = parse_settings({"platforms": {"bedrock": {"endpoint": "https://127.0.0.1:4443"}}}).platforms
    host = "bedrock-runtime.us-east-1.amazonaws.com"
    assert proxy_platform(host, 443, host, platforms) == "bedrock"
    assert proxy_platform("127.0.0.1", 4443, host, platforms) == "bedrock"
    assert proxy_platform("127.0.0.1", 4444, host, platforms) is None  # not the configured endpoint
    assert proxy_platform("evil.example", 443, host, platforms) is None


# --- client signatures ----------------------------------------------------------------------------------------------


def test_client_signature() -> None:
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKID/20261207/us-west-2/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;X-TokenLens-Source, Signature=" + "a" * 64
    )
    signature = client_signature({"authorization": auth})
    assert signature is not None
    assert signature.signed_headers == {"content-type", "host", "x-amz-date", "x-tokenlens-source"}
    assert (signature.region, signature.service) == ("us-west-2", "bedrock")
    presigned = client_signature(
        {}, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host&X-Amz-Signature=ab"
    )
    assert presigned is not None and presigned.signed_headers == {"host"}
    assert client_signature({"authorization": "Bearer bedrock-api-key"}) is None


def test_gateway_signature_verifies_and_covers_the_body() -> None:
    """botocore's signature (the gateway's) passes the simulator's independent SigV4 check; any change to the
    body or a signed header after signing fails it."""
    from botocore.credentials import Credentials

    creds = Credentials(sim.AWS_ACCESS_KEY, sim.AWS_SECRET_KEY).get_frozen_credentials()
    body = b'{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[]}'
    path = "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"
    headers = {"host": "127.0.0.1:4443", "content-type": "application/json", "connection": "keep-alive"}
    signed = AwsSigner.sign("POST", f"https://127.0.0.1:4443{path}", headers, body, "us-east-1", creds)
    received = {**headers, **signed}
    assert sim.verify_sigv4("POST", path, "", received, body) is None
    assert sim.verify_sigv4("POST", path, "", received, body + b" ") is not None
    assert sim.verify_sigv4("POST", path, "", {**received, "content-type": "text/plain"}, body) is not None
    assert "connection" not in signed["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")


# --- event-stream framing ------------------------------------------------------------------------------------------


def _frames() -> bytes:
    return b"".join(
        encode_message({":event-type": "chunk", ":message-type": "event"}, json.dumps({"n": i}).encode())
        for i in range(5)
    )


def test_decoder_reads_messages_split_anywhere() -> None:
    data = _frames()
    for size in (1, 3, 7, 16, len(data)):
        decoder = EventStreamDecoder()
        got = [m for i in range(0, len(data), size) for m in decoder.feed(data[i : i + size])]
        assert [json.loads(m.payload)["n"] for m in got] == [0, 1, 2, 3, 4]
        assert all(m.event_type == "chunk" for m in got) and decoder.pending == 0


def test_decoder_agrees_with_the_simulators_encoder_and_botocore() -> None:
    from botocore.eventstream import EventStreamBuffer

    data = sim.event("metadata", {"usage": {"inputTokens": 3}}) + sim.event(
        "messageStop", {"stopReason": "x"}
    )
    ours = list(EventStreamDecoder().feed(data))
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    theirs = list(buffer)
    assert [m.payload for m in ours] == [m.payload for m in theirs]
    assert [m.headers for m in ours] == [m.headers for m in theirs]


def test_decoder_checks_crcs_and_bounds() -> None:
    frame = encode_message({":event-type": "chunk"}, b"{}")
    broken_payload = frame[:-6] + b"X" + frame[-5:]
    with pytest.raises(EventStreamError, match="message CRC"):
        list(EventStreamDecoder().feed(broken_payload))
    broken_prelude = frame[:4] + b"\x00\x00\x00\x09" + frame[8:]
    with pytest.raises(EventStreamError, match="prelude CRC"):
        list(EventStreamDecoder().feed(broken_prelude))
    huge = struct.pack(">II", 50_000_000, 0)
    huge += struct.pack(">I", zlib.crc32(huge))
    with pytest.raises(EventStreamError, match="out of bounds"):
        list(EventStreamDecoder(max_message=1_000_000).feed(huge))
    decoder = EventStreamDecoder()
    assert list(decoder.feed(frame[:10])) == [] and decoder.pending == 10  # waits for the rest


# --- Bedrock usage ---------------------------------------------------------------------------------------------


def test_converse_usage_counts_cache_as_input() -> None:
    body = json.dumps(
        {"usage": {"inputTokens": 4, "outputTokens": 62, "totalTokens": 1568, "cacheReadInputTokens": 1502}}
    ).encode()
    usage = converse_body_usage(body)
    assert usage == Usage(input_tokens=1506, output_tokens=62, cache_read_tokens=1502)
    assert converse_body_usage(b'{"output": {}}') is None
    assert converse_body_usage(b"not json") is None


def test_converse_stream_usage_from_metadata() -> None:
    events = [
        sim.event("messageStart", {"role": "assistant"}),
        sim.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}}),
        sim.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " there"}}),
        sim.event("messageStop", {"stopReason": "end_turn"}),
        sim.event("metadata", {"usage": {"inputTokens": 10, "outputTokens": 2, "cacheWriteInputTokens": 5}}),
    ]
    data = b"".join(events)
    summary = summarize_converse_stream([data[i : i + 9] for i in range(0, len(data), 9)])
    assert summary.usage == Usage(input_tokens=15, output_tokens=2, cache_write_tokens=5)
    assert summary.output_text == "Hello there" and summary.complete and summary.usage_final
    cut = summarize_converse_stream([b"".join(events[:3])])
    assert cut.usage is None and cut.output_text == "Hello there" and not cut.complete


def _invoke_event(obj: dict[str, object]) -> bytes:
    return sim.event("chunk", {"bytes": base64.b64encode(json.dumps(obj).encode()).decode()})


def test_invoke_stream_reads_the_anthropic_events_inside() -> None:
    start_usage = {
        "input_tokens": 7,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "output_tokens": 1,
    }
    events = [
        _invoke_event(
            {"type": "message_start", "message": {"model": "claude-haiku-4-5-20251001", "usage": start_usage}}
        ),
        _invoke_event(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
        ),
        _invoke_event(
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}
        ),
        _invoke_event({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 7}}),
    ]
    summary = summarize_invoke_stream([b"".join(events)])
    assert summary.usage is not None
    assert (summary.usage.input_tokens, summary.usage.output_tokens) == (127, 9)
    assert (summary.usage.cache_read_tokens, summary.usage.cache_write_tokens) == (100, 20)
    assert summary.model == "claude-haiku-4-5-20251001" and summary.complete and summary.usage_final
    broken = summarize_invoke_stream([events[0][:-1] + b"\x00"])
    assert "parse_error" in broken.extra


def test_non_streamed_bodies_by_platform() -> None:
    anthropic_body = json.dumps(
        {
            "type": "message",
            "model": "claude-haiku-4-5-20251001",
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
    ).encode()
    usage, model = body_usage(
        "bedrock", "anthropic", "/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/invoke", anthropic_body
    )
    assert usage is not None and (usage.input_tokens, usage.output_tokens, model) == (
        3,
        4,
        "claude-haiku-4-5-20251001",
    )
    path = "/v1/projects/p/locations/l/publishers/anthropic/models/claude-haiku-4-5:rawPredict"
    assert body_usage("vertex", "anthropic", path, anthropic_body)[0] == usage
    assert pricing_models(
        "bedrock", "claude-haiku-4-5-20251001", "global.anthropic.claude-haiku-4-5-20251001-v1:0"
    ) == (
        "global.anthropic.claude-haiku-4-5-20251001-v1:0",
        "claude-haiku-4-5-20251001",
    )
    assert pricing_models("azure", "gpt-4o-2024-11-20", None) == ("gpt-4o-2024-11-20",)


# --- prices ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "published"),
    [
        ("azure", "gpt-4o-2024-11-20", "azure/gpt-4o"),
        ("azure", "gpt-4o-mini-2024-07-18", "azure/gpt-4o-mini"),
        ("vertex", "claude-haiku-4-5@20251001", "vertex/claude-haiku-4-5"),
        ("vertex", "gemini-2.5-flash", "vertex/gemini-2.5-flash"),
        ("bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0", "bedrock/global/claude-haiku-4-5"),
        ("bedrock", "us.anthropic.claude-haiku-4-5-20251001-v1:0", "bedrock/regional/claude-haiku-4-5"),
        ("bedrock", "anthropic.claude-haiku-4-5-20251001-v1:0", "bedrock/regional/claude-haiku-4-5"),
    ],
)
def test_priced_as_the_platform_bills(provider: str, model: str, published: str) -> None:
    rates = PRICES[published]
    usage = Usage(input_tokens=1_200_000, output_tokens=300_000, cache_read_tokens=200_000)
    price = Pricer().price(provider, model, usage)
    expected = (
        Decimal("1000000") * Decimal(str(rates["input"]))
        + Decimal("200000") * Decimal(str(rates["cache_read"]))
        + Decimal("300000") * Decimal(str(rates["output"]))
    ) / Decimal(1_000_000)
    assert price.priced and price.cost_usd == expected


@pytest.mark.parametrize(
    ("location", "model", "premium"),
    [
        ("us-east5", "claude-sonnet-4-5@20250929", True),
        ("europe-west1", "claude-opus-4-8", True),
        ("us-east5", "claude-haiku-4-5@20251001", True),
        ("us-east5", "claude-fable-5", True),
        ("global", "claude-sonnet-4-5@20250929", False),
        ("us-east5", "claude-sonnet-4@20250514", False),
        ("us-east5", "claude-opus-4-1@20250805", False),
        ("us-east5", "claude-3-5-sonnet-v2@20241022", False),
        ("us-east5", "claude-3-7-sonnet@20250219", False),
    ],
)
def test_vertex_regional_premium(location: str, model: str, premium: bool) -> None:
    """Vertex bills Claude 4.5 and later 10% more on regional endpoints (cloud.google.com/vertex-ai/generative-ai/
    pricing); global prices are the data's."""
    endpoint = f"/v1/projects/p/locations/{location}/publishers/anthropic/models/{model}:rawPredict"
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000)
    base = Pricer().price("vertex", model, usage)
    adjusted = adjust_price("vertex", endpoint, model, base)
    assert base.cost_usd is not None
    assert adjusted.cost_usd == (base.cost_usd * Decimal("1.1") if premium else base.cost_usd)
    assert adjusted.input_cost_usd is not None and base.input_cost_usd is not None
    assert adjusted.input_cost_usd + (adjusted.output_cost_usd or 0) == adjusted.cost_usd
    gemini = (
        endpoint.replace("anthropic", "google")
        .replace(model, "gemini-2.5-flash")
        .replace("rawPredict", "generateContent")
    )
    flash = Pricer().price("vertex", "gemini-2.5-flash", usage)
    assert adjust_price("vertex", gemini, "gemini-2.5-flash", flash) == flash


def test_bedrock_error_format() -> None:
    from tokenlens.platforms import bedrock_error
    from tokenlens.providers import error_body

    body, kind = bedrock_error(429, error_body("anthropic", 429, "TokenLens: daily budget reached"))
    assert json.loads(body) == {"message": "TokenLens: daily budget reached"}
    assert kind.startswith("ThrottlingException:")
    assert bedrock_error(403, error_body("openai", 403, "kill switch"))[1].startswith(
        "AccessDeniedException:"
    )
    assert json.loads(bedrock_error(503, b"not json")[0])["message"]


@pytest.mark.parametrize(
    ("user_agent", "family"),
    [
        ("AnthropicBedrock/Python 2.17.0", "anthropic-python"),
        ("AnthropicVertex/Python 2.17.0", "anthropic-python"),
        ("AzureOpenAI/Python 3.63.0", "openai-python"),
        ("Boto3/1.44.18 md/Botocore#1.44.18 ua/2.1 os/linux lang/python#3.12.1 Botocore/1.44.18", "boto3"),
        ("claude-cli/2.1.197 (external, sdk-cli)", "claude-code"),
    ],
)
def test_platform_clients_are_sources(user_agent: str, family: str) -> None:
    from tokenlens.providers import agent_family

    assert agent_family(user_agent) == family


def test_bedrock_counts_of_any_model() -> None:
    from tokenlens.platforms.bedrock import invocation_usage

    headers = {"x-amzn-bedrock-input-token-count": "12", "x-amzn-bedrock-output-token-count": "30"}
    assert invocation_usage(headers) == Usage(input_tokens=12, output_tokens=30)
    metrics = {"inputTokenCount": 5, "outputTokenCount": 7, "cacheReadInputTokenCount": 100}
    assert invocation_usage(metrics) == Usage(input_tokens=105, output_tokens=7, cache_read_tokens=100)
    assert invocation_usage({"content-type": "application/json"}) is None
    llama = json.dumps({"generation": "hi", "prompt_token_count": 12}).encode()
    usage, _ = body_usage(
        "bedrock", "anthropic", "/model/meta.llama3-1-8b-instruct-v1:0/invoke", llama, headers
    )
    assert usage == Usage(input_tokens=12, output_tokens=30)
    events = [
        sim.event("chunk", {"bytes": base64.b64encode(json.dumps({"generation": "a"}).encode()).decode()}),
        sim.event(
            "chunk",
            {
                "bytes": base64.b64encode(
                    json.dumps({"generation": "b", "amazon-bedrock-invocationMetrics": metrics}).encode()
                ).decode()
            },
        ),
    ]
    summary = summarize_invoke_stream(events)
    assert summary.usage == Usage(input_tokens=105, output_tokens=7, cache_read_tokens=100)
    assert summary.usage_final


def test_an_endpoint_base_path_before_the_platform_path() -> None:
    assert parse_path("bedrock", "/corp/bedrock/model/x/converse").model == "x"
    assert parse_path("azure", "/gw/openai/deployments/d/chat/completions").kind == "chat"
    assert parse_path("azure", "/gw/openai/v1/responses").kind == "responses"
    vertex = "/gw/v1/projects/p/locations/us-east5/publishers/anthropic/models/m:streamRawPredict"
    assert (parse_path("vertex", vertex).kind, parse_path("vertex", vertex).location) == (
        "messages",
        "us-east5",
    )


def test_budget_reservations_use_the_platform_price() -> None:
    """The budget gate's worst case for a Vertex Claude call on a regional location includes the premium."""
    from tokenlens.controls import WorstCasePricer

    settings = parse_settings({})
    body = {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}],
    }

    def cost(location: str) -> float | None:
        endpoint = (
            f"/v1/projects/p/locations/{location}/publishers/anthropic/models/claude-opus-4-8:rawPredict"
        )
        worst = WorstCasePricer().worst_case(
            settings,
            provider="vertex",
            api="anthropic",
            endpoint=endpoint,
            body=body,
            model="claude-opus-4-8",
            max_tokens=1000,
        )
        return worst.cost_usd

    regional, global_ = cost("us-east5"), cost("global")
    assert regional is not None and global_ is not None
    assert regional == pytest.approx(global_ * 1.1, rel=1e-12)


def test_converse_answers_are_scanned_by_the_response_guardrails() -> None:
    from tokenlens.guardrails.engine import scan_body

    g = parse_settings(
        {"guardrails": {"response_pii_detection": {"enabled": True, "action": "redact"}}}
    ).guardrails
    body = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Mail jane.doe@example.com now."}]}}
    }
    verdict = scan_body(g, "anthropic", body, "response")
    assert [f.rule for f in verdict.findings] == ["pii.email"]
    assert verdict.redacted is not None
    assert verdict.redacted["output"]["message"]["content"][0]["text"] == "Mail [EMAIL_1] now."


def test_an_unknown_provider_message_names_the_platforms() -> None:
    from tokenlens.providers import UnknownProvider

    message = str(UnknownProvider("azur", ["openai", "anthropic", "google"]))
    assert (
        "configured providers: anthropic, google, openai; cloud platforms: azure, vertex, bedrock" in message
    )
