// One agent run turn by turn: cost per turn (re-sent history, new input, output), growth of the context,
// the tools each answer called, and where the money went (by model, by part of the price).
import { $, api, chart, clear, compact, el, empty, int, ms, onThemeChange, outcomePill, palette, pct, showError, table, time, usd } from "../common.js";
import { agentPill, duration } from "../runs.js";

const root = $("#run");
const id = root.dataset.groupId;
let current = null;

const fact = (label, value, testid, sub) => el("div", { class: "fact" },
  el("span", { class: "label" }, label),
  el("span", { class: "value", dataset: testid ? { testid } : null }, value),
  sub ? el("span", { class: "sub muted" }, sub) : null);

const label = (t, i) => (t.turn ? `${t.turn}` : `#${i + 1}`);

function costChart(run) {
  const t = run.timeline;
  const [c1, c2, c3, c4] = palette();
  const bar = (name, data, color) => ({ type: "bar", label: name, data, backgroundColor: color, stack: "cost", borderRadius: 2, yAxisID: "y" });
  chart($("#turn-cost-chart"), {
    data: {
      labels: t.map(label),
      datasets: [
        bar("Re-sent history", t.map((x) => x.history_cost_usd || 0), c2),
        bar("New input", t.map((x) => x.new_input_cost_usd || 0), c1),
        bar("Output", t.map((x) => x.output_cost_usd || 0), c3),
        { type: "line", label: "Context (input tokens)", data: t.map((x) => x.input_tokens), borderColor: c4, backgroundColor: c4, pointRadius: t.length > 60 ? 0 : 2, borderWidth: 2, tension: 0, yAxisID: "y2" },
      ],
    },
    options: {
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom" }, tooltip: { callbacks: {
        title: (items) => `Turn ${items[0].label}`,
        label: (ctx) => ctx.dataset.yAxisID === "y2" ? `${ctx.dataset.label}: ${int(ctx.parsed.y)}` : `${ctx.dataset.label}: ${usd(ctx.parsed.y)}`,
      } } },
      scales: {
        x: { stacked: true, grid: { display: false }, title: { display: true, text: "turn" } },
        y: { stacked: true, ticks: { callback: (v) => usd(v) }, title: { display: true, text: "cost" } },
        y2: { position: "right", beginAtZero: true, grid: { display: false }, ticks: { callback: (v) => compact(v) }, title: { display: true, text: "input tokens" } },
      },
    },
  });
}

function moneyStack(run) {
  const colors = palette();
  const parts = [
    ["Uncached input", run.input_cost_usd],
    ["Cache read", run.cache_read_cost_usd],
    ["Cache write", run.cache_write_cost_usd],
    ["Output", run.output_cost_usd],
  ];
  const total = parts.reduce((s, [, v]) => s + (Number(v) || 0), 0);
  if (!total) return empty("No priced calls.");
  return el("div", {},
    el("div", { class: "stack", role: "img", "aria-label": "cost by part of the price" },
      parts.map(([name, v], i) => el("span", { title: `${name}: ${usd(v)}`, style: { width: `${((Number(v) || 0) / total) * 100}%`, background: colors[i] } }))),
    el("div", { class: "legend" }, parts.map(([name, v], i) => el("span", { dataset: { part: name } }, el("i", { style: { background: colors[i] } }), `${name} ${usd(v)} (${Math.round(((Number(v) || 0) / total) * 100)}%)`))));
}

function tools(list) {
  if (list === null || list === undefined) return el("span", { class: "muted", title: "the next request of this conversation names them; none came" }, "—");
  if (!list.length) return el("span", { class: "muted" }, "none");
  const counts = new Map();
  for (const name of list) counts.set(name, (counts.get(name) || 0) + 1);
  return el("span", { class: "tools" }, [...counts].map(([name, n]) => el("span", { class: "tool" }, n > 1 ? `${name} ×${n}` : name)));
}

