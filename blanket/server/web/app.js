// blanket's web page: plain DOM code over the JSON API. Every server string becomes a
// text node (via el()) and is never parsed as markup, because environments and
// descriptions are written by whoever submits a task or edits a type.
"use strict";

const ACTIVE = new Set(["WAITING", "QUEUED", "CLAIMED", "RUNNING"]);
const REFRESH_MS = 2000;
const TYPES_EVERY = 5; // refreshes between reloads of the task types
const state = { types: [], chosen: null, logSources: [], timer: null, ticks: 0, offline: false,
  csrf: null, who: null, taskLog: null, taskLogFor: null, taskFiles: null, wantedType: "",
  window: "hour", keepSelection: new Set(), runStep: null, runShown: null,
  runFor: null, run: null, recentRuns: null,
  workflowTicks: 0 };

function $(id) { return document.getElementById(id); }

// An element with attributes/properties and children (strings become text nodes).
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function replaceRows(tbody, rows, columns, empty) {
  tbody.replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colSpan: columns, class: "muted" }, empty))]));
}

// fetch wrapper: JSON (or text) on success; the server's error message as an Error otherwise.
async function api(method, path, body, asText) {
  const options = { method, headers: {}, credentials: "same-origin" };
  // A signed-in page proves each change comes from it, not from another site.
  if (state.csrf && method !== "GET") options.headers["X-CSRF-Token"] = state.csrf;
  if (body instanceof FormData) options.body = body;
  else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${method} ${path}: HTTP ${response.status}`;
    try {
      const data = await response.json();
      if (data && data.error && data.error.message) message = data.error.message;
    } catch (e) { /* not JSON: keep the status line */ }
    const error = new Error(message);
    error.status = response.status;
    if (response.status === 401) showLogin(message);
    throw error;
  }
  return asText ? response.text() : response.json();
}

// A short note that goes by itself (the outcome of an action); errors stay in the flash.
function toast(message) {
  const note = el("div", { class: "toast", role: "status" }, message);
  $("toasts").append(note);
  setTimeout(() => note.remove(), 4000);
}

function flash(message, kind) {
  const box = $("flash");
  box.textContent = message;
  box.className = kind || "error";
  box.hidden = !message;
}

async function act(action) {
  flash("");
  try {
    await action();
  } catch (e) {
    flash(e.message);
  }
}

// ---- formatting

function asDate(value) {
  if (value === null || value === undefined || value === "") return null;
  return typeof value === "number" ? new Date(value * 1000) : new Date(value);
}

function when(value) {
  const date = asDate(value);
  if (!date || isNaN(date)) return "";
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function timeCell(value) {
  const date = asDate(value);
  return el("td", { title: date && !isNaN(date) ? date.toISOString() : "" }, when(value));
}

function ago(seconds) {
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

// A config problem as `file:line: message`.
function problemLine(p) {
  return `${p.file}${p.line ? ":" + p.line : ""}: ${p.message}`;
}

// A two-column table of a record: [key, value] rows, each value shown by fieldValue.
function fillFields(table, rows, cellClass) {
  table.tBodies[0].replaceChildren(...rows.map(([key, value]) => el("tr", {},
    el("th", {}, key), el("td", { class: cellClass ? cellClass(key) : "" },
      value instanceof Node ? value : fieldValue(key, value)))));
}

// A page's record that could not be loaded: its name and why, in place of the record.
function showLoadFailure(nameId, name, placeId, error) {
  $(nameId).textContent = name;
  $(placeId).replaceChildren(el("span", { class: "problem" }, error.message));
}

function stateBadge(value) {
  return el("span", { class: `state state-${value}` }, value);
}

// The bar's width is set through the CSSOM: the page's Content-Security-Policy forbids
// inline style attributes.
function barOf(pct) {
  const bar = el("div", { class: "bar" });
  bar.style.width = `${pct}%`;
  return bar;
}

// A queued task that waits for something other than a free worker says so: a warning for
// one no worker that is up can take (it would wait for ever), a note for the rest.
function waitingBadge(task) {
  if (!task.waiting || task.waiting.code === "busy") return "";
  const label = { no_worker: "no worker", paused: "workers paused",
    max_concurrent: "at max_concurrent", not_before: "scheduled",
    type_broken: "type broken" }[task.waiting.code] || "waits";
  const warn = ["no_worker", "type_broken"].includes(task.waiting.code);
  const kind = warn ? "waiting-warn" : "waiting-note";
  return el("span", { class: `waiting ${kind}`, title: task.waiting.message }, label);
}

function progressBar(task) {
  if (task.progress === null || task.progress === undefined) return "";
  const pct = Math.max(0, Math.min(100, Number(task.progress)));
  const label = `${pct}%${task.progress_message ? " " + task.progress_message : ""}`;
  return el("div", { class: "progress", title: label },
    barOf(pct),
    el("span", { class: "label" }, label));
}

// ---- task types and the submit form

async function loadTypes() {
  state.types = await api("GET", "/task_type/");
  const rows = state.types.map((t) => {
    const def = t.definition;
    const problems = t.problems.map((p) =>
      el("div", { class: "problem" }, problemLine(p)));
    const start = def ? el("button", { type: "button", onclick: () => chooseType(t.name) }, "Start")
      : null;
    return el("tr", { class: problems.length ? "has-problem" : "" },
      el("td", {}, el("a", { href: `#/type/${encodeURIComponent(t.name)}` },
        el("strong", {}, t.name))),
      el("td", {}, def ? def.description : "", ...problems),
      el("td", { class: "mono", title: t.version || "" }, (t.version || "").slice(0, 12)),
      el("td", {}, def ? def.tags.join(", ") : ""),
      el("td", {}, start));
  });
  replaceRows($("types").tBodies[0], rows, 5, "No task types: add a TOML file to conf.d/types/.");
}

function chooseType(name) {
  const loaded = state.types.find((t) => t.name === name);
  if (!loaded || !loaded.definition) return;
  state.chosen = loaded;
  const def = loaded.definition;
  $("submit-type").textContent = name;
  const fields = [];
  for (const [key, spec] of Object.entries(def.required || {})) {
    fields.push(variableField(key, "", true, spec.description, spec.type, spec.secret));
  }
  for (const [key, value] of Object.entries(def.defaults || {})) {
    if (!(key in (def.required || {}))) fields.push(variableField(key, value, false, "default"));
  }
  $("variables").replaceChildren(...fields);
  $("extra-rows").replaceChildren();
  $("files").value = "";
  $("not-before").value = "";
  $("after").value = "";
  $("after-always").checked = false;
  $("submit-result").replaceChildren();
  $("submit-section").hidden = false;
  const first = $("variables").querySelector("input");
  if (first) first.focus();
  $("submit-section").scrollIntoView({ block: "nearest" });
}

// The input for a variable's declared type: a number box (whole numbers for integer), a
// checkbox for boolean, text otherwise; the browser checks them before anything is sent.
function variableInput(key, value, required, type, secret) {
  const name = `var-${key}`;
  if (secret) {
    return el("input", { type: "password", name, value: String(value), required,
      autocomplete: "off" });
  }
  if (type === "boolean") {
    return el("input", { type: "checkbox", name, checked: /^(true|1|yes)$/i.test(String(value)) });
  }
  if (type === "integer" || type === "number") {
    return el("input", { type: "number", name, value: String(value), required,
      step: type === "integer" ? "1" : "any" });
  }
  return el("input", { type: "text", value: String(value), required, name });
}

function variableField(key, value, required, description, type, secret) {
  const hint = [type, secret ? "secret" : "", description].filter(Boolean).join(" — ");
  return el("label", { class: "field" },
    el("span", { class: "name mono" }, key, required ? el("span", { class: "required" }, " *") : null),
    variableInput(key, value, required, type, secret),
    el("span", { class: "hint" }, hint));
}

function addExtraRow() {
  // The same columns as the variables above: name, then value, then the remove button.
  const row = el("div", { class: "extra" },
    el("input", { type: "text", placeholder: "NAME", class: "extra-key mono",
      "aria-label": "variable name" }),
    el("input", { type: "text", placeholder: "value", class: "extra-value",
      "aria-label": "its value" }),
    el("button", { type: "button", "aria-label": "remove this variable",
      onclick: () => row.remove() }, "×"));
  $("extra-rows").append(row);
  row.querySelector("input").focus();
}

// "+10m" and ISO times with an offset go as typed; a local "2030-01-31T09:00" gets its offset.
function notBefore(text) {
  const value = text.trim();
  if (/^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?$/.test(value)) {
    return new Date(value.replace(" ", "T")).toISOString();
  }
  return value || null;
}

