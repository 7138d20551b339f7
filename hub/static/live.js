// A user's operations: the list from GET /operations, then every change pushed over Socket.IO,
// through the service's client module (/client/operations.js), which holds the token, the
// requests and the socket. The token (typed in, or from the URL fragment #token=...) is sent only
// in the Authorization header and the Socket.IO handshake, never in a URL. The client keeps the
// last cursor and reconnects with it, so that nothing is missed; a row only ever moves to a newer
// version. An operation a saga drives shows the name it started with, a progress bar over its
// saga's path (progress.js), the reason for a rejection in plain words, and, while its saga can
// still undo it, a Cancel button that asks for confirmation first.
import { connect as connectClient } from "/client/operations.js";

const MAX_PAGES = 25; // at most 5,000 operations, 200 a page
const SAGAS_LISTED = 100; // the listed operations whose saga is looked up; live ones always are
const rows = new Map(); // id -> {row, version, record}
const sagas = new Map(); // id -> its saga, or null when none drives it
const asking = new Set(); // ids whose Cancel waits for confirmation
const outcomes = new Map(); // id -> what came of cancelling it
const fetching = new Map(); // id -> whether another look is wanted once this one is back
const table = document.getElementById("operations");
const body = table.querySelector("tbody");
const status = document.getElementById("status");
const empty = document.getElementById("empty");
let client = null;
let loads = 0; // bumped per sign-in and per reload of the list, so a stale load stops
let session = 0; // bumped per sign-in, so a stale look at a saga is dropped
let sagasRun = true; // false once GET /sagas/types says the service runs no saga

// atTop: a live change moves its row to the top; a listed one keeps its place in the list.
function show(record, atTop) {
  const known = rows.get(record.id);
  if (known && known.version >= record.version) return; // never go backwards
  const row = known ? known.row : document.createElement("tr");
  rows.set(record.id, { row: row, version: record.version, record: record });
  draw(record);
  if (atTop) {
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
    body.insertBefore(row, body.firstChild);
  } else if (!known) {
    body.appendChild(row);
  }
  empty.hidden = rows.size > 0;
  // No saga behind it by its third change: none will be (a saga commits its start at once).
  const sagaless = sagas.get(record.id) === null && record.version > 2;
  if (sagasRun && !sagaless && (atTop || rows.size <= SAGAS_LISTED)) lookUpSaga(record.id, atTop);
}

function draw(record) {
  const row = rows.get(record.id).row;
  const saga = sagas.get(record.id) || null;
  row.dataset.id = record.id;
  row.dataset.state = record.state;
  row.dataset.version = String(record.version);
  row.dataset.saga = saga ? saga.status : "";
  const name = document.createElement("td");
  name.className = "name";
  const started = window.SagaProgress.startName(saga) || record.name || "";
  const strong = document.createElement("span");
  strong.className = "start-name";
  strong.textContent = started;
  name.append(strong);
  if (record.name && record.name !== started) {
    const latest = document.createElement("span");
    latest.className = "latest muted";
    latest.textContent = "latest: " + record.name;
    name.append(latest);
  }
  const progress = document.createElement("td");
  if (saga && saga.path && saga.path.length) progress.append(window.SagaProgress.bar(saga));
  const reason = text(window.SagaProgress.plainReason(record, saga) || record.reason || "", "reason");
  if (record.reason) reason.title = (record.code ? record.code + ": " : "") + record.reason;
  row.replaceChildren(
    badge(record.state), name, progress, text(record.id, "id"),
    text(String(record.version)), text(new Date(record.updatedAt).toLocaleTimeString()),
    reason, actions(record, saga),
  );
}

// The Cancel button of a running operation its saga can still undo, and its confirmation.
function actions(record, saga) {
  const td = document.createElement("td");
  td.className = "actions";
  const outcome = outcomes.get(record.id);
  if (record.state === "pending" && saga && saga.cancellable && !outcome) {
    if (asking.has(record.id)) {
      const question = document.createElement("span");
      question.className = "confirm";
      question.textContent = "Cancel this operation? Its steps done will be undone. ";
      question.append(
        button("Yes, cancel it", "confirm-cancel", () => cancel(record.id)),
        button("No, keep it", "keep", () => { asking.delete(record.id); redraw(record.id); }),
      );
      td.append(question);
    } else {
      td.append(button("Cancel", "cancel", () => { asking.add(record.id); redraw(record.id); }));
    }
  }
  if (outcome) {
    const said = document.createElement("span");
    said.className = "outcome " + outcome.kind;
    said.textContent = outcome.text;
    td.append(said);
  }
  return td;
}

function button(label, cls, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = cls;
  element.textContent = label;
  element.addEventListener("click", onClick);
  return element;
}

