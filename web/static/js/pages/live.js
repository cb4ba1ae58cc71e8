// Live: the latest calls (cursor-paginated /api/calls), new ones prepended from the WebSocket /api/live.
import { $, api, clear, el, int, ms, outcomePill, showError, time, usd } from "../common.js";

const PAGE = 50;
const tbody = $("#calls");
const form = $("#filters");
let filters = {};
let cursors = [null]; // cursor of each page seen; the current page is the last
let next = null;
let paused = false;
let waiting = [];
const seen = new Set();

function row(call, fresh = false) {
  const tokens = `${int(call.input_tokens + (call.cache_read_tokens || 0) + (call.cache_write_tokens || 0))} / ${int(call.output_tokens)}`;
  return el("tr", { class: fresh ? "fresh" : null, dataset: { callId: call.id } },
    el("td", { class: "c-time", dataset: { label: "Time" } }, el("a", { href: `/calls/${encodeURIComponent(call.id)}` }, time(call.ts))),
    el("td", { class: "c-source", dataset: { label: "Source" } }, call.source),
    el("td", { class: "c-model", dataset: { label: "Model" } }, call.model || call.requested_model || "—", call.fallback_from ? el("span", { class: "muted", title: "fallback" }, ` ← ${call.fallback_from}`) : null),
    el("td", { class: "hide-sm", dataset: { label: "Provider" } }, call.provider),
    el("td", { class: "c-outcome", dataset: { label: "Outcome" } }, outcomePill(call.outcome, call.blocked_by), call.stream ? el("span", { class: "muted" }, " stream") : null),
    el("td", { class: "num hide-sm", dataset: { label: "Tokens in/out" } }, tokens),
    el("td", { class: "num c-cost", dataset: { label: "Cost" } }, call.priced ? usd(call.cost_usd) : el("span", { class: "muted", title: "unpriced" }, "unpriced")),
    el("td", { class: "num hide-sm", dataset: { label: "Latency" } }, ms(call.latency_ms)));
}

function matches(call) {
  return Object.entries(filters).every(([key, value]) => !value || String(call[key] ?? "") === value);
}

async function loadPage() {
  const params = new URLSearchParams({ limit: PAGE });
  for (const [key, value] of Object.entries(filters)) if (value) params.set(key, value);
  const before = cursors[cursors.length - 1];
  if (before) params.set("before", before);
  try {
    const data = await api(`/api/calls?${params}`);
    next = data.next;
    seen.clear();
    data.calls.forEach((c) => seen.add(c.id));
    clear(tbody, data.calls.length ? data.calls.map((c) => row(c)) : el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No calls match.")));
    $("#calls-info").textContent = `page ${cursors.length} · ${data.calls.length} calls`;
    $("#older").disabled = !next;
    $("#newer").disabled = cursors.length === 1;
    document.body.dataset.loaded = "true";
  } catch (error) {
    showError(error);
  }
}

function addLive(call) {
  if (seen.has(call.id) || !matches(call) || cursors.length !== 1) return;
  seen.add(call.id);
  const placeholder = tbody.querySelector("td[colspan]");
  if (placeholder) placeholder.parentElement.remove();
  tbody.prepend(row(call, true));
  while (tbody.children.length > PAGE) tbody.lastElementChild.remove();
}

function setStatus(text, cls) {
  const pill = $("#live-status");
  pill.textContent = text;
  pill.className = `pill ${cls}`;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/live`);
  socket.addEventListener("open", () => { setStatus("live", "ok"); document.body.dataset.live = "open"; });
  socket.addEventListener("close", () => {
    setStatus("reconnecting…", "warn");
    document.body.dataset.live = "closed";
    setTimeout(connect, 2000);
  });
  socket.addEventListener("message", (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch (e) { return; }
    if (message.type !== "call" && message.type !== "block") return;
    if (paused) {
      waiting.push(message.data);
      $("#paused-count").textContent = String(waiting.length);
      return;
    }
    addLive(message.data);
  });
}

$("#pause").addEventListener("click", () => {
  paused = !paused;
  $("#pause").textContent = paused ? "Resume" : "Pause";
  $("#pause").classList.toggle("primary", paused);
  $("#paused-note").hidden = !paused;
  if (!paused) {
    waiting.forEach(addLive);
    waiting = [];
    $("#paused-count").textContent = "0";
  }
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  filters = Object.fromEntries([...new FormData(form)].map(([k, v]) => [k, String(v).trim()]));
  cursors = [null];
  loadPage();
});
$("#older").addEventListener("click", () => { if (next) { cursors.push(next); loadPage(); } });
$("#newer").addEventListener("click", () => { cursors = [null]; loadPage(); });

async function fillLists() {
  try {
    const [sources, models] = await Promise.all([api("/api/usage/sources?days=30"), api("/api/usage/models?days=30")]);
    clear($("#source-list"), sources.items.map((i) => el("option", { value: i.name })));
    clear($("#model-list"), models.items.map((i) => el("option", { value: i.name })));
  } catch (e) { /* the lists are a convenience */ }
}

loadPage();
connect();
fillLists();
