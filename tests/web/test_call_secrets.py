"""`GET /api/calls/<id>` never shows a secret written inside a stored body (a key pasted into a prompt, an
`api_key` field), whatever the guardrails settings; the store keeps the body as it was (issue 17, #11e)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from harness.deps import app_deps
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.records import CallRecord
from tokenlens.web import create_app

OPENAI_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
ANTHROPIC_KEY = "sk-ant-api03-Qw7eRt2yUi9oPa4sDf6gHj1kLz3xCv8bNm5"
GOOGLE_KEY = "AIza" + "SyD3f9Kx7Lm2Qp8Rt4Vw6Yz1Bc5Ne0Gh-Jk"  # AIza and 35 more characters
FIELD_SECRET = "9f8Kx!2mQz7Lp4Rw"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, GOOGLE_KEY, FIELD_SECRET)

GUARDRAILS = [
    {},
    {"guardrails": {"pii_detection": {"enabled": False}, "response_pii_detection": {"enabled": False}}},
    {"guardrails": {"pii_detection": {"enabled": True, "action": "warn"}}},
]


@pytest.fixture(params=range(len(GUARDRAILS)), ids=["default", "off", "warn"])
def deps(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AppDeps]:
    with app_deps(tmp_path, parse_settings(GUARDRAILS[request.param])) as made:
        yield made


@pytest.fixture
def client(deps: AppDeps) -> FlaskClient:
    return create_app(deps, {"TESTING": True}).test_client()


def store_call(deps: AppDeps, call_id: str, request_body: bytes, response_body: bytes | None) -> None:
    record = CallRecord(
        id=call_id,
        ts=1_790_000_000.0,
        provider="openai",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        request_body=request_body,
        response_body=response_body,
    )
    deps.store.insert_calls([record], store_bodies=True)


def shown(client: FlaskClient, call_id: str) -> dict[str, Any]:
    response = client.get(f"/api/calls/{call_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def test_keys_in_a_json_request_are_masked(client: FlaskClient, deps: AppDeps) -> None:
    prompt = f"my keys: {OPENAI_KEY} and {ANTHROPIC_KEY}, please summarise"
    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}, {"role": "user", "content": GOOGLE_KEY}],
        "metadata": {"api_key": FIELD_SECRET, "team": "core"},
    }
    answer = {"choices": [{"message": {"content": f"Your key {OPENAI_KEY} is exposed."}}]}
    store_call(deps, "c1", json.dumps(request).encode(), json.dumps(answer).encode())
    data = shown(client, "c1")
    for text in (data["request_body"], data["response_body"]):
        assert not [s for s in SECRETS if s in text]
    masked = json.loads(data["request_body"])
    assert masked["messages"][0]["content"] == "my keys: [SECRET_1] and [SECRET_2], please summarise"
    assert masked["messages"][1]["content"] == "[SECRET_3]"
    assert masked["metadata"] == {"api_key": "[SECRET_4]", "team": "core"}
    assert masked["model"] == "gpt-4o-mini"
    assert json.loads(data["response_body"]) == {
        "choices": [{"message": {"content": "Your key [SECRET_1] is exposed."}}]
    }
    stored = deps.store.get_call("c1")  # the stored body is kept as it was written
    assert stored is not None and stored.request_body == json.dumps(request).encode()


def test_keys_in_a_stream_and_in_text_are_masked(client: FlaskClient, deps: AppDeps) -> None:
    events = [{"choices": [{"delta": {"content": f"key={OPENAI_KEY}\\"}}]}, {"choices": []}]
    stream = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    store_call(deps, "c2", f"api_key: {FIELD_SECRET} and {GOOGLE_KEY}".encode(), stream.encode())
    data = shown(client, "c2")
    assert data["request_body"] == "api_key: [SECRET_1] and [SECRET_2]"
    assert OPENAI_KEY not in data["response_body"]
    lines = [line[6:] for line in data["response_body"].split("\n\n") if line.startswith("data: {")]
    first = json.loads(lines[0])  # still one JSON event per line
    assert first["choices"][0]["delta"]["content"] == "key=[SECRET_1]\\"


def test_bodies_without_secrets_are_shown_as_stored(client: FlaskClient, deps: AppDeps) -> None:
    request = b'{"model": "gpt-4o-mini",   "messages": [{"role": "user", "content": "sk-this-is-prose"}]}'
    store_call(deps, "c3", request, b'{"id": "r"}')
    data = shown(client, "c3")
    assert data["request_body"] == request.decode() and data["response_body"] == '{"id": "r"}'


def test_keys_written_with_escapes_or_as_object_keys_are_masked(client: FlaskClient, deps: AppDeps) -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in OPENAI_KEY)  # every character a JSON escape
    request = (
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "use ' + escaped + '"}],'
        ' "metadata": {"' + ANTHROPIC_KEY + '": "team", "plain": "value"}}'
    )
    assert OPENAI_KEY not in request and json.loads(request)["messages"][0]["content"] == f"use {OPENAI_KEY}"
    store_call(deps, "c4", request.encode(), None)
    data = shown(client, "c4")
    assert not [s for s in SECRETS if s in data["request_body"]]
    masked = json.loads(data["request_body"])
    assert masked["messages"][0]["content"] == "use [SECRET_1]"
    assert list(masked["metadata"].items()) == [("[SECRET_2]", "team"), ("plain", "value")]


def test_escapes_without_a_secret_are_shown_as_stored(client: FlaskClient, deps: AppDeps) -> None:
    request = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "caf\\u00e9"}]}'
    store_call(deps, "c5", request, None)
    assert shown(client, "c5")["request_body"] == request.decode()
