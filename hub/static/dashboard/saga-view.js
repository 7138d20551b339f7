// The saga view: counts of the recent sagas by status, the list filtered by type, status and
// awaited step, and one saga type's load over its path (how many wait at each step now, how many
// of them are overdue against the step's objective, the median time taken).
import { $, SAGA_STATUSES, badge, cell, option, text } from "./dom.js";

let sagas = [];
let kinds = new Map(); // saga type name -> its entry in GET /sagas/types
let context = null; // {api(path), open(operationId)}, set by setUp

export function setUp(given) {
  context = given;
  $("saga-status").addEventListener("change", () => { renderSagas(); refreshSagas(); });
  $("saga-type").addEventListener("change", () => { fillWaitingFilter(); renderSagas(); });
  $("saga-waiting").addEventListener("change", renderSagas);
  $("load-type").addEventListener("change", refreshLoad);
}

export function sagaTypes() {
  return kinds;
}

export function showSagas(items) {
  sagas = items;
  renderSagas();
}

export function showTypes(items) {
  kinds = new Map(items.map((kind) => [kind.name, kind]));
  fillTypeFilters();
  renderSagas();
  refreshLoad();
  document.dispatchEvent(new CustomEvent("dashboard:types", { detail: kinds }));
}

export function refreshSagas() {
  if (!context || !context.signedIn()) return;
  context.api("/sagas?limit=200").then((found) => showSagas(found.items)).catch(() => {});
  refreshLoad();
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
    $("saga-status").append(option(status, String(status).replace(/_/g, " ")));
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
    const waiting = cell(saga.waitingFor || "—", "waiting-for");
    if (saga.overdue) waiting.append(" ", text("overdue-mark", "overdue"));
    tr.append(
      cell(badge(saga.status)), cell(saga.saga), cell(saga.id, "mono"), waiting,
      cell(saga.steps.map(sagaStep).join(" → ")),
      cell(saga.reason ? (saga.code || "") + " " + saga.reason : ""),
      cell(new Date(saga.updatedAt).toLocaleTimeString()),
    );
    tr.addEventListener("click", () => context.open(saga.id));
    return tr;
  }));
}

// A step in the saga view: ↺ once compensated, ✗ when its compensation failed.
function sagaStep(step) {
  return step.message + (step.compensationError ? " ✗" : step.compensated ? " ↺" : "");
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

// The count of a step's waiting sagas that are overdue, as a badge when there are any.
function overdueCell(step) {
  const count = step.overdue || 0;
  const td = cell(count ? text("overdue-mark", count + " overdue") : text("muted", "0"), "overdue");
  td.dataset.overdue = String(count);
  return td;
}

// One saga type's load over its path: how many wait at each step now, the median time taken.
export function refreshLoad() {
  const kind = $("load-type").value;
  if (!context || !context.signedIn() || !kind) { $("load").replaceChildren(); return; }
  const seconds = window.SagaDiagram.seconds;
  context.api("/sagas/types/" + encodeURIComponent(kind) + "/steps").then((load) => {
    if ($("load-type").value !== kind) return;
    const peak = Math.max(1, ...load.steps.map((step) => step.waiting));
    $("load").replaceChildren(...load.steps.map((step, i) => {
      const tr = document.createElement("tr");
      tr.dataset.message = step.message;
      tr.dataset.waiting = step.waiting;
      if (step.overdue) tr.className = "has-overdue";
      const bar = document.createElement("div");
      bar.className = "load-bar";
      bar.style.width = (100 * step.waiting / peak).toFixed(1) + "%";
      const objective = step.objectiveSeconds === null || step.objectiveSeconds === undefined
        ? "—" : seconds(step.objectiveSeconds);
      tr.append(
        cell(String(i + 1)), cell(step.message, "mono"), cell(String(step.waiting), "waiting"), cell(bar, "bar"),
        overdueCell(step), cell(objective, "objective"),
        cell(step.longestWaitSeconds === null ? "—" : seconds(step.longestWaitSeconds), "longest"),
        cell(step.medianSeconds === null ? "—" : seconds(step.medianSeconds), "median"),
        cell(String(step.samples), "samples"),
      );
      return tr;
    }));
    $("load-note").textContent = "over " + load.sampled + " sagas" + (load.capped ? " (a sample)" : "") +
      ", " + load.compensating + " compensating now";
  }).catch(() => {});
}