function submission() {
  const environment = {};
  for (const input of $("variables").querySelectorAll("input")) {
    environment[input.name.slice(4)] = input.type === "checkbox" ? String(input.checked)
      : input.value;
  }
  for (const row of $("extra-rows").querySelectorAll(".extra")) {
    const key = row.querySelector(".extra-key").value.trim();
    if (key) environment[key] = row.querySelector(".extra-value").value;
  }
  const data = { type: state.chosen.name, environment };
  const start = notBefore($("not-before").value);
  if (start) data.not_before = start;
  const waitsFor = $("after").value.split(/[\s,]+/).filter(Boolean).map(Number);
  if (waitsFor.length) {
    data.after = waitsFor;
    if ($("after-always").checked) data.after_policy = "always";
  }
  const files = $("files").files;
  if (!files.length) return data;
  const form = new FormData();
  form.append("data", JSON.stringify(data));
  for (const file of files) form.append("file", file, file.name);
  return form;
}

async function submitTask(event) {
  event.preventDefault();
  const result = $("submit-result");
  result.className = "";
  result.textContent = "Starting…";
  try {
    const task = await api("POST", "/task/", submission());
    result.className = "ok";
    result.replaceChildren("Task ", el("strong", {}, `#${task.id}`), ` (${task.type}) is `,
      stateBadge(task.state), " ",
      el("button", { type: "button", onclick: () => showLogs(task.id) }, "Logs"));
    await loadTasks();
  } catch (e) {
    result.className = "error";
    result.textContent = e.message;
  }
}

// ---- tasks

