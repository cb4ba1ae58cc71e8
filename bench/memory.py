"""What the resident memory of a gateway process is made of, and the RSS of `tokenlens daemon` (issue 22).

    .venv/bin/python bench/memory.py [--requests 100000] [--connections 10] [--no-daemon]

1. Imports, in a fresh interpreter, the packages a gateway process loads, one group after another, and prints
   the growth of its RSS (`VmRSS` in /proc/self/status) after each: what each group adds on top of the ones
   before it (a package shared by two groups counts in the first). Then what is loaded only on demand: the
   price data (the first price), numpy and the injection model (injection detection on), the tokenizer
   vocabularies (a precise count: the analyses, never the request path).
2. The same for the analysis process (`python -m tokenlens.analysis`): what it imports, the vocabularies it
   warms up, and the RSS once it has stored a few hundred calls.
3. Starts the provider simulator and `tokenlens daemon` (default pipeline, fresh SQLite store) and prints the
   RSS of the gateway process, of its analysis process and of the whole process tree at start and, with
   `--requests N`, after a warm-up (a tenth of N, at most 10,000) and after N keep-alive chat completions,
   with the growth after the warm-up.

Every figure depends on the machine and the installed versions; run it before and after a change.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    CHAT_PATH,
    GATEWAY_PREFIX,
    LoadGenerator,
    Processes,
    process_tree,
    rss_mib,
    start_simulator,
    start_tokenlens,
    wait_for_calls,
    workdir,
)

# (label, statement run in the fresh interpreter); in the order a gateway process meets them.
UPDATER_OUT = "from tokenlens import price_data; price_data.without_updater()"

GROUPS: list[tuple[str, str]] = [
    ("asyncio, ssl and the standard library", "import asyncio, ssl, json, logging, sqlite3, decimal, email"),
    ("cryptography, pyOpenSSL", "import cryptography.x509, OpenSSL.SSL"),
    ("aioquic (mitmproxy's HTTP/3)", "import aioquic.quic.connection"),
    ("h2, wsproto, h11", "import h2.connection, wsproto, h11"),
    ("flask, werkzeug, jinja2", "import flask, werkzeug.serving"),
    ("ldap3 (mitmproxy's proxyauth addon)", "import ldap3"),
    ("mitmproxy (the rest: pyparsing, mitmproxy_rs, addons)", "import mitmproxy.master, mitmproxy.addons"),
    ("httpx (with rich, click, pygments)", "import httpx"),
    ("psycopg2 (peewee imports it)", "import psycopg2"),
    ("peewee", "import peewee, playhouse.pool"),
    ("prometheus_client, ruamel.yaml, regex", "import prometheus_client, ruamel.yaml, regex"),
    ("tokenlens core (runtime, store, controls)", "import tokenlens.runtime"),
    ("tokenlens addons, web, cli", "import tokenlens.addons, tokenlens.web, tokenlens.cli"),
    ("typer's parameter parsing (pydantic)", "import typer._adapters"),
    ("services built and started, web app", "@runtime"),
    ("(genai-prices' updater left out, as the daemon does)", UPDATER_OUT),
    ("on demand: genai-prices data (first price)", "@price"),
    ("on demand: numpy + injection model", "import tokenlens.guardrails.injection"),
    ("on demand: o200k vocabulary", "from tokenlens import tokens; tokens.get_encoding('o200k_base')"),
    ("on demand: cl100k vocabulary", "from tokenlens import tokens; tokens.get_encoding('cl100k_base')"),
]

# The analysis process, in the order `tokenlens.analysis.main` meets them.
ANALYSIS_GROUPS: list[tuple[str, str]] = [
    (
        "standard library (argparse, json, logging, sqlite3)",
        "import argparse, json, logging, sqlite3, decimal",
    ),
    ("settings (ruamel.yaml, regex)", "import tokenlens.config"),
    ("(SQLite store: psycopg2 kept out, as the daemon starts it)", "sys.modules['psycopg2'] = None"),
    ("peewee and the store", "import tokenlens.store"),
    ("the analyses and the spool reader", "import tokenlens.analysis"),
    ("warm_up(): o200k and cl100k vocabularies", "from tokenlens import tokens; tokens.warm_up()"),
    ("(genai-prices' updater left out, as the daemon does)", UPDATER_OUT),
    ("300 calls metered, priced, analysed and stored", "@analyse"),
]

SPOOLER = r"""
import json, sys, time
from pathlib import Path
from tokenlens.config import SettingsHolder, parse_settings
from tokenlens.exchange import Exchange
from tokenlens.metering import RecordBuilder
from tokenlens.store.spool import SpoolWriter, spool_dir

home, count = Path(sys.argv[1]), int(sys.argv[2])
builder = RecordBuilder(SettingsHolder(parse_settings({})), home)
spool = SpoolWriter(spool_dir(home), builder, input_rate=builder.waste_input_rate)
body = json.dumps({"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": "You are a helpful assistant. Please answer briefly."},
    {"role": "user", "content": "Summarise the plot of Hamlet in two sentences, please."}]}).encode()
answer = json.dumps({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "A prince avenges his father."},
     "finish_reason": "stop"}], "usage": {"prompt_tokens": 30, "completion_tokens": 8,
     "total_tokens": 38}}).encode()
