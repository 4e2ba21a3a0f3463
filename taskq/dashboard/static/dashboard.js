// taskq dashboard: renders the server's state (server-sent events) and sends the two actions.
// Everything from the broker is inserted as text, never as HTML: log lines are user data.
"use strict";

const $ = (selector) => document.querySelector(selector);
let clockOffset = 0; // server_time - our time, in seconds
let lastFailures = "";
let lastState = null;
const confirming = new Set(); // queues whose purge awaits its confirmation

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

// A task id as a link to its page (the state store's record: /task/ID).
function taskLink(id) { return el("a", { href: `/task/${encodeURIComponent(id)}`, class: "task-link" }, id); }

function show(value) { return value === null || value === undefined ? "–" : String(value); }

function setBadge(node, state, text) { node.dataset.state = state; node.textContent = text; }

function say(text, ok) {
  const banner = $("#action-message");
  banner.textContent = text;
  banner.classList.toggle("ok", !!ok);
  banner.hidden = false;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { banner.hidden = true; }, 8000);
}

async function act(path, body) {
  try {
    const response = await fetch(path, { method: "POST", // the marker: a cross-site page can't send it (guard.py)
      headers: { "Content-Type": "application/json", "X-Taskq-Dashboard": "1" }, body: JSON.stringify(body) });
    const answer = await response.json();
    if (!response.ok) { say(answer.error || response.statusText, false); return; }
    if ("replayed" in answer) say(`replayed ${answer.replayed} dead letter(s) to ${body.queue}`, true);
    if ("purged" in answer) say(`purged ${answer.purged} message(s) from ${body.queue}`, true);
  } catch (error) {
    say(`the dashboard did not answer: ${error}`, false);
  }
}

// -- queues -----------------------------------------------------------------------------

function queueRow(name) {
  let row = document.querySelector(`#queues tr[data-queue="${CSS.escape(name)}"]`);
  if (row) return row;
  const purge = el("button", { class: "purge danger", onclick: () => { confirming.add(name); renderQueues(); } }, "Purge…");
  const confirm = el("span", { class: "confirm", hidden: "" },
    el("span", { class: "question" }),
    el("button", { class: "confirm-purge danger", onclick: () => { confirming.delete(name); renderQueues(); act("/api/purge", { queue: name, confirm: name }); } }, "Yes, purge"),
    el("button", { class: "cancel", onclick: () => { confirming.delete(name); renderQueues(); } }, "Cancel"));
  const replay = el("button", { class: "replay-all", onclick: () => act("/api/replay", { queue: name }) }, "Replay dead letters");
  row = el("tr", { "data-queue": name },
    el("td", { class: "name" }, name), el("td", { class: "ready num" }), el("td", { class: "unacked num" }),
    el("td", { class: "consumers num" }), el("td", { class: "dead num" }), el("td", { class: "actions" }, replay, " ", purge, confirm));
  $("#queues tbody").append(row);
  return row;
}

function renderQueues() {
  if (!lastState) return;
  for (const q of lastState.queues) {
    const row = queueRow(q.name);
    row.querySelector(".ready").textContent = q.exists ? show(q.ready) : lastState.broker.up ? "(not declared)" : "–";
    row.querySelector(".unacked").textContent = q.exists ? show(q.unacked) : "";
    row.querySelector(".consumers").textContent = q.exists ? show(q.consumers) : "";
    row.querySelector(".dead").textContent = show(q.dead);
    row.querySelector(".replay-all").disabled = !q.dead;
    const asking = confirming.has(q.name);
    row.querySelector(".purge").hidden = asking;
    row.querySelector(".purge").disabled = !q.exists;
    row.querySelector(".confirm").hidden = !asking;
    row.querySelector(".question").textContent = `Delete the ${show(q.ready)} ready messages in ${q.name}?`;
  }
}

// -- workers ----------------------------------------------------------------------------

function renderWorkers(workers, now) {
  const rows = workers.map((w) => el("tr", { "data-pid": w.pid },
    el("td", {}, w.host), el("td", {}, w.pid), el("td", {}, w.ppid), el("td", {}, w.queues.join(", ")),
    el("td", { class: "current" }, w.current ? el("span", {}, `${w.current.task} [`, taskLink(w.current.task_id), "]") : "idle"),
    el("td", { class: "done" }, w.done), el("td", { class: "failed" }, w.failed),
    el("td", {}, `${Math.max(0, now - w.last_seen).toFixed(1)} s ago`)));
  $("#workers tbody").replaceChildren(...rows);
  $("#no-workers").hidden = workers.length > 0;
}

// -- throughput: one stacked bar per bucket, succeeded under failed ---------------------------

