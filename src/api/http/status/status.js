// ferroserve status page: polls /status/data, keeps a short history per version and draws it.
// Builds the DOM with textContent only (model names are never parsed as HTML).
"use strict";

const POLL_MS = Number(new URLSearchParams(location.search).get("interval_ms")) || 1000;
const HISTORY = 60;
const COLORS = ["#2e6fdb", "#12805c", "#b54708", "#7a5af8", "#c01048", "#0e9384"];
// "model/version" -> {last: {t, count, ns}, rate: [], latency: []}
const history = new Map();

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function chart(points, kind) {
  const svg = svgEl("svg", { class: `chart ${kind}`, viewBox: "0 0 160 36", "data-points": points.length });
  if (points.length > 1) {
    const max = Math.max(...points, 1e-9);
    const step = 160 / (HISTORY - 1);
    const offset = 160 - step * (points.length - 1);
    const coords = points.map((p, i) => `${(offset + i * step).toFixed(1)},${(34 - (p / max) * 32).toFixed(1)}`);
    svg.append(svgEl("polyline", { points: coords.join(" ") }));
  }
  const title = svgEl("title", {});
  title.textContent = points.length ? `${kind}: last ${points[points.length - 1].toFixed(3)}` : kind;
  svg.append(title);
  return svg;
}

function record(model, v, timeMs) {
  const key = `${model}/${v.version}`;
  const h = history.get(key) || { last: null, rate: [], latency: [] };
  if (v.success) {
    const now = { t: timeMs, count: v.success.count, ns: v.success.ns };
    if (h.last && now.t > h.last.t && now.count >= h.last.count) {
      const dn = now.count - h.last.count;
      h.rate.push((dn * 1000) / (now.t - h.last.t));
      h.latency.push(dn > 0 ? (now.ns - h.last.ns) / dn / 1e6 : 0);
      if (h.rate.length > HISTORY) h.rate.shift();
      if (h.latency.length > HISTORY) h.latency.shift();
    }
    h.last = now;
  }
  history.set(key, h);
  return h;
}

function batching(v) {
  if (!v.max_batch_size) return "no batching";
  let s = `max ${v.max_batch_size} rows`;
  if (v.dynamic_batching) {
    const d = v.dynamic_batching;
    s += `, wait ≤ ${d.max_queue_delay_us} µs`;
    if (d.preferred_batch_sizes.length) s += `, preferred ${d.preferred_batch_sizes.join("/")}`;
  }
  return s;
}

function split(weights) {
  const entries = Object.entries(weights || {});
  const total = entries.reduce((a, [, w]) => a + w, 0);
  const bar = el("div", { class: "split" });
  entries.forEach(([v, w], i) => {
    if (!total || !w) return;
    const pct = (100 * w) / total;
    const span = el("span", { "data-version": v, title: `v${v}: ${pct.toFixed(1)}%` }, `v${v} ${pct.toFixed(0)}%`);
    span.style.width = `${pct}%`;
    span.style.background = COLORS[i % COLORS.length];
    bar.append(span);
  });
  return bar;
}

function windowText(w) {
  if (!w) return "no window yet";
  const p99 = w.p99_ms === null || w.p99_ms === undefined ? "–" : `${w.p99_ms.toFixed(2)} ms`;
  return `${w.requests} requests, ${w.errors} errors, p99 ${p99}`;
}

function rolloutBox(r) {
  const steps = el("span", { class: "steps" });
  r.steps.forEach((p, i) => {
    const n = i + 1;
    const cls = n < r.step || (n === r.step && r.state === "promoted") ? "done" : n === r.step ? "current" : "";
    steps.append(el("span", { class: cls }, `${p}%`));
  });
  const verdict = r.state === "running" ? (r.reason || "judging the current step") : (r.reason || r.state);
  return el(
    "div",
    { class: `rollout state-${r.state}`, "data-rollout-state": r.state, "data-rollout-step": r.step },
    el("strong", {}, `Rollout v${r.stable} → v${r.candidate}: `),
    el("span", { class: "rollout-state" }, r.state),
    ` — step ${r.step} of ${r.steps.length} (${r.percent}% to the candidate)`,
    steps,
    el("div", {}, `candidate window: ${windowText(r.window.candidate)}`),
    el("div", {}, `stable window: ${windowText(r.window.stable)}`),
    el("div", { class: "verdict" }, `verdict: ${verdict}`)
  );
}

