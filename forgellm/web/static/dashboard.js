// Runs page and run page: start/stop training, and the runs comparison chart. User data goes in with
// textContent only.
"use strict";

function trainMessage(text) {
  const box = document.getElementById("train-message");
  if (box) box.textContent = text || "";
}

async function startTraining() {
  const controls = document.getElementById("train-controls");
  const body = {};
  const resumeRun = controls.dataset.resumeRun;
  if (resumeRun) { body.resume = true; body.run_id = resumeRun; }
  const steps = document.getElementById("train-max-steps").value;
  if (steps) body.max_steps = parseInt(steps, 10);
  showProblem("");
  trainMessage("Starting forge train…");
  const button = document.getElementById("train-start");
  button.disabled = true;
  try {
    const started = await fetchJSON("/api/train", { method: "POST", body: body });
    trainMessage(`forge train started (process ${started.pid}, output in ${started.log}).`);
    if (started.run_id && !resumeRun) window.location.href = `/runs/${encodeURIComponent(started.run_id)}`;
    else setTimeout(() => window.location.reload(), 1500);
  } catch (error) {
    trainMessage("");
    showProblem(error.message);
  } finally {
    button.disabled = false;
  }
}

async function stopTraining() {
  showProblem("");
  try {
    const stopped = await fetchJSON("/api/train/stop", { method: "POST", body: {} });
    trainMessage(`Asked process ${stopped.pid} to save a checkpoint and stop (as Ctrl-C does).`);
  } catch (error) {
    showProblem(error.message);
  }
}

async function compareRuns() {
  const picked = Array.from(document.querySelectorAll(".compare-pick:checked")).map((box) => box.value);
  if (picked.length < 2) { showProblem("Pick two or more runs to compare."); return; }
  showProblem("");
  const query = picked.map((id) => `run=${encodeURIComponent(id)}`).join("&");
  try {
    const data = await fetchJSON(`/api/curves?${query}`);
    const traces = [];
    for (const [runId, curve] of Object.entries(data.runs)) {
      traces.push({ x: curve.step, y: curve.loss, name: `${runId} loss`, mode: "lines" });
      traces.push({ x: curve.val_step, y: curve.val_loss, name: `${runId} val loss`, mode: "lines+markers", line: { dash: "dot" } });
    }
    const chart = document.getElementById("compare-chart");
    chart.hidden = false;
    Plotly.newPlot(chart, traces, {
      title: { text: "Loss and validation loss" }, xaxis: { title: { text: "step" } }, yaxis: { title: { text: "loss" } },
      margin: { t: 40, r: 10 }, legend: { orientation: "h" },
    }, { responsive: true, displaylogo: false });
  } catch (error) {
    showProblem(error.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const start = document.getElementById("train-start");
  if (start) start.addEventListener("click", startTraining);
  const stop = document.getElementById("train-stop");
  if (stop) stop.addEventListener("click", stopTraining);
  const compare = document.getElementById("compare");
  if (compare) compare.addEventListener("click", compareRuns);
});
