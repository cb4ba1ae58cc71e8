"""TokenLens vs bare mitmdump vs the LiteLLM proxy vs direct, side by side in one run (docs/benchmarks.md).

    .venv/bin/python bench/gateway.py [--duration 8] [--connections 1,16] [--streams 15] [--rounds 3]
                                      [--no-litellm]

Starts, on 127.0.0.1 only:
- the provider simulator (tests/provider_sim, plain HTTP) as the upstream of everything;
- a bare `mitmdump -q` in reverse mode to the simulator with a no-op addon (bench/mitm_noop.py);
- a `mitmdump -q` in regular mode with an addon that only rewrites /proxy/openai/... like the gateway does
  (bench/mitm_rewrite.py): the same proxy mode and routing as TokenLens, without the pipeline;
- `tokenlens daemon` with the full default pipeline and a fresh SQLite store, OpenAI -> the simulator;
- the LiteLLM proxy (bench/peers.py: a pinned release the benchmark installs on first use into its own
  environment under .cache/bench/, one worker, a generated config forwarding the model to the simulator),
  unless --no-litellm.

Then, one target after another (never concurrently), after a warm-up of each, in interleaved rounds (the
order of the targets rotates from round to round): keep-alive requests/s and latency of a small chat
completion, as JSON and as a server-sent-events stream (`"stream": true`, usage chunk asked for), at each
concurrency (wrk when installed, else an asyncio generator), and in each round time to first chunk and
inter-chunk gaps of paced streams (an httpx client that timestamps every raw chunk). The peer comparison
takes the ratios and added latencies within each round and reports their medians over the rounds; the RSS of
each target is that of its whole process tree (parent and children). Checks that TokenLens recorded every
request it was sent, prints the tables, the ratios with PASS/FAIL against the targets, the command that
reproduces the run, and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    BENCH_DIR,
    CHAT_PATH,
    GATEWAY_PREFIX,
    REPO,
    REQUEST_HEADERS,
    VENV_BIN,
    Background,
    Interrupted,
    LoadGenerator,
    LoadResult,
    Proc,
    Processes,
    environment,
    free_port,
    install_wrk,
    median,
    percentile,
    process_tree,
    results_path,
    start_simulator,
    start_tokenlens,
    stream_body,
    tree_cpu_seconds,
    tree_rss_mib,
    wait_for_calls,
    wait_port,
    workdir,
    write_json,
)
from peers import LITELLM_VERSION, start_litellm  # noqa: E402

# Targets (docs/benchmarks.md; shared/notes/mitmproxy.md section 5)
RPS_RATIO_MIN = 0.80  # TokenLens rps / bare mitmdump rps
ADDED_P50_MAX_MS = 2.0  # TokenLens p50 - direct p50, c=1
FIRST_CHUNK_MAX_MS = 5.0  # TokenLens time to first chunk - direct, median
STREAM_WARMUP = 2  # unmeasured streams per case

DIRECT, MITM_REVERSE, MITM_REGULAR, TOKENLENS = "direct", "mitmdump-reverse", "mitmdump-regular", "tokenlens"
LITELLM = "litellm"
ALL_TARGETS = (DIRECT, MITM_REVERSE, MITM_REGULAR, TOKENLENS, LITELLM)
LABELS = {
    DIRECT: "direct to simulator",
    MITM_REVERSE: "bare mitmdump (reverse, no-op addon, streaming on)",
    MITM_REGULAR: "mitmdump regular + /proxy rewrite",
    TOKENLENS: "TokenLens (full pipeline, SQLite)",
    LITELLM: f"LiteLLM proxy {LITELLM_VERSION} (1 worker)",
}
SHORT = {
    DIRECT: "direct",
    MITM_REVERSE: "mitmdump",
    MITM_REGULAR: "mitmdump regular",
    TOKENLENS: "TokenLens",
    LITELLM: "LiteLLM",
}
JSON_MODE, SSE_MODE = "json", "sse"
MODES = (JSON_MODE, SSE_MODE)


@dataclass
class Target:
    name: str
    port: int
    path: str  # of the chat completions endpoint
    proc: Proc | None = None
    rss_start: tuple[float | None, int] | None = None  # (MiB, processes) of its process tree


@dataclass
class StreamStats:
    target: str
    variant: str
    streams: int
    events_expected: int
    ttfc_ms: list[float] = field(default_factory=list)
    ttfc_by_round: dict[int, list[float]] = field(default_factory=dict)
    gap_excess_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ttfc, gaps, total = sorted(self.ttfc_ms), sorted(self.gap_excess_ms), sorted(self.total_ms)
        return {
            "target": self.target,
            "variant": self.variant,
            "streams": self.streams,
            "events_expected": self.events_expected,
            "events_received_median": median(self.events) if self.events else math.nan,
            "chunks_median": median(self.chunks) if self.chunks else math.nan,
            "ttfc_p50_ms": percentile(ttfc, 50),
            "ttfc_p99_ms": percentile(ttfc, 99),
            "gap_excess_p50_ms": percentile(gaps, 50),
            "gap_excess_p99_ms": percentile(gaps, 99),
            "gap_excess_max_ms": gaps[-1] if gaps else math.nan,
            "total_p50_ms": percentile(total, 50),
            "problems": self.problems[:5],
        }


# ------------------------------------------------------------------------------------------------ streaming


class StreamCase:
    """One (target, variant) of the streaming measurement: its request and its statistics."""

    def __init__(
        self, target: Target, variant: str, include_usage: bool, words: int, delay_ms: float
    ) -> None:
        self.target = target
        self.include_usage = include_usage
        self.delay_ms = delay_ms
        self.url = f"http://127.0.0.1:{target.port}{target.path}"
        self.body = stream_body(include_usage)
        self.headers = {
            **REQUEST_HEADERS,
            "x-sim-chunk-delay-ms": f"{delay_ms:g}",
            "x-sim-reply-words": str(words),
            "x-sim-chunk-words": "1",
        }
        # role chunk + one chunk per word + finish chunk (+ usage chunk) + [DONE]
        self.stats = StreamStats(target.name, variant, 0, words + 3 + (1 if include_usage else 0))
        self.sent = 0

    def once(self, client: httpx.Client, measured: bool, rnd: int = 1) -> None:
        """One stream, every raw chunk timestamped on arrival (`rnd`: the round it belongs to)."""
        times: list[float] = []
        data: list[bytes] = []
        self.sent += 1
        t0 = time.perf_counter()
        with client.stream("POST", self.url, content=self.body, headers=self.headers) as response:
            for chunk in response.iter_raw():
                if chunk:
                    times.append(time.perf_counter())
                    data.append(chunk)
            status = response.status_code
        if not measured:
            return
        stats = self.stats
        stats.streams += 1
        text = b"".join(data)
        if status != 200:
            stats.problems.append(f"status {status}")
        if not text.rstrip().endswith(b"data: [DONE]"):
            stats.problems.append("stream did not end with [DONE]")
        if not self.include_usage and b'"usage"' in text:
            stats.problems.append("a usage field reached a client that did not ask for it")
        if not times:
            stats.problems.append("no chunk")
            return
        stats.ttfc_ms.append((times[0] - t0) * 1000)
        stats.ttfc_by_round.setdefault(rnd, []).append((times[0] - t0) * 1000)
        stats.total_ms.append((times[-1] - t0) * 1000)
        stats.gap_excess_ms.extend(
            (b - a) * 1000 - self.delay_ms for a, b in zip(times, times[1:], strict=False)
        )
        stats.chunks.append(len(times))
        stats.events.append(text.count(b"\n\n"))


# ------------------------------------------------------------------------------------------------ report


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def http_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target | mode | c | req/s | p50 ms | p90 ms | p99 ms | max ms | CPU ms/req | others' CPU | sent | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        errors = ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "0"
        lines.append(
            f"| {LABELS[r['target']]} | {r.get('mode', JSON_MODE)} | {r['connections']} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'])} | "
            f"{fmt(r['p90_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['max_ms'], 1)} | {fmt(r['cpu_ms_per_request'])} | {r['others_cpu']:.0%} | {r['sent']:,} | {errors} |"
        )
    return "\n".join(lines)


def stream_table(rows: list[dict[str, Any]], delay_ms: float) -> str:
    lines = [
        f"| target | stream | first chunk p50 ms | p99 ms | gap - {delay_ms:g} ms: p50 | p99 | max | "
        "events/stream | raw chunks/stream |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {LABELS[r['target']]} | {r['variant']} | {fmt(r['ttfc_p50_ms'])} | {fmt(r['ttfc_p99_ms'])} | "
            f"{fmt(r['gap_excess_p50_ms'])} | {fmt(r['gap_excess_p99_ms'])} | {fmt(r['gap_excess_max_ms'])} | "
            f"{fmt(r['events_received_median'], 0)}/{r['events_expected']} | {fmt(r['chunks_median'], 0)} |"
        )
    return "\n".join(lines)


def find(rows: list[dict[str, Any]], **keys: Any) -> dict[str, Any] | None:
    for r in rows:
        if all(r.get(k) == v for k, v in keys.items()):
            return r
    return None


def verdicts(
    http_rows: list[dict[str, Any]], stream_rows: list[dict[str, Any]], records: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ratios: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, target: str, ok: bool | None, note: str = "") -> None:
        verdict = "info" if ok is None else ("PASS" if ok else "FAIL")
        checks.append({"check": name, "value": value, "target": target, "verdict": verdict, "note": note})

    for c in sorted({r["connections"] for r in http_rows}):
        tl, rev, reg = (
            find(http_rows, target=t, connections=c) for t in (TOKENLENS, MITM_REVERSE, MITM_REGULAR)
        )
        if tl and rev:
            ratio = tl["rps"] / rev["rps"]
            ratios[f"rps_tokenlens_over_mitmdump_reverse_c{c}"] = ratio
            check(
                f"rps TokenLens / bare mitmdump (reverse), c={c}",
                ratio,
                f">= {RPS_RATIO_MIN:.2f}",
                ratio >= RPS_RATIO_MIN,
            )
        if tl and rev and tl["cpu_ms_per_request"] > 0 and rev["cpu_ms_per_request"] > 0:
            ratio = rev["cpu_ms_per_request"] / tl["cpu_ms_per_request"]
            ratios[f"cpu_per_request_mitmdump_reverse_over_tokenlens_c{c}"] = ratio
            check(
                f"  CPU per request, bare mitmdump / TokenLens, c={c}",
                ratio,
                "",
                None,
                f"{rev['cpu_ms_per_request']:.2f} vs {tl['cpu_ms_per_request']:.2f} ms: the throughput ratio a CPU-bound proxy would show",
            )
        if tl and reg:
            ratio = tl["rps"] / reg["rps"]
            ratios[f"rps_tokenlens_over_mitmdump_regular_c{c}"] = ratio
            check(
                f"rps TokenLens / mitmdump regular + rewrite, c={c}",
                ratio,
                f">= {RPS_RATIO_MIN:.2f}",
                ratio >= RPS_RATIO_MIN,
                "same proxy mode and routing as TokenLens",
            )
    direct1, tl1, rev1 = (find(http_rows, target=t, connections=1) for t in (DIRECT, TOKENLENS, MITM_REVERSE))
    if direct1 and tl1:
        added = tl1["p50_ms"] - direct1["p50_ms"]
        ratios["added_p50_ms_c1"] = added
        ratios["added_p99_ms_c1"] = tl1["p99_ms"] - direct1["p99_ms"]
        check(
            "added p50 latency over direct, c=1 (ms)",
            added,
            f"<= {ADDED_P50_MAX_MS:g} ms",
            added <= ADDED_P50_MAX_MS,
        )
        if rev1:
            ratios["added_p50_ms_c1_mitmdump_reverse"] = rev1["p50_ms"] - direct1["p50_ms"]
            check(
                "  bare mitmdump added p50 over direct, c=1 (ms)",
                rev1["p50_ms"] - direct1["p50_ms"],
                "",
                None,
            )
            ratios["added_p50_ms_c1_over_mitmdump_reverse"] = tl1["p50_ms"] - rev1["p50_ms"]
            check(
                "  TokenLens added p50 over bare mitmdump, c=1 (ms)",
                tl1["p50_ms"] - rev1["p50_ms"],
                "",
                None,
                "what the pipeline itself adds",
            )
    for variant in ("include_usage", "plain"):
        d, t = (
            find(stream_rows, target=DIRECT, variant=variant),
            find(stream_rows, target=TOKENLENS, variant=variant),
        )
        if not (d and t):
            continue
        first = t["ttfc_p50_ms"] - d["ttfc_p50_ms"]
        ratios[f"first_chunk_added_p50_ms_{variant}"] = first
        check(
            f"first chunk vs direct, p50, stream {variant} (ms)",
            first,
            f"<= {FIRST_CHUNK_MAX_MS:g} ms",
            first <= FIRST_CHUNK_MAX_MS,
        )
        for p in ("p50", "p99"):
            change = t[f"gap_excess_{p}_ms"] - d[f"gap_excess_{p}_ms"]
            ratios[f"gap_change_{p}_ms_{variant}"] = change
            note = ""
            if variant == "plain" and p == "p99":
                note = "TokenLens asks upstream for the usage chunk and strips it: one extra upstream event, one extra simulated delay per stream"
            check(
                f"inter-chunk gap change vs direct, {p}, stream {variant} (ms)",
                change,
                "no target (docs/benchmarks.md: no added delay)",
                None,
                note,
            )
    if not records:
        return ratios, checks
    check(
        "TokenLens recorded every request sent to it",
        records.get("recorded", math.nan),
        f"== {records.get('sent')}",
        records.get("ok"),
        records.get("note", ""),
    )
    return ratios, checks


def checks_table(checks: list[dict[str, Any]]) -> str:
    lines = ["| check | value | target | verdict |", "|---|---:|---|---|"]
    for c in checks:
        value = c["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"| {c['check']} | {shown} | {c['target']} | {c['verdict']} |")
    return "\n".join(lines)


def aggregate(
    runs: list[dict[str, Any]], connections: list[int], wanted: list[str], how: str
) -> list[dict[str, Any]]:
    """One row per (mode, target, concurrency) from its rounds.

    least-disturbed: the round in which other processes used the least CPU (ties: the faster one). Others
    can only slow a target down, so on a shared machine this is the most faithful round.
    median: the median of each number over the rounds.
    """
    rows: list[dict[str, Any]] = []
    for mode, c in [(m, c) for m in MODES for c in connections]:
        for name in [t for t in ALL_TARGETS if t in wanted]:
            mine = [r for r in runs if r["target"] == name and r["connections"] == c and r["mode"] == mode]
            if not mine:
                continue
            row: dict[str, Any] = {
                "target": name,
                "mode": mode,
                "connections": c,
                "rounds": len(mine),
                "aggregate": how,
                "sent": sum(r["sent"] for r in mine),
                "errors": {
                    k: sum(r["errors"].get(k, 0) for r in mine)
                    for k in {k for r in mine for k in r["errors"]}
                },
            }
            keys = (
                "rps",
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "max_ms",
                "mean_ms",
                "cpu_ms_per_request",
                "others_cpu",
            )
            if how == "median":
                row.update({key: median([r[key] for r in mine]) for key in keys})
            else:
                pick = min(mine, key=lambda r: (round(r["others_cpu"], 2), -r["rps"]))
                row.update({key: pick[key] for key in keys})
                row["round"] = pick["round"]
            rows.append(row)
    return rows


def peer_comparison(
    runs: list[dict[str, Any]], cases: list[StreamCase], connections: list[int]
) -> dict[str, Any]:
    """TokenLens against its peers: ratios and added latencies taken within each round, medians over rounds.

    Within a round the targets ran minutes apart at most, so a ratio of the same round cancels most of the
    shared machine's drift; the median over rounds drops a round that something else disturbed.
    """
    http_rows: list[dict[str, Any]] = []
    for mode, c in [(m, c) for m in MODES for c in connections]:
        per_round: dict[str, list[float]] = {}
        rounds = sorted({r["round"] for r in runs if r["mode"] == mode and r["connections"] == c})
        for rnd in rounds:
            here = {
                r["target"]: r
                for r in runs
                if r["mode"] == mode and r["connections"] == c and r["round"] == rnd
            }
            tl, direct = here.get(TOKENLENS), here.get(DIRECT)
            for name, r in here.items():
                per_round.setdefault(f"rps_{name}", []).append(r["rps"])
                if not math.isnan(r["cpu_ms_per_request"]):
                    per_round.setdefault(f"cpu_ms_{name}", []).append(r["cpu_ms_per_request"])
                if tl and name != TOKENLENS and r["rps"] > 0:
                    per_round.setdefault(f"tokenlens_over_{name}", []).append(tl["rps"] / r["rps"])
                if direct and name != DIRECT:
                    per_round.setdefault(f"added_p50_ms_{name}", []).append(r["p50_ms"] - direct["p50_ms"])
                    per_round.setdefault(f"added_p99_ms_{name}", []).append(r["p99_ms"] - direct["p99_ms"])
        http_rows.append(
            {
                "mode": mode,
                "connections": c,
                "rounds": len(rounds),
                **{key: median(values) for key, values in per_round.items()},
                "per_round": per_round,
            }
        )
    stream_rows: list[dict[str, Any]] = []
    by_target = {case.target.name: case for case in cases if case.include_usage}
    direct_case = by_target.get(DIRECT)
    for name, case in by_target.items():
        rounds_ttfc = case.stats.ttfc_by_round
        added: list[float] = []
        if direct_case is not None and name != DIRECT:
            for rnd, values in rounds_ttfc.items():
                base = direct_case.stats.ttfc_by_round.get(rnd)
                if values and base:
                    added.append(median(values) - median(base))
        stream_rows.append(
            {
                "target": name,
                "first_chunk_p50_ms": median(case.stats.ttfc_ms) if case.stats.ttfc_ms else math.nan,
                "first_chunk_added_ms": median(added) if added else math.nan,
                "first_chunk_added_per_round": added,
                "streams": case.stats.streams,
            }
        )
    return {"http": http_rows, "first_chunk": stream_rows}


def _triple(row: dict[str, Any], prefix: str, names: list[str], digits: int = 1) -> str:
    return ", ".join(fmt(row.get(f"{prefix}{n}"), digits) for n in names)


def peer_tables(
    peer: dict[str, Any], rss: dict[str, Any], wanted: list[str], words: int, delay_ms: float
) -> str:
    """The peer comparison as markdown: req/s ratios and added latency, first chunk, process-tree RSS."""
    others = [n for n in (TOKENLENS, MITM_REVERSE, LITELLM) if n in wanted]
    names = ", ".join(SHORT[n] for n in others)
    lines = [
        "| mode, clients | TokenLens / bare mitmdump (req/s) | TokenLens / LiteLLM (req/s) | "
        f"req/s ({names}, direct) | added p50 over direct, ms ({names}) | added p99 over direct, ms ({names}) | "
        f"CPU ms per request ({names}) |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for row in peer["http"]:
        mode = "JSON" if row["mode"] == JSON_MODE else "SSE"
        vs_mitm = fmt(row.get(f"tokenlens_over_{MITM_REVERSE}"))
        vs_litellm = row.get(f"tokenlens_over_{LITELLM}")
        lines.append(
            f"| {mode}, {row['connections']} | {vs_mitm} | "
            f"{fmt(vs_litellm, 1) + 'x' if vs_litellm is not None else 'n/a'} | "
            f"{_triple(row, 'rps_', [*others, DIRECT], 0)} | {_triple(row, 'added_p50_ms_', others, 2)} | "
            f"{_triple(row, 'added_p99_ms_', others, 2)} | {_triple(row, 'cpu_ms_', others, 2)} |"
        )
    lines += [
        "",
        f"| paced SSE ({words} words, {delay_ms:g} ms apart, usage asked for) | first chunk p50 ms | "
        "added over direct, ms (median of rounds) | streams |",
        "|---|---:|---:|---:|",
    ]
    for row in peer["first_chunk"]:
        lines.append(
            f"| {LABELS[row['target']]} | {fmt(row['first_chunk_p50_ms'])} | "
            f"{fmt(row['first_chunk_added_ms']) if row['target'] != DIRECT else ''} | {row['streams']} |"
        )
    if rss:
        lines += [
            "",
            "| process tree (parent + children) | processes | RSS at start, MiB | RSS at the end, MiB |",
            "|---|---:|---:|---:|",
        ]
        for name, v in rss.items():
            lines.append(
                f"| {LABELS[name]} | {v['processes']} | {fmt(v['start_mib'], 1)} | {fmt(v['end_mib'], 1)} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8, help="seconds per measured load case (default 8)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up load per target (default 2)")
    p.add_argument("--connections", default="1,16", help="concurrency levels, comma-separated (default 1,16)")
    p.add_argument(
        "--rounds", type=int, default=1, help="repeat the load matrix, interleaved; medians reported"
    )
    p.add_argument(
        "--aggregate",
        choices=("least-disturbed", "median"),
        default="least-disturbed",
        help="how rounds are combined: the round least disturbed by other processes (default), or medians",
    )
    p.add_argument(
        "--streams", type=int, default=15, help="measured streams per target and variant (default 15)"
    )
    p.add_argument(
        "--stream-words", type=int, default=16, help="words per streamed reply, one per chunk (default 16)"
    )
    p.add_argument("--chunk-delay-ms", type=float, default=20, help="upstream delay between stream events")
    p.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help="subset of " + ",".join(ALL_TARGETS),
    )
    p.add_argument(
        "--no-litellm",
        action="store_true",
        help=f"skip the LiteLLM peer (otherwise installed on first use: {LITELLM_VERSION}, under .cache/bench/)",
    )
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help="load modes, comma-separated: json (plain chat completion), sse (streamed); default both",
    )
    p.add_argument("--load", choices=("auto", "wrk", "python"), default="auto", help="load generator")
    p.add_argument(
        "--install-wrk", action="store_true", help="apt-get install -y wrk when it is missing (root)"
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the proxies to CPU 1 and simulator + load generator to CPU 0 (2-core machines)",
    )
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.10,
        help="before each case, wait until other processes use less than this share of the machine (default 0.10)",
    )
    p.add_argument(
        "--quiet-timeout", type=float, default=20, help="longest wait for a quiet machine per case (s)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, TokenLens store)")
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/gateway-*.json")
    return p.parse_args(argv)


def reproduce_command(args: argparse.Namespace) -> str:
    parts = [
        ".venv/bin/python",
        "bench/gateway.py",
        "--duration",
        f"{args.duration:g}",
        "--warmup",
        f"{args.warmup:g}",
        "--connections",
        args.connections,
        "--rounds",
        str(args.rounds),
        "--aggregate",
        args.aggregate,
        "--streams",
        str(args.streams),
        "--stream-words",
        str(args.stream_words),
        "--chunk-delay-ms",
        f"{args.chunk_delay_ms:g}",
        "--targets",
        args.targets,
        "--modes",
        args.modes,
        "--load",
        args.load,
        "--quiet-threshold",
        f"{args.quiet_threshold:g}",
        "--quiet-timeout",
        f"{args.quiet_timeout:g}",
    ]
    if args.pin:
        parts.append("--pin")
    if args.no_litellm:
        parts.append("--no-litellm")
    return f"cd {shlex.quote(str(REPO))} && " + shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    connections = [int(c) for c in args.connections.split(",") if c.strip()]
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(wanted) - set(LABELS)
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.no_litellm:
        wanted = [t for t in wanted if t != LITELLM]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        raise SystemExit(f"--modes: a subset of {','.join(MODES)}")
    if args.install_wrk:
        install_wrk()
    proxy_cpus, other_cpus = ({1}, {0}) if args.pin else (None, None)
    started = time.time()
    env = environment()
    command = reproduce_command(args)
    print(f"TokenLens gateway benchmark; reproduce with:\n  {command}\n", flush=True)

    http_runs: list[dict[str, Any]] = []
    stream_rows: list[dict[str, Any]] = []
    records: dict[str, Any] = {}
    rss: dict[str, Any] = {}
    stream_others = math.nan
    with workdir(args.keep) as wd, Processes(wd, cpus=other_cpus) as procs:
        loads = {
            JSON_MODE: LoadGenerator(wd, args.load, cpus=other_cpus),
            SSE_MODE: LoadGenerator(wd, args.load, cpus=other_cpus, body=stream_body(True), name="post-sse"),
        }
        load = loads[JSON_MODE]
        print(f"load generator: {load.description}", flush=True)
        if load.kind != "wrk":
            print("  (wrk is more accurate on 2 cores: apt-get install -y wrk, or --install-wrk)", flush=True)
        sim, sim_port = start_simulator(procs)
        targets: list[Target] = []
        if DIRECT in wanted:
            targets.append(Target(DIRECT, sim_port, CHAT_PATH, sim))
        if MITM_REVERSE in wanted:
            port = free_port()
            proc = procs.start(
                MITM_REVERSE,
                [
                    str(VENV_BIN / "mitmdump"),
                    "-q",
                    "--listen-host",
                    "127.0.0.1",
                    "--mode",
                    f"reverse:http://127.0.0.1:{sim_port}@{port}",
                    "--set",
                    f"confdir={wd / 'mitmproxy'}",
                    "-s",
                    str(BENCH_DIR / "mitm_noop.py"),
                ],
                cpus=proxy_cpus,
            )
            wait_port(port, proc)
            targets.append(Target(MITM_REVERSE, port, CHAT_PATH, proc))
        if MITM_REGULAR in wanted:
            port = free_port()
            proc = procs.start(
                MITM_REGULAR,
                [
                    str(VENV_BIN / "mitmdump"),
                    "-q",
                    "--listen-host",
                    "127.0.0.1",
                    "--mode",
                    f"regular@{port}",
                    "--set",
                    f"confdir={wd / 'mitmproxy'}",
                    "-s",
                    str(BENCH_DIR / "mitm_rewrite.py"),
                    "--set",
                    f"bench_upstream=http://127.0.0.1:{sim_port}",
                ],
                cpus=proxy_cpus,
            )
            wait_port(port, proc)
            targets.append(Target(MITM_REGULAR, port, GATEWAY_PREFIX + CHAT_PATH, proc))
        tl: Target | None = None
        if TOKENLENS in wanted:
            proc, port = start_tokenlens(procs, wd, sim_port, cpus=proxy_cpus)
            tl = Target(TOKENLENS, port, GATEWAY_PREFIX + CHAT_PATH, proc)
            targets.append(tl)
        if LITELLM in wanted:
            port = free_port()
            t0 = time.monotonic()
            proc = start_litellm(procs, wd, sim_port, port, cpus=proxy_cpus)
            print(f"LiteLLM {LITELLM_VERSION} ready in {time.monotonic() - t0:.1f} s", flush=True)
            targets.append(Target(LITELLM, port, CHAT_PATH, proc))
        for t in targets:
            if t.proc is not None and t.name != DIRECT:
                t.rss_start = tree_rss_mib(t.proc.pid)

        background = Background(lambda: [q for p in procs.procs for q in process_tree(p.pid)])
        sent_to_tl = 0  # by the load generator; check_records adds the streams
        cases: list[StreamCase] = []
        record_cases: list[dict[str, Any]] = []

        def check_records(case: str) -> None:
            assert tl is not None
            sent = sent_to_tl + sum(case.sent for case in cases if case.target is tl)  # + streams
            kpi = wait_for_calls(tl.port, sent)
            ok = kpi["calls"] == sent
            record_cases.append(
                {
                    "after": case,
                    "sent": sent,
                    "recorded": kpi["calls"],
                    "errors": kpi["error_calls"],
                    "ok": ok,
                }
            )
            if not ok:
                print(f"  !! TokenLens recorded {kpi['calls']} calls, {sent} were sent", flush=True)

        # Warm up every target once per mode, then the rounds: in each, every load case (mode, concurrency)
        # on every target one after another, then the paced streams; the order of the targets rotates.
        top = max(connections)
        for mode in modes:
            for t in targets:
                w = loads[mode].run(t.port, t.path, top, args.warmup)
                if t is tl:
                    sent_to_tl += w.sent
                print(f"warm-up {mode} {t.name}: {w.rps:,.0f} req/s, errors {w.errors or 0}", flush=True)
        words = args.stream_words
        cases += [
            StreamCase(t, variant, include_usage, words, args.chunk_delay_ms)
            for variant, include_usage in (("include_usage", True), ("plain", False))
            for t in targets
            if variant == "include_usage" or t.name in (DIRECT, TOKENLENS)
        ]
        streams_per_round = max(1, math.ceil(args.streams / args.rounds))
        others_during_streams: list[float] = []
        with httpx.Client(timeout=30) as client:
            for case in cases:
                for _ in range(STREAM_WARMUP):
                    case.once(client, measured=False)
            for rnd in range(args.rounds):
                shift = rnd % len(targets)
                order = targets[shift:] + targets[:shift]
                for mode in modes:
                    for c in connections:
                        for t in order:
                            quiet, waited = background.wait_quiet(args.quiet_threshold, args.quiet_timeout)
                            if quiet >= args.quiet_threshold:
                                print(
                                    f"  (machine still busy: others use {quiet:.0%} after {waited:.0f} s; measuring anyway)"
                                )
                            pid = t.proc.pid if t.proc is not None else None
                            cpu0 = tree_cpu_seconds(pid) if pid else None
                            background.start()
                            res: LoadResult = loads[mode].run(t.port, t.path, c, args.duration)
                            others = background.stop()
                            cpu1 = tree_cpu_seconds(pid) if pid else None
                            cpu_ms = (
                                (cpu1 - cpu0) * 1000 / res.completed
                                if cpu0 is not None and cpu1 is not None and res.completed
                                else math.nan
                            )
                            row = {
                                "target": t.name,
                                "mode": mode,
                                "round": rnd + 1,
                                **res.as_dict(),
                                "cpu_ms_per_request": cpu_ms,
                                "others_cpu": others,
                            }
                            http_runs.append(row)
                            print(
                                f"[round {rnd + 1}] {mode:<4} {t.name:<17} c={c:<3} {res.rps:>9,.0f} req/s  p50 {res.p50_ms:7.3f} ms"
                                f"  p99 {res.p99_ms:7.3f} ms  CPU {cpu_ms:5.2f} ms/req  others {others:4.0%}  sent {res.sent:,}  errors {res.errors or 0}",
                                flush=True,
                            )
                            if t is tl:
                                sent_to_tl += res.sent
                                check_records(f"round {rnd + 1} {mode} c={c}")
                # Paced streams: sequential, round-robin over the cases (background load hits all alike).
                background.wait_quiet(args.quiet_threshold, args.quiet_timeout)
                background.start()
                shift = rnd % len(cases)
                for _ in range(streams_per_round):
                    for case in cases[shift:] + cases[:shift]:
                        case.once(client, measured=True, rnd=rnd + 1)
                others_during_streams.append(background.stop())
        stream_others = median(others_during_streams)
        print(
            f"streams: others used {stream_others:.0%} of the machine meanwhile (median of rounds)",
            flush=True,
        )
        for case in cases:
            s = case.stats.summary()
            stream_rows.append(s)
            print(
                f"stream {s['variant']:<13} {s['target']:<17} first chunk p50 {s['ttfc_p50_ms']:6.2f} ms  "
                f"gap-delay p50 {s['gap_excess_p50_ms']:6.2f} p99 {s['gap_excess_p99_ms']:6.2f} ms  "
                f"events {s['events_received_median']:.0f}/{s['events_expected']}"
                + (f"  PROBLEMS: {s['problems']}" if s["problems"] else ""),
                flush=True,
            )
        if tl is not None:
            check_records("streams")
            final = record_cases[-1]
            records = {
                "sent": final["sent"],
                "recorded": final["recorded"],
                "error_records": final["errors"],
                "ok": all(c["ok"] for c in record_cases),
                "cases": record_cases,
                "note": "error records are requests in flight when wrk stopped (client gone), at most c per run",
            }
        for t in targets:
            if t.proc is not None and t.name != DIRECT and t.rss_start is not None:
                end_mib, processes = tree_rss_mib(t.proc.pid)
                rss[t.name] = {
                    "start_mib": t.rss_start[0],
                    "end_mib": end_mib,
                    "processes": processes,
                    "processes_at_start": t.rss_start[1],
                    "measured_requests": sum(r["sent"] for r in http_runs if r["target"] == t.name),
                }
        if tl is not None and tl.proc is not None:
            code = procs.stop(tl.proc)
            records["tokenlens_exit_code"] = code
            records["tokenlens_shutdown"] = tl.proc.tail(3)

    http_rows = aggregate(http_runs, connections, wanted, args.aggregate)
    ratios, checks = verdicts([r for r in http_rows if r["mode"] == JSON_MODE], stream_rows, records)
    peer = peer_comparison(http_runs, cases, connections)

    print("\n## Results\n")
    print(
        f"{env['cpus']} CPUs ({env['cpu_model']}), Python {env['python']}, mitmproxy {env['mitmproxy']}, "
        f"TokenLens {env['tokenlens']} ({env['git']}), load: {load.description}, {args.duration:g} s per case"
        + (
            f", {args.rounds} rounds ({'medians' if args.aggregate == 'median' else 'the least disturbed round of each case'})"
            if args.rounds > 1
            else ""
        )
        + (", proxies pinned to CPU 1" if args.pin else "")
        + f", load average at start {env['loadavg_at_start'][0]:.2f}.\n"
    )
    print(
        "Chat completion (POST, keep-alive): json = a plain answer; sse = the same request streamed "
        '("stream": true, usage chunk asked for; the simulator\'s default reply, no delay between events):\n'
    )
    print(http_table(http_rows))
    print(
        f"\nStreaming chat completion, {args.streams} sequential streams per row, {words} words one per chunk, "
        f"upstream delay {args.chunk_delay_ms:g} ms between events; 'include_usage' asks for the usage chunk "
        f"itself, 'plain' does not (TokenLens then asks upstream and strips it); others used {stream_others:.0%} "
        "of the machine meanwhile:\n"
    )
    print(stream_table(stream_rows, args.chunk_delay_ms))
    print(
        f"\n## Peer comparison\n\nMedians over {args.rounds} interleaved round(s) of the ratios and added "
        "latencies measured within each round; RSS summed over each target's process tree:\n"
    )
    print(peer_tables(peer, rss, wanted, words, args.chunk_delay_ms))
    if records:
        for case in records["cases"]:
            print(
                f"  records after {case['after']}: {case['recorded']:,} of {case['sent']:,} sent"
                f" ({case['errors']} errors) {'ok' if case['ok'] else 'MISMATCH'}"
            )
        print(
            f"\nTokenLens records: {records['recorded']:,} recorded for {records['sent']:,} requests sent "
            f"({records['error_records']} error records: requests in flight when wrk stopped); "
            f"daemon exit code {records.get('tokenlens_exit_code')}"
        )
    busy = [r for r in http_rows if r["others_cpu"] >= args.quiet_threshold]
    if busy or stream_others >= args.quiet_threshold:
        print(
            f"\nWARNING: other processes used >= {args.quiet_threshold:.0%} of the machine during "
            f"{len(busy)} load case(s){' and the streams' if stream_others >= args.quiet_threshold else ''}; "
            "those numbers are disturbed (run again when the machine is quiet, or with --rounds 3)."
        )
    print("\n## Targets\n")
    print(checks_table(checks))
    failed = [c for c in checks if c["verdict"] == "FAIL"]
    print(
        f"\n{'FAIL' if failed else 'PASS'}: {len(failed)} of {sum(c['verdict'] != 'info' for c in checks)} targets missed"
    )
    print(f"\nReproduce: {command}")
    if not args.no_json:
        path = results_path("gateway")
        write_json(
            path,
            {
                "benchmark": "gateway",
                "command": command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "elapsed_s": time.time() - started,
                "environment": env,
                "load_generator": load.description,
                "args": vars(args),
                "http": http_rows,
                "http_runs": http_runs,
                "stream": stream_rows,
                "stream_others_cpu": stream_others,
                "rss_mib": rss,
                "peer_comparison": peer,
                "records": records,
                "ratios": ratios,
                "checks": checks,
            },
        )
        print(f"JSON: {path.relative_to(REPO)}")
    print(f"elapsed {time.time() - started:.0f} s")
    return 1 if failed else 0


def main() -> int:
    args = parse_args()
    try:
        return run(args)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
