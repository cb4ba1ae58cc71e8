"""Fail closed, through the real gateway and the simulator (issue 17): every request on a metered route either
passes every gate and is recorded, or is refused and recorded; hostile bodies, near-JSON, foreign Host headers
and cross-site pages get nowhere."""

from __future__ import annotations

import codecs
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.gateway import Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator

KILLED = "killed-source"
PROBE = "x-probe"  # passes through the gateway untouched, so the simulator tells which request reached it


@pytest.fixture(scope="module")
def gw(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("fail-closed")
    config = home / "config.yaml"
    write_config(
        config,
        sims,
        f"quotas: {{kill_switches: [{KILLED}]}}\n"
        "guardrails: {pii_detection: {enabled: true, action: block}, fail_open: false}\n",
    )
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


def reached(sims: dict[str, Simulator], probe: str) -> int:
    return sum(1 for sim in sims.values() for r in list(sim.requests) if r.headers.get(PROBE) == probe)


def post(gw: Gateway, path: str, body: bytes, source: str, probe: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gw.url}{path}",
        content=body,
        headers={"content-type": "application/json", "X-TokenLens-Source": source, PROBE: probe, **headers},
        timeout=30,
    )


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
OPENAI_CHAT = "/proxy/openai/v1/chat/completions"


def test_deep_json_from_a_killed_source_is_refused_and_recorded(
    gw: Gateway, sims: dict[str, Simulator]
) -> None:
    """Finding 1: 2,000 levels of nesting went upstream with no record, past the kill switch (200, not 403)."""
    depth = 2000
    body = json.dumps(CHAT)[:-1].encode() + b', "j": ' + b"[" * depth + b"]" * depth + b"}"
    probe = uuid.uuid4().hex
    response = post(gw, OPENAI_CHAT, body, KILLED, probe)
    assert response.status_code in (400, 403)
    assert response.headers["x-should-retry"] == "false"
    assert reached(sims, probe) == 0
    calls = gw.wait_calls(KILLED)
    assert calls and calls[-1]["outcome"] == "blocked"


@pytest.mark.parametrize(
    "body",
    [
        codecs.BOM_UTF8 + json.dumps(CHAT).encode(),
        json.dumps(CHAT).encode() + b"\x00",
        codecs.BOM_UTF16_LE + json.dumps(CHAT).encode("utf-16-le"),
    ],
    ids=["utf8-bom", "trailing-nul", "utf16-bom"],
)
def test_near_json_meets_the_guardrails(gw: Gateway, sims: dict[str, Simulator], body: bytes) -> None:
    """Finding 2: with PII `block` on, such a body was forwarded unscanned (200)."""
    with_pii = body.replace(b"hello", b"mail alice.smith@example.com") if b"hello" in body else body
    if body.startswith(codecs.BOM_UTF16_LE):
        text = json.dumps({**CHAT, "messages": [{"role": "user", "content": "mail alice.smith@example.com"}]})
        with_pii = codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    source, probe = f"near-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    response = post(gw, OPENAI_CHAT, with_pii, source, probe)
    assert response.status_code == 400 and response.headers["x-tokenlens-blocked-by"] == "guardrail"
    assert reached(sims, probe) == 0
    assert gw.wait_calls(source)[-1]["blocked_by"] == "guardrail"


def test_near_json_meets_the_budget(gw: Gateway, sims: dict[str, Simulator]) -> None:
    """Finding 2: with the budget spent, a BOM body still went through (its model was never read)."""
    spender = f"spender-{uuid.uuid4().hex[:8]}"
    assert post(gw, OPENAI_CHAT, json.dumps(CHAT).encode(), spender, "spend").status_code == 200
    assert gw.wait_calls(spender)[0]["cost_usd"] > 0.000001  # today's spend is over the cap set below
    budget = f"{gw.url}/api/settings/budget"
    before = httpx.get(budget).json()
    httpx.put(budget, json={**before, "daily_usd": 0.000001}).raise_for_status()
    try:
        for body in (codecs.BOM_UTF8 + json.dumps(CHAT).encode(), b"\x00not json at all"):
            probe = uuid.uuid4().hex
            response = post(gw, OPENAI_CHAT, body, f"budget-{probe[:8]}", probe)
            assert response.status_code == 429, body
            assert reached(sims, probe) == 0
    finally:
        httpx.put(budget, json=before).raise_for_status()


