// Call detail: tokens, cost, latency, attempts, guardrail flags, waste, heatmap, stored bodies (secrets masked).
import { $, api, clear, el, empty, int, maskSecrets, ms, outcomePill, palette, showError, table, usd } from "../common.js";

const root = $("#call");
const id = root.dataset.callId;

const fact = (label, value, testid) => el("div", { class: "fact" }, el("span", { class: "label" }, label), el("span", { class: "value", dataset: testid ? { testid } : null }, value));

function pretty(text) {
  if (text === null || text === undefined) return null;
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
}

function heatmap(heat) {
  const sections = ["system", "tools", "context", "history", "query"];
  const colors = palette();
  const total = sections.reduce((s, k) => s + (Number(heat[k]) || 0), 0);
  if (!total) return empty("No sections measured.");
  return el("div", {},
    el("div", { class: "stack", role: "img", "aria-label": "input tokens by section" },
      sections.map((k, i) => el("span", { title: `${k}: ${int(heat[k])}`, style: { width: `${((Number(heat[k]) || 0) / total) * 100}%`, background: colors[i] } }))),
    el("div", { class: "legend" }, sections.map((k, i) => el("span", { dataset: { section: k } }, el("i", { style: { background: colors[i] } }), `${k} ${int(heat[k])} (${Math.round(((Number(heat[k]) || 0) / total) * 100)}%)`))),
    heat.prefix ? el("p", { class: "muted", dataset: { testid: "prefix-cache" } }, heat.prefix.message || `Repeated prefix of ${int(heat.prefix.tokens)} tokens.`) : null);
}

// Issue 18: which price was used (a guess is said to be one), the tier, and tokens by modality.
function priceUsed(source) {
  if (!source) return "none (unpriced)";
  if (source === "override") return "your pricing override";
  if (source.startsWith("inferred:")) return `guessed from ${source.slice(9)} (the name is not one its price entry lists)`;
  return `price entry ${source}`;
}

function pricing(call) {
  const parts = ["input", "cache_read", "output"].filter((p) => call.modality_tokens && call.modality_tokens[p]);
  const modalities = [...new Set(parts.flatMap((p) => Object.keys(call.modality_tokens[p])))];
  const warning = call.details && call.details.pricing && call.details.pricing.warning;
  return [
    el("dl", { class: "kv" },
      el("dt", {}, "Price used"), el("dd", { dataset: { testid: "price-source" }, class: call.price_source && call.price_source.startsWith("inferred:") ? "warn" : null }, priceUsed(call.price_source)),
      call.service_tier ? [el("dt", {}, "Service tier"), el("dd", {}, call.service_tier)] : null),
    warning ? el("p", { class: "pill warn", dataset: { testid: "price-warning" } }, warning) : null,
    parts.length
      ? [el("h3", {}, "Tokens by modality"),
        table([{ label: "Modality", value: (m) => m }, ...parts.map((p) => ({ label: p.replace("_", " "), num: true, value: (m) => int(call.modality_tokens[p][m] || 0) }))], modalities, { id: "modality-table" })]
      : null,
  ];
}

