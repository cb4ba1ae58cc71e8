"""What the resident memory of a gateway process is made of, and the RSS of `tokenlens daemon` (issue 22).

    .venv/bin/python bench/memory.py [--requests 10000] [--connections 10] [--no-daemon]

1. Imports, in a fresh interpreter, the packages a gateway process loads, one group after another, and prints
   the growth of its RSS (`VmRSS` in /proc/self/status) after each: what each group adds on top of the ones
   before it (a package shared by two groups counts in the first). Then what is loaded only on demand: the
   price data (the first price), numpy and the injection model (injection detection on), the tokenizer
   vocabularies (a precise count: the analyses, never the request path).
2. Starts the provider simulator and `tokenlens daemon` (default pipeline, fresh SQLite store) and prints the
   RSS of the gateway process and of its whole process tree at start and, with `--requests N`, after N
   keep-alive chat completions.

Every figure depends on the machine and the installed versions; run it before and after a change.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
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
    ("on demand: genai-prices data (first price)", "@price"),
    ("on demand: numpy + injection model", "import tokenlens.guardrails.injection"),
    ("on demand: o200k vocabulary", "from tokenlens import tokens; tokens.get_encoding('o200k_base')"),
    ("on demand: cl100k vocabulary", "from tokenlens import tokens; tokens.get_encoding('cl100k_base')"),
]

CHILD = r"""
import gc, json, sys, tempfile
from pathlib import Path

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

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
    elif code == "@price":
        from tokenlens.pricing import Pricer
        from tokenlens.usage import Usage
        keep.append(Pricer().price("openai", "gpt-4o-mini", Usage(input_tokens=10, output_tokens=5)))
    else:
        exec(code)
    gc.collect()
    out.append([label, rss()])
print(json.dumps(out))
"""


def import_breakdown() -> list[tuple[str, float, float]]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(GROUPS)], capture_output=True, text=True, check=True
    )
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    rows, before = [], 0.0
    for label, total in steps:
        rows.append((label, total - before, total))
        before = total
    return rows


def tree_figures(pid: int) -> tuple[float, float, int]:
    pids = process_tree(pid)
    values = [v for v in (rss_mib(p) for p in pids) if v is not None]
    return rss_mib(pid) or 0.0, sum(values), len(values)


def run_daemon(requests: int, connections: int) -> None:
    with workdir(False) as wd, Processes(wd) as procs:
        _, sim_port = start_simulator(procs)
        tl, port = start_tokenlens(procs, wd, sim_port)
        time.sleep(2)
        proxy, tree, n = tree_figures(tl.pid)
        print(
            f"tokenlens daemon at start: gateway process {proxy:.1f} MiB, process tree {tree:.1f} MiB ({n})"
        )
        if requests <= 0:
            return
        load = LoadGenerator(wd)
        sent = 0
        while sent < requests:
            sent += load.run(port, GATEWAY_PREFIX + CHAT_PATH, connections, 10).sent
        kpi = wait_for_calls(port, sent, 30)
        time.sleep(2)
        proxy, tree, n = tree_figures(tl.pid)
        print(
            f"after {sent:,} requests ({kpi['calls']:,} recorded): gateway process {proxy:.1f} MiB, "
            f"process tree {tree:.1f} MiB ({n})"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=0, help="requests to send after the start (default 0)")
    p.add_argument("--connections", type=int, default=10, help="keep-alive connections (default 10)")
    p.add_argument("--no-daemon", action="store_true", help="only the import breakdown")
    args = p.parse_args()
    print(f"{'what a gateway process loads':58s} {'adds':>8s} {'RSS':>8s}")
    for label, added, total in import_breakdown():
        print(f"{label:58s} {added:7.1f}M {total:7.1f}M")
    if not args.no_daemon:
        run_daemon(args.requests, args.connections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