async function loadTasks() {
  const tasks = await api("GET", "/task/?limit=50");
  replaceRows($("tasks").tBodies[0], tasks.map((t) => taskRow(t, false)), 11, "No tasks yet.");
  $("tasks-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// ---- choosing several tasks on the Tasks page, and acting on them together

function selectedTasks() {
  return [...$("browse").querySelectorAll("tbody input.pick:checked")].map((box) => box.task);
}

function showSelection() {
  const chosen = selectedTasks();
  $("selected-count").textContent = chosen.length ? `${chosen.length} selected` : "none selected";
  for (const id of ["bulk-stop", "bulk-rerun", "bulk-remove"]) $(id).disabled = !chosen.length;
  const boxes = $("browse").querySelectorAll("tbody input.pick");
  $("select-all").checked = boxes.length > 0 && chosen.length === boxes.length;
}

async function bulk(verb) {
  const chosen = selectedTasks();
  if (!chosen.length) return;
  const active = chosen.filter((t) => ACTIVE.has(t.state));
  const questions = {
    stop: `Stop ${chosen.length} task${chosen.length > 1 ? "s" : ""}?`,
    rerun: `Run ${chosen.length} task${chosen.length > 1 ? "s" : ""} again?`,
    remove: `Remove ${chosen.length} task${chosen.length > 1 ? "s" : ""} and their files` +
      (active.length ? ` (${active.length} still queued or running: stopped first)?` : "?"),
  };
  if (!window.confirm(questions[verb])) return;
  const failures = [];
  for (const task of chosen) {
    try {
      if (verb === "stop") await api("POST", `/task/${task.id}/stop`);
      else if (verb === "rerun") await api("POST", `/task/${task.id}/rerun`);
      else await api("DELETE", `/task/${task.id}${ACTIVE.has(task.state) ? "?force" : ""}`);
    } catch (e) {
      failures.push(`#${task.id}: ${e.message}`);
    }
  }
  const done = chosen.length - failures.length;
  if (done) toast(`${verb === "rerun" ? "Reran" : verb === "stop" ? "Stopped" : "Removed"} ${done} task${done > 1 ? "s" : ""}.`);
  if (failures.length) flash(failures.join("\n"));
  $("select-all").checked = false;
  state.keepSelection = new Set();
  await refresh();
}

function taskRow(task, selectable) {
  const active = ACTIVE.has(task.state);
  const buttons = [
    active ? el("button", { type: "button", onclick: () => act(() => stopTask(task)) }, "Stop")
      : el("button", { type: "button", onclick: () => act(() => rerunTask(task)) }, "Rerun"),
    el("button", { type: "button", onclick: () => act(() => removeTask(task)) }, "Remove"),
    el("button", { type: "button", onclick: () => showLogs(task.id) }, "Logs"),
  ];
  const pick = selectable ? el("td", {}, el("input", { type: "checkbox", class: "pick",
    "aria-label": `select task ${task.id}`, checked: state.keepSelection.has(task.id),
    onchange: (event) => {
      if (event.target.checked) state.keepSelection.add(task.id);
      else state.keepSelection.delete(task.id);
      showSelection();
    } })) : null;
  if (pick) pick.firstChild.task = task;
  return el("tr", { id: `${selectable ? "browse" : "task"}-${task.id}` }, pick,
    el("td", { class: "mono" }, el("a", { href: `#/task/${task.id}` }, task.id)),
    el("td", {}, task.type),
    el("td", { title: task.error || (task.waiting ? task.waiting.message : "") },
      stateBadge(task.state), waitingBadge(task)),
    timeCell(task.added),
    timeCell(task.started),
    timeCell(task.finished),
    el("td", { class: "mono" }, task.exit_code === null ? "" : task.exit_code),
    el("td", {}, progressBar(task)),
    el("td", { class: "mono small" }, task.worker || ""),
    el("td", { class: "small", title: task.stopped_by ? `stopped by ${task.stopped_by}` : "" },
      task.submitted_by || ""),
    el("td", { class: "buttons" }, ...buttons));
}

async function stopTask(task) {
  await api("POST", `/task/${task.id}/stop`);
  await refresh();
}

async function rerunTask(task) {
  const again = await api("POST", `/task/${task.id}/rerun`);
  toast(`Task #${again.id} reruns #${task.id}.`);
  if (route().view === "task") location.hash = `#/task/${again.id}`;
  else await refresh();
}

async function removeTask(task) {
  const active = ACTIVE.has(task.state);
  const question = active
    ? `Task #${task.id} is ${task.state}. Stop it and remove it with its files?`
    : `Remove task #${task.id} and its files?`;
  if (!window.confirm(question)) return;
  await api("DELETE", `/task/${task.id}${active ? "?force" : ""}`);
  if (route().view === "task") location.hash = "#/tasks";
  else await refresh();
}

// ---- logs

function closeLogs() {
  for (const source of state.logSources) source.close();
  state.logSources = [];
  $("log-section").hidden = true;
}

async function showLogs(id) {
  closeLogs();
  $("log-task").textContent = `#${id}`;
  $("log-section").hidden = false;
  $("log-section").scrollIntoView({ block: "nearest" });
  let task;
  try {
    task = await api("GET", `/task/${id}`);
  } catch (e) {
    $("log-state").textContent = e.message;
    return;
  }
  $("log-state").textContent = task.state;
  for (const stream of ["stdout", "stderr"]) {
    const pre = $(`log-${stream}`);
    pre.textContent = "";
    if (ACTIVE.has(task.state)) followLog(id, stream, pre);
    else readLog(id, stream, pre);
  }
}

async function readLog(id, stream, pre) {
  try {
    pre.textContent = await api("GET", `/task/${id}/log/${stream}`, undefined, true);
  } catch (e) {
    pre.textContent = e.status === 404 ? "(empty)" : e.message;
  }
}

function followLog(id, stream, pre) {
  const source = new EventSource(`/task/${id}/log/${stream}?follow`);
  state.logSources.push(source);
  source.onmessage = (event) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(event.data + "\n");
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  source.addEventListener("end", (event) => {
    source.close();
    $("log-state").textContent = event.data;
  });
  // EventSource would reconnect and replay the log from the start; stop instead.
  source.onerror = () => source.close();
}

// ---- workers and schedules

async function loadWorkers() {
  const workers = await api("GET", "/worker/");
  replaceRows($("workers").tBodies[0], workers.map((w) => el("tr", {},
    el("td", { class: "mono small" },
      el("a", { href: `#/tasks?worker=${encodeURIComponent(w.id)}` }, w.id)),
    el("td", {}, w.host),
    el("td", {}, w.tags.join(", ")),
    el("td", {}, el("span", { class: `worker-${w.state}` }, w.state)),
    el("td", { class: "mono" }, w.task === null ? "" : el("a", { href: `#/task/${w.task}` }, `#${w.task}`)),
    el("td", {}, w.heartbeat ? ago(w.heartbeat) : ""),
    el("td", { class: "buttons" }, ...workerButtons(w)))),
  7, "No workers: start one with blanket worker.");
}

function workerButtons(w) {
  if (w.state === "gone") return [];
  const pause = w.state === "paused"
    ? el("button", { type: "button", onclick: () => act(() => workerAction(w, "resume")) }, "Resume")
    : el("button", { type: "button", onclick: () => act(() => workerAction(w, "pause")) }, "Pause");
  return [pause, el("button", { type: "button", onclick: () => act(() => removeWorker(w)) }, "Remove")];
}

async function workerAction(w, verb) {
  await api("POST", `/worker/${encodeURIComponent(w.id)}/${verb}`, {});
  toast(`Worker ${w.id}: ${verb === "pause" ? "paused" : "resumed"}.`);
  await refresh();
}

async function removeWorker(w) {
  const question = w.task === null
    ? `Remove worker ${w.id}? It stops.`
    : `Remove worker ${w.id}? It stops once its task #${w.task} ends.`;
  if (!window.confirm(question)) return;
  await api("DELETE", `/worker/${encodeURIComponent(w.id)}?mode=finish`);
  toast(`Worker ${w.id} is stopping.`);
  await refresh();
}

async function loadSchedules() {
  const schedules = await api("GET", "/schedule/");
  replaceRows($("schedules").tBodies[0], schedules.map((s) => {
    const def = s.definition || {};
    const timing = def.cron ? `cron ${def.cron}` : def.every ? `every ${def.every}s` : "";
    const problems = (s.problems || []).map((p) =>
      el("div", { class: "problem" }, problemLine(p)));
    return el("tr", {},
      el("td", {}, el("a", { href: `#/schedule/${encodeURIComponent(s.name)}`,
        title: "its definition and runs" }, el("strong", {}, s.name)), ...problems),
      el("td", {}, s.type || def.type || ""),
      el("td", { class: "mono small" }, timing),
      el("td", {}, s.paused ? "paused" : s.state || ""),
      timeCell(s.next_fire),
      el("td", { class: "buttons" }, ...(s.definition ? [
        el("button", { type: "button", onclick: () => act(() => runSchedule(s.name)) }, "Run now"),
        s.paused || s.state === "paused"
          ? el("button", { type: "button", onclick: () => act(() => scheduleAction(s.name, "resume")) }, "Resume")
          : el("button", { type: "button", onclick: () => act(() => scheduleAction(s.name, "pause")) }, "Pause"),
      ] : [])));
  }), 6, "No schedules.");
}

// ---- one type's page: its definition (secret defaults masked), versions that ran, start

const TYPE_FIELDS = ["description", "abstract", "bases", "command", "executor", "tags", "timeout", "retries",
  "retry_delay", "max_timeout", "max_retries", "max_concurrent", "combine_output", "required",
  "defaults", "files", "results", "checks", "notify"];

async function loadTypePage() {
  const { name } = route();
  let loaded;
  try {
    loaded = await api("GET", `/task_type/${encodeURIComponent(name)}`);
  } catch (e) {
    showLoadFailure("y-name", name, "y-problems", e);
    return;
  }
  $("y-name").textContent = loaded.name;
  $("y-problems").replaceChildren(...loaded.problems.map((p) =>
    el("p", { class: "problem" }, problemLine(p))));
  const def = loaded.definition || {};
  const rows = [["file", loaded.path], ["version", loaded.version], ["loaded", loaded.loaded_at],
    ...TYPE_FIELDS.filter((key) => key in def && !(key === "bases" && !def.bases.length))
      .map((key) => [key === "bases" ? "extends" : key, key === "required"
      ? Object.fromEntries(Object.entries(def.required).map(([k, v]) =>
        [k, [v.type, v.secret ? "secret" : "", v.description].filter(Boolean).join(", ")]))
      : def[key]])];
  fillFields($("y-fields"), rows, (key) => (key === "command" ? "mono pre" : ""));
  $("y-buttons").replaceChildren(loaded.definition && !def.abstract ? el("button", { type: "button",
    onclick: () => { location.hash = "#/"; setTimeout(() => chooseType(loaded.name), 300); } },
  "Start") : "");
  $("y-all-tasks").href = `#/tasks?type=${encodeURIComponent(loaded.name)}`;
  const versions = await api("GET", `/task_type/${encodeURIComponent(name)}/versions`);
  replaceRows($("y-versions").tBodies[0], versions.map((v) => el("tr", {},
    el("td", { class: "mono", title: v.version }, v.version.slice(0, 12),
      v.version === loaded.version ? el("span", { class: "muted" }, " (current)") : ""),
    el("td", {}, v.tasks), timeCell(v.first_added), timeCell(v.last_added))),
  4, "No task of this type has run yet.");
}

// ---- one schedule's page: its definition, next fires and runs

const RUNS_SHOWN = 25;

function took(task) {
  if (!task.started || !task.finished) return "";
  const seconds = task.finished - task.started;
  return seconds < 60 ? `${seconds.toFixed(1)}s` : `${(seconds / 60).toFixed(1)}m`;
}

async function loadSchedulePage() {
  const { name } = route();
  let schedule;
  try {
    schedule = await api("GET", `/schedule/${encodeURIComponent(name)}`);
  } catch (e) {
    showLoadFailure("s-name", name, "s-state", e);
    return;
  }
  $("s-name").textContent = schedule.name;
  $("s-state").textContent = schedule.paused ? "paused" : schedule.state || "";
  const def = schedule.definition || {};
  const rows = [
    ["type", schedule.type], ["when", def.cron ? `cron ${def.cron}` : def.every ? `every ${def.every}s` : ""],
    ["environment", def.environment], ["next fires", (schedule.next_fires || []).join(", ")],
    ["last fire", schedule.last_fire], ["problems", (schedule.problems || []).map((p) => p.message)],
    ["notify", def.notify || []],
  ];
  fillFields($("s-fields"), rows);
  $("s-buttons").replaceChildren(...(schedule.definition ? [
    el("button", { type: "button", onclick: () => act(() => runSchedule(schedule.name)) }, "Run now"),
    schedule.paused
      ? el("button", { type: "button", onclick: () => act(() => scheduleAction(schedule.name, "resume")) }, "Resume")
      : el("button", { type: "button", onclick: () => act(() => scheduleAction(schedule.name, "pause")) }, "Pause"),
  ] : []));
  $("s-all-runs").href = `#/tasks?schedule=${encodeURIComponent(schedule.name)}`;
  const runs = await api("GET", `/task/?schedule=${encodeURIComponent(schedule.name)}&limit=${RUNS_SHOWN}`);
  replaceRows($("s-runs").tBodies[0], runs.map((t) => el("tr", {},
    el("td", { class: "mono" }, el("a", { href: `#/task/${t.id}` }, t.id)),
    el("td", {}, stateBadge(t.state)), timeCell(t.added), timeCell(t.started),
    el("td", {}, took(t)), el("td", { class: "mono" }, t.exit_code === null ? "" : t.exit_code))),
  6, "It has not run yet.");
}

async function scheduleAction(name, verb) {
  await api("POST", `/schedule/${encodeURIComponent(name)}/${verb}`, {});
  toast(`Schedule ${name}: ${verb === "pause" ? "paused" : "resumed"}.`);
  await refresh();
}

async function runSchedule(name) {
  const task = await api("POST", `/schedule/${encodeURIComponent(name)}/run`);
  toast(`Schedule ${name} started task #${task.id}.`);
  await loadTasks();
}

async function loadHealth() {
  const health = await api("GET", "/health");
  const problems = health.config_problem_count;
  $("health").textContent = `v${health.version} · ${health.types} types` +
    (problems ? ` · ${problems} config problem${problems > 1 ? "s" : ""}` : "");
  $("health").className = problems ? "problem" : "muted";
}

// ---- signing in

function showWho(session) {
  state.who = session;
  state.csrf = session.csrf || null;
  $("who").textContent = session.anonymous
    ? (session.role === "none" ? "not signed in" : `anonymous (${session.role})`)
    : `${session.name} (${session.role})`;
  $("logout").hidden = !session.session;
  $("show-login").hidden = Boolean(session.session);
}

function showLogin(message) {
  $("login").hidden = false;
  $("login-message").textContent = message || "";
  $("login-token").focus();
}

async function login(event) {
  event.preventDefault();
  await act(async () => {
    const session = await api("POST", "/login", { token: $("login-token").value });
    $("login-token").value = "";
    $("login").hidden = true;
    showWho(session);
    state.ticks = 0;
    refresh();
  });
}

async function logout() {
  await act(async () => {
    await api("POST", "/logout", {});
    showWho(await api("GET", "/session"));
    refresh();
  });
}

// ---- refresh loop

async function refresh() {
  clearTimeout(state.timer);
  try {
    const loads = [loadHealth()];
    const view = route().view;
    if (view === "home") {
      loads.push(loadOverview(), loadTasks(), loadWorkers(), loadSchedules());
      if (state.ticks++ % TYPES_EVERY === 0) loads.push(loadTypes());
    } else if (view === "tasks") {
      // the type filter lists the types: load them first the first time
      loads.push((state.types.length ? Promise.resolve() : loadTypes()).then(loadBrowse));
    } else if (view === "task") {
      loads.push(loadTaskPage());
    } else if (view === "schedule") {
      loads.push(loadSchedulePage());
    } else if (view === "workflows") {
      loads.push(loadWorkflows());
    } else if (view === "run") {
      loads.push(loadRunPage());
    } else if (view === "type") {
      loads.push(loadTypePage());
      if (!state.types.length) loads.push(loadTypes());
    }
    await Promise.all(loads);
    if (state.offline) flash("");
    state.offline = false;
  } catch (e) {
    state.offline = true;
    flash(`Cannot load from the server: ${e.message}`);
  }
  if (document.visibilityState === "visible") state.timer = setTimeout(refresh, REFRESH_MS);
}

// ---- the dashboard's overview: counts, bars per type, ends per minute, recent failures

const SVG = "http://www.w3.org/2000/svg";
const FAILED_STATES = ["FAILED", "TIMEDOUT", "LOST"];

function svg(tag, attributes, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function titled(node, text) {
  node.append(svg("title", {}, text));
  return node;
}

async function loadOverview() {
  const stats = await api("GET", `/stats?window=${state.window}`);
  const total = Object.values(stats.states).reduce((a, b) => a + b, 0);
  $("state-counts").replaceChildren(...Object.entries(stats.states).map(([name, count]) =>
    el("a", { class: "count", href: `#/tasks?state=${name}` }, stateBadge(name), ` ${count}`)),
  el("span", { class: "muted" }, `${total} in all`));
  const stuck = $("stuck");
  const plural = (n) => `${n} queued task${n > 1 ? "s" : ""}`;
  const stuckLines = [];
  if (stats.queued_no_worker) {
    stuckLines.push(el("a", { href: "#/tasks?state=QUEUED" }, `${plural(stats.queued_no_worker)} ` +
      "no worker that is up can take: start a worker with their tags"));
  }
  if (stats.queued_type_broken) {
    if (stuckLines.length) stuckLines.push(el("br"));
    stuckLines.push(el("a", { href: "#/types" }, `${plural(stats.queued_type_broken)} ` +
      "held because their type's file has problems: fix the file to run them"));
  }
  stuck.hidden = !stuckLines.length;
  stuck.replaceChildren(...stuckLines);
  drawTypeBars(stats);
  drawPerMinute(stats.ended_per_minute);
  drawQueueWait(stats.queue_wait_per_minute);
  const workers = Object.entries(stats.workers).map(([s2, n]) => `${n} ${s2}`).join(", ");
  $("worker-counts").textContent = `Workers: ${workers || "none"}`;
  const failures = await api("GET", `/task/?state=${FAILED_STATES.join(",")}&limit=5`);
  $("failures").replaceChildren(...(failures.length ? failures.map((t) => el("li", {},
    el("a", { href: `#/task/${t.id}` }, `#${t.id}`), " ", t.type, " ", stateBadge(t.state), " ",
    el("span", { class: "muted" }, `${when(t.finished)} ${t.error || ""}`)))
    : [el("li", { class: "muted" }, "None.")]));
}

function drawTypeBars(stats) {
  const names = [...new Set([...Object.keys(stats.ended_by_type),
    ...Object.keys(stats.running_by_type)])].sort();
  if (!names.length) {
    $("type-bars").replaceChildren(el("p", { class: "muted" }, "Nothing ran in this period."));
    return;
  }
  const rows = names.map((name) => {
    const ended = stats.ended_by_type[name] || {};
    const failed = FAILED_STATES.reduce((sum, s2) => sum + (ended[s2] || 0), 0);
    return { name, ok: ended.SUCCESS || 0, failed, running: stats.running_by_type[name] || 0 };
  });
  const most = Math.max(1, ...rows.map((r) => r.ok + r.failed + r.running));
  const width = 300, barHeight = 16, gap = 6, label = 110;
  const chart = svg("svg", { viewBox: `0 0 ${label + width + 50} ${rows.length * (barHeight + gap)}`,
    class: "chart", role: "img", "aria-label": "tasks ended per type" });
  rows.forEach((r, i) => {
    const y = i * (barHeight + gap);
    chart.append(svg("text", { x: 0, y: y + barHeight - 4, class: "chart-label" }, r.name));
    let x = label;
    for (const [kind, value] of [["ok", r.ok], ["bad", r.failed], ["run", r.running]]) {
      if (!value) continue;
      const w = (value / most) * width;
      chart.append(titled(svg("rect", { x, y, width: Math.max(w, 1), height: barHeight,
        class: `bar-${kind}` }), `${r.name}: ${value} ${{ ok: "succeeded", bad: "failed", run: "running" }[kind]}`));
      x += w;
    }
    chart.append(svg("text", { x: x + 4, y: y + barHeight - 4, class: "chart-label" },
      String(r.ok + r.failed + r.running)));
  });
  $("type-bars").replaceChildren(chart);
}

function drawPerMinute(points) {
  const most = Math.max(1, ...points.map((p) => p[1]));
  const chart = svg("svg", { viewBox: "0 0 360 80", class: "chart", role: "img",
    "aria-label": "tasks ended per minute over the last hour" });
  points.forEach(([at, count], i) => {
    const h = (count / most) * 70;
    chart.append(titled(svg("rect", { x: i * 6, y: 75 - h, width: 5, height: Math.max(h, 0.5),
      class: "bar-ok" }), `${new Date(at * 1000).toLocaleTimeString()}: ${count}`));
  });
  chart.append(svg("text", { x: 0, y: 8, class: "chart-label" }, `max ${most}/min`));
  $("per-minute").replaceChildren(chart);
}

function seconds(value) {
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  return `${(value / 60).toFixed(1)} min`;
}

function drawQueueWait(points) {
  const known = points.filter((p) => p[1] !== null);
  if (!known.length) {
    $("queue-wait").replaceChildren(el("p", { class: "muted" }, "No task started in the last hour."));
    return;
  }
  const most = Math.max(0.001, ...known.map((p) => p[1]));
  const chart = svg("svg", { viewBox: "0 0 360 80", class: "chart", role: "img",
    "aria-label": "mean time queued per minute over the last hour" });
  points.forEach(([at, wait], i) => {
    if (wait === null) return;
    const h = (wait / most) * 70;
    chart.append(titled(svg("rect", { x: i * 6, y: 75 - h, width: 5, height: Math.max(h, 0.5),
      class: "bar-run" }), `${new Date(at * 1000).toLocaleTimeString()}: ${seconds(wait)}`));
  });
  chart.append(svg("text", { x: 0, y: 8, class: "chart-label" }, `max ${seconds(most)}`));
  $("queue-wait").replaceChildren(chart);
}

function chooseWindow(window) {
  state.window = window;
  $("window-hour").classList.toggle("current", window === "hour");
  $("window-day").classList.toggle("current", window === "day");
  refresh();
}

// ---- pages: #/ (dashboard), #/tasks?state=&type=&tags=&order=&page=, #/task/ID,
// #/workflows and #/run/ID.
// The route lives in the URL's hash, so every view can be shared, and back and forward work.

const PAGE_SIZE = 50;
const TEXT_FILTERS = ["q", "tags", "worker", "by", "schedule", "added_after", "added_before"];

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const task = path.match(/^\/task\/(\d+)$/);
  if (task) return { view: "task", id: Number(task[1]), params };
  if (path === "/tasks") return { view: "tasks", params };
  if (path === "/workflows") return { view: "workflows", params };
  const run = path.match(/^\/run\/(\d+)$/);
  if (run) return { view: "run", id: Number(run[1]), params };
  // The dashboard's own sections, alone: each list has a URL of its own.
  const part = { "/types": "types", "/schedules": "schedules", "/workers": "workers" }[path];
  if (part) return { view: "home", part, params };
  const type = path.match(/^\/type\/(.+)$/);
  if (type) return { view: "type", name: decodeURIComponent(type[1]), params };
  const schedule = path.match(/^\/schedule\/(.+)$/);
  if (schedule) return { view: "schedule", name: decodeURIComponent(schedule[1]), params };
  return { view: "home", params };
}

const HOME_PARTS = { overview: null, "types-section": "types", "tasks-section": null,
  "workers-section": "workers", "schedules-section": "schedules" };

function showView() {
  const { view, part } = route();
  for (const name of ["home", "tasks", "task", "schedule", "type", "workflows", "run"]) {
    $(`view-${name}`).hidden = name !== view;
  }
  for (const [id, owner] of Object.entries(HOME_PARTS)) {
    $(id).hidden = Boolean(part) && owner !== part;
  }
  $("view-home").classList.toggle("alone", Boolean(part));
  const current = part || { home: "home", tasks: "tasks", task: "tasks", schedule: "schedules",
    type: "types", workflows: "workflows", run: "workflows" }[view];
  for (const name of ["home", "tasks", "types", "schedules", "workflows", "workers"]) {
    $(`nav-${name}`).classList.toggle("current", name === current);
  }
  if (view !== "task") closeTaskLog();
  if (view === "tasks") fillFilters();
  if (view === "task") state.taskLogFor = null;
  if (view === "workflows") state.recentRuns = null;  // every card's runs afresh
  if (view === "run") {
    const { id } = route();
    if (state.runFor !== id) state.runStep = null;  // another run: no step chosen
    state.runFor = id;
    state.runShown = null;
  }
  state.ticks = 0;
  refresh();
}

function fillFilters() {
  const { params } = route();
  $("f-state").value = params.get("state") || "";
  for (const key of TEXT_FILTERS) $(`f-${key}`).value = params.get(key) || "";
  $("f-order").value = params.get("order") || "newest";
  state.wantedType = params.get("type") || "";
  $("f-type").value = state.wantedType;
}

function goFilter(event) {
  event.preventDefault();
  const params = new URLSearchParams();
  for (const key of ["state", "type", ...TEXT_FILTERS]) {
    const value = $(`f-${key}`).value.trim();
    if (value) params.set(key, value);
  }
  if ($("f-order").value !== "newest") params.set("order", $("f-order").value);
  const sort = route().params.get("sort");
  if (sort) params.set("sort", sort);
  location.hash = `#/tasks${params.toString() ? "?" + params : ""}`;
}

// Column headers sort the list: a click sorts by that column (newest or largest first), a
// second click turns the order round; both live in the URL.
function sortHeaders() {
  for (const th of $("browse").querySelectorAll("th[data-sort]")) {
    const label = th.textContent;
    th.replaceChildren(el("button", { type: "button", class: "sort", onclick: () => {
      const params = new URLSearchParams(route().params);
      const same = (params.get("sort") || "id") === th.dataset.sort;
      const ascending = params.get("order") === "asc" || params.get("order") === "oldest";
      params.set("sort", th.dataset.sort);
      if (same && !ascending) params.set("order", "asc"); else params.delete("order");
      params.delete("page");
      location.hash = `#/tasks?${params}`;
    } }, label, el("span", { class: "arrow" }, "")));
  }
}

function showSortHeaders(params) {
  const sort = params.get("sort") || "id";
  const ascending = params.get("order") === "asc" || params.get("order") === "oldest";
  for (const th of $("browse").querySelectorAll("th[data-sort]")) {
    const current = th.dataset.sort === sort;
    th.setAttribute("aria-sort", current ? (ascending ? "ascending" : "descending") : "none");
    const arrow = th.querySelector(".arrow");
    if (arrow) arrow.textContent = current ? (ascending ? " ▲" : " ▼") : "";
  }
}

function goPage(step) {
  const params = new URLSearchParams(route().params);
  const page = Math.max(1, Number(params.get("page") || 1) + step);
  if (page > 1) params.set("page", page); else params.delete("page");
  location.hash = `#/tasks${params.toString() ? "?" + params : ""}`;
}

async function loadBrowse() {
  const { params } = route();
  const page = Math.max(1, Number(params.get("page") || 1));
  const query = new URLSearchParams();
  for (const key of ["state", "type", "order", "sort", ...TEXT_FILTERS]) {
    if (params.get(key)) query.set(key, params.get(key));
  }
  showSortHeaders(params);
  const select = $("f-type");
  const names = state.types.map((t) => t.name);
  if (select.options.length - 1 !== names.length) {
    select.replaceChildren(el("option", { value: "" }, "any"),
      ...names.map((name) => el("option", { value: name }, name)));
    select.value = state.wantedType || "";
  }
  const counted = await api("GET", `/task/?count&${query}`);
  query.set("limit", PAGE_SIZE);
  query.set("offset", (page - 1) * PAGE_SIZE);
  const tasks = await api("GET", `/task/?${query}`);
  replaceRows($("browse").tBodies[0], tasks.map((t) => taskRow(t, true)), 12, "No task matches.");
  showSelection();
  const pages = Math.max(1, Math.ceil(counted.count / PAGE_SIZE));
  $("browse-count").textContent = `${counted.count} task${counted.count === 1 ? "" : "s"}`;
  $("page-of").textContent = `page ${page} of ${pages}`;
  $("prev-page").disabled = page <= 1;
  $("next-page").disabled = page >= pages;
}

// ---- one task's page

const SHOWN_FIELDS = ["id", "type", "state", "environment", "tags", "priority", "score",
  "version", "not_before", "added", "claimed", "started", "finished", "worker", "attempt",
  "exit_code", "error", "progress", "progress_message", "timeout", "retries", "retry_delay",
  "schedule", "run", "submitted_by", "stopped_by", "after", "after_policy", "inputs",
  "directory"];
const TIMES = new Set(["not_before", "added", "claimed", "started", "finished", "heartbeat"]);

function fieldValue(key, value) {
  if (value === null || value === undefined || value === "") return el("span", { class: "muted" }, "-");
  if (TIMES.has(key)) {
    const date = asDate(value);
    return el("span", { title: date.toISOString() }, date.toLocaleString());
  }
  if (key === "state") return stateBadge(value);
  if (key === "notify" && Array.isArray(value)) {  // [[notify]] blocks: events and target
    return value.length ? el("div", {}, ...value.map((n) =>
      el("div", { class: "mono small" }, `${n.on.join(", ")} → ${n.target}`)))
      : el("span", { class: "muted" }, "-");
  }
  if (Array.isArray(value)) return value.length ? value.join(", ") : el("span", { class: "muted" }, "-");
  if (typeof value === "object") {
    const rows = Object.entries(value).map(([k, v]) =>
      el("div", { class: "mono small" }, `${k}=${v}`));
    return rows.length ? el("div", {}, ...rows) : el("span", { class: "muted" }, "-");
  }
  return String(value);
}

async function loadTaskPage() {
  const { id } = route();
  let task;
  try {
    task = await api("GET", `/task/${id}`);
  } catch (e) {
    showLoadFailure("t-id", `#${id}`, "t-state", e);
    $("t-fields").tBodies[0].replaceChildren();
    return;
  }
  $("t-id").textContent = `#${task.id}`;
  $("t-state").replaceChildren(stateBadge(task.state), waitingBadge(task));
  const waiting = $("t-waiting");
  waiting.hidden = !task.waiting;
  waiting.textContent = task.waiting ? `Waits: ${task.waiting.message}` : "";
  const warned = task.waiting && ["no_worker", "type_broken"].includes(task.waiting.code);
  waiting.className = `waiting-line ${warned ? "waiting-warn" : ""}`;
  const keys = [...SHOWN_FIELDS.filter((k) => k in task),
    ...Object.keys(task).filter((k) => !SHOWN_FIELDS.includes(k) && k !== "attempts" && k !== "waiting")];
  const typeLink = (text) => el("a", { href: `#/type/${encodeURIComponent(task.type)}`,
    title: "the type's page: its versions that ran" }, text);
  // The tasks it waits for, each a link to its page.
  const afterLinks = (ids) => (ids.length ? el("span", {}, ...ids.flatMap((n, i) =>
    [i ? ", " : "", el("a", { href: `#/task/${n}` }, `#${n}`)])) : task.after);
  // The workflow run it is a step of: a link to the run's page.
  const runLink = (run) => (run ? el("a", { href: `#/run/${run.id}` },
    `run ${run.id}, step ${run.step}` + (run.item ? ` (item ${run.item})` : "")
    + (run.round > 1 ? `, round ${run.round}` : "")) : run);
  fillFields($("t-fields"), keys.map((key) => [key,
    (key === "type" || key === "version") && task[key] ? typeLink(task[key])
      : key === "after" ? afterLinks(task.after)
        : key === "run" ? runLink(task.run) : task[key]]));
  if (task.not_before || task.added) {
    const queuedFor = ((task.claimed || Date.now() / 1000) - task.added) / 60;
    $("t-fields").tBodies[0].append(el("tr", {}, el("th", {}, "minutes queued"),
      el("td", {}, queuedFor.toFixed(1))));
  }
  const active = ACTIVE.has(task.state);
  $("t-buttons").replaceChildren(
    active ? el("button", { type: "button", onclick: () => act(() => stopTask(task)) }, "Stop")
      : el("button", { type: "button", onclick: () => act(() => rerunTask(task)) }, "Rerun"),
    el("button", { type: "button", onclick: () => act(() => removeTask(task)) }, "Remove"));
  replaceRows($("t-attempts").tBodies[0], (task.attempts || []).map((a) => el("tr", {},
    el("td", {}, a.attempt), el("td", { class: "mono small" }, a.worker || ""),
    el("td", {}, stateBadge(a.state)), el("td", { class: "mono" }, a.exit_code === null ? "" : a.exit_code),
    timeCell(a.started), timeCell(a.finished), el("td", { class: "small" }, a.error || ""))),
  7, "No attempt has ended yet.");
  await loadTaskNotifications(task);
  await loadTaskFiles(task);
  if (state.taskLogFor !== task.id) {
    state.taskLogFor = task.id;
    showTaskStreams(task);
  }
}

// What the task's end made for its [[notify]] targets; every value inserted as text.
async function loadTaskNotifications(task) {
  let found = [];
  try {
    found = (await api("GET", `/task/${task.id}/notifications`)).notifications;
  } catch (e) { /* shown as none */ }
  replaceRows($("t-notifications").tBodies[0], found.map((n) => el("tr", {},
    el("td", {}, n.event), el("td", { class: "mono small", title: n.origin || "" }, n.target || n.kind),
    el("td", {}, n.state), el("td", { class: "mono" }, n.attempts),
    n.next_at ? timeCell(n.next_at) : el("td", {}, ""), el("td", { class: "small" }, n.result || ""))),
  6, "No notifications.");
}

async function loadTaskFiles(task) {
  let files = [];
  try {
    files = await api("GET", `/task/${task.id}/files/`);
  } catch (e) { /* no folder yet */ }
  replaceRows($("t-files").tBodies[0], files.map((f) => {
    const href = `/task/${task.id}/files/${f.path.split("/").map(encodeURIComponent).join("/")}`;
    return el("tr", {},
      el("td", { class: "mono small" }, el("a", { href, download: f.path.split("/").pop() },
        f.path)),
      el("td", {}, sizeText(f.size)),
      el("td", {}, f.size <= VIEW_LIMIT ? el("button", { type: "button",
        onclick: () => act(() => viewFile(href, f.path)) }, "View") : ""));
  }), 3, "No files yet.");
  state.taskFiles = new Set(files.map((f) => f.path));
}

const VIEW_LIMIT = 1024 * 1024; // bytes of a file shown in the page; larger ones download

function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

// A text file shown as text (never as markup); anything else is for downloading.
async function viewFile(href, path) {
  const response = await fetch(href, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  const type = response.headers.get("Content-Type") || "";
  const view = $("t-file-view");
  $("t-file-name").hidden = false;
  $("t-file-name").textContent = path;
  view.hidden = false;
  view.textContent = /^text\/|json|xml|yaml|toml|x-sh/.test(type)
    ? await response.text() : `${path} is not text (${type || "unknown type"}): download it.`;
  view.scrollIntoView({ block: "nearest" });
}

function showTaskStreams(task) {
  const streams = ["stdout", "stderr", "output"];
  const preferred = state.taskFiles && state.taskFiles.has("output.log") ? "output" : "stdout";
  $("t-streams").replaceChildren(...streams.map((stream) => el("button", {
    type: "button", class: "tab", id: `t-stream-${stream}`,
    onclick: () => openTaskLog(task.id, stream, ACTIVE.has(task.state)) }, stream)));
  openTaskLog(task.id, preferred, ACTIVE.has(task.state));
}

function closeTaskLog() {
  if (state.taskLog) state.taskLog.close();
  state.taskLog = null;
}

async function openTaskLog(id, stream, follow) {
  closeTaskLog();
  for (const button of $("t-streams").querySelectorAll("button")) {
    button.classList.toggle("current", button.id === `t-stream-${stream}`);
  }
  const pre = $("t-log");
  pre.textContent = "";
  $("t-log-state").textContent = stream;
  $("t-log-download").href = `/task/${id}/log/${stream}`;
  $("t-log-download").setAttribute("download", `task-${id}-${stream}.log`);
  const pause = $("t-log-pause");
  pause.hidden = !follow;
  pause.textContent = "Pause";
  pause.onclick = () => {
    if (state.taskLog) {  // pause: the text stays, nothing more comes
      closeTaskLog();
      pause.textContent = "Follow";
      $("t-log-state").textContent = `${stream} · paused`;
    } else {
      openTaskLog(id, stream, true);
    }
  };
  if (!follow) {
    await readLog(id, stream, pre);
    return;
  }
  const source = new EventSource(`/task/${id}/log/${stream}?follow`);
  state.taskLog = source;
  source.onmessage = (event) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(event.data + "\n");
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  source.addEventListener("end", (event) => {
    source.close();
    $("t-log-pause").hidden = true;
    $("t-log-state").textContent = `${stream} · ${event.data}`;
  });
  source.onerror = () => source.close();
}

// ---- workflows: each file with its problems, a form to start a run, its latest runs

const WORKFLOW_RUNS_SHOWN = 5;
const RECENT_RUNS = 50;

// The cards stay in place between refreshes (only their lists are redrawn), so a value typed
// in a run form is not lost; a card's form is made again only when its file's version changes.
const workflowCards = new Map();

// Each card's runs are asked for when the latest runs of all changed (one request tells),
// for a card not yet shown, and every few refreshes; not for every card every 2 s.
async function loadWorkflows() {
  const [workflows, recent] = await Promise.all([api("GET", "/workflow/"),
    api("GET", `/run/?limit=${RECENT_RUNS}`)]);
  const seen = JSON.stringify(recent.map((r) => [r.id, r.state, r.round]));
  const all = seen !== state.recentRuns || state.workflowTicks++ % TYPES_EVERY === 0;
  state.recentRuns = seen;
  const runs = await Promise.all(workflows.map((w) => {
    const card = workflowCards.get(w.name);
    if (!w.definition) return Promise.resolve([]);
    if (!all && card && card.shownRuns) return Promise.resolve(card.shownRuns);
    return api("GET", `/run/?workflow=${encodeURIComponent(w.name)}&limit=${WORKFLOW_RUNS_SHOWN}`);
  }));
  $("w-count").textContent = `${workflows.length} file${workflows.length === 1 ? "" : "s"}`;
  const cards = workflows.map((w, i) => workflowCard(w, runs[i]));
  for (const name of [...workflowCards.keys()]) {
    if (!workflows.some((w) => w.name === name)) workflowCards.delete(name);
  }
  const shown = cards.length ? cards
    : [el("section", { class: "muted" }, "No workflows: add a TOML file to conf.d/workflows/.")];
  const list = $("w-list");
  // Moving a card that holds the focus would take the focus away: rearrange only on change.
  if (shown.length !== list.children.length || shown.some((card, i) => list.children[i] !== card)) {
    list.replaceChildren(...shown);
  }
}

function workflowCard(w, runs) {
  let card = workflowCards.get(w.name);
  if (!card) {
    card = { section: el("section", { class: "workflow" }), title: el("h2", {}),
      about: el("div", {}), form: el("div", {}), formVersion: undefined, past: el("div", {}),
      runs: el("table", { class: "runs" }, el("thead", {}, el("tr", {},
        el("th", {}, "Run"), el("th", {}, "State"), el("th", {}, "Started"),
        el("th", {}, "Finished"), el("th", {}, "Reason"))), el("tbody", {})) };
    card.section.dataset.workflow = w.name;
    card.past.append(el("h3", {}, "Latest runs"), card.runs);
    card.section.append(card.title, card.about, card.form, card.past);
    workflowCards.set(w.name, card);
  }
  const def = w.definition;
  card.section.classList.toggle("has-problem", w.problems.length > 0);
  card.title.replaceChildren(el("span", { class: "mono" }, w.name),
    def ? el("span", { class: "muted small" }, `${def.steps.length} step${def.steps.length === 1 ? "" : "s"}`) : "",
    w.version ? el("span", { class: "mono muted small version", title: w.version },
      w.version.slice(0, 12)) : "");
  card.about.replaceChildren(
    def && def.description ? el("p", { class: "description" }, def.description) : "",
    ...w.problems.map((p) => el("p", { class: "problem" }, problemLine(p))),
    !def ? el("p", { class: "muted" }, "It cannot run until its file is fixed.")
      : w.problems.length ? el("p", { class: "muted" }, "A run starts from its last good version.")
        : "");
  if (card.formVersion !== w.version) {
    card.formVersion = w.version;
    const typed = new Map([...card.form.querySelectorAll("input")].map((i) => [i.name, i.value]));
    card.form.replaceChildren(def ? runForm(w.name, def, typed) : "");
  }
  card.past.hidden = !def;
  card.shownRuns = runs;
  replaceRows(card.runs.tBodies[0], runs.map((r) => el("tr", {},
    el("td", { class: "mono" }, el("a", { href: `#/run/${r.id}` }, `#${r.id}`)),
    el("td", {}, stateBadge(r.state), r.round > 1 ? el("span", { class: "muted small" },
      ` round ${r.round}`) : ""),
    timeCell(r.added), timeCell(r.finished),
    el("td", { class: "small pre" }, r.reason || ""))),
  5, "It has not run yet.");
  return card.section;
}

// The run's variables: the required ones, then those with a default in the file.
function runForm(name, def, typed) {
  const defaults = def.environment || {};
  const fields = [
    ...def.required.map((key) => variableField(key, key in defaults ? defaults[key] : "", true,
      key in defaults ? "required; has a default" : "required")),
    ...Object.entries(defaults).filter(([key]) => !def.required.includes(key))
      .map(([key, value]) => variableField(key, value, false, "default")),
  ];
  for (const field of fields) {
    const input = field.querySelector("input");
    if (typed.has(input.name)) input.value = typed.get(input.name);
  }
  const result = el("p", { class: "form-result", role: "status" });
  const form = el("form", { class: "run-form", onsubmit: (event) => {
    event.preventDefault();
    startRun(name, form, result);
  } }, ...fields, el("div", { class: "buttons" },
    el("button", { type: "submit", class: "primary" }, "Start run")), result);
  return form;
}

async function startRun(name, form, result) {
  const environment = {};
  for (const input of form.querySelectorAll("input")) environment[input.name.slice(4)] = input.value;
  result.className = "form-result";
  result.textContent = "Starting…";
  try {
    const run = await api("POST", `/workflow/${encodeURIComponent(name)}/run`, { environment });
    result.textContent = "";
    toast(`Workflow ${name}: run #${run.id} started.`);
    location.hash = `#/run/${run.id}`;
  } catch (e) {
    result.className = "form-result error";
    result.textContent = e.message;
  }
}

// ---- one workflow run: its fields, stop or rerun, and its steps drawn as a graph

const RUN_FIELDS = ["workflow", "state", "round", "environment", "added", "finished", "reason",
  "submitted_by", "schedule", "version"];

async function loadRunPage() {
  const { id } = route();
  let run;
  try {
    run = await api("GET", `/run/${id}`);
  } catch (e) {
    showLoadFailure("r-id", `#${id}`, "r-state", e);
    $("r-fields").tBodies[0].replaceChildren();
    $("r-graph").replaceChildren();
    $("r-step").hidden = true;
    state.runShown = null;
    state.run = null;
    return;
  }
  $("r-id").textContent = `#${run.id}`;
  $("r-state").replaceChildren(stateBadge(run.state));
  fillFields($("r-fields"), RUN_FIELDS.map((key) => [key,
    key === "workflow" ? el("a", { href: "#/workflows" }, run.workflow)
      : key === "version" && run.version ? el("span", { class: "mono", title: run.version },
        run.version.slice(0, 12)) : run[key]]), (key) => (key === "reason" ? "pre" : ""));
  const buttons = [];
  if (run.state === "running") {
    buttons.push(el("button", { type: "button", onclick: () => act(() => stopRun(run)) }, "Stop"));
  } else if (run.state === "failed" || run.state === "stopped") {
    buttons.push(el("button", { type: "button", onclick: () => act(() => rerunRun(run)) },
      "Rerun failed steps"));
  }
  $("r-buttons").replaceChildren(...buttons);
  const counts = {};
  for (const step of run.steps) counts[step.state] = (counts[step.state] || 0) + 1;
  $("r-summary").textContent = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ");
  // Redrawn only when something changed, so a box keeps the keyboard's focus.
  state.run = run;
  const drawn = JSON.stringify([run.id, run.steps]);
  if (state.runShown !== drawn) {
    state.runShown = drawn;
    drawRunGraph(run);
    showRunStep(run);
  } else if (state.runStep && state.runStepOffset) {
    showRunStep(run);  // a later page of tasks: the run's answer does not hold it, fetch it again
  }
}

// A box clicked (or Enter on it) shows its step's tasks below the graph; again, hides them.
function chooseStep(name) {
  state.runStep = state.runStep === name ? null : name;
  state.runStepOffset = 0;
  for (const box of $("r-graph").querySelectorAll("g.step")) {
    box.classList.toggle("selected", box.dataset.step === state.runStep);
  }
  if (state.run) showRunStep(state.run);
}

async function stopRun(run) {
  if (!window.confirm(`Stop run #${run.id} of ${run.workflow}? Its tasks that have not ended are stopped.`)) return;
  await api("POST", `/run/${run.id}/stop`);
  toast(`Run #${run.id} stopped.`);
  await refresh();
}

async function rerunRun(run) {
  const again = await api("POST", `/run/${run.id}/rerun`);
  toast(`Run #${run.id}: its failed steps run again (round ${again.round}).`);
  await refresh();
}

// A step's column is one more than the deepest step it comes after.
function stepColumns(steps) {
  const byName = new Map(steps.map((s) => [s.name, s]));
  const column = new Map();
  const depth = (step, seen) => {
    if (column.has(step.name)) return column.get(step.name);
    if (seen.has(step.name)) return 0;  // a cycle cannot be a valid file; draw it anyway
    seen.add(step.name);
    const before = step.after.filter((n) => byName.has(n)).map((n) => depth(byName.get(n), seen));
    const found = before.length ? 1 + Math.max(...before) : 0;
    column.set(step.name, found);
    return found;
  };
  for (const step of steps) depth(step, new Set());
  return column;
}

const RUN_STEP_PAGE = 100;  // a step's tasks a page: as many as GET /run/ID shows

const TASK_STATE_WORDS = { SUCCESS: "succeeded", FAILED: "failed", RUNNING: "running",
  CLAIMED: "claimed", QUEUED: "queued", WAITING: "waiting", TIMEDOUT: "timed out",
  STOPPED: "stopped", SKIPPED: "skipped", LOST: "lost" };

// A fanned step's items by the state of their latest task, as the server counts them (it
// shows only a step's first tasks): 3, "2 succeeded, 1 running".
function itemCounts(step) {
  const counts = Object.entries(step.item_states || {}).sort((a, b) => b[1] - a[1]);
  return { total: step.item_count || 0,
    text: counts.map(([s, n]) => `${n} ${s === "removed" ? s : TASK_STATE_WORDS[s] || s.toLowerCase()}`)
      .join(", ") };
}

// Text cut to fit its box; the whole of it is in the box's title.
function fitted(text, most) {
  return text.length > most ? `${text.slice(0, most - 1)}…` : text;
}

const BOX = { width: 200, gap: 64, rowGap: 18, pad: 12, line: 17, lane: 10 };

// Where each box goes: columns by depth; an arrow that passes over a column takes a thin lane
// of its own there (between the boxes, never under one). Rows in a column follow the file's
// order, then move towards the mean row of what they come after, so that arrows cross less.
function layoutRun(steps, height) {
  const columns = stepColumns(steps);
  const layers = [];
  const put = (item, c) => (layers[c] = layers[c] || []).push(item);
  const items = new Map();
  for (const step of steps) {
    const item = { id: step.name, step, before: [], h: height };
    items.set(step.name, item);
    put(item, columns.get(step.name));
  }
  const edges = [];
  for (const step of steps) {
    for (const name of step.after) {
      if (!items.has(name)) continue;
      const chain = [name];
      for (let c = columns.get(name) + 1; c < columns.get(step.name); c++) {
        const lane = { id: `${name}>${step.name}@${c}`, before: [chain[chain.length - 1]],
          h: BOX.lane };
        items.set(lane.id, lane);
        put(lane, c);
        chain.push(lane.id);
      }
      items.get(step.name).before.push(chain[chain.length - 1]);
      chain.push(step.name);
      edges.push({ from: name, to: step.name, chain });
    }
  }
  const row = new Map();
  layers.forEach((layer, c) => {
    if (c > 0) {
      const mean = (item) => {
        const rows = item.before.map((id) => row.get(id));
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
      };
      layer.sort((a, b) => mean(a) - mean(b));  // stable: ties keep the file's order
    }
    layer.forEach((item, r) => row.set(item.id, r));
  });
  const tall = (layer) => layer.reduce((sum, item) => sum + item.h, 0)
    + BOX.rowGap * (layer.length - 1);
  const tallest = Math.max(height, ...layers.map(tall));
  layers.forEach((layer, c) => {
    let y = BOX.pad + (tallest - tall(layer)) / 2;
    for (const item of layer) {
      item.x = BOX.pad + c * (BOX.width + BOX.gap);
      item.y = y;
      item.mid = y + item.h / 2;
      y += item.h + BOX.rowGap;
    }
  });
  return { items, edges, columns, width: BOX.pad * 2 + layers.length * (BOX.width + BOX.gap) - BOX.gap,
    height: BOX.pad * 2 + tallest };
}

// An arrow's path: out of the right side of a box, along the lanes it passes, into the left
// side of the next box, each hop a curve that leaves and arrives level.
function edgePath(chain, items) {
  const first = items.get(chain[0]);
  let x = first.x + BOX.width, y = first.mid;
  let d = `M ${x} ${y}`;
  for (const id of chain.slice(1)) {
    const next = items.get(id);
    const x2 = next.step ? next.x - 2 : next.x;
    const bend = Math.max(20, (x2 - x) / 2);
    d += ` C ${x + bend} ${y}, ${x2 - bend} ${next.mid}, ${x2} ${next.mid}`;
    x = x2;
    y = next.mid;
    if (!next.step) {
      x = next.x + BOX.width;
      d += ` L ${x} ${y}`;
    }
  }
  return d;
}

function drawRunGraph(run) {
  const steps = run.steps;
  const height = BOX.line * (steps.some((s) => s.each) ? 4 : 3) + 14;
  const layout = layoutRun(steps, height);
  const graph = svg("svg", { width: layout.width, height: layout.height,
    viewBox: `0 0 ${layout.width} ${layout.height}`, role: "group",
    "aria-label": `the ${steps.length} steps of run ${run.id}` });
  graph.append(svg("defs", {}, svg("marker", { id: "run-arrow", viewBox: "0 0 10 10", refX: 9,
    refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
  svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }))));
  for (const edge of layout.edges) {
    graph.append(titled(svg("path", { class: "edge", "data-from": edge.from, "data-to": edge.to,
      d: edgePath(edge.chain, layout.items), "marker-end": "url(#run-arrow)" }),
    `${edge.to} runs after ${edge.from}`));
  }
  for (const step of steps) {
    graph.append(stepBox(step, layout.items.get(step.name), height, layout.columns));
  }
  $("r-graph").replaceChildren(graph);
}

function stepBox(step, at, height, columns) {
  const kind = step.command ? "command" : `type ${step.type}`;
  const items = step.each ? itemCounts(step) : null;
  const lines = [
    ["step-name", step.name], ["step-type", kind],
    ["step-state", items && items.total ? `${step.state} · ${items.total} item${items.total === 1 ? "" : "s"}`
      : step.state],
    ...(items ? [["step-items", items.total ? items.text : `each ${step.each}`]] : []),
  ];
  const box = svg("g", { class: `step state-${step.state}${state.runStep === step.name ? " selected" : ""}`,
    transform: `translate(${at.x} ${at.y})`, tabindex: "0", role: "button",
    "data-step": step.name, "data-column": columns.get(step.name),
    "aria-label": `step ${step.name}, ${kind}, ${step.state}: show its tasks` },
  svg("rect", { class: "box", width: BOX.width, height, rx: 6 }),
  svg("rect", { class: "tint", x: 1, y: 1, width: BOX.width - 2, height: height - 2, rx: 5 }),
  ...lines.map(([cls, text], i) => svg("text", { class: cls, x: 10, y: 21 + i * BOX.line },
    fitted(text, cls === "step-name" ? 24 : 28))));
  titled(box, [step.name, kind, step.state, items && items.total ? items.text : "",
    step.reason || ""].filter(Boolean).join("\n"));
  box.addEventListener("click", () => chooseStep(step.name));
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      chooseStep(step.name);
    }
  });
  return box;
}

