// Latency: p50/p95/p99, time to first token and error rate by provider and model.
import { $, api, chart, clear, daysSelect, int, ms, onThemeChange, palette, pct, showError, table } from "../common.js";

const days = daysSelect(load);
let last = null;

function renderChart(items) {
  last = items;
  const [c1, c2, c3] = palette();
  const ds = (label, key, color) => ({ label, data: items.map((i) => i[key]), backgroundColor: color, borderRadius: 2 });
  const canvas = $("#latency-chart");
  canvas.parentElement.style.height = `${Math.max(240, 30 * items.length + 90)}px`; // a labelled row per model
  chart(canvas, {
    type: "bar",
    data: { labels: items.map((i) => i.model), datasets: [ds("p50", "p50_ms", c1), ds("p95", "p95_ms", c2), ds("p99", "p99_ms", c3)] },
    options: {
      indexAxis: "y",
      plugins: { legend: { position: "bottom" }, tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${ms(ctx.parsed.x)}` } } },
      scales: { x: { ticks: { callback: (v) => ms(v) } }, y: { grid: { display: false }, ticks: { autoSkip: false } } },
    },
  });
}

async function load() {
  try {
    const data = await api(`/api/usage/latency?days=${days()}`);
    const items = (data.items || []).slice().sort((a, b) => (a.p50_ms ?? 0) - (b.p50_ms ?? 0));
    renderChart(items);
    clear($("#latency"), table([
      { label: "Model", value: (i) => i.model },
      { label: "Provider", cls: "hide-sm", value: (i) => i.provider },
      { label: "Calls", num: true, value: (i) => int(i.calls) },
      { label: "p50", num: true, value: (i) => ms(i.p50_ms) },
      { label: "p95", num: true, value: (i) => ms(i.p95_ms) },
      { label: "p99", num: true, cls: "hide-sm", value: (i) => ms(i.p99_ms) },
      { label: "TTFT p50", num: true, cls: "hide-sm", value: (i) => ms(i.ttft_p50_ms) },
      { label: "TTFT p95", num: true, cls: "hide-sm", value: (i) => ms(i.ttft_p95_ms) },
      { label: "Errors", num: true, value: (i) => pct(i.error_rate, 1) },
      { label: "Fallbacks", num: true, cls: "hide-sm", value: (i) => int(i.fallbacks ?? 0) },
    ], items, { id: "latency-table", pageSize: 15, empty: "No calls in this period." }));
    document.body.dataset.loaded = "true";
  } catch (error) { showError(error); }
}

onThemeChange(() => { if (last) renderChart(last); });
load();
