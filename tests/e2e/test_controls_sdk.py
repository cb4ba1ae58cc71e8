"""Budgets, quotas and kill switches through a real gateway, with the official SDKs at their default retry
settings: every block is one HTTP attempt, the provider's typed error, and nothing reaches the upstream."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from harness.gateway import Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator
from published_prices import expected_cost

EXTRA = "timezone: UTC\n"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash"}
RATE_LIMITED: dict[str, type[Exception]] = {
    "openai": openai.RateLimitError,
    "anthropic": anthropic.RateLimitError,
    "google": genai_errors.ClientError,
}
DENIED: dict[str, type[Exception]] = {
    "openai": openai.PermissionDeniedError,
    "anthropic": anthropic.PermissionDeniedError,
    "google": genai_errors.ClientError,
}


@pytest.fixture(scope="module")
def gw(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("controls-home")
    config = home / "config.yaml"
    write_config(config, sims, EXTRA)
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


@pytest.fixture(autouse=True)
def reset(gw: Gateway) -> Iterator[None]:
    yield
    for path in ("/api/config/quotas", "/api/settings/budget"):
        assert httpx.put(f"{gw.url}{path}", json={}, timeout=10).status_code == 200


@pytest.fixture
def source() -> str:
    return f"ctl-{uuid.uuid4().hex[:10]}"


def put(gw: Gateway, path: str, body: dict[str, Any]) -> None:
    response = httpx.put(f"{gw.url}{path}", json=body, timeout=10)
    assert response.status_code == 200, response.text


def prompt(source: str) -> str:
    """A prompt carrying the source, so the simulator's requests of one test can be told apart."""
    return f"please answer briefly marker {source}"


def request_json(
    provider: str, source: str, model: str | None = None, max_tokens: int = 12
) -> dict[str, Any]:
    model = model or MODELS[provider]
    if provider == "google":
        return {
            "contents": [{"role": "user", "parts": [{"text": prompt(source)}]}],
            "generationConfig": {"maxOutputTokens": max_tokens},
        }
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt(source)}],
    }


def sdk_call(
    gw: Gateway, provider: str, source: str, model: str | None = None, max_tokens: int = 12, **kw: Any
) -> Any:
    """One call with the provider's official SDK at its default retry settings."""
    model = model or MODELS[provider]
    headers = {"X-TokenLens-Source": source}
    text = prompt(source)
    if provider == "openai":
        client = openai.OpenAI(
            base_url=kw.get("base_url", gw.base_url("openai")), api_key="sk-test", default_headers=headers
        )
        return client.chat.completions.create(
            model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": text}]
        )
    if provider == "anthropic":
        client_a = anthropic.Anthropic(
            base_url=gw.base_url("anthropic"), api_key="sk-ant-test", default_headers=headers
        )
        return client_a.messages.create(
            model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": text}]
        )
    options = genai_types.HttpOptions(base_url=gw.base_url("google"), api_version="v1beta", headers=headers)
    client_g = genai.Client(api_key="g-test", http_options=options)
    return client_g.models.generate_content(
        model=model, contents=text, config=genai_types.GenerateContentConfig(max_output_tokens=max_tokens)
    )


def raw_call(gw: Gateway, provider: str, source: str, model: str | None = None) -> httpx.Response:
    model = model or MODELS[provider]
    path = {
        "openai": "/proxy/openai/v1/chat/completions",
        "anthropic": "/proxy/anthropic/v1/messages",
        "google": f"/proxy/google/v1beta/models/{model}:generateContent",
    }[provider]
    return httpx.post(
        gw.url + path,
        json=request_json(provider, source, model),
        headers={"X-TokenLens-Source": source},
        timeout=10,
    )


def reached_upstream(gw: Gateway, provider: str, source: str) -> int:
    marker = prompt(source).encode()
    return sum(marker in r.body for r in gw.sims[provider].requests)


def expect_blocked(
    gw: Gateway, provider: str, source: str, status: int, errors: dict[str, type[Exception]]
) -> None:
    with pytest.raises(errors[provider]) as raised:
        sdk_call(gw, provider, source)
    if provider == "google":
        assert isinstance(raised.value, genai_errors.ClientError) and raised.value.code == status
    else:
        assert getattr(raised.value, "status_code", None) == status


def seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    return (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now).total_seconds()