for i in range(count):
    ex = Exchange(id=f"call-{time.time_ns()}-{i}", started=time.time(), provider="openai", api="openai",
                  endpoint="/v1/chat/completions", kind="chat", mode="proxy", request_body=body,
                  requested_model="gpt-4o-mini", model="gpt-4o-mini")
    ex.request_json = json.loads(body)
    ex.status, ex.response_body, ex.ended = 200, answer, time.time()
    ex.analyses = ["waste", "heatmap", "conversation"]
    spool.submit(ex)
spool.stop()
"""

CHILD = r"""
import gc, json, sys, tempfile
from pathlib import Path

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

def analyse_calls(count):
    # `count` chat calls spooled by a gateway's spool thread (in another process, as in the daemon), then
    # analysed and stored here by an AnalysisWorker
    import subprocess
    from tokenlens.analysis import AnalysisWorker
    from tokenlens.config import SettingsHolder, parse_settings
    from tokenlens.store import open_store
    from tokenlens.store.spool import spool_dir

    home = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, "-c", sys.argv[2], str(home), str(count)], check=True)
    holder = SettingsHolder(parse_settings({}))
    store = open_store(holder.get().storage.url, home)
    worker = AnalysisWorker(holder, store, spool_dir(home), home=home)
    worker.drain()
    worker.close()
    return worker, store

keep = []
out = [["python interpreter", rss()]]
for label, code in json.loads(sys.argv[1]):
    if code == "@runtime":
        from tokenlens.config import parse_settings
        from tokenlens.runtime import build_runtime
        from tokenlens.addons import gateway
        from tokenlens.web import create_app
        home = Path(tempfile.mkdtemp())
        runtime = build_runtime(parse_settings({}), home, None).start()
        keep += [runtime, gateway(runtime.deps), create_app(runtime.deps)]
    elif code == "@analyse":
        keep.append(analyse_calls(300))
    elif code == "@price":
        from tokenlens.pricing import Pricer
        from tokenlens.usage import Usage
        keep.append(Pricer().price("openai", "gpt-4o-mini", Usage(input_tokens=10, output_tokens=5)))
    else:
        exec(code)
    gc.collect()
    marked = code in ("@analyse", "@price") and "genai_prices" in sys.modules
    out.append([label + (" [genai_prices loaded]" if marked else ""), rss()])
print(json.dumps(out))
"""


def import_breakdown(groups: list[tuple[str, str]]) -> list[tuple[str, float, float]]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(groups), SPOOLER], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the measuring interpreter failed:\n{done.stderr}")
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    rows, before = [], 0.0
    for label, total in steps:
        rows.append((label, total - before, total))
        before = total
    return rows


@dataclass
class TreeRss:
    gateway: float
    analysis: float
    tree: float
    processes: int

    def __str__(self) -> str:
        return (
            f"gateway process {self.gateway:.1f} MiB, analysis process {self.analysis:.1f} MiB, "
            f"process tree {self.tree:.1f} MiB ({self.processes} processes)"
        )


def tree_figures(pid: int) -> TreeRss:
    """RSS of the gateway process, of its analysis process(es) and of its whole process tree."""
    rss = {p: v for p in process_tree(pid) if (v := rss_mib(p)) is not None}
    analysis = sum(v for p, v in rss.items() if b"tokenlens.analysis" in _cmdline(p))
    return TreeRss(rss.get(pid, 0.0), analysis, sum(rss.values()), len(rss))


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def run_daemon(requests: int, connections: int) -> None:
    with workdir(False) as wd, Processes(wd) as procs:
        _, sim_port = start_simulator(procs)
        tl, port = start_tokenlens(procs, wd, sim_port)
        time.sleep(3)
        print(f"tokenlens daemon at start: {tree_figures(tl.pid)}")
        if requests <= 0:
            return
        load = LoadGenerator(wd)
        warm_up = min(10_000, max(1, requests // 10))
        sent, warm = 0, None
        while sent < requests:
            sent += load.run(port, GATEWAY_PREFIX + CHAT_PATH, connections, 10).sent
            if warm is None and sent >= warm_up:
                wait_for_calls(port, sent, 30)
                warm = tree_figures(tl.pid)
                print(f"after the warm-up ({sent:,} requests): {warm}")
        kpi = wait_for_calls(port, sent, 30)
        time.sleep(2)
        end = tree_figures(tl.pid)
        print(f"after {sent:,} requests ({kpi['calls']:,} recorded): {end}")
        if warm is not None:
            growth = {
                name: 100 * (getattr(end, name) / getattr(warm, name) - 1)
                for name in ("gateway", "analysis", "tree")
                if getattr(warm, name)
            }
            print("growth after the warm-up: " + ", ".join(f"{k} {v:+.1f}%" for k, v in growth.items()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=0, help="requests to send after the start (default 0)")
    p.add_argument("--connections", type=int, default=10, help="keep-alive connections (default 10)")
    p.add_argument("--no-daemon", action="store_true", help="only the import breakdown")
    args = p.parse_args()
    print(f"{'what a gateway process loads':58s} {'adds':>8s} {'RSS':>8s}")
    for label, added, total in import_breakdown(GROUPS):
        print(f"{label:58s} {added:7.1f}M {total:7.1f}M")
    print(f"\n{'what the analysis process loads':58s} {'adds':>8s} {'RSS':>8s}")
    for label, added, total in import_breakdown(ANALYSIS_GROUPS):
        print(f"{label:58s} {added:7.1f}M {total:7.1f}M")
    if not args.no_daemon:
        run_daemon(args.requests, args.connections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
