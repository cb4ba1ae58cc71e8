"""A base URL that misses /proxy/<provider> gets a JSON 404 the SDKs show, naming the right base URLs."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from harness.gateway import Gateway


def test_the_openai_sdk_is_told_the_right_base_url(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    message = str(raised.value)
    assert f"{gateway.url}/proxy/openai/v1" in message
    assert f"{gateway.url}/proxy/anthropic" in message and f"{gateway.url}/proxy/google" in message


def test_the_anthropic_sdk_is_told_the_right_base_url(gateway: Gateway) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert f"{gateway.url}/proxy/anthropic" in str(raised.value)


def test_unknown_routes_answer_json_and_are_not_calls(gateway: Gateway) -> None:
    before = len(gateway.calls(limit=1000))
    for path in ("/v1/chat/completions", "/v1beta/models/gemini-2.0-flash:generateContent", "/nope"):
        response = httpx.post(f"{gateway.url}{path}", json={"model": "x"})
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/json")
        assert "/proxy/openai/v1" in response.json()["error"]["message"]
    assert httpx.get(f"{gateway.url}/").status_code == 200  # the dashboard itself is still there
    assert len(gateway.calls(limit=1000)) == before