def test_text_bodies_are_scanned_too(gw: Gateway, sims: dict[str, Simulator]) -> None:
    probe = uuid.uuid4().hex
    response = post(gw, OPENAI_CHAT, b"not json, but mail alice.smith@example.com", "text-body", probe)
    assert response.status_code == 400 and reached(sims, probe) == 0


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_an_origin_form_request_is_not_forwarded_to_its_host(gw: Gateway, sims: dict[str, Simulator]) -> None:
    """Finding 4: `Host: 127.0.0.1:<another port>` was forwarded there (a local-only service read this way)."""
    sim = sims["openai"]
    before = len(sim.requests)
    for host in (f"127.0.0.1:{sim.port}", f"localhost:{sim.port}", "evil.example"):
        answer = raw_request(
            gw.port, f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        status = int(answer.split(b" ", 2)[1])
        assert status in (403, 404), (host, answer[:200])
    assert len(sim.requests) == before


def test_a_cross_site_request_cannot_use_the_proxy(gw: Gateway, sims: dict[str, Simulator]) -> None:
    """Finding 3 (what Chromium sends for `fetch(url, {mode: "no-cors", method: "POST"})` from another page)."""
    for headers in (
        {"Origin": "http://127.0.0.1:9", "Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"},
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
    ):
        probe = uuid.uuid4().hex
        response = post(gw, OPENAI_CHAT, json.dumps(CHAT).encode(), "page", probe, **headers)
        assert response.status_code == 403 and reached(sims, probe) == 0


PROVIDER_PATHS = {
    "openai": ["/proxy/openai/v1/chat/completions", "/proxy/openai/v1/responses"],
    "anthropic": ["/proxy/anthropic/v1/messages"],
    "google": [
        "/proxy/google/v1beta/models/gemini-2.0-flash:generateContent",
        "/proxy/google/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
    ],
}
VALID = {
    "openai": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "input": "hi"},
    "anthropic": {
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    },
    "google": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
}
BOMS = [b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE]
CODECS = {
    b"": "utf-8",
    codecs.BOM_UTF8: "utf-8",
    codecs.BOM_UTF16_LE: "utf-16-le",
    codecs.BOM_UTF16_BE: "utf-16-be",
    codecs.BOM_UTF32_LE: "utf-32-le",
}
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@st.composite
def hostile_bodies(draw: st.DrawFn, provider: str) -> bytes:
    """A provider body with wrong types, huge numbers, deep nesting, big strings, BOMs or trailing bytes."""
    body: dict[str, object] = dict(VALID[provider])
    for key in draw(
        st.lists(st.sampled_from(["model", "messages", "contents", "max_tokens", "stream", "input"]))
    ):
        body[key] = draw(wrong_types)
    if draw(st.booleans()):
        body["huge"] = draw(st.sampled_from([10**30, 1e308, -(10**30), 2**63, "9" * 5000]))
    if draw(st.booleans()):
        body["big"] = "x" * draw(st.integers(min_value=0, max_value=200_000))
    text = json.dumps(body)
    depth = draw(st.sampled_from([0, 0, 10, 127, 129, 1_000, 1_600, 5_000]))
    if depth:
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    bom = draw(st.sampled_from(BOMS))
    raw = bom + text.encode(CODECS[bom])
    tail = draw(st.sampled_from([b"", b"\x00", b"\x00garbage", b"\xff\xfe\xfd", b"}}}", b"\n"]))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(st.binary(max_size=400))  # not JSON at all
    return raw + tail


@pytest.mark.parametrize("provider", sorted(PROVIDER_PATHS))
def test_hostile_bodies_pass_every_gate_or_are_refused(
    gw: Gateway, sims: dict[str, Simulator], provider: str, tmp_path: Path
) -> None:
    """The invariant, for every generated body: from a kill-switched source nothing reaches the simulator;
    from any other source, every request that reached it has a record (and so does every refusal)."""
    alive: list[tuple[str, str]] = []

    @settings(
        max_examples=40,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(path=st.sampled_from(PROVIDER_PATHS[provider]), body=hostile_bodies(provider))
    def check(path: str, body: bytes) -> None:
        probe = uuid.uuid4().hex
        killed = post(gw, path, body, KILLED, probe)
        assert killed.status_code in (400, 403), killed.text[:300]
        assert reached(sims, probe) == 0
        source, probe = f"alive-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
        answer = post(gw, path, body, source, probe)
        assert 200 <= answer.status_code < 600
        alive.append((source, probe))

    check()
    for source, probe in alive:
        calls = gw.wait_calls(source, timeout=20)
        assert len(calls) == 1, (source, reached(sims, probe))
        if reached(sims, probe):
            assert calls[0]["outcome"] in ("ok", "error")
        else:
            assert calls[0]["outcome"] == "blocked"


def test_absolute_form_is_still_proxy_traffic(gw: Gateway, sims: dict[str, Simulator]) -> None:
    """The same request line in absolute form is a plain-HTTP proxy request from this machine: forwarded.
    (mitmproxy clears the authority of HTTP/1 requests before any hook; addons/_request_form.py keeps it.)"""
    sim = sims["openai"]
    before = len(sim.requests)
    answer = raw_request(
        gw.port,
        f"GET http://127.0.0.1:{sim.port}/v1/models HTTP/1.1\r\nHost: 127.0.0.1:{sim.port}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert int(answer.split(b" ", 2)[1]) == 200, answer[:300]
    assert len(sim.requests) == before + 1