function redraw(id) {
  const known = rows.get(id);
  if (known) draw(known.record);
}

async function cancel(id) {
  asking.delete(id);
  outcomes.set(id, { kind: "busy", text: "cancelling…" });
  redraw(id);
  try {
    await client.cancel(id);
    outcomes.set(id, { kind: "accepted", text: "Cancelling: the steps done are being undone." });
  } catch (error) {
    outcomes.set(id, { kind: "refused", text: "Cannot be cancelled: " + (error.reason || error.message) });
  }
  redraw(id);
  lookUpSaga(id, false);
}

// Whether the operation is final while its saga, as last read, still runs or compensates: the
// saga commits its last status beside the final change, so it may be read just before.
function sagaBehind(id) {
  const known = rows.get(id);
  const saga = sagas.get(id);
  return Boolean(known && known.record.state !== "pending" && saga &&
    (saga.status === "pending" || saga.status === "compensating"));
}

// The saga behind an operation, looked up again after each change; a look asked for while one
// is under way happens once it is back. ``again``: look once more shortly after, since the
// saga commits its step beside the change that was pushed; ``tries``: the looks left for a
// saga that is still behind its final operation, one a second.
async function lookUpSaga(id, again, tries = 10) {
  if (fetching.has(id)) { fetching.set(id, true); return; }
  fetching.set(id, false);
  const mine = session;
  try {
    const saga = await client.request("GET", "/operations/" + encodeURIComponent(id) + "/saga");
    if (mine !== session) return;
    sagas.set(id, saga);
    redraw(id);
  } catch (error) {
    if (mine === session && error.status === 404 && !sagas.get(id)) {
      sagas.set(id, null);
      redraw(id);
    }
    // Otherwise the next change looks again.
  } finally {
    const more = fetching.get(id);
    fetching.delete(id);
    if (mine === session && more) lookUpSaga(id, false);
    else if (mine === session && again) setTimeout(() => { if (mine === session) lookUpSaga(id, false); }, 800);
    else if (mine === session && tries > 0 && sagaBehind(id)) {
      setTimeout(() => { if (mine === session) lookUpSaga(id, false, tries - 1); }, 1000);
    }
  }
}

function text(value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  return td;
}

function badge(state) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = "badge " + state;
  span.textContent = state;
  td.appendChild(span);
  return td;
}

// The user's operations, newest first, page by page. Live changes keep arriving meanwhile;
// show() keeps whichever version is newer.
async function load() {
  const mine = ++loads;
  table.setAttribute("aria-busy", "true");
  try {
    let next = null;
    let pages = 0;
    do {
      const page = await client.list(next ? { limit: 200, cursor: next } : { limit: 200 });
      if (mine !== loads) return;
      page.items.forEach((record) => show(record, false));
      next = page.next;
      pages += 1;
    } while (next && pages < MAX_PAGES);
  } catch (error) {
    if (mine === loads) {
      status.textContent = error.status
        ? "cannot list operations (" + error.status + ")"
        : "cannot list operations: " + error.message;
    }
  } finally {
    if (mine === loads) table.setAttribute("aria-busy", "false");
  }
}

// Why the service refused the socket, in words that say what to do.
const REFUSED = {
  unauthorized: "token refused",
  too_many_sockets: "too many connections for this user: close another tab",
};

// What the client's status means to a reader.
const STATUS = {
  connecting: "connecting…",
  open: "connected",
  reconnecting: "reconnecting…",
  closed: "disconnected",
};

function connect(value) {
  if (client) client.close();
  loads += 1;
  session += 1;
  rows.clear();
  sagas.clear();
  asking.clear();
  outcomes.clear();
  body.replaceChildren();
  empty.hidden = false;
  sagasRun = true;
  const mine = session;
  client = connectClient({ token: value });
  client.request("GET", "/sagas/types")
    .then((types) => { if (mine === session && types && types.items.length === 0) sagasRun = false; })
    .catch(() => {});
  let listed = false;
  client.on("status", (now, code) => {
    if (mine !== session) return;
    status.textContent = REFUSED[code] || STATUS[now] || now;
    // The list is read once the service has taken the socket in, so a change either is in the
    // list or arrives live. After a gap the sync cannot fill, the client reads it again itself.
    if (now === "open" && !listed) {
      listed = true;
      load();
    }
  });
  client.on("change", (record) => { if (mine === session) show(record, true); });
}

document.getElementById("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  connect(document.getElementById("token").value.trim());
});

const fragment = new URLSearchParams(window.location.hash.slice(1));
if (fragment.get("token")) {
  document.getElementById("token").value = fragment.get("token");
  history.replaceState(null, "", window.location.pathname);
  connect(fragment.get("token"));
}
