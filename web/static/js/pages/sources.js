// Sources and tags: spend by source (chart and table) and by the values of a tag key.
import { $, api, chart, clear, daysSelect, el, int, onThemeChange, palette, shareBar, showError, table, usd } from "../common.js";

const days = daysSelect(load);
let lastSources = null;

function costTable(items, id, nameLabel) {
  const max = Math.max(...items.map((i) => i.cost_usd || 0), 0);
  const total = items.reduce((s, i) => s + (i.cost_usd || 0), 0);
  return table([
    { label: nameLabel, value: (i) => i.name },
    { label: "Cost", num: true, value: (i) => [shareBar(i.cost_usd || 0, max), usd(i.cost_usd)] },
    { label: "Share", num: true, cls: "hide-sm", value: (i) => (total ? `${Math.round(((i.cost_usd || 0) / total) * 100)}%` : "—") },
    { label: "Calls", num: true, value: (i) => int(i.calls) },
    { label: "Input", num: true, cls: "hide-sm", value: (i) => int(i.input_tokens) },
    { label: "Output", num: true, cls: "hide-sm", value: (i) => int(i.output_tokens) },
    ...(items.some((i) => "blocked_calls" in i) ? [{ label: "Blocked", num: true, cls: "hide-sm", value: (i) => int(i.blocked_calls) }] : []),
  ], items, { id, pageSize: 10 });
}

function renderChart(items) {
  lastSources = items;
  const top = items.slice(0, 8);
  chart($("#sources-chart"), {
    type: "doughnut",
    data: { labels: top.map((i) => i.name), datasets: [{ data: top.map((i) => i.cost_usd || 0), backgroundColor: [...palette(), ...palette()], borderWidth: 0 }] },
    options: { plugins: { legend: { position: "right" }, tooltip: { callbacks: { label: (ctx) => `${ctx.label}: ${usd(ctx.parsed)}` } } } },
  });
}

async function loadTags() {
  const key = $("#tag-key").value;
  try {
    const data = await api(`/api/usage/by-tag?key=${encodeURIComponent(key)}&days=${days()}`);
    clear($("#tags"), costTable(data.items || [], "tags-table", key));
  } catch (error) { showError(error); }
}

async function load() {
  try {
    const data = await api(`/api/usage/sources?days=${days()}`);
    renderChart(data.items || []);
    clear($("#sources"), costTable(data.items || [], "sources-table", "Source"));
    await loadTags();
    document.body.dataset.loaded = "true";
  } catch (error) { showError(error); }
}

$("#tag-key").addEventListener("change", loadTags);
onThemeChange(() => { if (lastSources) renderChart(lastSources); });
load();
