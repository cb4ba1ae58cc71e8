"""How long each dashboard page takes to load in a real browser over a big store (issue 8: 1,000,000 calls).

Starts `tokenlens daemon` on a data directory filled by `bench/dashboard.py --store DIR` (or any TokenLens data
directory), opens each page in headless Chromium (Debian's `chromium`, driven by Playwright) and times, per
load, the navigation until the page says it has loaded (`body[data-loaded=true]`, set once every request the
page makes at load has been answered and drawn). The first load of each page warms the browser's cache of
static files and is not counted. Prints p50 and max per page, then the command that reproduces the run.

    .venv/bin/python bench/dashboard.py --store /tmp/tl-1m          # fill once: 1,000,000 calls
    .venv/bin/python bench/dashboard_browser.py --store /tmp/tl-1m [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Processes, start_tokenlens, workdir  # noqa: E402

PAGES = {
    "Overview": "/",
    "Live": "/live",
    "Sources": "/sources",
    "Models": "/models",
    "Insights": "/insights",
    "Latency": "/latency",
    "Sessions": "/sessions",
    "Settings": "/settings",
}
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def chromium() -> str:
    for candidate in (os.environ.get("TOKENLENS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("no Chromium: apt-get install chromium (or set TOKENLENS_CHROMIUM)")


def load_ms(page: Any, url: str) -> float:
    """Milliseconds from the start of navigation until the page has drawn what it fetched."""
    page.goto(url)
    page.wait_for_selector("body[data-loaded=true]", timeout=120_000)
    return float(page.evaluate("performance.now()"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", required=True, help="a TokenLens data directory (bench/dashboard.py --store)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    home = Path(args.store)
    with workdir(False) as scratch, Processes(scratch) as procs:
        _, port = start_tokenlens(
            procs,
            scratch,
            None,
            data_dir=home,
            config_text="timezone: UTC\nbudgets: {monthly_usd: 50000}\n",
            ready_s=300,  # a store from an older schema migrates first
        )
        base = f"http://127.0.0.1:{port}"
        calls = httpx.get(f"{base}/api/calls?limit=1", timeout=60).json()["calls"]
        pages = dict(PAGES)
        if calls:
            pages["Call detail"] = f"/calls/{calls[0]['id']}"
            if calls[0]["session_id"]:
                pages["Session"] = f"/sessions/{calls[0]['session_id']}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=BROWSER_ARGS, headless=True)
            page = browser.new_context(viewport={"width": args.width, "height": 900}).new_page()
            print(
                f"{'page':14} {'p50 ms':>8} {'max ms':>8}   (load until drawn, {args.runs} runs after one warm-up)"
            )
            for name, path in pages.items():
                load_ms(page, base + path)
                times = [load_ms(page, base + path) for _ in range(args.runs)]
                print(f"{name:14} {statistics.median(times):8.0f} {max(times):8.0f}", flush=True)
            browser.close()
        total = httpx.get(f"{base}/api/usage/kpi?days=365", timeout=60).json()
        print(f"store: {home} ({total.get('calls', '?'):,} calls in the last 365 days)")
    print(f"reproduce: .venv/bin/python bench/dashboard_browser.py --store {args.store} --runs {args.runs}")


if __name__ == "__main__":
    main()