def seconds_to_next_utc_month() -> float:
    now = datetime.now(UTC)
    first = (now.replace(day=1) + timedelta(days=32)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    return (first - now).total_seconds()


def real_cost(gw: Gateway, provider: str, source: str, model: str | None = None) -> float:
    """One call's cost from the simulator's token rule and the published prices."""
    model = model or MODELS[provider]
    kind = {"openai": "chat", "anthropic": "messages", "google": "generate"}[provider]
    usage = gw.sims[provider].expected_usage(provider, kind, request_json(provider, source, model))
    return expected_cost(model, usage)


def worst_case_cost(provider: str, source: str, max_tokens: int = 12) -> float:
    """The reservation of one `request_json` chat call: its input bound (the prompt's UTF-8 bytes + 1, with 4
    tokens for the message and 3 for the reply) plus `max_tokens`, at the published prices."""
    input_bound = 4 + len(prompt(source).encode()) + 1 + 3
    return expected_cost(MODELS[provider], {"input_tokens": input_bound, "output_tokens": max_tokens})


def spent_today(gw: Gateway) -> float:
    """Today's recorded spend, summed from the stored calls (not from the ledger)."""
    start = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC).timestamp()
    total = 0.0
    for call in gw.calls(limit=1000):
        ts = datetime.fromisoformat(call["ts"].replace("Z", "+00:00")).timestamp()
        if ts >= start and call["cost_usd"]:
            total += call["cost_usd"]
    return total


def budget_status(gw: Gateway) -> dict[tuple[str, str], dict[str, Any]]:
    caps = httpx.get(f"{gw.url}/api/usage/budget-status", timeout=10).json()["caps"]
    return {(c["scope"], c["period"]): c for c in caps}


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
def test_kill_switch(gw: Gateway, source: str, provider: str) -> None:
    put(gw, "/api/config/quotas", {"kill_switches": [source]})
    expect_blocked(gw, provider, source, 403, DENIED)
    (call,) = gw.wait_calls(source)
    assert (call["outcome"], call["blocked_by"], call["status"]) == ("blocked", "kill_switch", 403)
    raw = raw_call(gw, provider, source)
    assert raw.status_code == 403
    assert raw.headers["x-should-retry"] == "false" and raw.headers["x-tokenlens-blocked-by"] == "kill_switch"
    body = raw.json()
    if provider == "openai":
        assert body["error"]["type"] == "permission_error" and body["error"]["param"] is None
    elif provider == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    else:
        assert body["error"]["code"] == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    assert source in body["error"]["message"]
    assert len(gw.wait_calls(source, 2)) == 2  # one SDK call = one attempt, plus the raw one
    assert reached_upstream(gw, provider, source) == 0


def test_kill_switch_in_explicit_proxy_mode(
    gw: Gateway, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", gw.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(gw.ca_bundle()))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    put(gw, "/api/config/quotas", {"kill_switches": [source]})
    with pytest.raises(openai.PermissionDeniedError):
        sdk_call(gw, "openai", source, base_url=gw.sims["openai"].base_url("openai", https=True))
    (call,) = gw.wait_calls(source)
    assert call["blocked_by"] == "kill_switch" and call["mode"] == "proxy"
    assert reached_upstream(gw, "openai", source) == 0


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
def test_per_source_daily_call_cap(gw: Gateway, source: str, provider: str) -> None:
    put(gw, "/api/config/quotas", {"source_limits": [{"source": source, "daily_calls": 1}]})
    sdk_call(gw, provider, source)
    expect_blocked(gw, provider, source, 429, RATE_LIMITED)
    first, second = gw.wait_calls(source, 2)
    assert first["outcome"] == "ok"
    assert (second["outcome"], second["blocked_by"], second["status"]) == ("blocked", "quota", 429)
    raw = raw_call(gw, provider, source)
    assert raw.status_code == 429 and raw.headers["x-tokenlens-blocked-by"] == "quota"
    assert raw.headers["x-should-retry"] == "false"
    assert abs(int(raw.headers["retry-after"]) - seconds_to_utc_midnight()) < 5
    assert len(gw.wait_calls(source, 3)) == 3  # the SDK made one attempt for the blocked call
    assert reached_upstream(gw, provider, source) == 1


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-4.1-nano"), ("anthropic", "claude-opus-4-1"), ("google", "gemini-2.0-flash-lite")],
)
def test_per_model_daily_call_cap(gw: Gateway, source: str, provider: str, model: str) -> None:
    put(gw, "/api/config/quotas", {"model_limits": [{"model": model, "daily_calls": 1}]})
    sdk_call(gw, provider, source, model=model)
    with pytest.raises(RATE_LIMITED[provider]):
        sdk_call(gw, provider, source + "-other", model=model)  # another source: the model cap applies
    (blocked,) = gw.wait_calls(source + "-other")
    assert (blocked["blocked_by"], blocked["model"]) == ("quota", model)
    sdk_call(gw, provider, source + "-third")  # another model is not limited
    assert reached_upstream(gw, provider, source + "-other") == 0


