// Overview: KPI cards, budget gauges, forecast, daily cost by part, top sources and models.
import { $, api, chart, clear, el, empty, int, onThemeChange, palette, showError, shareBar, table, usd, daysSelect } from "../common.js";

const days = daysSelect(load);
let lastDaily = null;

function setKpi(name, text, level) {
  const node = document.querySelector(`[data-testid="kpi-${name}"]`);
  node.textContent = text;
  node.parentElement.classList.toggle("warn", level === "warn");
  node.parentElement.classList.toggle("bad", level === "bad");
}

function gauge(label, spent, limit, resets) {
  const share = limit > 0 ? spent / limit : 0;
  const level = share >= 1 ? "bad" : share >= 0.8 ? "warn" : "";
  return el("div", { class: `gauge ${level}`, dataset: { scope: label } },
    el("div", { class: "row" }, el("strong", {}, label), el("span", {}, `${usd(spent)} of ${usd(limit)} · ${Math.round(share * 100)}%`)),
    el("div", { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": limit, "aria-valuenow": spent, "aria-label": label },
      el("div", { class: "fill", style: { width: `${Math.min(100, share * 100)}%` } })),
    resets ? el("div", { class: "muted", style: { fontSize: "12px", marginTop: "3px" } }, `resets ${new Date(resets).toLocaleString("en-US", { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false })}`) : null);
}

function renderBudgets(status) {
  const caps = status.caps || [];
  const callCaps = status.call_caps || [];
  const nodes = caps.map((cap) => gauge(`${cap.scope === "global" ? "All calls" : cap.scope} · ${cap.period}`, cap.spent_usd + (cap.reserved_usd || 0), cap.limit_usd, cap.resets_at));
  for (const cap of callCaps) {
    const share = cap.limit_calls > 0 ? cap.calls / cap.limit_calls : 0;
    nodes.push(el("div", { class: `gauge ${share >= 1 ? "bad" : share >= 0.8 ? "warn" : ""}` },
      el("div", { class: "row" }, el("strong", {}, `${cap.scope} · ${cap.period}`), el("span", {}, `${int(cap.calls)} of ${int(cap.limit_calls)} calls`)),
      el("div", { class: "bar" }, el("div", { class: "fill", style: { width: `${Math.min(100, share * 100)}%` } }))));
  }
  clear($("#gauges"), nodes.length ? nodes : [empty("No budget set."), el("a", { href: "/settings#budgets" }, "Set a budget →")]);
}

function renderForecast(f) {
  $("#forecast-month").textContent = f.month;
  const max = Math.max(f.high_usd || 0, f.budget_monthly_usd || 0, f.projected_month_usd || 0) * 1.1 || 1;
  const pos = (v) => `${Math.min(100, (v / max) * 100)}%`;
  const range = el("div", { class: "range", title: "projected range" },
    el("span", { class: "span", style: { left: pos(f.low_usd), width: `calc(${pos(f.high_usd)} - ${pos(f.low_usd)})` } }),
    el("span", { class: "mark", style: { left: pos(f.projected_month_usd) } }),
    f.budget_monthly_usd ? el("span", { class: "budget", style: { left: pos(f.budget_monthly_usd) }, title: "monthly budget" }) : null);
  const over = f.projected_over_budget;
  clear($("#forecast"),
    el("div", { class: "big", dataset: { testid: "forecast-projected" } }, usd(f.projected_month_usd)),
    el("div", { class: "muted" }, `projected, range ${usd(f.low_usd)} – ${usd(f.high_usd)}`),
    range,
    el("dl", {},
      el("dt", {}, "Month to date"), el("dd", {}, usd(f.month_to_date_usd)),
      el("dt", {}, "Trend"), el("dd", {}, `${f.trend} (${f.slope_usd_per_day >= 0 ? "+" : ""}${usd(f.slope_usd_per_day)}/day)`),
      el("dt", {}, "Confidence"), el("dd", {}, `${f.confidence}, ${f.days_of_history} days of history`),
      el("dt", {}, "Monthly budget"), el("dd", {}, f.budget_monthly_usd ? [usd(f.budget_monthly_usd), " ", el("span", { class: `pill ${over ? "bad" : "ok"}` }, over ? "projected over" : "on track")] : "none")));
}

function renderDaily(data) {
  lastDaily = data;
  const [c1, c2, c3, c4, c5] = palette();
  const rows = data.days || [];
  const labels = rows.map((d) => d.date.slice(5));
  const set = (label, key, color) => ({ label, data: rows.map((d) => d[key] || 0), backgroundColor: color, stack: "cost", borderRadius: 2 });
  chart($("#daily-chart"), {
    type: "bar",
    data: {
      labels,
      datasets: [set("Input", "input_cost_usd", c1), set("Output", "output_cost_usd", c2), set("Cache read", "cache_read_cost_usd", c3), set("Cache write", "cache_write_cost_usd", c4),
        ...(rows.some((d) => d.unattributed_cost_usd) ? [set("Unattributed", "unattributed_cost_usd", c5)] : [])],
    },
    options: {
      interaction: { mode: "index", intersect: false },
      plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${usd(ctx.parsed.y)}`, footer: (items) => `Total ${usd(items.reduce((s, i) => s + i.parsed.y, 0))}` } }, legend: { position: "bottom" } },
      scales: { x: { stacked: true, grid: { display: false } }, y: { stacked: true, ticks: { callback: (v) => usd(v) } } },
    },
  });
}

function topTable(items, testid) {
  const top = items.slice(0, 6);
  const max = Math.max(...top.map((i) => i.cost_usd || 0), 0);
  return table([
    { label: "Name", value: (i) => i.name },
    { label: "Cost", num: true, value: (i) => [shareBar(i.cost_usd || 0, max), usd(i.cost_usd)] },
    { label: "Calls", num: true, value: (i) => int(i.calls) },
  ], top, { id: testid, pageSize: 6 });
}

// Issue 18: the price data in use, its age, and models it does not know (maybe newer than the data).
function priceData(prices) {
  if (!prices) return;
  const sub = $("#kpi-unpriced-sub");
  const age = prices.age_days === null || prices.age_days === undefined ? "age unknown" : `${prices.age_days} days old`;
  const unknown = prices.unknown_models || [];
  sub.textContent = `prices: ${prices.source}, ${prices.date || "undated"} (${age})`;
  sub.title = "tokenlens prices update fetches newer price data";
  if (unknown.length) {
    sub.textContent += ` · not in the data: ${unknown.slice(0, 3).map((u) => u.model).join(", ")}${unknown.length > 3 ? "…" : ""} (tokenlens prices update)`;
    sub.classList.add("warn");
  }
}

async function load() {
  const d = days();
  const q = `?days=${d}`;
  try {
    const [kpi, status, budget, forecast, daily, sources, models] = await Promise.all([
      api(`/api/usage/kpi${q}`), api("/api/status"), api("/api/usage/budget-status"), api("/api/usage/forecast"),
      api(`/api/usage/daily${q}`), api(`/api/usage/sources${q}`), api(`/api/usage/models${q}`),
    ]);
    setKpi("today", usd(status.today_usd));
    setKpi("month", usd(status.month_usd));
    $("#kpi-today-sub").textContent = "since midnight";
    $("#kpi-month-sub").textContent = forecast.budget_monthly_usd ? `of ${usd(forecast.budget_monthly_usd)} budget` : "no monthly budget";
    setKpi("saved", usd(kpi.total_saved_usd));
    setKpi("calls", int(kpi.calls));
    $("#kpi-calls-sub").textContent = `${usd(kpi.total_cost_usd)} over ${d} days`;
    setKpi("unpriced", int(kpi.unpriced_calls), kpi.unpriced_calls ? "warn" : "");
    priceData(status.prices);
    setKpi("blocked", int(kpi.blocked_calls), kpi.blocked_calls ? "warn" : "");
    $("#kpi-blocked-sub").textContent = `${int(kpi.error_calls)} errors, ${int(kpi.cached_calls)} cached`;
    renderBudgets(budget);
    renderForecast(forecast);
    renderDaily(daily);
    clear($("#top-sources"), topTable(sources.items || [], "top-sources-table"));
    clear($("#top-models"), topTable(models.items || [], "top-models-table"));
    document.body.dataset.loaded = "true";
  } catch (error) {
    showError(error);
  }
}

onThemeChange(() => { if (lastDaily) renderDaily(lastDaily); });
load();
