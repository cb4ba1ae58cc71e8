"""What the gateway's spool thread costs per call (issue 22), in one interpreter, without a proxy or a load.

    .venv/bin/python bench/profile_spool.py [--calls 20000] [--rounds 3] [--profile] [--analysis]

Builds a gateway process's services as the daemon does (`build_runtime(..., analysis_process=True)`, the
analysis process not started), makes calls as the proxy hands them over (the benchmark's chat completion,
answered as JSON or as an SSE stream with its usage chunk) and runs the spool thread's work on them in batches
of 100 in this thread (the call's raw line and its write), then the settlement reader's (taking in the analysis
process's reports of them: the ledger, rate limits, latency, metric totals, the cost watcher). Prints
microseconds per call for each kind and side, and with `--profile` the heaviest functions (cProfile,
cumulative) of a JSON run of the spool thread.
Everything runs on one thread, so the figures are the CPU the proxy's interpreter spends on a call outside its
event loop; other load on the machine makes them larger, never smaller, so take the best of a few rounds.
With `--analysis`, also the analysis process's side: an `AnalysisWorker` (as `tokenlens.analysis` builds it)
stores what was spooled, and its CPU time (all threads: the analyses, the inserts and the rollups) per call
is printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import CHAT_PATH, chat_body_bytes  # noqa: E402

from tokenlens.analysis import CACHE_KIB, AnalysisWorker  # noqa: E402
from tokenlens.config import SettingsHolder, parse_settings  # noqa: E402
from tokenlens.exchange import Exchange  # noqa: E402
from tokenlens.metering import RecordBuilder  # noqa: E402
from tokenlens.runtime import Runtime, build_runtime  # noqa: E402
from tokenlens.settlement import report_line  # noqa: E402
from tokenlens.store import open_store  # noqa: E402
from tokenlens.store.spool import SpoolWriter, spool_dir  # noqa: E402
from tokenlens.tokens import warm_up  # noqa: E402

ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris is the capital of France."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 21, "completion_tokens": 8, "total_tokens": 29},
}


def sse_chunks() -> list[bytes]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": ANSWER["model"]}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": word}}]}
        for word in ("Paris ", "is ", "the ", "capital ", "of ", "France.")
    ]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**base, "choices": [], "usage": ANSWER["usage"]})
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


def exchange(n: int, stream: bool) -> Exchange:
    body = chat_body_bytes()
    now = time.time()
    ex = Exchange(
        id=f"call-{n}",
        started=now,
        provider="openai",
        api="openai",
        endpoint=CHAT_PATH,
        kind="chat",
        mode="base_url",
        request_body=body,
        request_json=json.loads(body),
        requested_model="gpt-4o-mini",
        model="gpt-4o-mini",
        stream_requested=stream,
        status=200,
        ended=now + 0.001,
        response_headers={"content-type": "text/event-stream" if stream else "application/json"},
        analyses=["conversation", "waste", "heatmap"],
    )
    if stream:
        ex.streamed = True
        ex.chunks = sse_chunks()
        ex.first_chunk_at = now + 0.0005
    else:
        ex.response_body = json.dumps(ANSWER).encode()
    return ex


def run(writer: SpoolWriter, calls: int, stream: bool) -> float:
    """Microseconds per call of the spool thread's work (batches of 100)."""
    batches = [[exchange(b * 100 + i, stream) for i in range(100)] for b in range(calls // 100)]
    started = time.perf_counter()
    for batch in batches:
        writer._process(batch)
    return (time.perf_counter() - started) * 1e6 / max(1, calls)


def settle(runtime: Runtime, calls: int, stream: bool) -> float:
    """Microseconds per call of taking in the analysis process's reports (batches of 100, metric totals
    included, nobody on the live feed): the settlement reader thread's work on the proxy's interpreter."""
    settlements = runtime.settlements
    assert settlements is not None
    builder = RecordBuilder(runtime.deps.settings)
    lines = []
    for b in range(calls // 100):
        batch = [exchange(b * 100 + i, stream) for i in range(100)]
        for ex in batch:
            settlements.expect(ex)
        lines.append(report_line([builder(ex) for ex in batch], totals=True))
    started = time.perf_counter()
    for line in lines:
        settlements.receive(line)
    return (time.perf_counter() - started) * 1e6 / max(1, calls)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=20_000, help="calls per kind and round (default 20000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the best is printed (default 3)")
    p.add_argument("--profile", action="store_true", help="cProfile one JSON round")
    p.add_argument("--analysis", action="store_true", help="also the analysis process's CPU per call")
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tokenlens-spool-bench-"))
    runtime = build_runtime(parse_settings({}), home, analysis_process=True)
    writer = runtime.deps.writer
    assert isinstance(writer, SpoolWriter)
    try:
        run(writer, 1000, False)  # warm-up: price data, first segment
        for kind, stream in (("JSON", False), ("SSE", True)):
            best = min(run(writer, args.calls, stream) for _ in range(args.rounds))
            print(f"{kind}: {best:.1f} us per call on the spool thread (best of {args.rounds})")
            best = min(settle(runtime, args.calls, stream) for _ in range(args.rounds))
            print(f"{kind}: {best:.1f} us per call settling its report (best of {args.rounds})")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            run(writer, args.calls, False)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
            print(out.getvalue())
    finally:
        runtime.close()
    if args.analysis:
        warm_up()
        for kind, stream in (("JSON", False), ("SSE", True)):
            print(
                f"{kind}: {analysis_cpu(args.calls, stream):.1f} us of CPU per call in the analysis process"
            )
    return 0


def analysis_cpu(calls: int, stream: bool) -> float:
    """Spool `calls` calls as the gateway does, then store them as the analysis process does: CPU us a call."""
    home = Path(tempfile.mkdtemp(prefix="tokenlens-analysis-bench-"))
    runtime = build_runtime(parse_settings({}), home, analysis_process=True)
    writer = runtime.deps.writer
    assert isinstance(writer, SpoolWriter)
    run(writer, calls, stream)
    runtime.close()
    holder = SettingsHolder(parse_settings({}))
    store = open_store(None, home, cache_kib=CACHE_KIB)
    worker = AnalysisWorker(holder, store, spool_dir(home), home=home)
    try:
        started = time.process_time()
        stored = worker.drain()
        worker.close()
        return (time.process_time() - started) * 1e6 / max(1, stored)
    finally:
        store.close()


if __name__ == "__main__":
    raise SystemExit(main())
