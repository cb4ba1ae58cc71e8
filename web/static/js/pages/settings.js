// Settings: one form per configuration section, built from a small schema, saved through the config API.
// The server validates; its 400 answer {"error", "field"} is shown next to the input whose path is `field`.
import { $, api, clear, el, showError } from "../common.js";

const num = (help, nullable = true) => ({ t: "num", nullable, help });
const int = (help, nullable = false) => ({ t: "int", nullable, help });
const str = (help, placeholder) => ({ t: "str", help, placeholder });
const bool = (help) => ({ t: "bool", help });
const choice = (options, help) => ({ t: "choice", options, help });
const strlist = (help, placeholder) => ({ t: "strlist", help, placeholder });
const obj = (fields, label) => ({ t: "obj", fields, label });
const list = (fields, label, add) => ({ t: "list", item: obj(fields), label, add });

const SECTIONS = [
  { id: "budgets", title: "Budgets", url: "/api/settings/budget", intro: "Spend caps for all calls. A call that would exceed a cap is blocked before it is sent.",
    schema: obj({ daily_usd: num("USD per day; empty for no cap"), monthly_usd: num("USD per calendar month; empty for no cap"),
      reserve_output_tokens: int("output tokens reserved per call while it runs"), fail_open: bool("let calls through when the budget cannot be checked") }) },
  { id: "quotas", title: "Quotas and kill switches", url: "/api/config/quotas", intro: "Per-source and per-model limits; a kill switch blocks every call of a source.",
    schema: obj({ kill_switches: strlist("sources whose calls are all blocked", "my-agent, other-agent"),
      source_limits: list({ source: str(null, "my-agent"), daily_usd: num(), monthly_usd: num(), daily_calls: int(null, true) }, "Source limits", "Add source limit"),
      model_limits: list({ model: str(null, "claude-opus-4-6"), daily_calls: int(null, true), daily_usd: num() }, "Model limits", "Add model limit"),
      fail_open: bool("let calls through when a quota cannot be checked") }) },
  { id: "routing", title: "Routing", url: "/api/config/routing", intro: "Aliases rewrite the model; fallback chains retry on failure; weights split a source's traffic; latency groups pick the fastest.",
    schema: obj({ aliases: list({ from: str(null, "gpt-4"), to: str(null, "claude-sonnet-4-6") }, "Aliases", "Add alias"),
      fallback_chains: list({ trigger_model: str(null, "claude-opus-4-6"), fallbacks: strlist(null, "claude-sonnet-4-6, claude-haiku-4-5") }, "Fallback chains", "Add fallback chain"),
      weights: list({ source: str(null, "my-agent"), rules: list({ model: str(null, "claude-haiku-4-5"), weight: num(null, false) }, "Rules", "Add rule") }, "Weights", "Add weighted source"),
      latency_groups: list({ name: str(null, "fast"), models: strlist(null, "claude-haiku-4-5, claude-sonnet-4-6") }, "Latency groups", "Add latency group") }) },
  { id: "guardrails", title: "Guardrails", url: "/api/config/guardrails", intro: "Detect personal data and prompt injection; warn, block or redact.",
    schema: obj({ pii_detection: obj({ enabled: bool(), action: choice(["warn", "block", "redact"]) }, "Personal data in requests"),
      injection_detection: obj({ enabled: bool(), action: choice(["warn", "block"]) }, "Prompt injection"),
      response_pii_detection: obj({ enabled: bool(), action: choice(["warn", "block", "redact"]) }, "Personal data in responses"),
      custom_rules: list({ name: str(null, "no-ssn"), pattern: str(null, "\\d{3}-\\d{2}-\\d{4}"), action: choice(["warn", "block", "redact"]) }, "Custom rules", "Add rule"),
      fail_open: bool("let calls through when a check fails") }) },
  { id: "pricing", title: "Custom pricing", url: "/api/settings/pricing", intro: "Overrides in USD per million tokens, for models the price database does not know or prices you negotiated.",
    schema: { t: "map", keyLabel: "model", placeholder: "my-finetune", value: obj({ input: num(), output: num(), cache_read: num(), cache_write: num() }), add: "Add model price" } },
  { id: "alerts", title: "Alerts", url: "/api/settings/alerts", intro: "An alert event when the day's spend passes a threshold.",
    schema: obj({ daily_cost_threshold: num("USD; empty for no alert") }) },
  { id: "webhooks", title: "Webhooks", url: "/api/settings/webhooks", intro: "Events posted as JSON or Slack messages. A stored secret is shown masked and kept unless changed.",
    schema: { t: "list", item: obj({ url: str(null, "https://hooks.example.com/tokenlens"), events: { t: "multi", options: ["alert", "budget", "anomaly", "digest", "block"] }, secret: { t: "str", nullable: true, placeholder: "optional" }, format: choice(["json", "slack"]) }), add: "Add webhook" } },
  { id: "dedup", title: "Dedup", url: "/api/settings/dedup", intro: "Answer an identical request from a short-lived cache instead of paying for it again.",
    schema: obj({ enabled: bool(), ttl_s: num("seconds a cached answer is reused", false), max_entries: int("answers kept at most") }) },
];

