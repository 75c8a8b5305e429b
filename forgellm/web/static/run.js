// A run page: charts fed by the run's metrics as server-sent events (/runs/<id>/events). Points are
// batched and drawn a few times a second; healing (recovery) and errors are marked on the loss chart.
// User data (messages, explanations) goes in with textContent; chart annotations get it without markup.
"use strict";

const FLUSH_MS = 250;
const MIB = 1024 * 1024;
const PLOT_CONFIG = { responsive: true, displaylogo: false };

// chart div -> its series: [trace index, event kind, field, scale]
const CHARTS = {
  "chart-loss": { title: "Loss", series: [["loss", "step", "loss", 1], ["val loss", "eval", "val_loss", 1]] },
  "chart-lr": { title: "Learning rate", series: [["lr", "step", "lr", 1]], yaxis: { exponentformat: "e" } },
  "chart-speed": { title: "Tokens/s", series: [["tokens/s", "step", "tokens_per_s", 1]] },
  "chart-memory": { title: "Peak memory (MiB)", series: [["memory", "step", "memory_bytes", 1 / MIB]] },
};

const state = {
  points: {},      // chartId -> [Map(step -> value) per trace]
  plotted: {},     // chartId -> [last step drawn per trace]
  pending: {},     // chartId -> [[step, value]...] per trace
  dirty: false,
  shapes: [], annotations: [], marksDirty: false,
  lastStep: 0, skipped: 0,
};

function plainText(text, limit) {
  // Plotly reads a few HTML tags in annotation text: none of the user's text may be markup.
  const flat = String(text || "").replace(/[<>&]/g, " ").replace(/\s+/g, " ").trim();
  return flat.length > limit ? flat.slice(0, limit - 1) + "…" : flat;
}

function setupCharts() {
  for (const [id, chart] of Object.entries(CHARTS)) {
    const traces = chart.series.map(([name, kind]) => ({
      x: [], y: [], name: name, mode: kind === "eval" ? "lines+markers" : "lines",
    }));
    state.points[id] = chart.series.map(() => new Map());
    state.plotted[id] = chart.series.map(() => -Infinity);
    state.pending[id] = chart.series.map(() => []);
    Plotly.newPlot(id, traces, {
      title: { text: chart.title }, margin: { t: 40, r: 10, l: 50, b: 40 },
      xaxis: { title: { text: "step" } }, yaxis: chart.yaxis || {}, legend: { orientation: "h" }, showlegend: chart.series.length > 1,
    }, PLOT_CONFIG);
  }
}

function addRecord(record) {
  const step = typeof record.step === "number" ? record.step : state.lastStep;
  if (record.event === "step" && typeof record.step === "number") {
    state.lastStep = Math.max(state.lastStep, record.step);
    document.getElementById("live-step").textContent = String(record.step);
  }
  for (const [id, chart] of Object.entries(CHARTS)) {
    chart.series.forEach(([, kind, field, scale], index) => {
      const value = record[field];
      if (record.event !== kind || typeof value !== "number" || typeof record.step !== "number") return;
      state.points[id][index].set(record.step, value * scale);
      state.pending[id][index].push([record.step, value * scale]);
      state.dirty = true;
    });
  }
  if (["recovery", "error", "warning"].includes(record.event)) addIncident(record, step);
}

