// persona-proxy dashboard: draws GET /admin/usage with uPlot (https://github.com/leeoniya/uPlot)
// and refreshes itself. No framework, no build step of our own: uPlot is vendored from npm.
"use strict";

// Every 10 s; ?refresh=SECONDS changes it (the browser test uses 1).
const REFRESH_MS = 1000 * (Number(new URLSearchParams(location.search).get("refresh")) || 10);
const COLORS = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477",
  "#66aa00", "#b82e2e", "#316395"];
const charts = {};

function fmt(v, digits) {
  if (v === null || v === undefined) return "-";
  return typeof v === "number" ? v.toFixed(digits) : String(v);
}

function cost(v, unpriced) {
  if (v === null || v === undefined) return unpriced ? "unknown" : "-";
  return v.toFixed(6);
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function width(id) {
  return Math.max(300, document.getElementById(id).clientWidth);
}

// One uPlot per container, rebuilt when its series change (personas come and go).
function plot(id, opts, data) {
  const box = document.getElementById(id);
  const key = JSON.stringify(opts.series.map((s) => s.label));
  const old = charts[id];
  if (old && old.key === key) {
    old.u.setData(data);
    old.u.setSize({ width: width(id), height: 220 });
    return;
  }
  if (old) old.u.destroy();
  box.textContent = "";
  const u = new uPlot({ width: width(id), height: 220, ...opts }, data, box);
  charts[id] = { u, key };
}

// Small numbers (costs) keep two significant digits on the axis instead of rounding to 0.
const smallAxis = { size: 84, values: (u, ticks) => ticks.map((v) => (v === 0 ? "0" : Math.abs(v) < 1 ? v.toPrecision(2) : String(v))) };

function timeChart(id, timeline, field) {
  const personas = Object.keys(timeline.personas);
  const series = [{}].concat(personas.map((p, i) => ({
    label: p,
    stroke: COLORS[i % COLORS.length],
    width: 2,
    points: { show: timeline.t.length < 3, size: 6 },
  })));
  const data = [timeline.t].concat(personas.map((p) => timeline.personas[p][field]));
  plot(id, { series, axes: [{}, smallAxis], scales: { x: { time: true } } }, data);
}

// Categories (personas, codes, keys) on the x axis as bars. Several groups overlap as a
// bullet chart: the first group widest and behind (p95, budget), the later ones narrower in front.
function barChart(id, labels, groups) {
  const widths = [0.7, 0.45, 0.22];
  const series = [{}].concat(groups.map((g, i) => ({
    label: g.label,
    fill: COLORS[i % COLORS.length] + (i === 0 && groups.length > 1 ? "55" : "cc"),
    stroke: COLORS[i % COLORS.length],
    paths: uPlot.paths.bars({ size: [widths[i] || 0.2, 80], align: 0 }),
    points: { show: false },
  })));
  const xs = labels.map((_, i) => i);
  const data = [xs].concat(groups.map((g) => g.values));
  plot(id, {
    series,
    scales: { x: { time: false, range: [-0.6, Math.max(0, labels.length - 1) + 0.6] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [
      { splits: () => xs, values: (u, ticks) => ticks.map((t) => labels[t] ?? "") },
      smallAxis,
    ],
  }, data);
}

function fill(tbodySel, rows) {
  const body = document.querySelector(tbodySel);
  body.textContent = "";
  for (const cells of rows) {
    const tr = el("tr");
    if (cells.cls) tr.className = cells.cls;
    for (const c of cells.cells) {
      const td = el("td", c.text, c.num ? "num" : "");
      if (c.node) td.appendChild(c.node);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function render(data) {
  const t = data.totals;
  document.getElementById("total-requests").textContent = t ? t.requests : 0;
  document.getElementById("total-errors").textContent = t ? t.errors : 0;
  document.getElementById("total-tokens").textContent =
    t ? `${t.prompt_tokens} / ${t.completion_tokens}` : "0 / 0";
  document.getElementById("total-cost").textContent = t ? cost(t.cost_usd, t.unpriced) : "-";
  document.getElementById("total-latency").textContent =
    t ? `${fmt(t.p50_ms, 1)} / ${fmt(t.p95_ms, 1)}` : "-";

  timeChart("chart-requests", data.timeline, "requests");
  timeChart("chart-tokens", data.timeline, "tokens");
  timeChart("chart-cost", data.timeline, "cost_usd");

  const ps = data.personas;
  barChart("chart-latency", ps.map((p) => p.persona), [
    { label: "p95 ms", values: ps.map((p) => p.p95_ms) },
    { label: "p50 ms", values: ps.map((p) => p.p50_ms) },
    { label: "TTFT p50 ms", values: ps.map((p) => p.ttft_p50_ms) },
  ]);
  barChart("chart-errors", data.errors.map((e) => e.code), [
    { label: "errors", values: data.errors.map((e) => e.count) },
  ]);
  barChart("chart-keys", data.keys.map((k) => k.key), [
    { label: "budget USD", values: data.keys.map((k) => k.budget_usd) },
    { label: "spend USD", values: data.keys.map((k) => k.spend_usd) },
  ]);

  fill("#keys tbody", data.keys.map((k) => {
    const meter = el("meter");
    if (k.budget_usd) { meter.max = k.budget_usd; meter.value = Math.min(k.spend_usd, k.budget_usd); }
    return { cells: [
      { text: k.key }, { text: k.spend_usd.toFixed(6), num: true },
      { text: k.budget_usd === null ? "none" : k.budget_usd.toFixed(2), num: true },
      { text: k.period || "-" }, { node: k.budget_usd ? meter : el("span", "") },
    ] };
  }));
  fill("#personas tbody", ps.map((p) => ({ cells: [
    { text: p.persona }, { text: p.requests, num: true }, { text: p.errors, num: true },
    { text: p.prompt_tokens, num: true }, { text: p.completion_tokens, num: true },
    { text: cost(p.cost_usd, p.unpriced), num: true }, { text: fmt(p.p50_ms, 1), num: true },
    { text: fmt(p.p95_ms, 1), num: true }, { text: fmt(p.ttft_p50_ms, 1), num: true },
    { text: fmt(p.tokens_per_s, 1), num: true },
  ] })));
  fill("#recent tbody", data.recent.map((r) => {
    const link = el("a", r.id);
    link.href = "#" + r.id;
    link.addEventListener("click", (ev) => { ev.preventDefault(); lookup(r.id); });
    return { cls: r.status === "error" ? "error" : "", cells: [
      { text: r.created_at }, { node: link }, { text: r.persona || "-" },
      { text: r.provider || "-" }, { text: r.model || "-" }, { text: r.status },
      { text: r.http_status ?? "-", num: true }, { text: r.error_code || "" },
      { text: fmt(r.latency_ms, 1), num: true }, { text: fmt(r.ttft_ms, 1), num: true },
      { text: r.prompt_tokens === null ? "-" : `${r.prompt_tokens}/${r.completion_tokens}`, num: true },
      { text: cost(r.cost_usd, r.prompt_tokens !== null), num: true }, { text: r.client || "-" },
    ] };
  }));
  document.getElementById("updated").textContent =
    "updated " + new Date().toLocaleTimeString();
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
}

// Named keys (GET /admin/keys, proxy/governance): spend in each budget's own period against
// the budget. Other clients (plain api_keys) keep the window's spend from /admin/usage.
async function keysWithBudgets(data) {
  const resp = await fetch("/admin/keys", { credentials: "same-origin" });
  if (!resp.ok) return data.keys;
  const named = (await resp.json()).data;
  const names = new Set(named.map((k) => k.name));
  return named.map((k) => ({
    key: k.name,
    spend_usd: k.spend_usd,
    budget_usd: k.budget ? k.budget.usd : null,
    period: k.period,
  })).concat(data.keys.filter((k) => !names.has(k.key)));
}

async function refresh() {
  const since = document.getElementById("since").value;
  const resp = await fetch(`/admin/usage?since=${encodeURIComponent(since)}`,
    { credentials: "same-origin" });
  if (resp.status === 401) { window.location.reload(); return; }
  if (!resp.ok) throw new Error(`GET /admin/usage: ${resp.status}`);
  const data = await resp.json();
  data.keys = await keysWithBudgets(data);
  render(data);
}

async function lookup(id) {
  const box = document.getElementById("lookup-result");
  box.textContent = "";
  const resp = await fetch(`/admin/usage/${encodeURIComponent(id.trim())}`,
    { credentials: "same-origin" });
  const body = await resp.json();
  if (!resp.ok) { box.appendChild(el("p", body.error ? body.error.message : resp.status)); return; }
  box.appendChild(el("h2", `Request ${body.id}`));
  const pre = el("pre", JSON.stringify(body, null, 2));
  pre.id = "lookup-json";
  box.appendChild(pre);
}

document.getElementById("lookup").addEventListener("submit", (ev) => {
  ev.preventDefault();
  lookup(document.getElementById("lookup-id").value);
});
document.getElementById("since").addEventListener("change", () => refresh());
window.addEventListener("resize", () => refresh());
refresh().catch((e) => console.error(e));
setInterval(() => refresh().catch((e) => console.error(e)), REFRESH_MS);