@pytest.mark.parametrize("period", ["daily_usd", "monthly_usd"])
def test_per_source_usd_caps(gw: Gateway, source: str, period: str) -> None:
    cost = real_cost(gw, "openai", source)
    # the first call's reservation fits, a second one does not
    cap = worst_case_cost("openai", source) + 0.5 * cost
    put(gw, "/api/config/quotas", {"source_limits": [{"source": source, period: cap}]})
    sdk_call(gw, "openai", source)
    gw.wait_calls(source, 1)
    with pytest.raises(openai.RateLimitError) as raised:
        sdk_call(gw, "openai", source)
    assert ("daily" if period == "daily_usd" else "monthly") in str(raised.value)
    first, second = gw.wait_calls(source, 2)
    assert first["cost_usd"] == pytest.approx(cost, rel=1e-9)
    assert second["blocked_by"] == "quota"
    assert reached_upstream(gw, "openai", source) == 1
    scope = budget_status(gw)[(f"source:{source}", "day" if period == "daily_usd" else "month")]
    assert scope["spent_usd"] == pytest.approx(cost, rel=1e-9) and scope["reserved_usd"] == 0


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
@pytest.mark.parametrize("period", ["daily_usd", "monthly_usd"])
def test_global_budget_caps(gw: Gateway, source: str, provider: str, period: str) -> None:
    put(gw, "/api/settings/budget", {"daily_usd": 1000.0, "monthly_usd": 1000.0})
    status = budget_status(gw)
    assert status[("global", "day")]["spent_usd"] == pytest.approx(spent_today(gw), rel=1e-9, abs=1e-12)
    baseline = status[("global", "day" if period == "daily_usd" else "month")]["spent_usd"]
    cost = real_cost(gw, provider, source)
    sdk_call(gw, provider, source)
    (done,) = gw.wait_calls(source, 1)
    reserved = gw.call(done["id"])["details"]["controls"]["worst_case"]["worst_case_usd"]
    assert reserved >= cost  # the reservation covered what the call cost (input with its margin)
    put(
        gw, "/api/settings/budget", {period: baseline + 1.5 * cost}
    )  # room for half a call: less than any worst case
    expect_blocked(gw, provider, source, 429, RATE_LIMITED)
    first, second = gw.wait_calls(source, 2)
    assert first["outcome"] == "ok" and first["cost_usd"] == pytest.approx(cost, rel=1e-9)
    assert (second["blocked_by"], second["status"]) == ("budget", 429)
    raw = raw_call(gw, provider, source)
    assert raw.headers["x-tokenlens-blocked-by"] == "budget" and raw.headers["x-should-retry"] == "false"
    expected_wait = seconds_to_utc_midnight() if period == "daily_usd" else seconds_to_next_utc_month()
    assert abs(int(raw.headers["retry-after"]) - expected_wait) < 5
    assert reached_upstream(gw, provider, source) == 1


def test_a_hand_edited_file_applies_within_two_seconds(gw: Gateway, source: str) -> None:
    sdk_call(gw, "openai", source)
    write_config(gw.config, gw.sims, EXTRA + f"quotas:\n  kill_switches: [{source}]\n")
    started = time.monotonic()

    def blocked() -> bool:
        return raw_call(gw, "openai", source).status_code == 403

    assert wait_until(blocked, timeout=5)
    assert time.monotonic() - started < 2.5
    assert httpx.get(f"{gw.url}/api/config/quotas", timeout=10).json()["kill_switches"] == [source]