function render(call) {
  const details = call.details || {};
  const attempts = details.attempts || [];
  const waste = details.waste;
  const flags = call.guardrail_flags || [];
  const cards = [];
  cards.push(el("section", { class: "card" },
    el("div", { class: "facts" },
      fact("Outcome", outcomePill(call.outcome, call.blocked_by)),
      fact("Cost", call.priced ? usd(call.cost_usd) : "unpriced", "call-cost"),
      fact("Latency", ms(call.latency_ms), "call-latency"),
      fact("Time to first token", ms(call.ttft_ms)),
      fact("Input tokens", int(call.input_tokens), "call-input"),
      fact("Output tokens", int(call.output_tokens), "call-output"),
      fact("Cache read / write", `${int(call.cache_read_tokens)} / ${int(call.cache_write_tokens)}`),
      fact("Reasoning tokens", int(call.reasoning_tokens)))));
  cards.push(el("div", { class: "grid two" },
    el("section", { class: "card" }, el("h2", {}, "Call"),
      el("dl", { class: "kv" },
        ...[["Time", new Date(call.ts).toLocaleString("en-US", { hour12: false })], ["Source", call.source], ["Provider", call.provider], ["Endpoint", call.endpoint],
          ["Requested model", call.requested_model], ["Model", call.model], ["Provider's model", call.response_model], ["Stream", call.stream ? "yes" : "no"],
          ["Status", call.status], ["Usage from", call.usage_source], ["Max tokens", call.max_tokens], ["Complexity", call.complexity],
          ["Session", call.session_id], ["Turn", call.turn], ["Saved", call.saved_usd ? usd(call.saved_usd) : null], ["Error", call.error],
          ["Tags", Object.entries(call.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ")]]
          .filter(([, v]) => v !== null && v !== undefined && v !== "")
          .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]))),
    el("section", { class: "card" }, el("h2", {}, "Cost breakdown"),
      el("dl", { class: "kv" },
        el("dt", {}, "Input"), el("dd", {}, usd(call.input_cost_usd)),
        el("dt", {}, "Output"), el("dd", {}, usd(call.output_cost_usd)),
        el("dt", {}, "Cache read"), el("dd", {}, usd(call.cache_read_cost_usd)),
        el("dt", {}, "Cache write"), el("dd", {}, usd(call.cache_write_cost_usd))),
      ...pricing(call),
      el("h3", {}, `Attempts (${call.attempts})`),
      attempts.length
        ? table([{ label: "#", value: (a) => a.attempt }, { label: "Model", value: (a) => a.model }, { label: "Status", value: (a) => a.status ?? "—" }, { label: "Latency", num: true, value: (a) => ms(a.latency_ms) }, { label: "Error", value: (a) => a.error || "" }], attempts, { id: "attempts-table" })
        : el("p", { class: "muted" }, call.fallback_from ? `Fell back from ${call.fallback_from}.` : "Answered on the first attempt."),
      call.fallback_from && attempts.length ? el("p", {}, `Answered by ${call.model} after ${call.fallback_from} failed.`) : null)));
  cards.push(el("div", { class: "grid two" },
    el("section", { class: "card" }, el("h2", {}, "Guardrail flags"),
      flags.length ? table([{ label: "Rule", value: (f) => f.rule }, { label: "Action", value: (f) => el("span", { class: `pill ${f.action === "block" ? "bad" : "warn"}` }, f.action) }, { label: "Where", value: (f) => f.where }], flags, { id: "flags-table" }) : empty("No flags.")),
    el("section", { class: "card" }, el("h2", {}, "Waste"),
      waste && waste.findings && waste.findings.length
        ? [el("p", {}, `${int(waste.tokens)} wasted tokens${waste.cost_usd ? ` (${usd(waste.cost_usd)})` : ""}.`),
          table([{ label: "Type", value: (f) => f.type }, { label: "Where", value: (f) => f.where }, { label: "Tokens", num: true, value: (f) => int(f.tokens) }, { label: "Example", value: (f) => f.example || "" }], waste.findings, { id: "waste-table" })]
        : empty("No waste found."))));
  cards.push(el("section", { class: "card" }, el("h2", {}, "Input tokens by section"), details.heatmap ? heatmap(details.heatmap) : empty("No heatmap for this call.")));
  const request = pretty(maskSecrets(call.request_body));
  const response = pretty(maskSecrets(call.response_body));
  cards.push(el("div", { class: "grid two" },
    el("section", { class: "card" }, el("h2", {}, "Request"), request ? el("pre", { class: "body", id: "request-body" }, request) : empty("Body not stored.")),
    el("section", { class: "card" }, el("h2", {}, "Response"), response ? el("pre", { class: "body", id: "response-body" }, response) : empty("Body not stored."))));
  clear(root, cards);
  document.body.dataset.loaded = "true";
}

api(`/api/calls/${encodeURIComponent(id)}`).then(render).catch((error) => {
  if (error.status === 404) clear(root, el("section", { class: "card" }, empty("No call with this id.")));
  else showError(error);
});
