"""A web page on another loopback port attacks the gateway from a real headless Chromium (issue 17).

The page tries to make model calls through `/proxy/*` (a `no-cors` fetch, a CORS fetch and a `text/plain` form
whose body is JSON), to read and change the API (fetch of `/api/calls`, `PUT /api/config/quotas`, an import,
a form POST to `/api/settings/budget`), to open the live feed, and to frame the dashboard. It writes what it saw
into the DOM. The test then checks from outside: no request reached any provider simulator, no call went
through, nothing was imported, the configuration is byte-for-byte unchanged, and the framed dashboard did not
render.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from string import Template
from typing import Any

import httpx
import pytest

from harness.browser import chromium
from harness.gateway import Gateway, start_gateway, stop_gateway, write_config
from provider_sim import Simulator

pytestmark = pytest.mark.e2e

CONFIG_EXTRA = """\
budgets: {daily_usd: 5.0, monthly_usd: 50.0}
quotas: {kill_switches: [], source_limits: [{source: ci, daily_usd: 1.0}], model_limits: []}
"""

PAGE = Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>free prizes</title></head>
<body>
<iframe name="sink-proxy"></iframe><iframe name="sink-budget"></iframe>
<form id="proxy-form" method="POST" enctype="text/plain" target="sink-proxy"
      action="$gw/proxy/openai/v1/chat/completions">
  <input name='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"$mark form"}],"x":"' value='"}'>
</form>
<form id="budget-form" method="POST" target="sink-budget" action="$gw/api/settings/budget">
  <input name="daily_usd" value="0.01">
</form>
<pre id="out"></pre>
<script>
const GW = "$gw";
const MARK = "$mark";
const results = {};
const chat = JSON.stringify({model: "gpt-4o-mini", messages: [{role: "user", content: MARK + " fetch"}]});
const claude = JSON.stringify({model: "claude-haiku-4-5", max_tokens: 10,
                               messages: [{role: "user", content: MARK + " anthropic"}]});
const imported = JSON.stringify({ts: 1790000000, provider: "openai", model: "gpt-4o", source: MARK,
                                 input_tokens: 1, output_tokens: 1, cost_usd: 0.01}) + "\\n";

async function attempt(name, run) {
  try { results[name] = await run(); } catch (error) { results[name] = "error: " + error.name; }
}
const sent = async (response) => "sent: " + response.type + " " + response.status;
const read = async (response) => "read: " + response.status + " " + (await response.text()).slice(0, 80);
const loaded = (frame) => new Promise((resolve) => {
  frame.addEventListener("load", () => resolve("load"), {once: true});
  setTimeout(() => resolve("timeout"), 5000);
});

(async () => {
  await attempt("proxy_no_cors", async () => sent(await fetch(GW + "/proxy/openai/v1/chat/completions",
    {mode: "no-cors", method: "POST", body: chat})));
  await attempt("proxy_anthropic_no_cors", async () => sent(await fetch(GW + "/proxy/anthropic/v1/messages",
    {mode: "no-cors", method: "POST", body: claude})));
  await attempt("proxy_cors", async () => read(await fetch(GW + "/proxy/openai/v1/chat/completions",
    {method: "POST", headers: {"content-type": "application/json", authorization: "Bearer sk-page"},
     body: chat})));
  await attempt("api_read", async () => read(await fetch(GW + "/api/calls")));
  await attempt("config_read", async () => read(await fetch(GW + "/api/config/quotas")));
  await attempt("quotas_put", async () => read(await fetch(GW + "/api/config/quotas",
    {method: "PUT", headers: {"content-type": "application/json"},
     body: JSON.stringify({kill_switches: [], source_limits: [], model_limits: []})})));
  await attempt("budget_post_no_cors", async () => sent(await fetch(GW + "/api/settings/budget",
    {mode: "no-cors", method: "POST", body: JSON.stringify({daily_usd: 0.01})})));
  await attempt("import_no_cors", async () => sent(await fetch(GW + "/api/import",
    {mode: "no-cors", method: "POST", body: imported})));
  await attempt("live", () => new Promise((resolve) => {
    const socket = new WebSocket(GW.replace("http:", "ws:") + "/api/live");
    socket.onopen = () => { resolve("open"); socket.close(); };
    socket.onerror = () => resolve("refused");
    setTimeout(() => resolve("timeout"), 5000);
  }));
  const sinks = [...document.querySelectorAll("iframe")].map(loaded);
  document.getElementById("proxy-form").submit();
  document.getElementById("budget-form").submit();
  results.forms = (await Promise.all(sinks)).join(",");
  const dashboard = document.createElement("iframe");
  dashboard.name = "dashboard";
  dashboard.src = GW + "/settings";
  const framed = loaded(dashboard);
  document.body.append(dashboard);
  results.frame = await framed;
  document.getElementById("out").textContent = JSON.stringify(results);
  document.body.dataset.done = "1";
})();
</script>
</body></html>
""")


