// The ops dashboard: every user's operations live, filters, counts, a throughput sparkline,
// per-operation timelines with their saga drawn as a diagram (diagram.js) that an admin may
// cancel, a saga view filtered by type, status and awaited step, and each saga type's load over
// its path. The admin token comes from the
// sign-in field or the URL fragment (#token=...): it is kept in memory by the service's client
// module (/client/operations.js), which sends it only in headers and the Socket.IO handshake,
// never in a URL, and which holds the requests and the socket, resuming from its cursor.
import { connect } from "/client/operations.js";

const $ = (id) => document.getElementById(id);
const STATES = ["pending", "completed", "rejected"];
// Saga statuses in the order the saga view shows them; any other status still shows, as itself.
const SAGA_STATUSES = ["pending", "compensating", "completed", "rejected", "compensation_failed"];
const BADGES = new Set([...STATES, ...SAGA_STATUSES]);
const WINDOW_SECONDS = 60;
const operations = new Map(); // id -> record
const arrival = new Map(); // id -> when this page first saw it, to order operations created in the same ms
const changes = []; // arrival times (ms) of live changes, for the sparkline
let arrivals = 0;
let client = null;
let session = 0; // bumped per sign-in, so that a former client's answers are dropped
let selected = null;
let sagas = [];
let kinds = new Map(); // saga type name -> its entry in GET /sagas/types
let shownSaga = null; // the saga drawn in the timeline, as last fetched

function api(path) {
  return client.request("GET", path);
}

function signIn(value) {
  if (client) client.close();
  client = connect({ token: value });
  const mine = ++session;
  operations.clear();
  arrival.clear();
  $("refused").hidden = true;
  $("status").textContent = "checking token…";
  api("/sagas?limit=200")
    .then((found) => {
      $("main").hidden = false;
      sagas = found.items;
      renderSagas();
      return api("/sagas/types");
    })
    .then((types) => {
      kinds = new Map(types.items.map((kind) => [kind.name, kind]));
      fillTypeFilters();
      renderSagas();
      refreshLoad();
      return client.list({ limit: 200 });
    })
    .then((page) => {
      if (mine !== session) return;
      // The server lists newest first: the oldest arrives first here.
      page.items.slice().reverse().forEach((record) => upsert(record, false));
      render();
      follow(mine);
      document.dispatchEvent(new CustomEvent("dashboard:client", { detail: client }));
    })
    .catch((error) => {
      if (mine !== session) return;
      client.close();
      client = null;
      document.dispatchEvent(new CustomEvent("dashboard:client", { detail: null }));
      $("main").hidden = true;
      const refusal = error.status === 403 || error.status === 401;
      $("refused").textContent = refusal
        ? "Refused: this dashboard needs a valid token with the admin role."
        : "Cannot load: " + error.message;
      $("refused").hidden = false;
      $("status").textContent = "signed out";
    });
}

// What the client's status means to a reader.
const STATUS = { connecting: "connecting…", open: "live", reconnecting: "reconnecting…", closed: "cannot connect" };

// Every change from here on, live or from a sync after a reconnect (the client resumes from its
// cursor, and after a gap the sync cannot fill reads the list again itself).
function follow(mine) {
  client.on("status", (now) => { if (mine === session) $("status").textContent = STATUS[now] || now; });
  client.on("change", (record) => {
    if (mine !== session || !upsert(record, true)) return;
    render();
    drawSparkline();
    if (selected === record.id) {
      openTimeline(record.id);
      // The saga commits its step beside the change pushed here: look again shortly after.
      setTimeout(() => { if (selected === record.id) loadSaga(record.id); }, 800);
    }
  });
  if (client.status === "open") $("status").textContent = STATUS.open;
}

function upsert(record, live) {
  const known = operations.get(record.id);
  if (known && known.version >= record.version) return false; // never backwards
  operations.set(record.id, record);
  if (!arrival.has(record.id)) arrival.set(record.id, ++arrivals);
  if (live) changes.push(Date.now());
  return true;
}

function newestFirst(a, b) {
  return (b.createdAt || "").localeCompare(a.createdAt || "") ||
    arrival.get(b.id) - arrival.get(a.id);
}

