// The Overdue list: the running sagas that wait longer than the objective of the step they wait
// for (GET /sagas?overdue=true), kept true by the pushes the ops room gets (saga_overdue,
// saga_overdue_cleared). A burst of pushes is gathered into one refresh of the list and of the
// views that show overdue marks (the saga list and a type's load, the saga shown when a push
// names it, a search listing one), at most one per GATHER_MS: many sagas crossing their
// objective at once make one round of reads, not one per saga.
import { $ } from "./dom.js";
import { foundRow } from "./saga-search.js";

const LIMIT = 100;
const GATHER_MS = 700;
let context = null; // {api(path), touched(ids)}, set by setUp
let asked = 0;
let gathering = null; // the timer of the refresh to come
let ids = new Set(); // the saga and operation ids the pushes gathered so far name

export function setUp(given) {
  context = given;
  $("overdue-refresh").addEventListener("click", refreshOverdue);
}

// The client's pushes about sagas: each gathered into the next refresh.
export function follow(client, mine) {
  const gather = (event) => {
    if (!mine() || !event) return;
    ids.add(String(event.id));
    ids.add(String(event.operationId));
    if (!gathering) gathering = setTimeout(flush, GATHER_MS);
  };
  client.on("saga_overdue", gather);
  client.on("saga_overdue_cleared", gather);
}

function flush() {
  gathering = null;
  const touched = ids;
  ids = new Set();
  refreshOverdue();
  context.touched(touched);
}

export function refreshOverdue() {
  const mine = ++asked;
  return context.api("/sagas?overdue=true&limit=" + LIMIT).then((answer) => {
    if (mine !== asked) return;
    const items = answer.items;
    $("overdue-total").textContent = items.length + (items.length >= LIMIT ? "+" : "");
    $("overdue-total").dataset.count = String(items.length);
    $("overdue-table").hidden = !items.length;
    $("overdue-sagas").replaceChildren(...items.map(foundRow));
    $("overdue-note").textContent = items.length ? "" : "No saga is overdue.";
  }).catch((error) => {
    if (mine === asked) $("overdue-note").textContent = "Cannot list: " + (error.reason || error.message);
  });
}