function addIncident(record, step) {
  let text = record.message || "";
  if (record.event === "recovery") {
    const changes = Object.entries(record.changes || {}).map(([key, c]) => `${key}: ${c.from} → ${c.to}`).join(", ");
    text = `${record.explanation || ""}${changes ? ` (changed ${changes})` : ""}`;
  }
  const kind = record.event === "recovery" ? `healing: ${record.kind || ""}` : `${record.event}: ${record.kind || ""}`;
  const row = document.createElement("tr");
  row.className = `incident incident-${record.event}`;
  for (const cell of [String(step), kind, text]) {
    const td = document.createElement("td");
    td.textContent = cell;
    row.appendChild(td);
  }
  document.querySelector("#incidents tbody").appendChild(row);
  document.getElementById("no-incidents").hidden = true;
  if (record.event === "warning") return;
  const color = record.event === "recovery" ? "#c2410c" : "#b42318";
  state.shapes.push({ type: "line", xref: "x", yref: "paper", x0: step, x1: step, y0: 0, y1: 1, line: { color: color, dash: "dash", width: 1 } });
  state.annotations.push({
    x: step, xref: "x", y: 1, yref: "paper", yanchor: "top", xanchor: "left", showarrow: false, textangle: -90,
    text: plainText(`${kind} ${text}`, 60), hovertext: plainText(text, 300), font: { size: 10, color: color },
  });
  state.marksDirty = true;
}

function flush() {
  if (state.dirty) {
    state.dirty = false;
    for (const id of Object.keys(CHARTS)) {
      const pending = state.pending[id];
      if (pending.every((points) => points.length === 0)) continue;
      // In order: append. A step seen again (a restart from a checkpoint trains it again): redraw, the
      // later value winning, as the run's summary counts it.
      const inOrder = pending.every((points, i) => points.every(([step], k) => step > (k ? points[k - 1][0] : state.plotted[id][i])));
      if (inOrder) {
        const indices = [], xs = [], ys = [];
        pending.forEach((points, i) => {
          if (!points.length) return;
          indices.push(i); xs.push(points.map((p) => p[0])); ys.push(points.map((p) => p[1]));
          state.plotted[id][i] = points[points.length - 1][0];
        });
        Plotly.extendTraces(id, { x: xs, y: ys }, indices);
      } else {
        const div = document.getElementById(id);
        const data = state.points[id].map((points, i) => {
          const steps = Array.from(points.keys()).sort((a, b) => a - b);
          state.plotted[id][i] = steps.length ? steps[steps.length - 1] : -Infinity;
          return Object.assign({}, div.data[i], { x: steps, y: steps.map((s) => points.get(s)) });
        });
        Plotly.react(div, data, div.layout, PLOT_CONFIG);
      }
      state.pending[id] = pending.map(() => []);
    }
  }
  if (state.marksDirty) {
    state.marksDirty = false;
    Plotly.relayout("chart-loss", { shapes: state.shapes.slice(), annotations: state.annotations.slice() });
  }
}

function connect(runId) {
  const status = document.getElementById("stream-state");
  const source = new EventSource(`/runs/${encodeURIComponent(runId)}/events`);
  source.addEventListener("open", () => { status.textContent = "live"; });
  source.addEventListener("record", (message) => addRecord(JSON.parse(message.data)));
  source.addEventListener("skipped", (message) => {
    const info = JSON.parse(message.data);
    state.skipped += 1;
    document.getElementById("skipped-count").textContent = String(state.skipped);
    document.getElementById("skipped-count").title = `last: line ${info.line} (${info.reason})`;
  });
  source.addEventListener("end", () => {
    source.close();  // else EventSource reconnects to a finished stream forever
    flush();
    status.textContent = "not training (all metrics shown)";
    const stop = document.getElementById("train-stop");
    if (stop) stop.hidden = true;
    // The run's state as status now reads it (completed, interrupted, failed ...).
    fetchJSON(`/api/runs/${encodeURIComponent(runId)}`).then((data) => {
      const badge = document.getElementById("run-state");
      badge.textContent = data.run.state;
      badge.className = `state-${data.run.state}`;
    }).catch((error) => showProblem(error.message));
  });
  source.addEventListener("error", () => {
    if (source.readyState !== EventSource.CLOSED) status.textContent = "reconnecting…";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const run = document.getElementById("run");
  if (!run) return;
  setupCharts();
  setInterval(flush, FLUSH_MS);
  connect(run.dataset.runId);
});