function matches(record) {
  const state = $("filter-state").value;
  const name = $("filter-name").value.trim().toLowerCase();
  const user = $("filter-user").value.trim().toLowerCase();
  const text = $("filter-text").value.trim().toLowerCase();
  if (state && record.state !== state) return false;
  if (name && !(record.name || "").toLowerCase().includes(name)) return false;
  if (user && !(record.userId || "").toLowerCase().includes(user)) return false;
  if (text) {
    const haystack = [record.id, record.name, record.userId, record.reason, record.code]
      .join(" ").toLowerCase();
    if (!haystack.includes(text)) return false;
  }
  return true;
}

function render() {
  const all = Array.from(operations.values()).sort(newestFirst);
  const counts = Object.fromEntries(STATES.map((state) => [state, 0]));
  all.forEach((record) => { if (record.state in counts) counts[record.state] += 1; });
  STATES.forEach((state) => { $("count-" + state).textContent = counts[state]; });
  const shown = all.filter(matches);
  $("shown").textContent = shown.length + " of " + all.length + " shown";
  $("operations").replaceChildren(...shown.slice(0, 500).map(row));
}

function row(record) {
  const tr = document.createElement("tr");
  tr.dataset.id = record.id;
  tr.dataset.state = record.state;
  if (record.id === selected) tr.className = "selected";
  tr.append(
    cell(badge(record.state)), cell(record.name), cell(record.userId || "—", "mono"),
    cell(record.id, "mono"), cell(String(record.version)),
    cell(new Date(record.updatedAt).toLocaleTimeString()),
  );
  tr.addEventListener("click", () => openTimeline(record.id));
  return tr;
}

function cell(content, cls) {
  const td = document.createElement("td");
  if (typeof content === "string") td.textContent = content; else td.append(content);
  if (cls) td.className = cls;
  return td;
}

function badge(state) {
  const span = document.createElement("span");
  span.className = "badge " + (BADGES.has(state) ? state : "other");
  span.textContent = String(state).replace(/_/g, " ");
  return span;
}

function text(cls, content) {
  const span = document.createElement("span");
  span.className = cls;
  span.textContent = content;
  return span;
}

function openTimeline(id) {
  selected = id;
  $("timeline").hidden = false;
  $("timeline-id").textContent = id;
  render();
  const path = "/operations/" + encodeURIComponent(id);
  api(path + "/history").then((history) => {
    if (selected !== id) return;
    $("transitions").replaceChildren(...history.items.map(transition));
  }).catch(() => { if (selected === id) $("transitions").replaceChildren(); });
  loadSaga(id);
}

function loadSaga(id) {
  api("/operations/" + encodeURIComponent(id) + "/saga").then((saga) => {
    if (selected === id) renderSaga(saga);
  }).catch(() => { if (selected === id) { shownSaga = null; $("saga").replaceChildren(); } });
}

function transition(entry) {
  const li = document.createElement("li");
  li.dataset.version = entry.version;
  li.append(badge(entry.state), " ", text("step", entry.name));
  const meta = document.createElement("div");
  meta.className = "muted mono";
  meta.append(
    text("at", entry.at), " · ", text("message", entry.message), " · ",
    text("message-id", entry.messageId || "no message id"),
  );
  if (entry.reason) meta.append(" · ", text("reason", (entry.code || "") + " " + entry.reason));
  li.append(meta);
  return li;
}

function renderSaga(saga) {
  const keep = shownSaga && shownSaga.id === saga.id ? $("cancel-reason-input") : null;
  const typed = keep ? keep.value : "";
  const outcome = shownSaga && shownSaga.id === saga.id ? $("cancel-outcome") : null;
  shownSaga = saga;
  const title = document.createElement("h2");
  title.append("Saga ", saga.saga, " ", badge(saga.status));
  const diagram = window.SagaDiagram.draw(saga, kinds.get(saga.saga));
  const steps = document.createElement("ol");
  saga.steps.forEach((step) => {
    const li = document.createElement("li");
    li.append(text("step", step.message), " · ", new Date(step.at).toLocaleTimeString());
    if (step.messageId) li.append(" · ", text("message-id mono", step.messageId));
    if (step.compensated) li.append(text("compensated", " · compensated"));
    if (step.compensationError) {
      li.append(text("error", " · compensation failed: " + step.compensationError));
    }
    steps.append(li);
  });
  $("saga").replaceChildren(title, diagram, adminCancel(saga, typed, outcome), steps);
  if (saga.reason) {
    const reason = document.createElement("p");
    reason.textContent = (saga.code || "") + ": " + saga.reason;
    $("saga").append(reason);
  }
}