def test_a_quota_put_is_in_the_file_and_in_force_on_the_next_request(gw: Gateway, source: str) -> None:
    put(gw, "/api/config/quotas", {"source_limits": [{"source": source, "daily_calls": 0}]})
    assert source in gw.config.read_text()
    assert raw_call(gw, "anthropic", source).status_code == 429
    bad = httpx.put(
        f"{gw.url}/api/config/quotas", json={"source_limits": [{"source": source, "daily_calls": -1}]}
    )
    assert bad.status_code == 400 and bad.json()["field"] == "quotas.source_limits[0].daily_calls"
    assert raw_call(gw, "anthropic", source).status_code == 429  # unchanged


def test_fifty_concurrent_calls_against_a_cap_that_fits_five(gw: Gateway, source: str) -> None:
    cost = real_cost(gw, "openai", source)
    put(gw, "/api/settings/budget", {"daily_usd": 1000.0})
    baseline = budget_status(gw)[("global", "day")]["spent_usd"]
    assert baseline == pytest.approx(spent_today(gw), rel=1e-9, abs=1e-12)
    room = 5.5 * worst_case_cost("openai", source)  # all fifty reserve at once: five reservations fit
    put(gw, "/api/settings/budget", {"daily_usd": baseline + room})
    barrier = threading.Barrier(50)
    statuses: list[int] = []
    lock = threading.Lock()
    body = request_json("openai", source)
    # every answer waits 2 s: all fifty are admitted (or refused) before the first settles at its real cost,
    # which is below its worst case and would make room for a sixth on a loaded machine
    headers = {"X-TokenLens-Source": source, "x-sim-delay-ms": "2000"}

    def one() -> None:
        barrier.wait()
        response = httpx.post(
            f"{gw.base_url('openai')}/chat/completions", json=body, headers=headers, timeout=30
        )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = gw.wait_calls(source, 50)
    assert len(calls) == 50
    ok = [c for c in calls if c["outcome"] == "ok"]
    blocked = [c for c in calls if c["outcome"] == "blocked"]
    assert (
        len(ok) + len(blocked) == 50
        and statuses.count(200) == len(ok)
        and statuses.count(429) == len(blocked)
    )
    assert 4 <= len(ok) <= 5
    assert all(c["blocked_by"] == "budget" for c in blocked)
    assert reached_upstream(gw, "openai", source) == len(ok)  # no blocked call reached the upstream
    spent = sum(c["cost_usd"] for c in ok)
    assert spent == pytest.approx(len(ok) * cost, rel=1e-9)
    reservations = [gw.call(c["id"])["details"]["controls"]["worst_case"]["worst_case_usd"] for c in ok]
    largest_error = max(abs(r - cost) for r in reservations)
    assert spent <= room + largest_error + 1e-15
    status = budget_status(gw)[("global", "day")]
    assert status["reserved_usd"] == 0 and status["spent_usd"] == pytest.approx(baseline + spent, rel=1e-9)


def test_imported_spend_counts_toward_a_quota_at_once(gw: Gateway, source: str) -> None:
    put(gw, "/api/config/quotas", {"source_limits": [{"source": source, "daily_usd": 1.0}]})

    def import_spend(call_id: str, usd: float) -> None:
        line = {
            "id": call_id,
            "ts": datetime.now(UTC).isoformat(),
            "provider": "openai",
            "model": MODELS["openai"],
            "source": source,
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": usd,
        }
        response = httpx.post(
            f"{gw.url}/api/import",
            content=json.dumps(line) + "\n",
            headers={"Content-Type": "application/x-ndjson"},
            timeout=10,
        )
        assert response.json() == {"imported": 1, "skipped": 0, "errors": []}

    imported = {f"{source}-a", f"{source}-b"}
    import_spend(f"{source}-a", 0.5)  # half the quota: a call's worst case (fractions of a cent) fits
    sdk_call(gw, "openai", source)
    (first,) = [c for c in gw.wait_calls(source, 2) if c["id"] not in imported]
    assert first["outcome"] == "ok"
    import_spend(f"{source}-b", 0.5)  # the quota is used up, with no restart in between
    with pytest.raises(openai.RateLimitError):
        sdk_call(gw, "openai", source)
    assert reached_upstream(gw, "openai", source) == 1
    calls = [c for c in gw.wait_calls(source, 4) if c["id"] not in imported]
    assert [(c["outcome"], c["blocked_by"]) for c in calls] == [("ok", None), ("blocked", "quota")]
    spent = budget_status(gw)[(f"source:{source}", "day")]["spent_usd"]
    assert spent == pytest.approx(1.0 + first["cost_usd"], rel=1e-9)