function render(run) {
  current = run;
  $("#run-kind").textContent = run.kind === "session" ? "Session" : "Conversation";
  const t = run.timeline;
  const priciest = t.reduce((best, x) => ((x.cost_usd || 0) > (best?.cost_usd || 0) ? x : best), null);
  const history = run.history_cost_usd || 0;
  const cards = [];
  cards.push(el("section", { class: "card" },
    el("div", { class: "facts" },
      fact("Cost", usd(run.cost_usd), "run-cost", run.unpriced_calls ? `${run.unpriced_calls} unpriced calls` : `${usd(run.cost_usd / Math.max(1, run.calls))} per call`),
      fact("Turns", int(run.turns), "run-turns", `${int(run.calls)} calls · ${int(run.conversations)} conversation${run.conversations === 1 ? "" : "s"}`),
      fact("Duration", duration(run.duration_s), "run-duration", `${time(run.started)} → ${time(run.ended, false)}`),
      fact("Agent · source", [agentPill(run.agent), run.agent ? null : run.sources.join(", ")], "run-agent",
        run.sources.filter((s) => s !== run.agent).join(", ") || (run.agent ? "coding agent" : null)),
      fact("Tokens in / out", `${compact(run.input_tokens)} / ${compact(run.output_tokens)}`, "run-tokens", `${int(run.reasoning_tokens)} reasoning`),
      fact("Cache hit rate", pct(run.cache_hit_rate, 0), "run-cache", `${compact(run.cache_read_tokens)} read · ${compact(run.cache_write_tokens)} written`),
      fact("Context", `${compact(run.context_start_tokens)} → ${compact(run.context_end_tokens)}`, "run-context", `+${int(run.avg_growth_per_turn)} tokens per turn`),
      fact("Re-sent history", pct(run.history_share, 0), "run-history", `${usd(history)} of the cost`))));
  cards.push(el("section", { class: "card" },
    el("h2", {}, "Cost per turn and context size"),
    el("div", { class: "chart-box tall" }, el("canvas", { id: "turn-cost-chart", "aria-label": "Cost per turn split into re-sent history, new input and output, with the input tokens of each turn" }))));
  const models = run.by_model || [];
  const maxModel = Math.max(0, ...models.map((m) => m.cost_usd || 0));
  cards.push(el("div", { class: "grid two" },
    el("section", { class: "card" }, el("h2", {}, "Where the money went"),
      moneyStack(run),
      el("dl", { class: "kv money" },
        el("dt", {}, "Re-sending history"), el("dd", { dataset: { testid: "run-history-cost" } }, `${usd(history)} (${pct(run.history_share, 0)} of the cost, ${compact(run.history_tokens)} tokens)`),
        el("dt", {}, "Most expensive turn"), el("dd", {}, priciest ? [el("a", { href: `/calls/${encodeURIComponent(priciest.call_id)}` }, `turn ${priciest.turn ?? "?"}`), ` · ${usd(priciest.cost_usd)} · ${priciest.model || "—"}`] : "—"),
        el("dt", {}, "Tool calls"), el("dd", {}, int(run.tool_calls)),
        el("dt", {}, "Errors · blocked"), el("dd", {}, `${int(run.error_calls)} · ${int(run.blocked_calls)}`))),
    el("section", { class: "card" }, el("h2", {}, "By model"),
      table([
        { label: "Model", value: (m) => m.model },
        { label: "Provider", cls: "hide-sm", value: (m) => m.provider },
        { label: "Calls", num: true, value: (m) => int(m.calls) },
        { label: "Cost", num: true, value: (m) => [el("span", { class: "share", style: { width: `${maxModel > 0 ? Math.max(2, Math.round((m.cost_usd / maxModel) * 60)) : 0}px` } }), usd(m.cost_usd)] },
        { label: "Share", num: true, value: (m) => pct(run.cost_usd ? m.cost_usd / run.cost_usd : 0, 0) },
      ], models, { id: "run-models-table", empty: "No model calls." }))));
  cards.push(el("section", { class: "card" }, el("h2", {}, "Turn by turn"),
    table([
      { label: "Turn", cls: "t-turn", value: (x) => el("a", { href: `/calls/${encodeURIComponent(x.call_id)}` }, x.turn ?? "—") },
      { label: "Time", cls: "hide-sm", value: (x) => time(x.ts, false) },
      { label: "Model", cls: "t-model", value: (x) => x.model || "—" },
      { label: "Outcome", cls: "t-outcome", value: (x) => outcomePill(x.outcome) },
      { label: "Context", num: true, value: (x) => int(x.input_tokens) },
      { label: "Growth", num: true, cls: "hide-sm", value: (x) => (x.context_growth_tokens === null ? "—" : `${x.context_growth_tokens >= 0 ? "+" : ""}${int(x.context_growth_tokens)}`) },
      { label: "Cached", num: true, cls: "hide-sm", value: (x) => (x.input_tokens ? pct(x.cache_read_tokens / x.input_tokens, 0) : "—") },
      { label: "Output", num: true, value: (x) => int(x.output_tokens) },
      { label: "Cost", num: true, cls: "t-cost", value: (x) => (x.priced ? usd(x.cost_usd) : x.cost_usd === null ? "unpriced" : usd(x.cost_usd)) },
      { label: "History", num: true, cls: "hide-sm", value: (x) => usd(x.history_cost_usd) },
      { label: "Tool calls", cls: "t-tools", value: (x) => tools(x.tool_calls) },
      { label: "Latency", num: true, cls: "hide-sm", value: (x) => ms(x.latency_ms) },
    ], t, { id: "turns-table", pageSize: 25, empty: "No calls." })));
  clear(root, cards);
  costChart(run);
  document.body.dataset.loaded = "true";
}

onThemeChange(() => { if (current) costChart(current); });
api(`/api/usage/sessions/${encodeURIComponent(id)}`).then(render).catch((error) => {
  if (error.status === 404) {
    clear(root, el("section", { class: "card" }, empty("No session or conversation with this id (its calls may be past the retention period).")));
    document.body.dataset.loaded = "true";
  } else showError(error);
});