// The chosen step's reason and tasks, every round's, each a link to its page.
function showRunStep(run) {
  const step = run.steps.find((s) => s.name === state.runStep);
  $("r-step").hidden = !step;
  if (!step) return;
  $("r-step-name").replaceChildren(`Step ${step.name} · ${step.command ? "command" : `type ${step.type}`} · `,
    stateBadge(step.state), step.each ? ` · each ${step.each}` : "");
  const reason = $("r-step-reason");
  reason.hidden = !step.reason;
  reason.textContent = step.reason || "";
  reason.className = step.state === "failed" ? "problem" : "muted";
  // GET /run/ID brings a step's first tasks; further pages come from GET /run/ID/tasks.
  const offset = state.runStepOffset || 0;
  const pager = $("r-step-pager");
  pager.hidden = step.task_count <= step.tasks.length;
  $("r-step-of").textContent = pager.hidden ? "" : `tasks ${offset + 1}–` +
    `${Math.min(offset + RUN_STEP_PAGE, step.task_count)} of ${step.task_count}`;
  $("r-step-prev").disabled = offset <= 0;
  $("r-step-next").disabled = offset + RUN_STEP_PAGE >= step.task_count;
  if (offset > 0) {
    api("GET", `/run/${run.id}/tasks?step=${encodeURIComponent(step.name)}&offset=${offset}` +
      `&limit=${RUN_STEP_PAGE}`).then((page) => {
      if (state.runStep === step.name && (state.runStepOffset || 0) === offset) showStepTasks(step, page.tasks);
    }).catch((e) => flash(e.message));
    return;
  }
  showStepTasks(step, step.tasks);
}

