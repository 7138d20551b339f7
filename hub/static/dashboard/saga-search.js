// Finding sagas among many: by a business key's value (an order id, a customer id: any key its
// type declares), and by operation id when the value looks like one. Each saga found is listed
// with its operation, type, status, the step it waits for and its business keys, and opens in
// the timeline with its diagram. The rows are the same in the Overdue list (overdue.js).
import { $, badge, businessKeys, cell, operationOf, text } from "./dom.js";

const GUID = /^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$/i;
const LIMIT = 50;
let context = null; // {api(path), open(sagaId)}, set by setUp
let asked = 0; // bumped per search, so that an earlier search's late answer is dropped
let last = ""; // the value searched last, searched again when one of its sagas changes
let found = []; // the sagas it found

export function setUp(given) {
  context = given;
  $("saga-search").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("saga-search-input").value.trim());
  });
  $("saga-search-clear").addEventListener("click", () => {
    $("saga-search-input").value = "";
    search("");
  });
}

// A saga as a row of a list of sagas found: a click opens it in the timeline.
export function foundRow(saga) {
  const tr = document.createElement("tr");
  tr.dataset.id = saga.id;
  tr.dataset.operation = operationOf(saga);
  tr.dataset.saga = saga.saga;
  tr.dataset.status = saga.status;
  tr.dataset.overdue = saga.overdue ? "yes" : "no";
  const waiting = cell(saga.waitingFor || "—", "waiting-for mono");
  if (saga.overdue) {
    const mark = text("overdue-mark", "overdue");
    mark.title = "overdue since " + new Date(saga.overdueSince).toLocaleString();
    waiting.append(" ", mark);
  }
  tr.append(
    cell(operationOf(saga), "mono operation"), cell(saga.saga, "saga-type"), cell(badge(saga.status)),
    waiting, cell(businessKeys(saga), "keys"),
    cell(saga.waitingSince ? new Date(saga.waitingSince).toLocaleTimeString() : "—", "since"),
  );
  tr.addEventListener("click", () => context.open(saga.id));
  return tr;
}

function search(value) {
  const mine = ++asked;
  last = value;
  if (!value) {
    found = [];
    $("saga-found").replaceChildren();
    $("saga-found-note").textContent = "";
    $("saga-found-table").hidden = true;
    return Promise.resolve();
  }
  $("saga-found-note").textContent = "searching…";
  const byKey = context.api("/sagas?key=" + encodeURIComponent(value) + "&limit=" + LIMIT)
    .then((answer) => answer.items);
  // A saga's own operation, when the value may be one: none is no error.
  const byOperation = GUID.test(value)
    ? context.api("/operations/" + encodeURIComponent(value.replace(/[{}]/g, "")) + "/saga")
      .then((saga) => [saga], (error) => { if (error.status === 404) return []; throw error; })
    : Promise.resolve([]);
  return Promise.all([byOperation, byKey]).then(([ofOperation, keyed]) => {
    if (mine !== asked) return;
    const byId = new Map();
    [...ofOperation, ...keyed].forEach((saga) => { if (!byId.has(saga.id)) byId.set(saga.id, saga); });
    found = Array.from(byId.values());
    $("saga-found-table").hidden = !found.length;
    $("saga-found").replaceChildren(...found.map(foundRow));
    $("saga-found-note").textContent = found.length
      ? found.length + (found.length >= LIMIT ? "+" : "") + " found for “" + value + "”"
      : "No saga holds “" + value + "” in its business keys" + (GUID.test(value) ? " or is that operation's" : "") + ".";
    $("saga-found-note").dataset.found = String(found.length);
  }).catch((error) => {
    if (mine !== asked) return;
    $("saga-found-note").textContent = "Cannot search: " + (error.reason || error.message);
  });
}

// The search shown again when a saga it found changed (one of `ids`), so its marks stay true.
export function refreshSearch(ids) {
  if (last && found.some((saga) => ids.has(saga.id) || ids.has(operationOf(saga)))) search(last);
}
