"""`tokenlens daemon --workers N`: requests/s of 1, 2 and N gateway processes sharing one port (issue 11).

    .venv/bin/python bench/workers.py [--workers 1,2,4] [--duration 6] [--connections 32] [--url postgresql://...]

Starts, on 127.0.0.1 only, the provider simulator (plain HTTP) and, one after another, `tokenlens daemon
--workers N` (full default pipeline, a fresh SQLite store, or `--url` for PostgreSQL) in front of it; after a
warm-up, keep-alive requests/s and latency of a small non-streaming chat completion (wrk when installed, else
the asyncio generator), then checks that every request sent was recorded. Prints a table and writes JSON to
bench/results/. The simulator and the load generator run on the same machine and take CPU too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    CHAT_PATH,
    GATEWAY_PREFIX,
    VENV_BIN,
    LoadGenerator,
    Processes,
    environment,
    free_port,
    results_path,
    start_simulator,
    wait_for_calls,
    wait_http,
    wait_idle,
    workdir,
    write_json,
)


def run(count: int, procs: Processes, work: Path, sim_port: int, url: str | None) -> tuple[Any, int]:
    """Start `--workers count`; returns its process and port once every worker answers."""
    port = free_port()
    config = work / f"tokenlens-{count}.yaml"
    text = f"providers:\n  openai:\n    upstream: http://127.0.0.1:{sim_port}\n"
    if url:
        text += f"storage: {{url: '{url}'}}\n"
    config.write_text(text)
    argv = [str(VENV_BIN / "tokenlens"), "daemon", "--port", str(port), "--config", str(config)]
    argv += ["--data-dir", str(work / f"data-{count}"), "--workers", str(count)]
    proc = procs.start(f"tokenlens-{count}", argv)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
    time.sleep(2.0 + count)  # every worker listening, tokenizers loaded
    wait_idle(proc.pid)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default=f"1,2,{max(4, os.cpu_count() or 1)}")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--url", default=None, help="a PostgreSQL store URL (default: a fresh SQLite store)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    rows: list[dict[str, Any]] = []
    path = GATEWAY_PREFIX + CHAT_PATH
    with workdir(args.keep) as work, Processes(work) as procs:
        _, sim_port = start_simulator(procs)
        load = LoadGenerator(work)
        for count in counts:
            proc, port = run(count, procs, work, sim_port, args.url)
            load.run(port, path, args.connections, 2.0)  # warm-up
            warm = wait_for_calls(port, 0, timeout=1)["calls"]
            result = load.run(port, path, args.connections, args.duration)
            kpi = wait_for_calls(port, warm + result.sent, timeout=30)
            rows.append(
                {
                    "workers": count,
                    **result.as_dict(),
                    "recorded": kpi["calls"] - warm,
                    "all_recorded": kpi["calls"] - warm >= result.completed,
                }
            )
            procs.stop(proc, grace=40)
    print(f"load: {load.description}; {args.connections} connections, {args.duration:.0f} s per run")
    print(f"{'workers':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'recorded':>9}")
    for row in rows:
        print(
            f"{row['workers']:>7} {row['rps']:>8.0f} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} "
            f"{sum(row['errors'].values()):>6} {row['recorded']:>9}"
        )
    out = results_path("workers")
    write_json(
        out, {"environment": environment(), "store": "postgresql" if args.url else "sqlite", "runs": rows}
    )
    print(
        f"reproduce: .venv/bin/python bench/workers.py --workers {args.workers} --duration {args.duration:g} "
        f"--connections {args.connections}{' --url URL' if args.url else ''}\nresults: {out}"
    )


if __name__ == "__main__":
    main()
