// taskq dashboard, one task's page: its record from the app's state store (/api/task/ID),
// read again every second until the task is done. Everything is inserted as text.
"use strict";

const $ = (selector) => document.querySelector(selector);
const taskId = decodeURIComponent(window.location.pathname.replace(/^\/task\//, ""));
const REFRESH_MS = 1000;

function text(selector, value) { $(selector).textContent = value === null || value === undefined || value === "" ? "–" : String(value); }

function when(epoch) { return epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").replace("Z", " UTC") : "–"; }

function problem(message) {
  const banner = $("#task-problem");
  banner.textContent = message || "";
  banner.hidden = !message;
}

function render(task) {
  document.title = `taskq task ${task.id}`;
  text("#task-title", task.id);
  const state = $("#state");
  state.textContent = task.state;
  state.dataset.state = task.state;
  $("#pending-note").hidden = task.state !== "PENDING";
  text("#task-name", task.task);
  text("#queue", task.queue);
  text("#attempts", task.attempts || null);
  text("#worker", task.worker);
  const bar = $("#progress-bar");
  bar.hidden = task.progress === null;
  if (task.progress !== null) bar.value = task.progress;
  const meta = Object.entries(task.meta || {}).map(([key, value]) => `${key}=${value}`).join(" ");
  text("#progress", [task.progress === null ? "" : `${Math.round(task.progress * 100)}%`, meta].join(" ").trim());
  text("#received_at", when(task.received_at));
  text("#started_at", when(task.started_at));
  text("#finished_at", when(task.finished_at));
  text("#reason", task.reason ? `${task.reason}: ${task.detail}` : "");
  $("#arguments").textContent = `args:   ${JSON.stringify(task.args)}\nkwargs: ${JSON.stringify(task.kwargs)}`;
  $("#result-section").hidden = task.state !== "SUCCEEDED";
  $("#result").textContent = task.ignore_result ? "(ignore_result: not kept)" : JSON.stringify(task.result, null, 2);
  $("#error-section").hidden = !task.error;
  if (task.error) {
    $("#error .exc").textContent = `${task.error.type}: ${task.error.message}`;
    $("#error .traceback").textContent = task.error.traceback || "";
  }
  const rows = task.timeline.map((entry) => {
    const row = document.createElement("tr");
    const detail = [entry.detail, entry.redelivered ? "redelivered" : ""].filter(Boolean).join(", ");
    for (const value of [when(entry.at), entry.state, entry.attempt, entry.worker, detail]) {
      const cell = document.createElement("td");
      cell.textContent = value === undefined || value === "" ? "–" : String(value);
      row.append(cell);
    }
    return row;
  });
  $("#timeline tbody").replaceChildren(...rows);
}

async function refresh() {
  let done = false;
  try {
    const response = await fetch(`/api/task/${encodeURIComponent(taskId)}`);
    const answer = await response.json();
    if (!response.ok) {
      problem(answer.error || response.statusText);
      done = response.status === 404; // no state store: asking again won't change that
    } else {
      problem("");
      render(answer);
      done = answer.final;
    }
  } catch (error) {
    problem(`the dashboard did not answer: ${error}`);
  }
  if (!done) setTimeout(refresh, REFRESH_MS);
}

$("#task-search").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("#task-id").value.trim();
  if (id) window.location.href = `/task/${encodeURIComponent(id)}`;
});
$("#task-id").value = taskId;
refresh();
