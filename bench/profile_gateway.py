"""Where TokenLens spends its time per request, next to a bare mitmdump (py-spy, sampling only the GIL holder).

    .venv/bin/python bench/profile_gateway.py [--seconds 15] [--connections 10] [--py-spy PATH]

Starts the provider simulator, a bare `mitmdump` (reverse, bench/mitm_noop.py), a regular-mode `mitmdump`
with the /proxy rewrite (bench/mitm_rewrite.py) and `tokenlens daemon` on 127.0.0.1, loads each with
keep-alive chat completions (`--stream`: streamed, SSE with the usage chunk; wrk, else the asyncio generator) while
`py-spy record --gil --threads` samples it, and prints milliseconds of GIL per request:
- per thread (mitmproxy's event loop, the record writer, ...);
- per addon hook on the event loop (the frame right under mitmproxy's `AddonManager.invoke_addon`, or under
  TokenLens' dispatcher for its stages);
- per step of the record writer (the frames under `RecordWriter._process`);
- the heaviest functions (inclusive) of TokenLens' own code.

py-spy is not a project dependency: `pip install py-spy` (any venv; pass --py-spy if it is not on PATH).
Only the GIL holder is sampled, which is what limits a single-process asyncio proxy: the sum over threads is
the CPU (GIL) time one request costs. Writes the folded stacks and a JSON summary to bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    BENCH_DIR,
    CHAT_PATH,
    GATEWAY_PREFIX,
    REPO,
    RESULTS_DIR,
    VENV_BIN,
    Interrupted,
    LoadGenerator,
    Processes,
    cpu_seconds,
    environment,
    free_port,
    start_simulator,
    start_tokenlens,
    stream_body,
    wait_port,
    workdir,
    write_json,
)

LINE_NO = re.compile(r":\d+\)")
OWN_CODE = re.compile(r"\((tokenlens|addons|web)/")


def folded(path: Path) -> list[tuple[list[str], int]]:
    """py-spy raw output: one `frame;frame;... count` per line; line numbers dropped."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks.append(([LINE_NO.sub(")", f) for f in stack.split(";")], int(count)))
    return stacks


def breakdown(stacks: list[tuple[list[str], int]], rate: float, requests: int) -> dict[str, Any]:
    """Milliseconds of GIL per request, by thread, hook, writer step and own function."""
    per_sample = 1000 / rate / max(1, requests)
    threads: collections.Counter[str] = collections.Counter()
    hooks: collections.Counter[str] = collections.Counter()
    writer: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, n in stacks:
        total += n
        thread = frames[0] if frames and frames[0].startswith("thread") else "?"
        threads[re.sub(r"\(\d+\)", "", thread).replace("thread ", "").strip(": ")] += n
        for i, f in enumerate(frames):
            if f.startswith("AddonManager.invoke_addon"):
                nxt = frames[i + 1] if i + 1 < len(frames) else "(self)"
                below = i + 2
                while nxt.startswith(
                    ("sync_dispatcher.", "async_dispatcher.", "_await_then_rest (", "_call (", "_wait (")
                ):
                    # TokenLens' own dispatcher: the stage's hook is further down
                    nxt = frames[below] if below < len(frames) else "TokenLens dispatch (self)"
                    below += 1
                if nxt.startswith("AddonManager._iter_hooks"):
                    nxt = "mitmproxy: finding the hooks (_iter_hooks)"
                elif nxt.startswith("Hook.args"):
                    nxt = "mitmproxy: Hook.args (one call per hook method)"
                hooks[nxt] += n
                break
        for i, f in enumerate(frames):
            if f.startswith("RecordWriter._process"):
                writer[" > ".join(frames[i + 1 : i + 3]) or "(self)"] += n
                break
        seen = set()
        for f in frames:
            if OWN_CODE.search(f) and f not in seen and not f.startswith(("<module>", "main (", "daemon (")):
                seen.add(f)
                own[f] += n

    def table(counter: collections.Counter[str], limit: int = 25) -> list[tuple[str, float]]:
        return [(k, v * per_sample) for k, v in counter.most_common(limit)]

    return {
        "requests": requests,
        "gil_ms_per_request": total * per_sample,
        "threads": table(threads),
        "hooks": table(hooks),
        "writer": table(writer, 12),
        "own_inclusive": [
            (k, v)
            for k, v in table(own, 60)
            if not k.startswith(("run_gateway", "Thread", "RecordWriter._run", "TokenLens"))
        ][:30],
    }


def profile(
    py_spy: str, pid: int, seconds: float, rate: int, out: Path, run_load: Any
) -> tuple[int, float, float]:
    """Sample `pid` while `run_load()` runs; returns (requests completed, seconds, CPU seconds of the pid)."""
    spy = subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-r", str(rate), "-d", str(int(seconds) + 2), "-f", "raw"]
        + ["-o", str(out), "--gil", "--threads"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)  # py-spy attaches
        cpu0 = cpu_seconds(pid) or 0.0
        result = run_load()
        cpu1 = cpu_seconds(pid) or 0.0
        spy.wait(timeout=seconds + 30)
    finally:
        if spy.poll() is None:
            spy.terminate()
            spy.wait(10)
    if not out.exists():
        err = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
        raise RuntimeError(f"py-spy wrote nothing (root or ptrace permission needed?): {err}")
    return result.completed, result.duration_s, cpu1 - cpu0


