// Shared by every page: JSON requests that show a Forge error (message and fix) instead of failing silently.
"use strict";

function showProblem(text) {
  const box = document.getElementById("problem");
  if (!box) return;
  box.textContent = text || "";
  box.hidden = !text;
}

function problemText(body, status) {
  const error = body && (body.error || body.detail);
  if (!error) return `The server answered ${status}.`;
  if (typeof error === "string") return error;
  return error.fix ? `${error.message}\nFix: ${error.fix}` : (error.message || JSON.stringify(error));
}

async function fetchJSON(url, options) {
  const init = Object.assign({ headers: {} }, options || {});
  if (init.body !== undefined && typeof init.body !== "string") {
    init.body = JSON.stringify(init.body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error(problemText(body, response.status));
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}
