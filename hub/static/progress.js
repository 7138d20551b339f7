// What the live page shows of the saga behind an operation (GET /operations/{id}/saga, which the
// owner may read): the name it started with, a progress bar over its saga's path naming every
// step, the reason for a rejection in plain words, and whether it can still be cancelled.
(function () {
  "use strict";
  // The service's own codes in plain words. A saga type's own codes come with the saga, in its
  // type's words (plainReason); a code ending in _failed found in neither reads "<words> failed".
  const PLAIN = {
    cancelled: "It was cancelled.",
    deadline_exceeded: "It did not finish in time.",
  };

  function words(message) {
    return String(message).replace(/_/g, " ");
  }

  function capital(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function cancelledBy(reason) {
    const text = String(reason || "");
    const why = text.includes(": ") ? " Reason: " + text.slice(text.indexOf(": ") + 2) : "";
    if (text.startsWith("cancelled by its owner")) return "You cancelled it." + why;
    if (text.startsWith("cancelled by an admin")) return "An administrator cancelled it." + why;
    return "It was cancelled." + why;
  }

  // The reason in a sentence, with the step it failed at when the saga is known.
  function plainReason(record, saga) {
    if (record.state !== "rejected") return "";
    const code = record.code || (saga && saga.code) || "";
    let sentence;
    if (code === "cancelled") sentence = cancelledBy((saga && saga.reason) || record.reason);
    else if (saga && saga.plainReason && saga.code === code) sentence = saga.plainReason;
    else if (PLAIN[code]) sentence = PLAIN[code];
    else if (/^[a-z_]+_failed$/.test(code)) sentence = capital(words(code.slice(0, -7))) + " failed.";
    else sentence = record.reason || (saga && saga.reason) || words(code); // as it came
    const at = saga && saga.path ? saga.path.findIndex((p) => p.status === "remaining") : -1;
    if (at >= 0 && code !== "cancelled") {
      return "Failed at step " + (at + 1) + " of " + saga.path.length + " (" + words(saga.path[at].message) + "): " + sentence;
    }
    return sentence;
  }

  function current(saga) {
    const path = saga.path || [];
    const waiting = path.findIndex((p) => p.status === "waiting");
    if (waiting >= 0) return waiting;
    const remaining = path.findIndex((p) => p.status === "remaining");
    return remaining >= 0 ? remaining : path.length - 1;
  }

  // The bar: one segment per step of the path, each named and marked done, current, ahead or
  // compensated; and a line saying where the operation stands.
  function bar(saga) {
    const path = saga.path || [];
    const now = current(saga);
    const wrap = document.createElement("div");
    wrap.className = "progress";
    wrap.dataset.testid = "progress";
    const segments = document.createElement("ol");
    segments.className = "segments";
    path.forEach((entry, i) => {
      const li = document.createElement("li");
      let mark = entry.status === "done" ? "done" : entry.status === "compensated" ? "compensated" : "ahead";
      if (entry.status === "waiting") mark = "current";
      if (entry.status === "remaining" && i === now && saga.status !== "completed") mark = saga.status === "pending" ? "current" : "stopped";
      li.className = "segment " + mark;
      li.dataset.message = entry.message;
      li.dataset.mark = mark;
      li.title = words(entry.message) + " · " + mark;
      li.textContent = words(entry.message);
      segments.append(li);
    });
    const label = document.createElement("div");
    label.className = "step-label";
    if (saga.status === "completed") label.textContent = "all " + path.length + " steps done";
    else if (saga.status === "pending") label.textContent = "step " + (now + 1) + " of " + path.length + ": waiting for " + words(path[now] ? path[now].message : "");
    else if (saga.status === "compensating") label.textContent = "stopped at step " + (now + 1) + " of " + path.length + ": undoing the steps done";
    else label.textContent = "stopped at step " + (now + 1) + " of " + path.length + (saga.status === "compensation_failed" ? ": undoing a step failed" : ": steps done were undone");
    label.dataset.step = String(now + 1);
    label.dataset.steps = String(path.length);
    wrap.append(segments, label);
    return wrap;
  }

  function startName(saga) {
    return saga && saga.steps && saga.steps.length ? saga.steps[0].message : null;
  }

  window.SagaProgress = { bar: bar, plainReason: plainReason, startName: startName };
})();