const titleOf = (key) => key.replace(/_usd$/, " (USD)").replace(/_s$/, " (seconds)").replaceAll("_", " ").replace(/^./, (c) => c.toUpperCase());

function defaultOf(schema) {
  switch (schema.t) {
    case "obj": return Object.fromEntries(Object.entries(schema.fields).map(([k, f]) => [k, defaultOf(f)]));
    case "list": case "strlist": case "multi": return [];
    case "map": return {};
    case "bool": return false;
    case "choice": return schema.options[0];
    default: return null;
  }
}

function parseNumber(text, nullable) {
  const value = text.trim();
  if (value === "") return nullable ? null : value;
  const n = Number(value);
  return Number.isFinite(n) ? n : value; // not a number: sent as typed, the server names the problem
}

// A widget: {node, get(path)}; get returns the value and tags every input with its path for error display.
function widget(schema, value, label) {
  switch (schema.t) {
    case "num": case "int": {
      const input = el("input", { type: "text", inputmode: schema.t === "int" ? "numeric" : "decimal", value: value ?? "", "aria-label": label, placeholder: schema.nullable ? "none" : "" });
      return { node: input, get: (path) => { input.dataset.path = path; return parseNumber(input.value, schema.nullable); } };
    }
    case "str": {
      const input = el("input", { type: "text", value: value ?? "", placeholder: schema.placeholder || "", "aria-label": label });
      return { node: input, get: (path) => { input.dataset.path = path; return input.value.trim() === "" && schema.nullable ? null : input.value; } };
    }
    case "bool": {
      const input = el("input", { type: "checkbox", "aria-label": label });
      input.checked = Boolean(value);
      return { node: input, get: (path) => { input.dataset.path = path; return input.checked; } };
    }
    case "choice": {
      const select = el("select", { "aria-label": label }, schema.options.map((o) => el("option", { value: o }, o)));
      if (value !== null && value !== undefined) select.value = value;
      return { node: select, get: (path) => { select.dataset.path = path; return select.value; } };
    }
    case "strlist": {
      const input = el("input", { type: "text", value: (value || []).join(", "), placeholder: schema.placeholder || "", "aria-label": label });
      return { node: input, get: (path) => { input.dataset.path = path; return input.value.split(",").map((s) => s.trim()).filter(Boolean); } };
    }
    case "multi": {
      const boxes = schema.options.map((o) => {
        const box = el("input", { type: "checkbox", value: o });
        box.checked = (value || []).includes(o);
        return box;
      });
      const node = el("div", { class: "checks", role: "group", "aria-label": label }, boxes.map((b) => el("label", {}, b, b.value)));
      return { node, get: (path) => { node.dataset.path = path; return boxes.filter((b) => b.checked).map((b) => b.value); } };
    }
    case "obj": return objWidget(schema, value || {}, label);
    case "list": return listWidget(schema, value || [], label);
    case "map": return mapWidget(schema, value || {}, label);
    default: throw new Error(`unknown field type ${schema.t}`);
  }
}

function fieldRow(key, schema, w) {
  const id = `f-${Math.random().toString(36).slice(2)}`;
  if (w.node.tagName === "INPUT" || w.node.tagName === "SELECT") w.node.id = id;
  return el("div", { class: "field" }, el("label", { for: id }, titleOf(key)), w.node, schema.help ? el("span", { class: "help" }, schema.help) : null);
}

function objWidget(schema, value, label, compact = false) {
  const parts = Object.entries(schema.fields).map(([key, f]) => [key, widget(f, value[key], titleOf(key))]);
  const children = parts.map(([key, w]) => {
    const f = schema.fields[key];
    if (compact) return el("label", { class: "cell" }, titleOf(key), w.node);
    if (f.t === "list" || f.t === "obj") return el("fieldset", {}, el("legend", {}, f.label || titleOf(key)), w.node);
    return fieldRow(key, f, w);
  });
  const node = compact ? el("div", { class: "row-item" }, children) : el("div", {}, children);
  return {
    node,
    get: (path) => {
      const out = { ...value };
      for (const [key, w] of parts) out[key] = w.get(path ? `${path}.${key}` : key);
      return out;
    },
  };
}

function listWidget(schema, values, label) {
  const rows = el("div", { class: "rows" });
  const items = [];
  function add(value) {
    const w = objWidget(schema.item, value, label, true);
    const entry = { w };
    const remove = el("button", { type: "button", class: "btn small danger", "aria-label": "Remove", onclick: () => { items.splice(items.indexOf(entry), 1); w.node.remove(); } }, "Remove");
    w.node.append(remove);
    items.push(entry);
    rows.append(w.node);
  }
  values.forEach(add);
  const node = el("div", {}, rows, el("button", { type: "button", class: "btn small", style: { marginTop: "8px" }, onclick: () => add(defaultOf(schema.item)) }, `+ ${schema.add || "Add"}`));
  return { node, get: (path) => { node.dataset.path = path; return items.map((e, i) => e.w.get(`${path}[${i}]`)); } };
}