// An admin cancels a running saga with a reason; the outcome shows here, and the diagram moves
// with the pushes that follow.
function adminCancel(saga, typed, outcome) {
  const form = document.createElement("form");
  form.className = "admin-cancel";
  form.dataset.testid = "admin-cancel";
  const result = outcome || text("muted", "");
  result.id = "cancel-outcome";
  result.dataset.testid = "cancel-outcome";
  if (!saga.cancellable) {
    form.append(text("muted", saga.status === "pending"
      ? "This saga can no longer be undone in its present state." : ""), result);
    return form;
  }
  const reason = document.createElement("input");
  reason.id = "cancel-reason-input";
  reason.dataset.testid = "cancel-reason";
  reason.placeholder = "reason for cancelling (shown to the user)";
  reason.maxLength = 500;
  reason.value = typed;
  const button = document.createElement("button");
  button.type = "submit";
  button.className = "danger";
  button.dataset.testid = "cancel-saga";
  button.textContent = "Cancel saga";
  form.append(reason, button, result);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    button.disabled = true;
    result.textContent = "cancelling…";
    const id = saga.id;
    client.cancel(id, reason.value.trim() || null)
      .then(() => {
        result.textContent = "Cancellation accepted: its steps are being compensated.";
        result.dataset.outcome = "accepted";
        if (selected === id) loadSaga(id);
      }, (error) => {
        if (error.status) {
          result.textContent = "Not cancelled: " + (error.reason || error.status);
          result.dataset.outcome = "refused";
          if (selected === id) loadSaga(id);
        } else {
          result.textContent = "Not cancelled: " + error.message;
          button.disabled = false;
        }
      });
  });
  return form;
}

function sagaCount(status) {
  let count = $("sagas-" + status);
  if (!count) {
    // A status this page does not know yet: count it under its own name.
    const chip = document.createElement("span");
    chip.className = "saga-count other";
    count = document.createElement("b");
    count.id = "sagas-" + status;
    count.dataset.testid = "sagas-" + status;
    chip.append(String(status).replace(/_/g, " ") + " ", count);
    $("saga-counts").append(chip);
    const option = document.createElement("option");
    option.value = status;
    option.textContent = String(status).replace(/_/g, " ");
    $("saga-status").append(option);
  }
  return count;
}

function renderSagas() {
  const counts = new Map(SAGA_STATUSES.map((status) => [status, 0]));
  sagas.forEach((saga) => counts.set(saga.status, (counts.get(saga.status) || 0) + 1));
  counts.forEach((count, status) => { sagaCount(status).textContent = count; });
  const offered = new Set(Array.from($("saga-type").options).map((item) => item.value));
  if (sagas.some((saga) => !offered.has(saga.saga))) fillTypeFilters();
  const wanted = $("saga-status").value;
  const kind = $("saga-type").value;
  const awaited = $("saga-waiting").value;
  const chosen = sagas.filter((s) => (!wanted || s.status === wanted) && (!kind || s.saga === kind) &&
    (!awaited || s.waitingFor === awaited));
  $("sagas-shown").textContent = chosen.length + " of " + sagas.length + " shown";
  $("sagas").replaceChildren(...chosen.map((saga) => {
    const tr = document.createElement("tr");
    tr.dataset.id = saga.id;
    tr.dataset.status = saga.status;
    tr.dataset.saga = saga.saga;
    tr.dataset.waiting = saga.waitingFor || "";
    tr.append(
      cell(badge(saga.status)), cell(saga.saga), cell(saga.id, "mono"),
      cell(saga.waitingFor || "—", "waiting-for"),
      cell(saga.steps.map(sagaStep).join(" → ")),
      cell(saga.reason ? (saga.code || "") + " " + saga.reason : ""),
      cell(new Date(saga.updatedAt).toLocaleTimeString()),
    );
    tr.addEventListener("click", () => openTimeline(saga.id));
    return tr;
  }));
}

// A step in the saga view: ↺ once compensated, ✗ when its compensation failed.
function sagaStep(step) {
  return step.message + (step.compensationError ? " ✗" : step.compensated ? " ↺" : "");
}

function refreshSagas() {
  if (!client || $("main").hidden) return;
  api("/sagas?limit=200").then((found) => { sagas = found.items; renderSagas(); }).catch(() => {});
  refreshLoad();
}

function option(value, label) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = label;
  return item;
}

