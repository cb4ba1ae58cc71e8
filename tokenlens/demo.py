"""A realistic, deterministic call history for `tokenlens demo` and the dashboard's browser tests.

`generate(days, seed, now)` returns call records in the JSONL import shape (docs/analytics-api.md) without costs, so
the store's import path prices them with the real Pricer and builds the rollups. Same arguments, same records.
The history has several sources with tags, models of the three providers, streams, prompt-cache reads and
writes, dedup hits, blocked and failed calls, fallbacks, guardrail flags, waste findings, heatmaps, stored
bodies for the most recent calls, and a spike (two days ago, one source sends four times its usual traffic, all to its largest model).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tokenlens.pricing import Pricer
from tokenlens.usage import Usage
from tokenlens.waste import WasteFinding, WasteReport, input_rate

DAY = 86400.0
SPIKE_SOURCE = "batch-summarizer"
SPIKE_DAYS_AGO = 2
BODY_WINDOW_S = 2 * DAY  # bodies are stored for calls younger than this

ENDPOINTS = {
    "anthropic": "/v1/messages",
    "openai": "/v1/chat/completions",
}


@dataclass(frozen=True)
class Profile:
    """How one source behaves: its models (with weights), volume and the shape of its requests."""

    source: str
    tags: dict[str, str]
    models: tuple[tuple[str, str, int], ...]  # (provider, model, weight)
    calls_per_day: int
    input_range: tuple[int, int]
    output_range: tuple[int, int]
    max_tokens: int
    stream_share: float
    cache_share: float  # share of calls reading a cached prompt prefix
    history_share: float  # share of input taken by earlier turns
    complexity: tuple[int, int]


PROFILES: tuple[Profile, ...] = (
    Profile(
        "support-bot",
        {"team": "support", "env": "prod"},
        (("anthropic", "claude-haiku-4-5", 7), ("anthropic", "claude-sonnet-4-5", 3)),
        34,
        (1500, 6000),
        (80, 400),
        1024,
        0.6,
        0.2,
        0.85,
        (1, 3),
    ),
    Profile(
        "code-agent",
        {"team": "platform", "env": "dev"},
        (("anthropic", "claude-sonnet-4-5", 6), ("anthropic", "claude-opus-4-1", 1), ("openai", "gpt-5", 2)),
        22,
        (8000, 40000),
        (300, 2500),
        8192,
        0.9,
        0.7,
        0.35,
        (5, 9),
    ),
    Profile(
        "research-notebook",
        {"team": "research", "env": "dev"},
        (("google", "gemini-2.5-pro", 3), ("google", "gemini-2.5-flash", 5)),
        14,
        (3000, 20000),
        (400, 1800),
        4096,
        0.3,
        0.0,
        0.2,
        (3, 7),
    ),
    Profile(
        SPIKE_SOURCE,
        {"team": "data", "env": "batch"},
        (("openai", "gpt-4o-mini", 6), ("openai", "gpt-4o", 2)),
        20,
        (2000, 9000),
        (60, 300),
        4096,
        0.0,
        0.1,
        0.0,
        (1, 3),
    ),
    Profile(
        "website-chat",
        {"team": "growth", "env": "prod"},
        (("openai", "gpt-4o", 1),),
        16,
        (400, 1500),
        (40, 200),
        1024,
        0.8,
        0.0,
        0.55,
        (0, 2),
    ),
    Profile(
        "ci-evals",
        {"team": "platform", "env": "ci"},
        (("openai", "gpt-4.1-mini", 2), ("google", "gemini-2.0-flash", 3)),
        10,
        (600, 2500),
        (20, 120),
        512,
        0.0,
        0.0,
        0.0,
        (0, 2),
    ),
)

LATENCY_MS = {  # (base, per output token)
    "claude-haiku-4-5": (350, 4),
    "claude-sonnet-4-5": (700, 9),
    "claude-opus-4-1": (1400, 18),
    "gpt-5": (1800, 12),
    "gpt-4o": (450, 7),
    "gpt-4o-mini": (300, 4),
    "gpt-4.1-mini": (300, 4),
    "gemini-2.5-pro": (1100, 8),
    "gemini-2.5-flash": (380, 3),
    "gemini-2.0-flash": (250, 3),
}
FALLBACK = {
    "claude-opus-4-1": "claude-sonnet-4-5",
    "gpt-4o": "gpt-4o-mini",
    "gemini-2.5-pro": "gemini-2.5-flash",
}
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 9, 8, 9, 10, 10, 9, 7, 5, 4, 3, 2, 2, 1)
QUERIES = (
    "Summarise this ticket and suggest a reply.",
    "Why does the build fail on the integration job?",
    "Classify the sentiment of the following review.",
    "Write a unit test for the parser edge case.",
    "Extract the invoice total and due date.",
    "Translate the release notes into German.",
)


def _endpoint(provider: str, model: str, stream: bool) -> str:
    if provider == "google":
        return f"/v1beta/models/{model}:{'streamGenerateContent' if stream else 'generateContent'}"
    return ENDPOINTS[provider]


def _split(total: int, shares: dict[str, float]) -> dict[str, int]:
    """`total` split by `shares` (integers summing to `total`; the rest goes to the query)."""
    out = {name: int(total * share) for name, share in shares.items()}
    out["query"] = total - sum(v for k, v in out.items() if k != "query")
    return out


def _bodies(rng: random.Random, provider: str, model: str, query: str, answer: str) -> tuple[str, str]:
    """A small request and response body in the provider's wire format."""
    if provider == "google":
        request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": query}]}]}
        response: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": answer}]}}]
        }
    elif provider == "anthropic":
        request = {"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": query}]}
        response = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": answer}]}
    else:
        request = {"model": model, "messages": [{"role": "user", "content": query}]}
        response = {
            "object": "chat.completion",
            "choices": [{"message": {"role": "assistant", "content": answer}}],
        }
    return json.dumps(request), json.dumps(response)