def print_breakdown(name: str, b: dict[str, Any], rps: float, cpu_ms: float) -> None:
    print(
        f"\n### {name}: {rps:,.0f} req/s, {cpu_ms:.2f} ms CPU/request (all threads, /proc), "
        f"{b['gil_ms_per_request']:.3f} ms GIL/request (py-spy)\n"
    )
    sections = (("thread", "threads"), ("event-loop hook (under invoke_addon)", "hooks"))
    sections += (("writer thread step", "writer"), ("TokenLens function (inclusive)", "own_inclusive"))
    for title, key in sections:
        if not b[key]:
            continue
        print(f"| {title} | ms/request |\n|---|---:|")
        for k, v in b[key]:
            if v >= 0.002:
                print(f"| `{k}` | {v:.3f} |")
        print()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15, help="load (and sampling) per target (default 15)")
    p.add_argument("--connections", type=int, default=10, help="keep-alive connections (default 10)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy executable (default: on PATH)")
    p.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--stream", action="store_true", help="stream the answers (SSE, with the usage chunk)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    if not args.py_spy:
        print("py-spy not found: pip install py-spy (in any venv) and pass --py-spy PATH", file=sys.stderr)
        return 2
    command = f"cd {shlex.quote(str(REPO))} && " + shlex.join(
        [".venv/bin/python", "bench/profile_gateway.py", "--seconds", f"{args.seconds:g}"]
        + ["--connections", str(args.connections), "--rate", str(args.rate), "--py-spy", args.py_spy]
        + (["--stream"] if args.stream else [])
    )
    print(f"reproduce: {command}", flush=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    summary: dict[str, Any] = {"command": command, "environment": environment(), "targets": {}}
    try:
        with workdir(args.keep) as wd, Processes(wd) as procs:
            body = stream_body(True) if args.stream else None
            load = LoadGenerator(wd, args.load, body=body)
            _, sim_port = start_simulator(procs)
            port = free_port()
            mitm = procs.start(
                "mitmdump-reverse",
                [str(VENV_BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1"]
                + [
                    "--mode",
                    f"reverse:http://127.0.0.1:{sim_port}@{port}",
                    "--set",
                    f"confdir={wd / 'mitmproxy'}",
                ]
                + ["-s", str(BENCH_DIR / "mitm_noop.py")],
            )
            wait_port(port, mitm)
            reg_port = free_port()
            regular = procs.start(
                "mitmdump-regular",
                [
                    str(VENV_BIN / "mitmdump"),
                    "-q",
                    "--listen-host",
                    "127.0.0.1",
                    "--mode",
                    f"regular@{reg_port}",
                ]
                + ["--set", f"confdir={wd / 'mitmproxy'}", "-s", str(BENCH_DIR / "mitm_rewrite.py")]
                + ["--set", f"bench_upstream=http://127.0.0.1:{sim_port}"],
            )
            wait_port(reg_port, regular)
            tl, tl_port = start_tokenlens(procs, wd, sim_port)
            targets = [
                ("mitmdump-reverse", mitm.pid, port, CHAT_PATH),
                ("mitmdump-regular", regular.pid, reg_port, None),
                ("tokenlens", tl.pid, tl_port, None),
            ]
            for name, pid, tport, path in targets:
                path = path or GATEWAY_PREFIX + CHAT_PATH
                load.run(tport, path, args.connections, 2)  # warm-up
                out = RESULTS_DIR / f"profile-{stamp}-{name}.folded"

                def run_load(tport: int = tport, path: str = path) -> Any:
                    return load.run(tport, path, args.connections, args.seconds)

                completed, seconds, cpu = profile(args.py_spy, pid, args.seconds, args.rate, out, run_load)
                b = breakdown(folded(out), args.rate, completed)
                rps = completed / seconds
                cpu_ms = cpu * 1000 / max(1, completed)
                summary["targets"][name] = {"rps": rps, "cpu_ms_per_request": cpu_ms, **b, "folded": str(out)}
                print_breakdown(name, b, rps, cpu_ms)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    t = summary["targets"]
    for base in ("mitmdump-reverse", "mitmdump-regular"):
        if "tokenlens" in t and base in t:
            a, b = t["tokenlens"], t[base]
            print(
                f"TokenLens costs {a['gil_ms_per_request']:.3f} ms GIL/request against {b['gil_ms_per_request']:.3f} "
                f"for {base} ({a['gil_ms_per_request'] - b['gil_ms_per_request']:+.3f} ms); CPU "
                f"{a['cpu_ms_per_request']:.2f} against {b['cpu_ms_per_request']:.2f} ms/request."
            )
    out_json = RESULTS_DIR / f"profile-{stamp}.json"
    write_json(out_json, summary)
    print(f"JSON: {out_json.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
