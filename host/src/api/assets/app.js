// The Weir dashboard: polls the controller's state once a second and
// renders it; buttons post operator actions. Plain DOM, no framework.
"use strict";

const POLL_MS = 1000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(typeof c === "string" ? c : c);
  }
  return node;
}

function phase(text) {
  return el("span", { class: "phase-" + (text || "none") }, text || "—");
}

async function act(rollout, action) {
  const out = document.getElementById("action-result");
  const url = `/api/v1/dashboard/action?namespace=${encodeURIComponent(rollout.namespace)}&name=${encodeURIComponent(rollout.name)}&action=${action}`;
  try {
    const response = await fetch(url, { method: "POST", headers: { "X-Weir-Action": "1" } });
    const body = await response.json();
    out.textContent = response.ok ? `${rollout.name}: ${body}` : `${rollout.name}: ${action} failed: ${JSON.stringify(body)}`;
  } catch (e) {
    out.textContent = `${rollout.name}: ${action} failed: ${e}`;
  }
  refresh();
}

function renderRollouts(rollouts) {
  const body = document.querySelector("#rollouts tbody");
  body.replaceChildren(...rollouts.map((r) => {
    const weight = r.weights
      ? `${r.weights.canary} / ${r.weights.verified === null || r.weights.verified === undefined ? "—" : (r.weights.verified ? "verified" : "not verified")}`
      : "—";
    const problems = r.problems.map((p) => el("div", { class: "problem" },
      `${p.type} (${p.reason}): ${p.message}`,
      p.recording ? el("div", {}, "recording: ", el("code", {}, `weir plugin replay ${p.recording}`)) : null));
    const buttons = ["promote", "abort", "retry"].map((a) =>
      el("button", { type: "button", "data-action": a, "aria-label": `${a} ${r.namespace}/${r.name}`, onclick: () => act(r, a) }, a));
    return el("tr", { "data-rollout": `${r.namespace}/${r.name}` },
      el("th", { scope: "row" }, `${r.namespace}/${r.name}`),
      el("td", { class: "phase" }, phase(r.phase), r.message ? el("div", {}, r.message) : null),
      el("td", { class: "step" }, r.steps ? `${r.step} / ${r.steps}` : "—"),
      el("td", { class: "weight" }, weight),
      el("td", {}, problems),
      el("td", {}, buttons));
  }));
}

// A measurement series as an SVG line, with the condition's threshold
// (for `result OP number`) as a dashed line.
function chart(metric) {
  const values = metric.measurements.map((m) => Number(m.value)).filter((v) => Number.isFinite(v));
  const w = 240, h = 60, pad = 6;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${metric.name}: ${values.length} measurements, last ${values.length ? values[values.length - 1] : "none"}`);
  const thresholds = [metric.successCondition, metric.failureCondition]
    .map((c) => /result\s*(>=|<=|>|<|==)\s*(-?[0-9.]+)/.exec(c || ""))
    .filter(Boolean).map((m) => Number(m[2]));
  const all = values.concat(thresholds);
  if (all.length === 0) return svg;
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (i) => pad + (values.length <= 1 ? 0 : i * (w - 2 * pad) / (values.length - 1));
  const y = (v) => h - pad - (v - lo) * (h - 2 * pad) / (hi - lo);
  for (const t of thresholds) {
    const line = document.createElementNS(svg.namespaceURI, "line");
    line.setAttribute("x1", pad); line.setAttribute("x2", w - pad);
    line.setAttribute("y1", y(t)); line.setAttribute("y2", y(t));
    line.setAttribute("stroke", "#7a4a00"); line.setAttribute("stroke-dasharray", "4 3");
    svg.append(line);
  }
  const points = values.map((v, i) => `${x(i)},${y(v)}`).join(" ");
  const poly = document.createElementNS(svg.namespaceURI, "polyline");
  poly.setAttribute("points", points); poly.setAttribute("fill", "none");
  poly.setAttribute("stroke", "#0047b3"); poly.setAttribute("stroke-width", "2");
  svg.append(poly);
  for (const [i, v] of values.entries()) {
    const dot = document.createElementNS(svg.namespaceURI, "circle");
    dot.setAttribute("cx", x(i)); dot.setAttribute("cy", y(v)); dot.setAttribute("r", "2.5");
    dot.setAttribute("fill", "#0047b3");
    svg.append(dot);
  }
  return svg;
}

function renderRuns(runs) {
  const box = document.getElementById("runs");
  box.replaceChildren(...(runs.length ? runs.map((run) => el("div", { class: "run", "data-run": `${run.namespace}/${run.name}` },
    el("h3", {}, `${run.namespace}/${run.name} `, phase(run.phase)),
    run.message ? el("p", {}, run.message) : null,
    run.metrics.map((m) => el("div", { class: "metric" },
      el("strong", {}, m.name), phase(m.phase), chart(m),
      el("span", { class: "condition" },
        m.successCondition ? `success: ${m.successCondition}` : "",
        m.failureCondition ? ` failure: ${m.failureCondition}` : ""),
      el("span", {}, `${m.measurements.length} measurement(s)` +
        (m.measurements.length ? `, last ${m.measurements[m.measurements.length - 1].value ?? "—"}` : "")))))) : [el("p", {}, "none")]));
}

function renderExperiments(experiments) {
  document.querySelector("#experiments tbody").replaceChildren(...experiments.map((e) =>
    el("tr", {}, el("th", { scope: "row" }, `${e.namespace}/${e.name}`), el("td", {}, phase(e.phase)), el("td", {}, e.message || ""))));
}

function renderPlugins(plugins) {
  document.querySelector("#plugins tbody").replaceChildren(...plugins.map((p) => {
    const faults = Object.entries(p.faults).map(([k, n]) => `${k}: ${n}`).join(", ") || "none";
    const shadow = p.shadow
      ? `${p.shadow.agreed} agreed, ${p.shadow.disagreed} disagreed, ${p.shadow.dropped} dropped`
      : "—";
    return el("tr", { "data-plugin": p.name },
      el("th", { scope: "row" }, p.name), el("td", {}, p.kind), el("td", {}, String(p.calls)),
      el("td", {}, faults), el("td", {}, p.quarantined || "no"), el("td", {}, shadow));
  }));
}

async function refresh() {
  const updated = document.getElementById("updated");
  try {
    const response = await fetch("/api/v1/dashboard/state", { headers: { Accept: "application/json" } });
    if (!response.ok) {
      updated.textContent = `the controller answered ${response.status}: sign in again with the address weir run printed`;
      return;
    }
    const state = await response.json();
    renderRollouts(state.rollouts);
    renderRuns(state.analysisRuns);
    renderExperiments(state.experiments);
    renderPlugins(state.plugins);
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    updated.textContent = `cannot reach the controller: ${e}`;
  }
}

refresh();
setInterval(refresh, POLL_MS);
