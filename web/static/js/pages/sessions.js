// Agent runs: sessions (X-TokenLens-Session) and inferred conversations, newest first, from the session rollups.
import { $, api, clear, daysSelect, el, int, pct, showError, time, usd } from "../common.js";
import { agentPill, duration, shareOf, tokens } from "../runs.js";

const PAGE = 50;
const state = { cursors: [], next: null };
const days = daysSelect(() => { state.cursors = []; load(null); });
const kindSelect = $("#kind");
const HELP = {
  session: "Calls sent with the X-TokenLens-Session header, one row per session id (an agent run).",
  conversation: "Calls without a session header, grouped by continuity: a request that extends an earlier one's messages continues its conversation.",
};

const runLink = (run, text) => el("a", { href: `/sessions/${encodeURIComponent(run.id)}` }, text);

function row(run) {
  const who = [agentPill(run.agent), run.sources.filter((s) => s !== run.agent).join(", ")];
  return el("tr", { dataset: { runId: run.id } },
    el("td", { class: "r-time", dataset: { label: "Started" } }, runLink(run, time(run.started))),
    el("td", { class: "r-id", dataset: { label: "Run" } }, runLink(run, el("code", { title: run.id }, run.id))),
    el("td", { class: "r-who", dataset: { label: "Agent · source" } }, who),
    el("td", { class: "r-models hide-sm", dataset: { label: "Models" } }, run.models.join(", ") || "—"),
    el("td", { class: "num r-turns", dataset: { label: "Turns" } }, int(run.turns || run.calls)),
    el("td", { class: "num hide-sm", dataset: { label: "Tokens in/out" } }, `${tokens(run.input_tokens)} / ${tokens(run.output_tokens)}`),
    el("td", { class: "num r-cost", dataset: { label: "Cost" } }, run.unpriced_calls ? [usd(run.cost_usd), el("span", { class: "muted", title: `${run.unpriced_calls} unpriced calls` }, " +?")] : usd(run.cost_usd)),
    el("td", { class: "num r-duration", dataset: { label: "Duration" } }, duration(run.duration_s)),
    el("td", { class: "num r-cache", dataset: { label: "Cache hit" } }, pct(run.cache_hit_rate, 0)),
    el("td", { class: "hide-sm r-history", dataset: { label: "History" } }, shareOf(run.history_share)));
}

function summary(runs) {
  const sum = (key) => runs.reduce((s, r) => s + (Number(r[key]) || 0), 0);
  const input = sum("input_tokens");
  document.querySelector('[data-testid="runs-count"]').textContent = int(runs.length);
  $("#runs-count-sub").textContent = state.cursors.length ? "this page (older runs)" : "newest in the period";
  document.querySelector('[data-testid="runs-cost"]').textContent = usd(sum("cost_usd"));
  document.querySelector('[data-testid="runs-turns"]').textContent = int(sum("turns"));
  $("#runs-turns-sub").textContent = `${int(sum("calls"))} calls, ${int(sum("tool_calls"))} tool calls`;
  document.querySelector('[data-testid="runs-cache"]').textContent = input ? pct(sum("cache_read_tokens") / input, 0) : "—";
}

async function load(cursor) {
  const kind = kindSelect.value;
  try {
    const params = new URLSearchParams({ days: days(), kind, limit: PAGE });
    if (cursor) params.set("before", cursor);
    const data = await api(`/api/usage/sessions?${params}`);
    const runs = data[`${kind}s`] || [];
    state.next = data.next[kind];
    $("#runs-title").textContent = kind === "session" ? "Sessions" : "Conversations";
    $("#runs-help").textContent = HELP[kind];
    clear($("#runs"), runs.map(row));
    $("#runs-table").hidden = !runs.length;
    const none = $("#runs-empty");
    none.hidden = runs.length > 0;
    none.textContent = kind === "session"
      ? "No session in this period. Send X-TokenLens-Session: <run id> with an agent's calls to group them."
      : "No conversation in this period.";
    $("#runs-info").textContent = runs.length ? `${runs.length} runs${state.cursors.length ? `, page ${state.cursors.length + 1}` : ""}` : "";
    $("#runs-older").disabled = !state.next;
    $("#runs-newest").disabled = !state.cursors.length;
    summary(runs);
    document.body.dataset.loaded = "true";
  } catch (error) { showError(error); }
}

$("#runs-older").addEventListener("click", () => { state.cursors.push(state.next); load(state.next); });
$("#runs-newest").addEventListener("click", () => { state.cursors = []; load(null); });
kindSelect.addEventListener("change", () => {
  const url = new URL(location.href);
  url.searchParams.set("kind", kindSelect.value);
  history.replaceState(null, "", url);
  state.cursors = [];
  load(null);
});
const wanted = new URLSearchParams(location.search).get("kind");
if (wanted === "session" || wanted === "conversation") kindSelect.value = wanted;
load(null);