def _pick_model(rng: random.Random, profile: Profile) -> tuple[str, str]:
    provider, model, _ = rng.choices(profile.models, weights=[w for _, _, w in profile.models])[0]
    return provider, model


def _call(
    rng: random.Random, profile: Profile, ts: float, index: int, now: float, spike: bool = False
) -> dict[str, Any]:
    provider, model = _pick_model(rng, profile)
    if spike:  # the runaway job of the spike runs on the large model
        provider, model = profile.models[-1][0], profile.models[-1][1]
    stream = rng.random() < profile.stream_share
    input_total = rng.randint(*profile.input_range)
    output = rng.randint(*profile.output_range)
    cache_read = cache_write = 0
    if rng.random() < profile.cache_share:
        cache_read = int(input_total * rng.uniform(0.5, 0.85))
    elif profile.cache_share and rng.random() < 0.1:
        cache_write = int(input_total * 0.5)
    uncached = input_total - cache_read - cache_write
    base, per_token = LATENCY_MS[model]
    latency = base + per_token * output * rng.uniform(0.7, 1.4) + rng.uniform(0, 200)
    record: dict[str, Any] = {
        "id": f"{int(ts * 1e9):016x}{rng.getrandbits(32):08x}",
        "ts": datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z"),
        "provider": provider,
        "endpoint": _endpoint(provider, model, stream),
        "source": profile.source,
        "tags": dict(profile.tags),
        "requested_model": model,
        "model": model,
        "stream": stream,
        "status": 200,
        "outcome": "ok",
        "input_tokens": uncached if provider == "anthropic" else input_total,
        "output_tokens": output,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write if provider == "anthropic" else 0,
        "reasoning_tokens": int(output * 0.4) if model == "gpt-5" else 0,
        "usage_source": "provider",
        "latency_ms": round(latency, 1),
        "ttft_ms": round(base * rng.uniform(0.5, 0.9), 1) if stream else None,
        "max_tokens": profile.max_tokens,
        "attempts": 1,
        "complexity": rng.randint(*profile.complexity),
        "session_id": f"{profile.source}-s{index // 6}",
        "conversation_id": f"{profile.source}-c{index // 6}",
        "turn": index % 6 + 1,
    }
    history = profile.history_share * min(1.0, (index % 6) / 3) if profile.history_share else 0.0
    sections = _split(input_total, {"system": 0.12, "tools": 0.08, "context": 0.15, "history": history})
    heatmap: dict[str, Any] = {
        **sections,
        "scaled": True,
        "estimated_total": input_total,
        "turns": index % 6 + 1,
    }
    if cache_read or cache_write or profile.cache_share:
        heatmap["prefix"] = {
            "hash": f"{profile.source}-prefix",
            "tokens": sections["system"] + sections["tools"],
            "cache_used": bool(cache_read or cache_write),
        }
    details: dict[str, Any] = {"heatmap": heatmap}
    if rng.random() < 0.35:
        whitespace = rng.randint(5, 80)
        filler = rng.randint(3, 25)
        record["_waste"] = [  # priced by `lines`, at the model's input rate, as the pipeline does
            WasteFinding("whitespace", "messages[0]", whitespace, count=2),
            WasteFinding("filler", "system", filler, example="please kindly"),
        ]
        record["waste_tokens"] = whitespace + filler
    roll = rng.random()
    if roll < 0.025:  # a failed call: the provider was overloaded
        record.update(
            status=529, outcome="error", error="overloaded_error: upstream overloaded", output_tokens=0
        )
        record.update(
            input_tokens=0, cache_read_tokens=0, cache_write_tokens=0, usage_source=None, ttft_ms=None
        )
    elif roll < 0.05 and model in FALLBACK:  # the first model failed, the fallback answered
        record["fallback_from"] = model
        record["model"] = FALLBACK[model]
        record["attempts"] = 2
        details["attempts"] = [
            {
                "attempt": 1,
                "model": model,
                "provider": provider,
                "status": 529,
                "error": "overloaded",
                "latency_ms": round(rng.uniform(200, 900), 1),
            }
        ]
    elif roll < 0.075:  # a block: budget, quota or a guardrail
        blocked_by = rng.choice(["budget", "quota", "guardrails"])
        record.update(
            status=429 if blocked_by != "guardrails" else 400, outcome="blocked", blocked_by=blocked_by
        )
        record.update(input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0)
        record.update(usage_source=None, latency_ms=round(rng.uniform(1, 5), 2), ttft_ms=None)
        if blocked_by == "guardrails":
            record["guardrail_flags"] = [{"rule": "pii.card", "action": "block", "where": "request"}]
    elif roll < 0.1:  # a dedup hit answered from the cache
        record.update(
            outcome="cached", latency_ms=round(rng.uniform(1, 4), 2), ttft_ms=None, usage_source=None
        )
        record["_repeats"] = {k: record[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens")}
        record.update(input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0)
        details["dedup"] = {"hit_of": None, "age_s": round(rng.uniform(5, 280), 1)}
    elif roll < 0.13:
        record["guardrail_flags"] = [{"rule": "pii.email", "action": "warn", "where": "request"}]
    record["details"] = details
    if now - ts < BODY_WINDOW_S and record["outcome"] != "blocked":
        query = QUERIES[index % len(QUERIES)]
        if index % 17 == 0:
            query += " Use the key sk-demo-" + "Xy7" * 8 + " for the staging API."
        answer = "Here is a concise answer. " * rng.randint(1, 4)
        record["request_body"], record["response_body"] = _bodies(rng, provider, model, query, answer.strip())
    return record


def generate(days: int = 30, seed: int = 7, now: float | None = None) -> list[dict[str, Any]]:
    """The demo history: calls over the `days` days up to `now` (epoch seconds), oldest first.

    A cached call (a dedup hit) has no tokens; `_repeats` keeps the usage of the call it repeats, which
    `lines` prices into `saved_usd`.
    """
    if days < 1:
        raise ValueError("days: must be at least 1")
    if now is None:
        now = datetime.now(UTC).timestamp()
    rng = random.Random(seed)
    start = now - days * DAY
    records: list[dict[str, Any]] = []
    counters: dict[str, int] = {}
    for day in range(days):
        day_start = start + day * DAY
        growth = 0.75 + 0.5 * day / max(1, days - 1)  # traffic grows over the period
        weekday = datetime.fromtimestamp(day_start, UTC).weekday()
        weekend = 0.45 if weekday >= 5 else 1.0
        days_ago = days - 1 - day
        for profile in PROFILES:
            volume = profile.calls_per_day * growth * weekend * rng.uniform(0.8, 1.2)
            spike = profile.source == SPIKE_SOURCE and days_ago == SPIKE_DAYS_AGO
            if spike:
                volume *= 4
            for _ in range(max(1, round(volume))):
                hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
                ts = day_start + hour * 3600 + rng.uniform(0, 3600)
                if ts >= now:
                    continue
                index = counters.get(profile.source, 0)
                counters[profile.source] = index + 1
                records.append(_call(rng, profile, ts, index, now, spike))
    records.sort(key=lambda r: (r["ts"], r["id"]))
    return records


def lines(records: Iterable[dict[str, Any]], pricer: Pricer | None = None) -> Iterator[str]:
    """JSONL lines for `Store.import_lines`; a cached call's `saved_usd` priced with `pricer`."""
    for record in records:
        out = dict(record)
        findings = out.pop("_waste", None)
        if findings is not None:
            report = WasteReport([replace(f) for f in findings])
            report.price(input_rate(pricer, out["provider"], out["model"]) if pricer is not None else None)
            out["details"] = {**out["details"], "waste": report.to_dict()}
        repeats = out.pop("_repeats", None)
        if repeats is not None and pricer is not None:
            price = pricer.price(out["provider"], out["model"], Usage(**repeats))
            out["saved_usd"] = float(price.cost_usd) if price.priced and price.cost_usd is not None else None
        yield json.dumps(out, separators=(",", ":"))