// The type and awaited-step filters, and the load view's type, from GET /sagas/types.
function fillTypeFilters() {
  const names = Array.from(kinds.keys());
  const listed = Array.from(new Set([...names, ...sagas.map((saga) => saga.saga)])).sort();
  const kind = $("saga-type").value;
  $("saga-type").replaceChildren(option("", "any type"), ...listed.map((name) => option(name, name)));
  $("saga-type").value = listed.includes(kind) ? kind : "";
  fillWaitingFilter();
  const loadKind = $("load-type").value;
  $("load-type").replaceChildren(...names.map((name) => option(name, name)));
  if (kinds.has(loadKind)) $("load-type").value = loadKind;
}

function fillWaitingFilter() {
  const kind = $("saga-type").value;
  const steps = new Set();
  kinds.forEach((entry, name) => { if (!kind || name === kind) entry.path.forEach((m) => steps.add(m)); });
  const awaited = $("saga-waiting").value;
  $("saga-waiting").replaceChildren(option("", "waiting for any step"),
    ...Array.from(steps).map((message) => option(message, "waiting for " + message)));
  $("saga-waiting").value = steps.has(awaited) ? awaited : "";
}

// One saga type's load over its path: how many wait at each step now, the median time taken.
function refreshLoad() {
  const kind = $("load-type").value;
  if (!client || !kind) { $("load").replaceChildren(); return; }
  api("/sagas/types/" + encodeURIComponent(kind) + "/steps").then((load) => {
    if ($("load-type").value !== kind) return;
    const peak = Math.max(1, ...load.steps.map((step) => step.waiting));
    $("load").replaceChildren(...load.steps.map((step, i) => {
      const tr = document.createElement("tr");
      tr.dataset.message = step.message;
      tr.dataset.waiting = step.waiting;
      const bar = document.createElement("div");
      bar.className = "load-bar";
      bar.style.width = (100 * step.waiting / peak).toFixed(1) + "%";
      const barCell = cell(bar, "bar");
      tr.append(
        cell(String(i + 1)), cell(step.message, "mono"), cell(String(step.waiting), "waiting"), barCell,
        cell(step.longestWaitSeconds === null ? "—" : window.SagaDiagram.seconds(step.longestWaitSeconds), "longest"),
        cell(step.medianSeconds === null ? "—" : window.SagaDiagram.seconds(step.medianSeconds), "median"),
        cell(String(step.samples), "samples"),
      );
      return tr;
    }));
    $("load-note").textContent = "over " + load.sampled + " sagas" + (load.capped ? " (a sample)" : "") +
      ", " + load.compensating + " compensating now";
  }).catch(() => {});
}

function drawSparkline() {
  const now = Date.now();
  while (changes.length && changes[0] < now - WINDOW_SECONDS * 1000) changes.shift();
  const buckets = new Array(WINDOW_SECONDS).fill(0); // changes per second, oldest first
  changes.forEach((t) => {
    const age = Math.min(WINDOW_SECONDS - 1, Math.floor((now - t) / 1000));
    buckets[WINDOW_SECONDS - 1 - age] += 1;
  });
  const peak = Math.max(1, ...buckets);
  const points = buckets.map((n, i) => (i * 2) + "," + (29 - (n / peak) * 28).toFixed(1));
  document.querySelector("#sparkline polyline").setAttribute("points", points.join(" "));
  document.querySelector("#sparkline polygon")
    .setAttribute("points", "0,29 " + points.join(" ") + " " + (WINDOW_SECONDS - 1) * 2 + ",29");
  $("rate").textContent = (changes.length / WINDOW_SECONDS).toFixed(2);
  $("rate").dataset.changes = changes.length;
}

["filter-state", "filter-name", "filter-user", "filter-text"].forEach((id) => {
  $(id).addEventListener("input", render);
});
$("saga-status").addEventListener("change", () => { renderSagas(); refreshSagas(); });
$("saga-type").addEventListener("change", () => { fillWaitingFilter(); renderSagas(); });
$("saga-waiting").addEventListener("change", renderSagas);
$("load-type").addEventListener("change", refreshLoad);
$("close-timeline").addEventListener("click", () => {
  selected = null;
  shownSaga = null;
  $("timeline").hidden = true;
  render();
});
$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("token").value.trim());
});
drawSparkline();
setInterval(drawSparkline, 1000);
setInterval(() => window.SagaDiagram.tick($("saga")), 1000);
setInterval(refreshSagas, 3000);

const fragment = new URLSearchParams(window.location.hash.slice(1));
if (fragment.get("token")) {
  const value = fragment.get("token");
  history.replaceState(null, "", window.location.pathname);
  $("token").value = value;
  signIn(value);
}
