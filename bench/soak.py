"""Memory of `tokenlens daemon` over a soak of at least 100,000 requests (docs/benchmarks.md).

    .venv/bin/python bench/soak.py [--requests 100000] [--connections 10] [--max-seconds 900]

Starts the provider simulator and TokenLens (full default pipeline, fresh SQLite store) on 127.0.0.1, sends
keep-alive non-streaming chat completions in segments (wrk when installed, else the asyncio generator) until
`--requests` were sent or `--max-seconds` passed, samples the daemon's RSS from /proc/<pid>/status every
`--sample-interval` seconds, checks that every request was recorded, and reports the RSS at start, after the
warm-up, at the end and its maximum, with the growth per 10,000 requests over the second half of the soak.
Writes JSON to bench/results/. 100,000 requests take 4.5 to 6.5 minutes on the 2-core development VM.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    CHAT_PATH,
    GATEWAY_PREFIX,
    REPO,
    Interrupted,
    LoadGenerator,
    Processes,
    Sampler,
    environment,
    install_wrk,
    results_path,
    rss_mib,
    start_simulator,
    start_tokenlens,
    wait_for_calls,
    workdir,
    write_json,
)

GROWTH_LIMIT_MIB_PER_10K = 1.0  # above this over the second half, memory is called growing


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 when undefined)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=100_000, help="requests to send (default 100000)")
    p.add_argument("--connections", type=int, default=10, help="keep-alive connections (default 10)")
    p.add_argument("--segment", type=float, default=10, help="seconds per load segment (default 10)")
    p.add_argument("--warmup", type=float, default=3, help="seconds of warm-up load before the baseline")
    p.add_argument("--sample-interval", type=float, default=2, help="seconds between RSS samples (default 2)")
    p.add_argument(
        "--max-seconds", type=float, default=900, help="stop the soak after this long (default 900)"
    )
    p.add_argument("--load", choices=("auto", "wrk", "python"), default="auto", help="load generator")
    p.add_argument(
        "--install-wrk", action="store_true", help="apt-get install -y wrk when it is missing (root)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, TokenLens store)")
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/soak-*.json")
    return p.parse_args(argv)


def reproduce_command(args: argparse.Namespace) -> str:
    parts = [
        ".venv/bin/python",
        "bench/soak.py",
        "--requests",
        str(args.requests),
        "--connections",
        str(args.connections),
        "--segment",
        f"{args.segment:g}",
        "--warmup",
        f"{args.warmup:g}",
        "--sample-interval",
        f"{args.sample_interval:g}",
        "--max-seconds",
        f"{args.max_seconds:g}",
        "--load",
        args.load,
    ]
    return f"cd {shlex.quote(str(REPO))} && " + shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    if args.install_wrk:
        install_wrk()
    started = time.time()
    env = environment()
    command = reproduce_command(args)
    print(f"TokenLens soak; reproduce with:\n  {command}\n", flush=True)
    path = GATEWAY_PREFIX + CHAT_PATH
    segments: list[dict[str, Any]] = []
    with workdir(args.keep) as wd, Processes(wd) as procs:
        load = LoadGenerator(wd, args.load)
        print(f"load generator: {load.description}", flush=True)
        _, sim_port = start_simulator(procs)
        tl, port = start_tokenlens(procs, wd, sim_port)
        rss_idle = rss_mib(tl.pid)
        sent = 0
        completed = 0
        errors = 0
        t0 = time.monotonic()
        with Sampler(tl.pid, args.sample_interval) as sampler:
            w = load.run(port, path, args.connections, args.warmup)
            sent += w.sent
            wait_for_calls(port, sent)
            rss_warm = sampler.sample()
            print(
                f"RSS idle after start {rss_idle:.1f} MiB, after warm-up ({w.sent:,} requests) {rss_warm:.1f} MiB"
            )
            soak_sent = 0
            while soak_sent < args.requests and time.monotonic() - t0 < args.max_seconds:
                remaining = args.requests - soak_sent
                rate = (soak_sent / sum(s["seconds"] for s in segments)) if segments else 0
                seconds = args.segment if not rate else max(1.0, min(args.segment, remaining / rate + 0.5))
                r = load.run(port, path, args.connections, seconds)
                soak_sent += r.sent
                sent += r.sent
                completed += r.completed
                errors += r.error_count
                rss = sampler.sample()
                segments.append(
                    {
                        "requests_total": soak_sent,
                        "seconds": r.duration_s,
                        "rps": r.rps,
                        "p50_ms": r.p50_ms,
                        "p99_ms": r.p99_ms,
                        "errors": r.errors,
                        "rss_mib": rss,
                    }
                )
                print(
                    f"  {soak_sent:>8,} requests  {time.monotonic() - t0:6.0f} s  {r.rps:6.0f} req/s  "
                    f"p99 {r.p99_ms:6.1f} ms  RSS {rss:6.1f} MiB",
                    flush=True,
                )
            kpi = wait_for_calls(port, sent, timeout=30)
            time.sleep(3)  # idle: what is still held once the load stopped
            rss_end = sampler.sample()
        soak_seconds = time.monotonic() - t0
        db_files = list((wd / "tokenlens-data").glob("tokenlens.db*"))
        db_mib = sum(f.stat().st_size for f in db_files) / 2**20
        code = procs.stop(tl)

    samples = sampler.samples
    rss_max = max(v for _, v in samples)
    half = segments[len(segments) // 2 :]
    per_10k = slope([(s["requests_total"] / 10_000, s["rss_mib"]) for s in half]) if len(half) >= 2 else 0.0
    growth = (rss_end or 0) - (rss_warm or 0)
    grew = per_10k > GROWTH_LIMIT_MIB_PER_10K
    recorded_ok = kpi["calls"] == sent
    reached = soak_sent >= args.requests
    rps = soak_sent / sum(s["seconds"] for s in segments) if segments else 0

    print("\n## Soak results\n")
    print(
        f"{env['cpus']} CPUs ({env['cpu_model']}), Python {env['python']}, mitmproxy {env['mitmproxy']}, "
        f"TokenLens {env['tokenlens']} ({env['git']}), load: {load.description}, c={args.connections}.\n"
    )
    print(
        "| requests | duration | req/s | RSS idle | after warm-up | end (idle) | max | end - warm-up | slope, 2nd half |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {soak_sent:,} | {soak_seconds:.0f} s | {rps:,.0f} | {rss_idle:.1f} MiB | {rss_warm:.1f} MiB | "
        f"{rss_end:.1f} MiB | {rss_max:.1f} MiB | {growth:+.1f} MiB | {per_10k:+.2f} MiB/10k req |"
    )
    print(
        f"\nRecords: {kpi['calls']:,} recorded for {sent:,} sent ({kpi['error_calls']} error records: requests in "
        f"flight when a segment stopped) {'ok' if recorded_ok else 'MISMATCH'}; store {db_mib:.0f} MiB on disk; "
        f"daemon exit code {code}."
    )
    verdict_mem = "GREW" if grew else "flat"
    print(
        f"Memory: {verdict_mem} (limit {GROWTH_LIMIT_MIB_PER_10K:g} MiB per 10,000 requests over the second half)."
    )
    if not reached:
        print(f"NOTE: stopped after {args.max_seconds:g} s with {soak_sent:,} of {args.requests:,} requests.")
    ok = recorded_ok and not grew and reached
    print(f"\n{'PASS' if ok else 'FAIL'}")
    print(f"\nReproduce: {command}")
    if not args.no_json:
        out = results_path("soak")
        write_json(
            out,
            {
                "benchmark": "soak",
                "command": command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "elapsed_s": time.time() - started,
                "environment": env,
                "load_generator": load.description,
                "args": vars(args),
                "requests": soak_sent,
                "seconds": soak_seconds,
                "rps": rps,
                "rss_mib": {
                    "idle_after_start": rss_idle,
                    "after_warmup": rss_warm,
                    "end_idle": rss_end,
                    "max": rss_max,
                    "growth_end_minus_warmup": growth,
                    "slope_second_half_per_10k_requests": per_10k,
                },
                "memory_grew": grew,
                "records": {
                    "sent": sent,
                    "recorded": kpi["calls"],
                    "error_records": kpi["error_calls"],
                    "ok": recorded_ok,
                },
                "store_mib": db_mib,
                "segments": segments,
                "samples": samples,
                "daemon_exit_code": code,
            },
        )
        print(f"JSON: {out.relative_to(REPO)}")
    print(f"elapsed {time.time() - started:.0f} s")
    return 0 if ok else 1


def main() -> int:
    args = parse_args()
    try:
        return run(args)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