function modelCard(m, timeMs) {
  const card = el("section", { class: "model", "data-model": m.name }, el("h2", {}, m.name));
  if (m.error) card.append(el("p", { class: "error-line" }, m.error));
  const t = m.traffic;
  if (t) {
    const traffic = el("div", { class: "traffic" });
    if (Object.keys(t.weights).length) traffic.append(el("div", {}, "traffic split"), split(t.weights));
    else traffic.append(el("div", {}, "traffic: the highest ready version serves"));
    if (t.shadow) traffic.append(el("div", {}, `shadow: ${t.shadow.percent}% mirrored to v${t.shadow.version}`));
    card.append(traffic);
    if (t.rollout) card.append(rolloutBox(t.rollout));
  }
  const head = el("tr", {}, ...["version", "state", "engine", "load", "batching", "instances", "queued", "req/s", "mean latency", "rate", "latency"].map((h) => el("th", {}, h)));
  const table = el("table", {}, el("thead", {}, head));
  const body = el("tbody");
  for (const v of m.versions) {
    const h = record(m.name, v, timeMs);
    const rate = h.rate.length ? h.rate[h.rate.length - 1].toFixed(1) : "–";
    const lat = h.latency.length ? `${h.latency[h.latency.length - 1].toFixed(3)} ms` : "–";
    body.append(
      el(
        "tr",
        { "data-version": v.version },
        el("td", {}, `v${v.version}`),
        el("td", { class: `state-${v.state}`, title: v.reason || "" }, v.state),
        el("td", {}, v.engine || "–"),
        el("td", { class: "num" }, v.load_ms === undefined ? "–" : `${v.load_ms.toFixed(0)} ms`),
        el("td", {}, v.state === "READY" ? batching(v) : v.reason || ""),
        el("td", { class: "num" }, v.instances ?? "–"),
        el("td", { class: "num" }, v.queued ?? "–"),
        el("td", { class: "num rate" }, rate),
        el("td", { class: "num latency" }, lat),
        el("td", {}, chart(h.rate, "rate")),
        el("td", {}, chart(h.latency, "latency"))
      )
    );
  }
  table.append(body);
  card.append(table);
  return card;
}

let polls = 0;

async function poll() {
  try {
    const r = await fetch("/status/data", { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const d = await r.json();
    document.getElementById("server-name").textContent = d.server.name;
    document.getElementById("server-version").textContent = `v${d.server.version}`;
    if (d.server.metrics_port) {
      document.getElementById("link-metrics").href = `${location.protocol}//${location.hostname}:${d.server.metrics_port}/metrics`;
    }
    const models = document.getElementById("models");
    models.replaceChildren(...d.models.map((m) => modelCard(m, d.time_ms)));
    polls += 1;
    document.body.dataset.polls = String(polls);
    document.getElementById("updated").textContent = new Date(d.time_ms).toLocaleTimeString();
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = `(the server did not answer: ${e.message})`;
  }
  setTimeout(poll, POLL_MS);
}

async function showIndex(ev) {
  ev.preventDefault();
  const section = document.getElementById("index");
  section.hidden = false;
  try {
    const r = await fetch("/v2/repository/index", { method: "POST", body: "{}" });
    document.getElementById("index-body").textContent = JSON.stringify(await r.json(), null, 2);
  } catch (e) {
    document.getElementById("index-body").textContent = `failed: ${e.message}`;
  }
}

document.getElementById("link-index").addEventListener("click", showIndex);
poll();
