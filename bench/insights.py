"""Per-call cost of token intelligence on a 50 KB prompt (issue 6: under 2 ms per call).

Measures, for OpenAI, Anthropic and Gemini bodies of about 50 KB (system prompt, history, tool output with
some waste in it):
- analysis: waste detection + heatmap + complexity, as the writer thread runs them (`exchange.deferred`);
- dedup key: canonical body and SHA-256, the only work the dedup stage adds on the proxy path.

Reproduce: .venv/bin/python bench/insights.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from tokenlens.complexity import complexity_score
from tokenlens.dedup import canonical_body, credential_digest, request_key
from tokenlens.heatmap import scale_sections, sections_of
from tokenlens.prompt_parts import request_parts
from tokenlens.tokens import warm_up
from tokenlens.waste import analyze_waste

WORDS = (
    "the gateway records every call with its exact cost and finds waste in prompts sent by agents "
    "tools return documents which are retrieved from the index then summarised for the user"
).split()


def text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + ". "
        if rng.random() < 0.05:
            sentence = "Please " + sentence + "\n\n\n   \n"
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:chars]


def bodies(rng: random.Random) -> dict[str, tuple[str, dict[str, Any]]]:
    system, doc, q = text(rng, 8_000), text(rng, 30_000), text(rng, 400)
    turns = [text(rng, 1_500) for _ in range(8)]
    openai_msgs: list[dict[str, Any]] = [{"role": "system", "content": system}]
    anthropic_msgs: list[dict[str, Any]] = []
    gemini: list[dict[str, Any]] = []
    for i, t in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        openai_msgs.append({"role": role, "content": t})
        anthropic_msgs.append({"role": role, "content": t})
        gemini.append({"role": "user" if role == "user" else "model", "parts": [{"text": t}]})
    openai_msgs += [{"role": "user", "content": doc + "\n" + q}]
    anthropic_msgs += [
        {"role": "user", "content": [{"type": "text", "text": doc}, {"type": "text", "text": q}]}
    ]
    gemini += [{"role": "user", "parts": [{"text": doc}, {"text": q}]}]
    return {
        "openai": ("gpt-4o", {"model": "gpt-4o", "messages": openai_msgs}),
        "anthropic": (
            "claude-sonnet-4-6",
            {"model": "claude-sonnet-4-6", "max_tokens": 1000, "system": system, "messages": anthropic_msgs},
        ),
        "google": (
            "gemini-2.5-flash",
            {"systemInstruction": {"parts": [{"text": system}]}, "contents": gemini},
        ),
    }


def analysis(api: str, model: str, body: dict[str, Any]) -> None:
    analyze_waste(api, body, model)
    heat = sections_of(request_parts(api, body), api, model)
    scale_sections(heat.sections, heat.total + 123)
    complexity_score(api, body, heat.total, 300, heat.turns)


def dedup_key(api: str, model: str, body: dict[str, Any]) -> None:
    request_key(
        provider=api,
        endpoint="/v1/x",
        query="",
        model=model,
        body=canonical_body(body, b""),
        credential=credential_digest([("authorization", "Bearer sk-test")]),
    )


def per_call_ms(fn: Callable[[], None], runs: int) -> tuple[float, float, float]:
    """p50, p90 and max of `runs` calls, in milliseconds."""
    fn()  # warm caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))], samples[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    warm_up()
    rng = random.Random(6)
    print(
        f"{'format':<10} {'body KB':>8} {'analysis p50 ms':>16} {'p90':>7} {'max':>8} {'dedup key p50 ms':>17}"
    )
    for api, (model, body) in bodies(rng).items():
        size = len(json.dumps(body)) / 1024
        a50, a90, amax = per_call_ms(lambda: analysis(api, model, body), args.runs)  # noqa: B023
        d50, _, _ = per_call_ms(lambda: dedup_key(api, model, body), args.runs)  # noqa: B023
        print(f"{api:<10} {size:>8.1f} {a50:>16.3f} {a90:>7.3f} {amax:>8.3f} {d50:>17.3f}")
    print("analysis runs in the writer thread (exchange.deferred); the proxy path only queues it.")
    print("reproduce: .venv/bin/python bench/insights.py --runs", args.runs)


if __name__ == "__main__":
    main()
