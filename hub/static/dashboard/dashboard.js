// The ops dashboard: every user's operations live, filters, counts, a throughput sparkline, and
// per-operation timelines with their saga (saga-detail.js). Around them, the sagas: the saga view
// and each type's load (saga-view.js), finding sagas by business key or operation (saga-search.js),
// the overdue ones kept live by the pushes (overdue.js), and acting on many at once
// (bulk-actions.js). The admin token comes from the sign-in field or the URL fragment
// (#token=...): it is kept in memory by the service's client module (/client/operations.js), which
// sends it only in headers and the Socket.IO handshake, never in a URL, and which holds the
// requests and the socket, resuming from its cursor.
import { connect } from "/client/operations.js";
import * as bulk from "./bulk-actions.js";
import { $, STATES, badge, cell, text } from "./dom.js";
import * as overdue from "./overdue.js";
import { clearSaga, renderSaga } from "./saga-detail.js";
import * as search from "./saga-search.js";
import * as view from "./saga-view.js";

const WINDOW_SECONDS = 60;
const operations = new Map(); // id -> record
const arrival = new Map(); // id -> when this page first saw it, to order operations created in the same ms
const changes = []; // arrival times (ms) of live changes, for the sparkline
let arrivals = 0;
let client = null;
let session = 0; // bumped per sign-in, so that a former client's answers are dropped
let selected = null;

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
      // Only an admin is answered: everything below, the actions too, is for admins alone.
      $("main").hidden = false;
      view.showSagas(found.items);
      return api("/sagas/types");
    })
    .then((types) => {
      view.showTypes(types.items);
      overdue.refreshOverdue();
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
  let opened = false;
  client.on("status", (now) => {
    if (mine !== session) return;
    $("status").textContent = STATUS[now] || now;
    // Back after a gap: the overdue pushes of the gap are gone, the list is read again.
    if (now === "open" && opened) overdue.refreshOverdue();
    if (now === "open") opened = true;
  });
  overdue.follow(client, () => mine === session);
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

// A saga opened from a list further down the page: its timeline, brought into view.
function openSaga(id) {
  openTimeline(id);
  $("timeline").scrollIntoView({ block: "nearest" });
}

function loadSaga(id) {
  api("/operations/" + encodeURIComponent(id) + "/saga").then((saga) => {
    if (selected !== id) return;
    renderSaga(saga, { client: client, kind: view.sagaTypes().get(saga.saga), reload: () => loadSaga(id) });
  }).catch(() => { if (selected === id) clearSaga(); });
}

// After overdue pushes: the saga list and the type's load, the saga shown and a search's sagas
// when the pushes name one of them.
function touched(ids) {
  view.refreshSagas();
  if (selected && ids.has(selected)) loadSaga(selected);
  search.refreshSearch(ids);
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
const signedIn = () => client !== null && !$("main").hidden;
view.setUp({ api: (path) => api(path), open: openSaga, signedIn: signedIn });
search.setUp({ api: (path) => api(path), open: openSaga });
overdue.setUp({ api: (path) => api(path), touched: touched });
bulk.setUp({
  request: (method, path, body) => client.request(method, path, body),
  kinds: view.sagaTypes,
  changed: () => { view.refreshSagas(); overdue.refreshOverdue(); if (selected) loadSaga(selected); },
});
$("close-timeline").addEventListener("click", () => {
  selected = null;
  clearSaga();
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
setInterval(view.refreshSagas, 3000);

const fragment = new URLSearchParams(window.location.hash.slice(1));
if (fragment.get("token")) {
  const value = fragment.get("token");
  history.replaceState(null, "", window.location.pathname);
  $("token").value = value;
  signIn(value);
}
