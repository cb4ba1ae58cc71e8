// Shared helpers of the dashboard pages: API calls, formatting, DOM building, tables, charts, theme.

export async function api(path, options = {}) {
  const init = { headers: { Accept: "application/json" }, ...options };
  if (options.json !== undefined) {
    init.method = init.method || "PUT";
    init.body = JSON.stringify(options.json);
    init.headers = { ...init.headers, "Content-Type": "application/json" };
    delete init.json;
  }
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

const LOCALE = "en-US";

// Every amount of money on every page: the one rule of tokenlens/money.py (see money.js).
export { formatUsd as usd } from "./money.js";
export function int(value) {
  if (value === null || value === undefined) return "—";
  return Math.round(Number(value)).toLocaleString(LOCALE);
}
export function compact(value) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString(LOCALE, { notation: "compact", maximumFractionDigits: 1 });
}
export function ms(value) {
  if (value === null || value === undefined) return "—";
  const v = Number(value);
  return v >= 10000 ? `${(v / 1000).toFixed(1)} s` : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`;
}
export function pct(value, digits = 0) {
  if (value === null || value === undefined) return "—";
  return `${(Number(value) * 100).toFixed(digits)}%`;
}
export function time(iso, withDate = true) {
  if (!iso) return "—";
  const d = new Date(iso);
  const opts = withDate
    ? { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }
    : { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  return d.toLocaleString(LOCALE, opts);
}

// el("div", {class: "x", onclick: fn}, "text", child...)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function $(selector) { return document.querySelector(selector); }

export function showError(error) {
  const banner = $("#page-error");
  if (!banner) return;
  banner.hidden = false;
  banner.textContent = `Could not load data: ${error.message || error}`;
}

export function outcomePill(outcome, blockedBy) {
  const text = outcome === "blocked" && blockedBy ? `blocked · ${blockedBy}` : outcome;
  return el("span", { class: `pill ${outcome}` }, text);
}

export function empty(text = "Nothing here yet.") { return el("p", { class: "muted" }, text); }

// A table: columns [{label, value(row) -> node|text, num, cls}], client-side pages of `pageSize` rows.
export function table(columns, rows, { pageSize = 10, id, empty: emptyText } = {}) {
  const wrap = el("div", { class: "table-wrap" });
  if (!rows.length) return clear(wrap, empty(emptyText));
  const tbody = el("tbody");
  const head = el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: [c.num ? "num" : "", c.cls || ""].join(" ").trim() || null }, c.label))));
  const tableNode = el("table", { class: "data", id: id || null }, head, tbody);
  wrap.append(tableNode);
  let page = 0;
  const pages = Math.max(1, Math.ceil(rows.length / pageSize));
  const info = el("span", { class: "muted" });
  const prev = el("button", { type: "button", class: "btn small", onclick: () => { page -= 1; render(); } }, "← Prev");
  const next = el("button", { type: "button", class: "btn small", onclick: () => { page += 1; render(); } }, "Next →");
  function render() {
    clear(tbody, rows.slice(page * pageSize, (page + 1) * pageSize).map((row) =>
      el("tr", {}, columns.map((c) => el("td", { class: [c.num ? "num" : "", c.cls || ""].join(" ").trim() || null, dataset: { label: c.label } }, c.value(row))))));
    info.textContent = `${page * pageSize + 1}–${Math.min(rows.length, (page + 1) * pageSize)} of ${rows.length}`;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  render();
  if (pages > 1) wrap.append(el("div", { class: "pager" }, info, prev, next));
  return wrap;
}

export function shareBar(value, max) {
  const width = max > 0 ? Math.max(2, Math.round((value / max) * 80)) : 0;
  return el("span", { class: "share", style: { width: `${width}px` } });
}

// Secrets never shown: mask anything that looks like an API key or a bearer token.
const SECRET_PATTERNS = [
  /\b(sk|pk|rk)-[A-Za-z0-9_-]{12,}/g,
  /\bsk-ant-[A-Za-z0-9_-]{8,}/g,
  /\bAIza[0-9A-Za-z_-]{20,}/g,
  /\b(AKIA|ASIA)[0-9A-Z]{16}\b/g,
  /\bgh[pousr]_[A-Za-z0-9]{20,}/g,
  /\bxox[abpr]-[A-Za-z0-9-]{10,}/g,
  /(Bearer\s+)[A-Za-z0-9._~+\/-]{12,}=*/gi,
  /("(?:api[_-]?key|x-api-key|x-goog-api-key|authorization|secret|password|token)"\s*:\s*")[^"]+(")/gi,
];
export function maskSecrets(text) {
  if (text === null || text === undefined) return text;
  let out = String(text);
  for (const pattern of SECRET_PATTERNS) {
    out = out.replace(pattern, (match, ...groups) => {
      const prefix = typeof groups[0] === "string" && /^(Bearer|")/i.test(groups[0]) ? groups[0] : "";
      const suffix = typeof groups[1] === "string" && groups[1] === '"' ? '"' : "";
      return `${prefix}••••••••${suffix}`;
    });
  }
  return out;
}

// Theme: prefers-color-scheme by default, the toggle's choice remembered.
export function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
export const palette = () => ["--c1", "--c2", "--c3", "--c4", "--c5", "--c6"].map(cssVar);

const charts = new Set();
export function chart(canvas, config) {
  if (!window.Chart) { canvas.replaceWith(empty("Charts unavailable.")); return null; }
  const existing = window.Chart.getChart(canvas);
  if (existing) { existing.destroy(); charts.delete(existing); }
  const text = cssVar("--muted");
  const grid = cssVar("--border");
  window.Chart.defaults.color = text;
  window.Chart.defaults.borderColor = grid;
  window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  const instance = new window.Chart(canvas, {
    ...config,
    options: { responsive: true, maintainAspectRatio: false, animation: false, ...(config.options || {}) },
  });
  instance.$config = config;
  charts.add(instance);
  return instance;
}

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  try { localStorage.setItem("tokenlens-theme", theme); } catch (e) { /* private mode */ }
  document.dispatchEvent(new CustomEvent("themechange", { detail: theme }));
}
document.addEventListener("DOMContentLoaded", () => {});
const toggle = document.getElementById("theme-toggle");
if (toggle) {
  toggle.addEventListener("click", () => setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"));
}

export function onThemeChange(callback) { document.addEventListener("themechange", callback); }

export function daysSelect(onChange) {
  const select = $("#days");
  if (!select) return () => 30;
  const params = new URLSearchParams(location.search);
  if (params.get("days")) select.value = params.get("days");
  select.addEventListener("change", () => {
    const url = new URL(location.href);
    url.searchParams.set("days", select.value);
    history.replaceState(null, "", url);
    onChange();
  });
  return () => Number(select.value);
}