function renderThroughput(t) {
  const n = t.succeeded.length, width = 720, height = 120, top = 14, bottom = 14;
  const totals = t.succeeded.map((ok, i) => ok + t.failed[i]);
  const max = Math.max(1, ...totals);
  const scale = (height - top - bottom) / max, barWidth = width / n;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  t.succeeded.forEach((ok, i) => {
    const x = i * barWidth + 1, base = height - bottom;
    if (ok) add("rect", { class: "ok", x, width: barWidth - 2, y: base - ok * scale, height: ok * scale });
    const bad = t.failed[i];
    if (bad) add("rect", { class: "bad", x, width: barWidth - 2, y: base - (ok + bad) * scale, height: bad * scale });
  });
  add("line", { x1: 0, x2: width, y1: height - bottom, y2: height - bottom, stroke: "#bbb" });
  add("text", { x: 2, y: 10 }, `${max} per ${t.bucket_seconds} s`);
  add("text", { x: 2, y: height - 2 }, `${Math.round((n * t.bucket_seconds) / 60)} min ago`);
  add("text", { x: width - 2, y: height - 2, "text-anchor": "end" }, "now");
  const chart = $("#throughput");
  chart.replaceChildren(svg);
  const perMinute = Math.round(60 / t.bucket_seconds);
  const sum = (list) => list.slice(-perMinute).reduce((a, b) => a + b, 0);
  chart.dataset.total = totals.reduce((a, b) => a + b, 0);
  $("#throughput-summary").textContent = `last minute: ${sum(t.succeeded)} succeeded, ${sum(t.failed)} failed`;
}

// -- failures -----------------------------------------------------------------------------

function renderFailures(failures) {
  const key = JSON.stringify(failures);
  if (key === lastFailures) return; // leave the buttons alone unless something changed
  lastFailures = key;
  const items = failures.map((f) => el("div", { class: "failure", "data-task-id": f.task_id, "data-queue": f.queue },
    el("div", {}, el("strong", {}, f.task), el("span", { class: "args" }, `(${f.args})`), " ", el("span", { class: "muted" }, "[", taskLink(f.task_id), `] in ${f.queue}, ${f.reason}`
      + (f.attempts !== null ? `, ${f.attempts} attempt(s)` : "")), " ",
      el("button", { class: "replay-one", onclick: () => act("/api/replay", { queue: f.queue, task_id: f.task_id }) }, "Replay")),
    el("div", { class: "exc" }, f.exc_type ? `${f.exc_type}: ${f.exc_message}` : f.detail),
    f.traceback ? el("pre", { class: "traceback" }, f.traceback) : ""));
  $("#failures").replaceChildren(...items);
  $("#no-failures").hidden = failures.length > 0;
}

// -- log tail -------------------------------------------------------------------------------

const LOG_KEYS_SHOWN_APART = new Set(["n", "timestamp", "level", "event", "app", "host", "seq", "pid"]);
const MAX_LOG_LINES = 500;
let lastLogLine = 0;

function renderLogs(lines) {
  const box = $("#logs");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
  for (const record of lines) {
    if (record.n <= lastLogLine) continue;
    lastLogLine = record.n;
    const time = typeof record.timestamp === "string" ? record.timestamp.slice(11, 23) : "";
    const rest = Object.entries(record).filter(([k]) => !LOG_KEYS_SHOWN_APART.has(k))
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
    box.append(el("div", { class: `line ${record.level || ""}` }, `${time} ${(record.level || "").padEnd(7)} [${record.pid}] ${record.event} ${rest}`));
  }
  while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// -- the stream -----------------------------------------------------------------------------

function renderState(state) {
  lastState = state;
  clockOffset = state.server_time - Date.now() / 1000;
  $("#app-name").textContent = state.app;
  $("#broker-url").textContent = state.broker_url;
  const problems = Object.entries(state.broker.problems);
  setBadge($("#broker-state"), state.broker.up ? "up" : "down", state.broker.up ? "broker: up" : "broker: down");
  const banner = $("#broker-problem");
  banner.hidden = state.broker.up;
  banner.textContent = problems.map(([part, problem]) => `${part}: ${problem}`).join("; ") + " — reconnecting by itself";
  renderQueues();
  renderWorkers(state.workers, state.server_time);
  renderThroughput(state.throughput);
  renderFailures(state.failures);
}

function connect() {
  const stream = new EventSource("/events");
  stream.addEventListener("open", () => setBadge($("#stream-state"), "live", "live"));
  stream.addEventListener("error", () => {
    // EventSource retries by itself (the server asks for every 2 s); meanwhile the page says so.
    setBadge($("#stream-state"), "reconnecting", "dashboard: reconnecting…");
    setBadge($("#broker-state"), "unknown", "broker: ?");
    if (stream.readyState === EventSource.CLOSED) setTimeout(connect, 2000); // an HTTP error ends its own retries
  });
  stream.addEventListener("state", (event) => renderState(JSON.parse(event.data)));
  stream.addEventListener("logs", (event) => renderLogs(JSON.parse(event.data)));
}

// "last seen" keeps ageing between pushes.
setInterval(() => { if (lastState) renderWorkers(lastState.workers, Date.now() / 1000 + clockOffset); }, 1000);
$("#task-search").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("#task-id").value.trim();
  if (id) window.location.href = `/task/${encodeURIComponent(id)}`;
});
connect();