function pageStep(by) {
  state.runStepOffset = Math.max(0, (state.runStepOffset || 0) + by * RUN_STEP_PAGE);
  if (state.run) showRunStep(state.run);
}

function showStepTasks(step, tasks) {
  replaceRows($("r-step-tasks").tBodies[0], tasks.map((t) => el("tr", {},
    el("td", { class: "mono" }, el("a", { href: `#/task/${t.id}` }, `#${t.id}`)),
    el("td", { class: "mono" }, step.each ? t.item : ""), el("td", {}, t.round),
    el("td", {}, t.state ? stateBadge(t.state) : el("span", { class: "muted" }, "removed")),
    el("td", { class: "mono" }, t.exit_code === null || t.exit_code === undefined ? "" : t.exit_code))),
  5, step.state === "pending" ? "Not started: it waits for the steps before it."
    : "No task: it did not run.");
}

// ---- theme: the system's unless chosen; the choice is kept in this browser

function applyTheme() {
  const chosen = localStorage.getItem("blanket-theme");
  if (chosen) document.documentElement.dataset.theme = chosen;
  else delete document.documentElement.dataset.theme;
}

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : window.matchMedia("(prefers-color-scheme: dark)").matches;
  localStorage.setItem("blanket-theme", dark ? "light" : "dark");
  applyTheme();
}

