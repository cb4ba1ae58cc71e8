"""The simulator's cloud-platform wire formats, driven by the official clients straight (no gateway): Azure
OpenAI, Vertex AI (Gemini and Claude), Bedrock InvokeModel (event-stream framing) and Converse; and its auth
checks: a SigV4 signature made with another key, a missing Vertex token or Azure key is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from provider_sim import Simulator
from provider_sim import platforms as P

USER = [{"role": "user", "content": "Hello platform simulator."}]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    started = Simulator().start()
    yield started
    started.stop()


def bedrock(sim: Simulator, secret: str = P.AWS_SECRET_KEY) -> anthropic.AnthropicBedrock:
    return anthropic.AnthropicBedrock(
        aws_access_key=P.AWS_ACCESS_KEY,
        aws_secret_key=secret,
        aws_region="us-east-1",
        base_url=sim.url,
        max_retries=0,
    )


def test_bedrock_invoke_and_stream(sim: Simulator) -> None:
    client = bedrock(sim)
    model = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
    message = client.messages.create(model=model, max_tokens=50, messages=USER)  # type: ignore[arg-type]
    sent = sim.last_request
    assert message.model == "claude-haiku-4-5-20251001" and "model" not in sent.json()
    p = sim.plan("anthropic", "messages", {**sent.json(), "model": model})
    assert (message.usage.input_tokens, message.usage.output_tokens) == (p.prompt, p.output_tokens)
    with client.messages.stream(model=model, max_tokens=50, messages=USER) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
        text = "".join(block.text for block in final.content if block.type == "text")
    assert sim.last_request.path.endswith("/invoke-with-response-stream")
    assert text == p.text and final.usage.output_tokens == p.output_tokens


def test_bedrock_refuses_a_wrong_signature(sim: Simulator) -> None:
    with pytest.raises(anthropic.PermissionDeniedError, match="signature"):
        bedrock(sim, "not-the-secret").messages.create(
            model="anthropic.claude-haiku-4-5-20251001-v1:0",
            max_tokens=5,
            messages=USER,  # type: ignore[arg-type]
        )
    response = httpx.post(f"{sim.url}/model/x/converse", json={"messages": []})
    assert response.status_code == 403 and response.headers["x-amzn-errortype"].startswith("InvalidSignature")


def test_bedrock_converse_with_boto3(sim: Simulator) -> None:
    import boto3

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=sim.url,
        aws_access_key_id=P.AWS_ACCESS_KEY,
        aws_secret_access_key=P.AWS_SECRET_KEY,
    )
    sim.set_default_headers({"x-sim-cache-read": "25"})
    try:
        kwargs = {
            "modelId": "global.anthropic.claude-haiku-4-5-20251001-v1:0",
            "messages": [{"role": "user", "content": [{"text": "Hello Converse."}]}],
        }
        answer = client.converse(**kwargs)  # type: ignore[arg-type]
        p = sim.plan("anthropic", "messages", P.converse_as_messages(sim.last_request.json()))
        assert answer["usage"] == {
            "inputTokens": p.prompt,
            "outputTokens": p.output_tokens,
            "totalTokens": p.prompt + 25 + p.output_tokens,
            "cacheReadInputTokens": 25,
            "cacheWriteInputTokens": 0,
        }
        events = list(client.converse_stream(**kwargs)["stream"])  # type: ignore[arg-type]
    finally:
        sim.set_default_headers({})
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == p.text and events[-1]["metadata"]["usage"] == answer["usage"]


def test_vertex_claude_and_gemini(sim: Simulator) -> None:
    vertex = anthropic.AnthropicVertex(
        region="us-east5",
        project_id="p",
        access_token=P.VERTEX_TOKEN,
        base_url=sim.url + "/v1",
        max_retries=0,
    )
    message = vertex.messages.create(model="claude-haiku-4-5@20251001", max_tokens=50, messages=USER)  # type: ignore[arg-type]
    assert sim.last_request.path.endswith("/publishers/anthropic/models/claude-haiku-4-5@20251001:rawPredict")
    assert message.usage.output_tokens > 0
    wrong = anthropic.AnthropicVertex(
        region="us-east5", project_id="p", access_token="other", base_url=sim.url + "/v1", max_retries=0
    )
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="claude-haiku-4-5@20251001", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    path = (
        "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent"
    )
    body = {"contents": [{"role": "user", "parts": [{"text": "Hello Gemini on Vertex."}]}]}
    auth = {"authorization": f"Bearer {P.VERTEX_TOKEN}"}
    streamed = httpx.post(f"{sim.url}{path}", json=body, headers=auth)  # no alt=sse: a JSON array
    chunks = json.loads(streamed.text)
    p = sim.plan("google", "generate", body)
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == p.reply_words
    token = httpx.post(f"{sim.url}/token", data={"grant_type": "x"}).json()
    assert token["access_token"] == P.VERTEX_TOKEN


def test_azure_deployments_report_their_model(sim: Simulator) -> None:
    client = openai.AzureOpenAI(azure_endpoint=sim.url, api_key="k", api_version="2024-10-21", max_retries=0)
    answer = client.chat.completions.create(model="chat-prod", messages=USER)  # type: ignore[arg-type]
    assert answer.model == "gpt-4o-2024-11-20"
    response = httpx.post(f"{sim.url}/openai/deployments/chat-prod/chat/completions", json={"messages": USER})
    assert response.status_code == 401
