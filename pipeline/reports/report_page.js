// The report's filters and figures (pipeline/reports/html_report.py writes DATA and this file
// into one page). The statistics are computed in Python; this file only selects and draws.
// The tables work without Plotly; the figures wait for its inlined bundle to be inflated.
"use strict";

const DATA = JSON.parse(document.getElementById("report-data").textContent);
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
const color = (group) => COLORS[DATA.groups.indexOf(group) % COLORS.length];
const state = { filters: {}, groups: new Set(DATA.groups), quantity: DATA.quantities[0].key,
  x: "gain" };

function matches(net) {
  return DATA.keys.every((k) => state.filters[k.key] === undefined
    || String(net.values[k.key]) === state.filters[k.key]);
}

function buildControls() {
  const bar = document.getElementById("filters");
  for (const k of DATA.keys) {
    const label = document.createElement("label");
    label.textContent = k.label + " ";
    const select = document.createElement("select");
    select.id = "filter-" + k.key;
    select.add(new Option("all", ""));
    for (const v of k.values) select.add(new Option(String(v), String(v)));
    select.addEventListener("change", () => {
      if (select.value === "") delete state.filters[k.key];
      else state.filters[k.key] = select.value;
      redraw();
    });
    label.appendChild(select);
    bar.appendChild(label);
  }
  const inits = document.createElement("span");
  inits.className = "inits";
  inits.textContent = "initializer ";
  for (const g of DATA.groups) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.value = g;
    box.id = "init-" + g;
    box.addEventListener("change", () => {
      if (box.checked) state.groups.add(g); else state.groups.delete(g);
      redraw();
    });
    label.appendChild(box);
    label.append(" " + g);
    label.style.borderBottom = "3px solid " + color(g);
    inits.appendChild(label);
  }
  bar.appendChild(inits);
  const quantity = document.getElementById("quantity");
  for (const q of DATA.quantities) quantity.add(new Option(q.label, q.key));
  quantity.addEventListener("change", () => { state.quantity = quantity.value; drawFigures(); });
  const x = document.getElementById("x-axis");
  x.addEventListener("change", () => { state.x = x.value; drawFigures(); });
}

function filterTables() {
  const best = document.querySelectorAll("#best-table tbody tr");
  let shown = 0;
  let matching = 0;
  DATA.best.forEach(([net, group], i) => {
    const ok = matches(DATA.networks[net]) && state.groups.has(group);
    matching += ok;
    const show = ok && shown < DATA.top_k;
    shown += show;
    best[i].hidden = !show;
  });
  document.getElementById("best-count").textContent =
    `${shown} shown of ${matching} matching trials (top ${DATA.top_k}, fastest first)`;
  // The answer: one <tbody> per network (its sentence, its arms, the baseline).
  const recs = document.querySelectorAll("#recommend-table tbody");
  let networks = 0;
  DATA.recommend.forEach((net, i) => {
    const ok = matches(DATA.networks[net]);
    networks += ok;
    recs[i].hidden = !ok;
  });
  const count = document.getElementById("recommend-count");  // none before a trial completes
  if (count) count.textContent = `${networks} of ${DATA.recommend.length} networks shown`;
}

function panels(container, note) {
  const nets = DATA.networks.filter(matches);
  const shown = nets.slice(0, DATA.max_panels);
  container.replaceChildren();
  note.textContent = nets.length > shown.length
    ? `${shown.length} of ${nets.length} matching networks: pick a value above to see the others`
    : `${nets.length} network${nets.length === 1 ? "" : "s"}`;
  return shown.map((net) => {
    const div = document.createElement("div");
    div.className = "panel";
    container.appendChild(div);
    return [net, div];
  });
}

function profileFigure(net, div) {
  const quantity = DATA.quantities.find((q) => q.key === state.quantity);
  const traces = [];
  const zero = [];
  for (const [group, p] of Object.entries(net.profiles[state.quantity] || {})) {
    if (!state.groups.has(group)) continue;
    if (p.zero) { zero.push(`${group} (${p.trials})`); continue; }
    const layers = p.median.map((_, i) => i + 1);
    const c = color(group);
    traces.push({ x: layers, y: p.high, mode: "lines", line: { width: 0 }, hoverinfo: "skip",
      legendgroup: group, showlegend: false });
    traces.push({ x: layers, y: p.low, mode: "lines", line: { width: 0 }, fill: "tonexty",
      fillcolor: c + "33", hoverinfo: "skip", legendgroup: group, showlegend: false });
    traces.push({ x: layers, y: p.median, mode: "lines+markers", name: `${group} (${p.trials})`,
      line: { color: c, width: 2 }, marker: { size: 4 }, legendgroup: group,
      hovertemplate: `${group}: layer %{x}, median %{y:.3g}<extra></extra>` });
  }
  const annotations = [{ text: `<b>${net.label}</b>`, x: 0, xanchor: "left", y: 1.12,
    xref: "paper", yref: "paper", showarrow: false }];
  if (zero.length) {
    // A log axis has no place for zero: say it in words (issue 16).
    annotations.push({ text: "exactly zero at every layer: " + zero.join(", "), x: 0.5, y: 0.5,
      xref: "paper", yref: "paper", showarrow: false, bgcolor: "#fff", bordercolor: "#999" });
  }
  const drawn = traces.length > 0;
  Plotly.react(div, traces, {
    height: 340, margin: { l: 60, r: 10, t: 40, b: 45 }, annotations,
    xaxis: { title: { text: quantity.x_label }, dtick: net.depth > 12 ? 2 : 1 },
    yaxis: { title: { text: quantity.label + (drawn ? " (log)" : "") },
      type: drawn ? "log" : "linear", showticklabels: drawn, exponentformat: "power" },
    legend: { font: { size: 10 } },
  }, { displaylogo: false, responsive: true });
}

