// Helpers shared by the agent-run pages (sessions list and one run).
import { el, pct } from "./common.js";

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Number(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  const h = Math.floor(s / 3600);
  return h >= 48 ? `${Math.floor(h / 24)} d ${h % 24} h` : `${h} h ${Math.round((s % 3600) / 60)} min`;
}

// A small bar and its percentage (a share between 0 and 1).
export function shareOf(value) {
  const width = Math.max(2, Math.round(Math.min(1, value || 0) * 40));
  return el("span", { class: "history" }, el("span", { class: "share", style: { width: `${width}px` } }), pct(value, 0));
}

export const agentPill = (name) => (name ? el("span", { class: "pill agent" }, name) : null);

// Compact token counts (12.3K) with one formatter: toLocaleString with options builds a new one per call.
const COMPACT = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
export const tokens = (value) => (value === null || value === undefined ? "—" : COMPACT.format(Number(value)));
