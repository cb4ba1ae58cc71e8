// Models: spend per model and the what-if comparison (/api/usage/compare).
import { $, api, clear, daysSelect, el, int, shareBar, showError, table, usd } from "../common.js";

const days = daysSelect(load);
const CHEAPER = { "claude-opus-4-1": "claude-sonnet-4-5", "claude-sonnet-4-5": "claude-haiku-4-5", "gpt-4o": "gpt-4o-mini", "gpt-5": "gpt-5-mini", "gemini-2.5-pro": "gemini-2.5-flash" };

async function load() {
  try {
    const data = await api(`/api/usage/models?days=${days()}`);
    const items = data.items || [];
    const max = Math.max(...items.map((i) => i.cost_usd || 0), 0);
    clear($("#models"), table([
      { label: "Model", value: (i) => i.name },
      { label: "Provider", cls: "hide-sm", value: (i) => i.provider || "—" },
      { label: "Cost", num: true, value: (i) => [shareBar(i.cost_usd || 0, max), usd(i.cost_usd)] },
      { label: "Calls", num: true, value: (i) => int(i.calls) },
      { label: "Input", num: true, cls: "hide-sm", value: (i) => int(i.input_tokens) },
      { label: "Output", num: true, cls: "hide-sm", value: (i) => int(i.output_tokens) },
      { label: "Per call", num: true, cls: "hide-sm", value: (i) => (i.calls ? usd((i.cost_usd || 0) / i.calls) : "—") },
      { label: "", value: (i) => el("button", { type: "button", class: "btn small", onclick: () => pick(i.name) }, "What if…") },
    ], items, { id: "models-table", pageSize: 12 }));
    const select = $("#from-model");
    const current = select.value;
    clear(select, items.map((i) => el("option", { value: i.name }, i.name)));
    clear($("#known-models"), items.map((i) => el("option", { value: i.name })));
    if (current) select.value = current;
    if (!$("#to-model").value && items.length) pick(items[0].name, false);
    document.body.dataset.loaded = "true";
  } catch (error) { showError(error); }
}

function pick(model, run = true) {
  $("#from-model").value = model;
  $("#to-model").value = CHEAPER[model] || "";
  if (run && $("#to-model").value) compare();
  else $("#to-model").focus();
}

async function compare() {
  const params = new URLSearchParams({ from_model: $("#from-model").value, to_model: $("#to-model").value.trim(), days: days() });
  const out = $("#compare-result");
  try {
    const r = await api(`/api/usage/compare?${params}`);
    const saving = -r.delta_usd;
    clear(out, el("div", { class: "facts", id: "compare-facts" },
      el("div", { class: "fact" }, el("span", { class: "label" }, `Actual on ${r.from_model}`), el("span", { class: "value", dataset: { testid: "compare-actual" } }, usd(r.actual_usd))),
      el("div", { class: "fact" }, el("span", { class: "label" }, `On ${r.to_model}`), el("span", { class: "value", dataset: { testid: "compare-whatif" } }, r.what_if_usd === null ? "unpriced" : usd(r.what_if_usd))),
      el("div", { class: "fact" }, el("span", { class: "label" }, saving >= 0 ? "Saving" : "Extra cost"), el("span", { class: "value", style: { color: saving >= 0 ? "var(--good)" : "var(--bad)" } }, usd(Math.abs(r.delta_usd)))),
      el("div", { class: "fact" }, el("span", { class: "label" }, "Calls re-priced"), el("span", { class: "value" }, int(r.calls)))));
  } catch (error) {
    clear(out, el("p", { class: "banner error" }, error.message));
  }
}

$("#compare-form").addEventListener("submit", (event) => { event.preventDefault(); compare(); });
load();