function mapWidget(schema, values, label) {
  const rows = el("div", { class: "rows" });
  const items = [];
  function add(key, value) {
    const keyInput = el("input", { type: "text", value: key, placeholder: schema.placeholder || "" });
    const w = objWidget(schema.value, value, label, true);
    w.node.prepend(el("label", { class: "cell" }, titleOf(schema.keyLabel), keyInput));
    const entry = { keyInput, w };
    w.node.append(el("button", { type: "button", class: "btn small danger", onclick: () => { items.splice(items.indexOf(entry), 1); w.node.remove(); } }, "Remove"));
    items.push(entry);
    rows.append(w.node);
  }
  Object.entries(values).forEach(([k, v]) => add(k, v));
  const node = el("div", {}, rows, el("button", { type: "button", class: "btn small", style: { marginTop: "8px" }, onclick: () => add("", defaultOf(schema.value)) }, `+ ${schema.add || "Add"}`));
  return {
    node,
    get: (path) => {
      const out = {};
      for (const { keyInput, w } of items) {
        const key = keyInput.value.trim();
        keyInput.dataset.path = `${path}.${key}`;
        out[key] = w.get(`${path}.${key}`);
      }
      return out;
    },
  };
}

function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((n) => n.remove());
  form.querySelectorAll(".invalid").forEach((n) => n.classList.remove("invalid"));
}

function showFieldError(form, field, message) {
  let path = field || "";
  let target = null;
  while (path && !(target = form.querySelector(`[data-path="${CSS.escape(path)}"]`))) {
    path = path.replace(/(\[\d+\]|\.[^.[\]]*)$/, "");
  }
  const text = message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message;
  const note = el("span", { class: "field-error", role: "alert", dataset: { field: field || "" } }, text);
  if (target) {
    target.classList.add("invalid");
    target.insertAdjacentElement("afterend", note);
    target.focus?.();
  } else {
    form.querySelector(".form-actions").before(note);
  }
}

function renderSection(section, value) {
  const w = widget(section.schema, value, section.title);
  const status = el("span", { class: "status", role: "status" });
  const form = el("form", { class: "section card", id: `form-${section.id}`, dataset: { section: section.id }, novalidate: true },
    el("h2", {}, section.title), el("p", { class: "muted" }, section.intro), w.node,
    el("div", { class: "form-actions" }, el("button", { type: "submit", class: "btn primary" }, "Save"), el("button", { type: "reset", class: "btn" }, "Revert"), status));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    status.className = "status";
    status.textContent = "Saving…";
    const body = w.get(section.schema.t === "obj" ? section.id : section.id);
    try {
      const result = await api(section.url, { method: "PUT", json: body });
      const saved = result && result.section !== undefined && Array.isArray(result.section) ? result.section : result;
      const warnings = (result && result.warnings) || [];
      const fresh = renderSection(section, stripWarnings(saved));
      form.replaceWith(fresh);
      const freshStatus = fresh.querySelector(".status");
      freshStatus.className = "status pill ok";
      freshStatus.textContent = warnings.length ? `Saved, with warnings: ${warnings.join("; ")}` : "Saved";
    } catch (error) {
      status.className = "status pill bad";
      status.textContent = "Not saved";
      const field = error.body && error.body.field;
      showFieldError(form, field ? normalise(field, section.id) : null, error.message);
    }
  });
  form.addEventListener("reset", (event) => { event.preventDefault(); load(section); });
  return form;
}

function stripWarnings(value) {
  if (value && !Array.isArray(value) && typeof value === "object" && "warnings" in value) {
    const { warnings, ...rest } = value;
    return rest;
  }
  return value;
}

// The server's paths start with the section name ("budgets.daily_usd"); the form's do too.
function normalise(field, id) { return field.startsWith(id) ? field : `${id}.${field}`; }

async function load(section) {
  const holder = $(`#section-${section.id}`);
  try {
    const value = await api(section.url);
    clear(holder, renderSection(section, value));
  } catch (error) {
    showError(error);
  }
}

function show(id) {
  for (const s of SECTIONS) {
    $(`#section-${s.id}`).hidden = s.id !== id;
    $(`#tab-${s.id}`).classList.toggle("active", s.id === id);
  }
}

clear($("#settings-tabs"), SECTIONS.map((s) => el("a", { href: `#${s.id}`, id: `tab-${s.id}` }, s.title)));
clear($("#settings-forms"), SECTIONS.map((s) => el("div", { id: `section-${s.id}`, hidden: true })));
window.addEventListener("hashchange", () => show(location.hash.slice(1) || "budgets"));
const initial = SECTIONS.some((s) => `#${s.id}` === location.hash) ? location.hash.slice(1) : "budgets";
show(initial);
Promise.all(SECTIONS.map(load)).then(() => { document.body.dataset.loaded = "true"; });