def test_the_ledger_is_rebuilt_from_the_store_after_a_restart(
    sims: dict[str, Simulator], tmp_path: Path, source: str
) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, sims, EXTRA + "budgets: {daily_usd: 100, monthly_usd: 1000}\n")
    first = start_gateway(tmp_path, config, sims)
    try:
        for _ in range(3):
            sdk_call(first, "openai", source)
        calls = first.wait_calls(source, 3)
    finally:
        assert stop_gateway(first) == 0
    expected = sum(c["cost_usd"] for c in calls)
    assert expected == pytest.approx(3 * real_cost(first, "openai", source), rel=1e-9)
    second = start_gateway(tmp_path, config, sims)
    try:
        status = budget_status(second)
        assert status[("global", "day")]["spent_usd"] == pytest.approx(expected, rel=1e-9)
        assert status[("global", "month")]["spent_usd"] == pytest.approx(expected, rel=1e-9)
    finally:
        assert stop_gateway(second) == 0


@pytest.mark.parametrize(
    ("provider", "model", "kind"),
    [("openai", "gpt-3.5-turbo-instruct", "completions"), ("anthropic", "claude-haiku-4-5", "messages")],
)
def test_a_small_output_limit_beside_a_large_one_cannot_overspend_a_cap(
    gw: Gateway, source: str, provider: str, model: str, kind: str
) -> None:
    """Issue 17, finding 6: `max_completion_tokens: 1` beside `max_tokens: 4000` (which this upstream honours)
    let 50 of 50 concurrent calls through a $0.05 cap. The largest limit is reserved now: spend stays within
    the cap, and the calls admitted are the ones that fit."""
    cap = 0.05
    put(gw, "/api/settings/budget", {"daily_usd": 1000.0})
    baseline = budget_status(gw)[("global", "day")]["spent_usd"]
    assert baseline == pytest.approx(spent_today(gw), rel=1e-9, abs=1e-12)
    put(gw, "/api/settings/budget", {"daily_usd": baseline + cap})
    knobs = {"x-sim-reply-words": "4000", "x-sim-delay-ms": "400"}
    headers = {"X-TokenLens-Source": source}
    text = prompt(source)
    if provider == "openai":
        body: dict[str, Any] = {
            "model": model,
            "prompt": text,
            "max_tokens": 4000,
            "max_completion_tokens": 1,
        }
    else:
        body = {
            "model": model,
            "max_tokens": 4000,
            "max_completion_tokens": 1,
            "messages": [{"role": "user", "content": text}],
        }
    usage = gw.sims[provider].expected_usage(provider, kind, body, knobs)
    assert usage["output_tokens"] == 4000  # the simulator honours max_tokens
    cost = expected_cost(model, usage)
    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        try:
            if provider == "openai":
                client = openai.OpenAI(
                    base_url=gw.base_url("openai"), api_key="sk-test", default_headers=headers
                )
                client.completions.create(
                    model=model,
                    prompt=text,
                    max_tokens=4000,
                    extra_body={"max_completion_tokens": 1},
                    extra_headers=knobs,
                )
            else:
                client_a = anthropic.Anthropic(
                    base_url=gw.base_url("anthropic"), api_key="sk-ant-test", default_headers=headers
                )
                client_a.messages.create(
                    model=model,
                    max_tokens=4000,
                    messages=[{"role": "user", "content": text}],
                    extra_body={"max_completion_tokens": 1},
                    extra_headers=knobs,
                )
            outcome = "ok"
        except RATE_LIMITED[provider]:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = gw.wait_calls(source, 50)
    ok = [c for c in calls if c["outcome"] == "ok"]
    assert len(calls) == 50 and len(ok) == outcomes.count("ok")
    assert all(c["blocked_by"] == "budget" for c in calls if c["outcome"] != "ok")
    assert reached_upstream(gw, provider, source) == len(ok)
    assert all(c["cost_usd"] == pytest.approx(cost, rel=1e-9) for c in ok)
    spent = sum(c["cost_usd"] for c in ok)
    assert 1 <= len(ok) <= int(cap / cost)
    assert spent <= cap + 1e-12
    status = budget_status(gw)[("global", "day")]
    assert status["reserved_usd"] == 0 and status["spent_usd"] == pytest.approx(baseline + spent, rel=1e-9)
