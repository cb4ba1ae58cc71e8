"""The analysis process's CPU per call when calls arrive at a steady rate, as they do under load (issue 22).

    .venv/bin/python bench/analysis_rate.py [--rate 600] [--seconds 10]

Starts `python -m tokenlens.analysis` on a fresh data directory, as the daemon does, and spools calls to it
from this process at `--rate` calls a second for `--seconds` (the spool thread as the daemon builds it, with
the benchmark's chat completion, every other one streamed: see `profile_spool.py`), waits until the store
holds every call, and prints the analysis process's CPU time (user + system, all its threads, from /proc)
per call and how long after the last call the store held them all. Unlike `profile_spool.py --analysis`,
which stores one large backlog, the batches here are what the analysis process finds each time it reads the
spool, so the cost of a batch (its transaction, the rollups' upserts, the cursor) counts as it does live.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_spool import exchange  # noqa: E402

from tokenlens.config import parse_settings  # noqa: E402
from tokenlens.runtime import build_runtime  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored(database: Path) -> int:
    with closing(sqlite3.connect(database)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM call").fetchone()[0])
        except sqlite3.OperationalError:  # the analysis process has not created the table yet
            return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=600, help="calls a second (default 600)")
    p.add_argument("--seconds", type=float, default=10, help="how long calls are spooled (default 10)")
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tokenlens-analysis-rate-"))
    config = home / "config.yaml"
    config.write_text("{}\n")
    # the gateway's services without their analysis process (started here, to be measured alone)
    runtime = build_runtime(parse_settings({}), home, analysis_process=True)
    command = [sys.executable, "-m", "tokenlens.analysis", "--data-dir", str(home), "--config", str(config)]
    analysis = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)  # its start (imports, tokenizer vocabularies) is not counted
        before = cpu_seconds(analysis.pid)
        calls = int(args.rate * args.seconds)
        started = time.monotonic()
        for n in range(calls):
            runtime.deps.writer.submit(exchange(n, stream=n % 2 == 0))
            delay = started + (n + 1) / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sent = time.monotonic()
        runtime.deps.writer.flush(30)
        while stored(home / "tokenlens.db") < calls:
            if analysis.poll() is not None:
                raise SystemExit(
                    f"the analysis process ended (code {analysis.returncode}) before storing every call"
                )
            time.sleep(0.02)
        lag = time.monotonic() - sent
        used = cpu_seconds(analysis.pid) - before
    finally:
        analysis.terminate()
        analysis.wait()
        runtime.close()
    print(
        f"{args.rate:.0f} calls/s for {args.seconds:.0f} s: {calls} calls stored; the analysis process used "
        f"{used * 1e6 / calls:.0f} us of CPU a call; all stored {lag:.2f} s after the last call"
    )
    print("Reproduce: .venv/bin/python bench/analysis_rate.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