function stepsFigure(net, div) {
  const never = net.steps + 1;
  const traces = [];
  const shapes = [];
  let xs = [];
  for (const [group, p] of Object.entries(net.points)) {
    if (!state.groups.has(group)) continue;
    const c = color(group);
    const x = state.x === "gain" ? p.gain : p.lr;
    xs = xs.concat(x);
    traces.push({ x, y: p.median, mode: "markers", name: group, legendgroup: group,
      marker: { color: c, size: 7, opacity: 0.85 },
      error_y: { type: "data", symmetric: false, color: c, thickness: 1, width: 0,
        array: p.high.map((h, i) => h - p.median[i]),
        arrayminus: p.low.map((l, i) => p.median[i] - l) },
      customdata: p.gain.map((g, i) => [g, p.lr[i], p.low[i], p.high[i]]),
      hovertemplate: `${group}: gain %{customdata[0]:.3g}, lr %{customdata[1]:.3g}<br>`
        + "median %{y} steps (seeds %{customdata[2]}-%{customdata[3]})<extra></extra>" });
  }
  // Theory's critical gain, one dashed line per value: initializers of the same variance share
  // it (orthogonal, LeCun and Glorot on square layers), and one line says so in its label.
  const lines = {};
  for (const [group, critical] of Object.entries(net.critical_gain)) {
    if (!state.groups.has(group) || critical === null || !net.points[group]) continue;
    (lines[critical.toPrecision(3)] ||= { value: critical, groups: [] }).groups.push(group);
  }
  const annotations = [];
  for (const [critical, { value, groups }] of state.x === "gain" ? Object.entries(lines) : []) {
    const c = groups.length === 1 ? color(groups[0]) : "#444";
    traces.push({ x: [value, value], y: [0, never], mode: "lines", showlegend: false,
      line: { color: c, dash: "dash", width: 1.5 },
      hovertemplate: `theory's critical gain ${critical} (chi1 = 1): ${groups.join(", ")}`
        + "<extra></extra>" });
    annotations.push({ text: groups.join(", "), x: Math.log10(value), y: 0, yanchor: "bottom",
      xanchor: "right", textangle: -90, showarrow: false, font: { size: 9, color: c } });
    xs.push(value);
  }
  if (traces.length) {
    traces.push({ x: [null], y: [null], mode: "lines", name: "theory: chi1 = 1",
      line: { color: "#444", dash: "dash", width: 1.5 }, visible: state.x === "gain" ? true
        : "legendonly" });
  }
  shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: never, y1: never,
    line: { color: "#999", dash: "dot", width: 1 } });
  annotations.push(
    { text: `<b>${net.label}</b>`, x: 0, xanchor: "left", y: 1.12, xref: "paper",
      yref: "paper", showarrow: false },
    { text: `never reached (${never})`, x: 1, xanchor: "right", y: never, yanchor: "bottom",
      xref: "paper", showarrow: false, font: { size: 10, color: "#777" } },
  );
  const low = Math.min(...xs.filter((v) => v > 0));
  const high = Math.max(...xs.filter((v) => v > 0));
  Plotly.react(div, traces, {
    height: 340, margin: { l: 60, r: 10, t: 40, b: 45 }, shapes, annotations,
    xaxis: { type: "log", title: { text: state.x === "gain" ? "init.gain (log)"
      : "train.learning_rate (log)" },
    range: xs.length ? [Math.log10(low / 1.15), Math.log10(high * 1.15)] : undefined },
    yaxis: { title: { text: "steps to target (median over seeds)" }, range: [0, never * 1.08] },
    legend: { font: { size: 10 } },
  }, { displaylogo: false, responsive: true });
}

function drawFigures() {
  if (!window.Plotly) return;
  for (const [net, div] of panels(document.getElementById("profile-panels"),
    document.getElementById("profile-count"))) profileFigure(net, div);
  for (const [net, div] of panels(document.getElementById("steps-panels"),
    document.getElementById("steps-count"))) stepsFigure(net, div);
  document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
}

function redraw() {
  filterTables();
  drawFigures();
}

// Plotly's bundle is inlined gzip-compressed (4.8 MB -> about 1.4 MB) and inflated by the
// browser's own DecompressionStream: nothing is fetched, and the page stays a few MB.
async function loadPlotly() {
  const packed = document.getElementById("plotly-gz").textContent.trim();
  const bytes = Uint8Array.from(atob(packed), (ch) => ch.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  const script = document.createElement("script");
  script.textContent = await new Response(stream).text();
  document.head.appendChild(script);
}

buildControls();
filterTables();
loadPlotly().then(drawFigures).catch((error) => {
  for (const id of ["profile-count", "steps-count"]) {
    document.getElementById(id).textContent =
      "the interactive figures need a browser with DecompressionStream (2023 or later): "
      + error;
  }
});
