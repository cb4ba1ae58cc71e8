"""Saturation load: every call answered and every call recorded (issue 10), a benchmark outside the test run.

    .venv/bin/python bench/load.py [--seconds 60] [--connections 32]

Starts the provider simulator and TokenLens (full default pipeline, fresh SQLite store, the three providers
pointed at the simulator) on 127.0.0.1, then for `--seconds` keeps `--connections` asyncio clients busy with
a mix of plain and streamed calls on OpenAI, Anthropic and Gemini (one sixth each). Each client sends its next
call as soon as the last is answered, so the gateway runs at saturation. Afterwards it waits for the store to
catch up and compares: calls sent, calls answered (2xx, streams read to the end), calls recorded
(`/api/usage/kpi`). Prints a summary with latency percentiles and the daemon's RSS; writes JSON to
bench/results/. Exit status 1 when a call was not answered or not recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    VENV_BIN,
    Processes,
    environment,
    kpi_calls,
    percentile,
    results_path,
    rss_mib,
    start_simulator,
    wait_http,
    wait_idle,
    workdir,
    write_json,
)

MESSAGES = [{"role": "user", "content": "Summarise the plot of a short story in two sentences."}]
MIX: list[tuple[str, str, dict[str, Any], bool]] = [
    ("openai", "/proxy/openai/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES}, False),
    (
        "openai",
        "/proxy/openai/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        True,
    ),
    (
        "anthropic",
        "/proxy/anthropic/v1/messages",
        {"model": "claude-haiku-4-5", "max_tokens": 200, "messages": MESSAGES},
        False,
    ),
    (
        "anthropic",
        "/proxy/anthropic/v1/messages",
        {"model": "claude-haiku-4-5", "max_tokens": 200, "messages": MESSAGES, "stream": True},
        True,
    ),
    (
        "google",
        "/proxy/google/v1beta/models/gemini-2.0-flash:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": MESSAGES[0]["content"]}]}]},
        False,
    ),
    (
        "google",
        "/proxy/google/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": MESSAGES[0]["content"]}]}]},
        True,
    ),
]
HEADERS = {
    "authorization": "Bearer sk-bench-not-a-key",
    "x-api-key": "sk-bench-not-a-key",
    "anthropic-version": "2023-06-01",
    "x-goog-api-key": "bench-not-a-key",
}


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.answered = 0
        self.failed: dict[str, int] = {}
        self.latency: dict[str, list[float]] = {"plain": [], "stream": []}


async def client_loop(base: str, worker: int, deadline: float, tally: Tally) -> None:
    i = worker
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=HEADERS) as client:
        while time.monotonic() < deadline:
            provider, path, body, stream = MIX[i % len(MIX)]
            i += 1
            tally.sent += 1
            started = time.perf_counter()
            try:
                if stream:
                    async with client.stream("POST", path, json=body) as response:
                        async for _ in response.aiter_raw():
                            pass
                else:
                    response = await client.post(path, json=body)
                ok = response.status_code == 200
                reason = f"{provider} HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, reason = False, f"{provider} {type(exc).__name__}"
            if ok:
                tally.answered += 1
                tally.latency["stream" if stream else "plain"].append(time.perf_counter() - started)
            else:
                tally.failed[reason] = tally.failed.get(reason, 0) + 1


def start_gateway(procs: Processes, wd: Path, sim_port: int) -> tuple[Any, int]:
    from benchlib import free_port

    port = free_port()
    config = wd / "tokenlens.yaml"
    upstream = f"http://127.0.0.1:{sim_port}"
    config.write_text(
        "providers:\n"
        + "".join(f"  {name}: {{upstream: '{upstream}'}}\n" for name in ("openai", "anthropic", "google"))
    )
    proc = procs.start(
        "tokenlens",
        [
            str(VENV_BIN / "tokenlens"),
            "daemon",
            "--port",
            str(port),
            "--data-dir",
            str(wd / "tokenlens-data"),
            "--config",
            str(config),
        ],
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
    wait_idle(proc.pid)
    return proc, port


def run(args: argparse.Namespace) -> int:
    with workdir(args.keep) as wd, Processes(wd) as procs:
        _, sim_port = start_simulator(procs)
        tl, port = start_gateway(procs, wd, sim_port)
        rss_start = rss_mib(tl.pid)
        tally = Tally()
        deadline = time.monotonic() + args.seconds

        async def main() -> None:
            base = f"http://127.0.0.1:{port}"
            await asyncio.gather(*(client_loop(base, w, deadline, tally) for w in range(args.connections)))

        t0 = time.monotonic()
        asyncio.run(main())
        elapsed = time.monotonic() - t0
        rss_end = rss_mib(tl.pid)
        wait_deadline = time.monotonic() + 60
        while kpi_calls(port)["calls"] < tally.sent and time.monotonic() < wait_deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        recorded = int(kpi_calls(port)["calls"])
    lat = {k: sorted(v) for k, v in tally.latency.items()}
    result = {
        "seconds": round(elapsed, 1),
        "connections": args.connections,
        "sent": tally.sent,
        "answered": tally.answered,
        "failed": tally.failed,
        "recorded": recorded,
        "throughput_rps": round(tally.answered / elapsed, 1),
        "latency_ms": {
            k: {
                "p50": round(percentile(v, 50) * 1000, 1),
                "p99": round(percentile(v, 99) * 1000, 1),
                "n": len(v),
            }
            for k, v in lat.items()
            if v
        },
        "rss_mib": {"start": rss_start, "end": rss_end},
        "environment": environment(),
    }
    out = results_path("load")
    write_json(out, result)
    print(
        f"{tally.sent:,} calls in {elapsed:.0f} s ({result['throughput_rps']} answered/s, {args.connections} "
        f"clients, plain+stream x openai/anthropic/google): answered {tally.answered:,}, recorded {recorded:,}, "
        f"failed {tally.failed or 0}"
    )
    print(f"latency {result['latency_ms']}; RSS {rss_start} -> {rss_end} MiB; JSON: {out}")
    return 0 if tally.answered == tally.sent == recorded else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def main() -> int:
    return run(parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
