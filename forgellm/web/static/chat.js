// The chat page: one model, or two side by side, answering through the server's OpenAI-compatible API.
// A chat model gets the conversation (/v1/chat/completions, rendered in its chat template by the server);
// a completion model gets the message as a plain-text prompt (/v1/completions). Answers stream as
// server-sent events read from fetch's body. Model and user text only ever go in through textContent.
"use strict";

const lanes = { a: lane("a"), b: lane("b") };
let models = [];
let controller = null;

function lane(key) {
  const section = document.getElementById(`lane-${key}`);
  return {
    key, section, history: [],
    select: document.getElementById(`model-${key}`),
    transcript: section.querySelector(".transcript"),
  };
}

function modelOf(someLane) {
  return models.find((model) => model.id === someLane.select.value);
}

function activeLanes() {
  return document.getElementById("compare").checked ? [lanes.a, lanes.b] : [lanes.a];
}

function showModel(someLane) {
  const model = modelOf(someLane);
  someLane.section.querySelector(".lane-name").textContent = model ? model.name : "";
  const badge = someLane.section.querySelector(".mode");
  badge.textContent = model ? (model.mode === "completion" ? "plain-text completion" : "chat template") : "";
  badge.className = `mode ${model ? model.mode : ""}`;
  someLane.section.querySelector(".mode-reason").textContent = model ? model.mode_reason : "";
}

function fillPicker(select, chosen) {
  select.replaceChildren(...models.map((model) => {
    const option = document.createElement("option");
    option.value = model.id;
    option.textContent = `${model.name} · ${model.mode}`;
    return option;
  }));
  select.value = chosen;
}

function newest(kind) {
  const found = models.filter((model) => model.kind === kind);
  return found.sort((x, y) => y.created - x.created)[0];
}

async function loadModels() {
  try {
    models = (await fetchJSON("/v1/models")).data;
  } catch (error) {
    showProblem(error.message);
    return;
  }
  if (!models.length) {
    showProblem("This server offers no model.");
    return;
  }
  const tuned = newest("export") || newest("run") || models[0];
  fillPicker(lanes.a.select, tuned.id);
  fillPicker(lanes.b.select, (newest("base") || models[0]).id);
  showModel(lanes.a);
  showModel(lanes.b);
}

function addTurn(someLane, role, text) {
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  turn.append(body);
  someLane.transcript.append(turn);
  turn.scrollIntoView({ block: "nearest" });
  return turn;
}

function addMeta(turn, text) {
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = text;
  turn.append(meta);
}

function number(id, fallback) {
  const value = Number(document.getElementById(id).value);
  return Number.isFinite(value) && document.getElementById(id).value !== "" ? value : fallback;
}

function requestFor(someLane, model, text) {
  const options = {
    model: model.id, stream: true, stream_options: { include_usage: true },
    temperature: number("temperature", 0), max_tokens: Math.max(1, Math.round(number("max-tokens", 256))),
  };
  // A completion prompt goes as typed: its last space or newline decides what comes next.
  if (model.mode === "completion") return ["/v1/completions", { ...options, prompt: text }];
  const system = document.getElementById("system").value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...someLane.history,
    { role: "user", content: text.trim() }];
  return ["/v1/chat/completions", { ...options, messages }];
}

// Server-sent events from a fetch body: each `data:` block parsed as JSON, until `data: [DONE]`.
async function* events(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function ending(finish, usage, seconds) {
  const how = finish === "length" ? "cut at max tokens" : "ended its turn";
  if (!usage) return `${how} · ${seconds.toFixed(1)} s`;
  const speed = seconds > 0 ? ` · ${(usage.completion_tokens / seconds).toFixed(1)} tokens/s` : "";
  return `${how} · ${usage.completion_tokens} tokens in ${seconds.toFixed(1)} s${speed}`;
}

async function answer(someLane, text, signal) {
  const model = modelOf(someLane);
  addTurn(someLane, "user", text);
  const turn = addTurn(someLane, "assistant", "");
  const shown = turn.querySelector(".text");
  turn.classList.add("streaming");
  const [url, payload] = requestFor(someLane, model, text);
  const started = performance.now();
  let reply = "", finish = null, usage = null;
  try {
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload), signal,
    });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      throw new Error(problemText(body, response.status));
    }
    for await (const event of events(response.body)) {
      if (event.error) throw new Error(problemText(event, response.status));
      for (const choice of event.choices || []) {
        reply += choice.delta ? (choice.delta.content || "") : (choice.text || "");
        shown.textContent = reply;
        finish = choice.finish_reason || finish;
      }
      usage = event.usage || usage;
    }
    if (model.mode === "chat") {
      someLane.history.push({ role: "user", content: text.trim() }, { role: "assistant", content: reply });
    }
    addMeta(turn, ending(finish, usage, (performance.now() - started) / 1000));
  } catch (error) {
    if (error.name === "AbortError") {
      addMeta(turn, "stopped");
    } else {
      if (!reply) turn.remove();
      addTurn(someLane, "error", error.message);
    }
  } finally {
    turn.classList.remove("streaming");
  }
}

function setBusy(busy) {
  document.getElementById("send").disabled = busy;
  document.getElementById("stop").disabled = !busy;
}

async function send(event) {
  event.preventDefault();
  const box = document.getElementById("message");
  const text = box.value;
  if (!text.trim() || controller || !models.length) return;
  box.value = "";
  showProblem("");
  controller = new AbortController();
  setBusy(true);
  try {
    // Both lanes ask at once; the server answers one request after the other.
    await Promise.all(activeLanes().map((someLane) => answer(someLane, text, controller.signal)));
  } finally {
    controller = null;
    setBusy(false);
    box.focus();
  }
}

function clearLane(someLane) {
  someLane.history = [];
  someLane.transcript.replaceChildren();
}

function toggleCompare() {
  const on = document.getElementById("compare").checked;
  lanes.b.section.hidden = !on;
  lanes.b.select.hidden = !on;
  document.getElementById("lanes").classList.toggle("compare", on);
}

document.getElementById("composer").addEventListener("submit", send);
document.getElementById("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    document.getElementById("composer").requestSubmit();
  }
});
document.getElementById("stop").addEventListener("click", () => controller && controller.abort());
document.getElementById("clear").addEventListener("click", () => Object.values(lanes).forEach(clearLane));
document.getElementById("compare").addEventListener("change", toggleCompare);
for (const someLane of Object.values(lanes)) {
  // Another model: the conversation so far was with the previous one.
  someLane.select.addEventListener("change", () => { clearLane(someLane); showModel(someLane); });
}
toggleCompare();
loadModels();
