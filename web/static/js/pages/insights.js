// Insights: recommendations, anomalies, right-sizing, history bloat, output utilisation, caching, waste, heatmap.
import { $, api, clear, el, empty, int, palette, pct, showError, table, usd } from "../common.js";

const fill = (selector, node) => clear($(selector), node);

function evidence(r) {
  const e = r.evidence || {};
  const parts = [];
  if (e.simple_calls !== undefined) parts.push(`${int(e.simple_calls)} simple calls`);
  if (e.to_model) parts.push(`to ${e.to_model}`);
  if (e.history_share !== undefined) parts.push(`history ${pct(e.history_share)}`);
  if (e.utilisation !== undefined) parts.push(`utilisation ${pct(e.utilisation)}`);
  if (e.calls !== undefined) parts.push(`${int(e.calls)} calls`);
  if (e.tokens !== undefined) parts.push(`${int(e.tokens)} tokens`);
  if (e.days !== undefined) parts.push(`last ${e.days} days`);
  return parts.join(" · ");
}

async function section(selector, path, render) {
  try {
    fill(selector, render(await api(path)));
  } catch (error) {
    fill(selector, el("p", { class: "banner error" }, error.message));
  }
}

const heatSections = ["system", "tools", "context", "history", "query"];

Promise.all([
  section("#recommendations", "/api/usage/recommendations", (d) => {
    const recos = d.recommendations || [];
    if (!recos.length) return empty("No recommendations: nothing to save yet.");
    return el("div", { id: "recommendation-list" }, recos.slice(0, 12).map((r) => el("div", { class: "reco" },
      el("span", { class: "saving" }, `${usd(r.saving_usd_month)}/mo`),
      el("div", { class: "what" }, el("div", {}, r.title), el("div", { class: "evidence" }, `${r.kind.replaceAll("_", " ")} · ${evidence(r)}`)),
      r.link && r.link.startsWith("/api/usage/compare") ? el("a", { class: "btn small", href: `/models?${r.link.split("?")[1] || ""}` }, "Models") : null)));
  }),
  section("#anomalies", "/api/usage/anomalies", (d) => table([
    { label: "Date", value: (a) => a.date },
    { label: "Source", value: (a) => a.source ?? "all calls" },
    { label: "Metric", value: (a) => a.metric },
    { label: "Value", num: true, value: (a) => (a.metric === "spend" ? usd(a.value) : int(a.value)) },
    { label: "Usual", num: true, cls: "hide-sm", value: (a) => (a.metric === "spend" ? usd(a.mean) : int(a.mean)) },
  ], (d.anomalies || []).slice().reverse(), { id: "anomalies-table", empty: "No anomalies." })),
  section("#right-sizing", "/api/usage/right-sizing", (d) => table([
    { label: "Source", value: (r) => r.source },
    { label: "Model", value: (r) => [r.model, el("span", { class: "muted" }, ` → ${r.suggested_model || "—"}`), r.why ? el("div", { class: "why" }, r.why) : null] },
    { label: "Simple", num: true, value: (r) => pct(r.simple_share) },
    { label: "Saving", num: true, value: (r) => usd(r.saving_usd) },
  ], (d.items || []).filter((r) => r.recommended), { id: "right-sizing-table", empty: "Every source uses a fitting model." })),
  section("#bloat", "/api/usage/conversation-efficiency", (d) => table([
    { label: "Source", value: (r) => r.source },
    { label: "History share", num: true, value: (r) => [pct(r.history_share), r.bloated ? el("span", { class: "pill warn", style: { marginLeft: "6px" } }, "bloated") : null] },
    { label: "Avg input", num: true, value: (r) => int(r.avg_input_tokens) },
    { label: "Calls", num: true, cls: "hide-sm", value: (r) => int(r.calls) },
  ], d.items || [], { id: "bloat-table", empty: "No multi-turn conversations." })),
  section("#output", "/api/usage/output-efficiency", (d) => table([
    { label: "Source", value: (r) => r.source },
    { label: "Model", cls: "hide-sm", value: (r) => r.model },
    { label: "Used", num: true, value: (r) => pct(r.utilisation, 1) },
    { label: "max_tokens", num: true, value: (r) => int(r.avg_max_tokens) },
    { label: "Suggested", num: true, value: (r) => int(r.suggested_max_tokens) },
  ], d.items || [], { id: "output-table", empty: "No calls set max_tokens." })),
  section("#caching", "/api/usage/caching-opportunities", (d) => [
    el("p", {}, `Caching repeated prefixes could save about ${usd(d.total_saving_usd)} over the period.`),
    table([
      { label: "Model", value: (r) => r.model },
      { label: "Sources", cls: "hide-sm", value: (r) => (r.sources || []).join(", ") },
      { label: "Prefix", num: true, value: (r) => `${int(r.prefix_tokens)} tok` },
      { label: "Calls", num: true, value: (r) => int(r.calls) },
      { label: "Saving", num: true, value: (r) => usd(r.saving_usd) },
    ], d.items || [], { id: "caching-table", empty: "No long repeated prefixes." })]),
  section("#waste", "/api/usage/waste-summary", (d) => [
    el("p", {}, `${int(d.total_tokens)} wasted tokens in ${int(d.calls_with_waste)} calls (${usd(d.total_cost_usd)}).`),
    table([
      { label: "Type", value: (r) => r.type.replaceAll("_", " ") },
      { label: "Tokens", num: true, value: (r) => int(r.tokens) },
      { label: "Calls", num: true, value: (r) => int(r.calls) },
    ], (d.by_type || []).filter((r) => r.tokens > 0), { id: "waste-table", empty: "No waste found." })]),
  section("#heatmap", "/api/usage/token-heatmap", (d) => {
    const items = d.items || [];
    const colors = palette();
    const max = Math.max(1, ...items.flatMap((r) => heatSections.map((s) => Number(r[s]) || 0)));
    return table([
      { label: "Source", value: (r) => r.source },
      { label: "Model", cls: "hide-sm", value: (r) => r.model },
      ...heatSections.map((s, i) => ({ label: s, num: true, value: (r) => {
        const v = Number(r[s]) || 0;
        return el("span", { style: { background: `color-mix(in srgb, ${colors[i]} ${Math.round((v / max) * 70)}%, transparent)`, padding: "2px 6px", borderRadius: "4px" } }, int(v));
      } })),
    ], items, { id: "heatmap-table", pageSize: 12, empty: "No heatmaps yet." });
  }),
]).then(() => { document.body.dataset.loaded = "true"; }).catch(showError);
