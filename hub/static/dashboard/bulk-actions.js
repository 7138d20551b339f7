// Acting on many sagas at once: a filter (type, awaited step, waiting longer than, business key,
// overdue) and "Cancel matching" or "Retry matching". A dry run first (POST /sagas/cancel or
// /sagas/retry with dryRun, which acts on none), then a confirmation showing how many match and
// a sample of them, then the real run, then what it did: how many acted on, how many skipped
// and why. The real run matches again: sagas may have moved on since the dry run.
import { $, cell, option, text, timeOfDay } from "./dom.js";

const VERBS = {
  cancel: { ask: "Cancel", done: "Cancelled", button: "Yes, cancel " },
  retry: { ask: "Retry the awaited step of", done: "Retried", button: "Yes, retry " },
};
let context = null; // {request(method, path, body), kinds(), changed()}, set by setUp
let pending = null; // {action, body} waiting for its confirmation

export function setUp(given) {
  context = given;
  $("bulk-saga").addEventListener("change", fillSteps);
  $("bulk-cancel").addEventListener("click", () => dryRun("cancel"));
  $("bulk-retry").addEventListener("click", () => dryRun("retry"));
  $("bulk-yes").addEventListener("click", confirmed);
  $("bulk-no").addEventListener("click", () => { pending = null; $("bulk-confirm").close(); });
  document.addEventListener("dashboard:types", fillTypes);
}

function fillTypes() {
  const chosen = $("bulk-saga").value;
  const names = Array.from(context.kinds().keys()).sort();
  $("bulk-saga").replaceChildren(option("", "any type"), ...names.map((name) => option(name, name)));
  $("bulk-saga").value = names.includes(chosen) ? chosen : "";
  fillSteps();
}

function fillSteps() {
  const kind = $("bulk-saga").value;
  const steps = new Set();
  context.kinds().forEach((entry, name) => { if (!kind || name === kind) entry.path.forEach((m) => steps.add(m)); });
  const chosen = $("bulk-waiting").value;
  $("bulk-waiting").replaceChildren(option("", "waiting for any step"),
    ...Array.from(steps).map((message) => option(message, "waiting for " + message)));
  $("bulk-waiting").value = steps.has(chosen) ? chosen : "";
}

// The filter the form says, or null when it says none (the service refuses an empty filter:
// "every saga" is never one click away).
function chosenFilter() {
  const filter = {};
  if ($("bulk-saga").value) filter.saga = $("bulk-saga").value;
  if ($("bulk-waiting").value) filter.waitingFor = $("bulk-waiting").value;
  const longer = $("bulk-longer").value.trim();
  if (longer !== "") filter.waitingLongerThan = Number(longer);
  const key = $("bulk-key").value.trim();
  if (key) filter.key = key;
  if ($("bulk-overdue").checked) filter.overdue = true;
  return Object.keys(filter).length ? filter : null;
}

// The filter in words, for the question asked before acting.
function described(filter) {
  const parts = [];
  if (filter.saga) parts.push("of type " + filter.saga);
  if (filter.waitingFor) parts.push("waiting for " + filter.waitingFor);
  if (filter.waitingLongerThan !== undefined) parts.push("waiting longer than " + filter.waitingLongerThan + " s");
  if (filter.key) parts.push("holding “" + filter.key + "” in a business key");
  if (filter.overdue) parts.push("overdue");
  return parts.join(", ");
}

function say(message, outcome, figures) {
  const result = $("bulk-result");
  result.textContent = message;
  result.dataset.outcome = outcome;
  ["matched", "acted", "skipped"].forEach((name) => {
    if (figures && name in figures) result.dataset[name] = String(figures[name]);
    else delete result.dataset[name];
  });
}

function refused(error) {
  return error.status ? error.reason || error.code || String(error.status) : error.message;
}

function dryRun(action) {
  const filter = chosenFilter();
  if (!filter) {
    say("Choose at least one filter: a type, a step, a wait, a key or overdue.", "invalid");
    return;
  }
  if (filter.waitingLongerThan !== undefined && !(filter.waitingLongerThan >= 0)) {
    say("“Waiting longer than” is a number of seconds.", "invalid");
    return;
  }
  const body = { filter: filter };
  const reason = $("bulk-reason").value.trim();
  if (reason) body.reason = reason;
  say("Counting the sagas that match…", "counting");
  setBusy(true);
  context.request("POST", "/sagas/" + action, Object.assign({ dryRun: true }, body))
    .then((dry) => {
      if (!dry.matched) {
        say("No saga matches " + described(filter) + ": nothing to do.", "none", dry);
        return;
      }
      say("", "asking", dry);
      ask(action, body, dry);
    }, (error) => say("Cannot count: " + refused(error), "refused"))
    .finally(() => setBusy(false));
}

function setBusy(busy) {
  $("bulk-cancel").disabled = busy;
  $("bulk-retry").disabled = busy;
}

function ask(action, body, dry) {
  pending = { action: action, body: body };
  const count = text("bulk-count", dry.matched);
  count.dataset.testid = "bulk-count";
  $("bulk-question").replaceChildren(
    VERBS[action].ask + " ", count, " saga" + (dry.matched === 1 ? " that matches: " : "s that match: ") +
      described(body.filter) + "?",
  );
  const skips = Object.entries(dry.skippedWhy || {}).map(([why, n]) => n + " " + why.replace(/_/g, " ")).join(", ");
  $("bulk-skips").textContent = dry.skipped
    ? "Of these, " + dry.skipped + " would be skipped (" + skips + ")." : "";
  $("bulk-sample-note").textContent = dry.sample.length < dry.matched
    ? "A sample of " + dry.sample.length + ":" : "";
  $("bulk-sample").replaceChildren(...dry.sample.map((saga) => {
    const tr = document.createElement("tr");
    tr.dataset.id = saga.id;
    tr.append(
      cell(saga.operationId || saga.id, "mono"), cell(saga.saga), cell(saga.waitingFor || "—", "mono"),
      cell(timeOfDay(saga.waitingSince)),
    );
    return tr;
  }));
  $("bulk-yes").textContent = VERBS[action].button + (dry.matched === 1 ? "it" : "them");
  $("bulk-confirm").showModal();
}

function confirmed() {
  const chosen = pending;
  pending = null;
  $("bulk-confirm").close();
  if (!chosen) return;
  say("Working…", "working");
  setBusy(true);
  context.request("POST", "/sagas/" + chosen.action, Object.assign({ dryRun: false }, chosen.body))
    .then((done) => {
      const why = Object.entries(done.skippedWhy || {})
        .map(([reason, n]) => reason.replace(/_/g, " ") + " " + n).join(", ");
      say(VERBS[chosen.action].done + " " + done.acted + " of " + done.matched + " matching" +
        (done.skipped ? "; skipped " + done.skipped + " (" + why + ")" : "") + ".", "done", done);
      context.changed();
    }, (error) => say("Not done: " + refused(error), "refused"))
    .finally(() => setBusy(false));
}