class HostilePages:
    """A plain HTTP server on its own loopback port that serves the attacking page."""

    def __init__(self) -> None:
        self.html = b""
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(pages.html)))
                self.end_headers()
                self.wfile.write(pages.html)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def target(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("hostile-page-home")
    config = home / "config.yaml"
    write_config(config, sims, CONFIG_EXTRA)
    running = start_gateway(home, config, sims)
    yield running
    assert stop_gateway(running) == 0, running.log.read_text()


@pytest.fixture(scope="module")
def pages() -> Iterator[HostilePages]:
    server = HostilePages()
    yield server
    server.close()


def api(gateway: Gateway, path: str) -> Any:
    response = httpx.get(gateway.url + path, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.mark.parametrize(
    "page_host",
    [
        "127.0.0.1",  # same site, another port: the browser says Sec-Fetch-Site: same-site, Origin tells
        "localhost",  # another site: Sec-Fetch-Site: cross-site
    ],
)
def test_a_page_on_another_port_cannot_use_the_gateway(
    browser: Any, target: Gateway, pages: HostilePages, page_host: str
) -> None:
    mark = f"hostile-{uuid.uuid4().hex[:12]}"
    pages.html = PAGE.substitute(gw=target.url, mark=mark).encode()
    sims = target.sims.values()
    seen_before = {id(sim): len(sim.requests) for sim in sims}
    config_before = target.config.read_bytes()
    settings_before = (api(target, "/api/settings/budget"), api(target, "/api/config/quotas"))

    context = browser.new_context()
    console: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda message: console.append(message.text))
        page.goto(f"http://{page_host}:{pages.port}/")
        page.wait_for_selector("body[data-done='1']", timeout=60000)
        results = json.loads(page.text_content("#out") or "{}")
        dashboard = next(frame for frame in page.frames if frame.name == "dashboard")
        rendered = dashboard.evaluate("document.querySelectorAll('body[data-page]').length")
    finally:
        context.close()

    # nothing reached a provider, whatever the page tried
    for sim in sims:
        new = sim.requests[seen_before[id(sim)] :]
        assert [(r.method, r.path) for r in new] == []
        assert not any(mark.encode() in r.body for r in sim.requests)
    # the API was not readable and no state-changing request got through
    assert results["api_read"].startswith("error"), results
    assert results["config_read"].startswith("error"), results
    assert results["quotas_put"].startswith("error"), results
    assert results["proxy_cors"].startswith("error"), results
    assert results["live"] == "refused", results
    calls = api(target, "/api/calls")["calls"]
    assert [c for c in calls if c["outcome"] != "blocked"] == []  # a refusal may be recorded as blocked
    assert not any(c["source"] == mark for c in calls)  # the import did not happen
    assert target.config.read_bytes() == config_before
    assert (api(target, "/api/settings/budget"), api(target, "/api/config/quotas")) == settings_before
    # the dashboard did not render inside the page's frame
    assert rendered == 0, results
    assert any("frame-ancestors" in text for text in console), console