function start() {
  applyTheme();
  $("theme").addEventListener("click", toggleTheme);
  $("window-hour").addEventListener("click", () => chooseWindow("hour"));
  $("select-all").addEventListener("change", (event) => {
    for (const box of $("browse").querySelectorAll("tbody input.pick")) {
      box.checked = event.target.checked;
      if (box.checked) state.keepSelection.add(box.task.id);
      else state.keepSelection.delete(box.task.id);
    }
    showSelection();
  });
  for (const verb of ["stop", "rerun", "remove"]) {
    $(`bulk-${verb}`).addEventListener("click", () => act(() => bulk(verb)));
  }
  $("window-day").addEventListener("click", () => chooseWindow("day"));
  $("filters").addEventListener("submit", goFilter);
  sortHeaders();
  $("r-step-prev").addEventListener("click", () => pageStep(-1));
  $("r-step-next").addEventListener("click", () => pageStep(1));
  $("prev-page").addEventListener("click", () => goPage(-1));
  $("next-page").addEventListener("click", () => goPage(1));
  window.addEventListener("hashchange", showView);
  $("submit-form").addEventListener("submit", submitTask);
  $("add-extra").addEventListener("click", addExtraRow);
  $("cancel-submit").addEventListener("click", () => { $("submit-section").hidden = true; });
  $("close-log").addEventListener("click", closeLogs);
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("show-login").addEventListener("click", () => showLogin(""));
  $("cancel-login").addEventListener("click", () => { $("login").hidden = true; });
  api("GET", "/session").then(showWho).catch(() => {});
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      state.ticks = 0;
      refresh();
    } else {
      clearTimeout(state.timer);
    }
  });
  showView();
}

document.addEventListener("DOMContentLoaded", start);
