// One saga in the timeline: its diagram (diagram.js), whether it is overdue and since when, its
// steps, and what an admin may do to it: cancel it with a reason, or retry the step it waits for
// (the command it waits on published again). The outcome of either stays shown while the saga
// is redrawn by the pushes that follow.
import { $, badge, text, timeOfDay } from "./dom.js";

let shown = null; // the saga drawn, as last fetched

export function shownSaga() {
  return shown;
}

export function clearSaga() {
  shown = null;
  $("saga").replaceChildren();
}

// context: {client, kind (its type's entry in GET /sagas/types), reload()}.
export function renderSaga(saga, context) {
  const same = shown && shown.id === saga.id;
  const typed = same && $("cancel-reason-input") ? $("cancel-reason-input").value : "";
  const outcomes = same ? { cancel: $("cancel-outcome"), retry: $("retry-outcome") } : {};
  shown = saga;
  const title = document.createElement("h2");
  title.append("Saga ", saga.saga, " ", badge(saga.status));
  const diagram = window.SagaDiagram.draw(saga, context.kind);
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
  $("saga").replaceChildren(
    title, objective(saga), diagram, adminRetry(saga, context, outcomes.retry),
    adminCancel(saga, context, typed, outcomes.cancel), steps,
  );
  if (saga.reason) {
    const reason = document.createElement("p");
    reason.textContent = (saga.code || "") + ": " + saga.reason;
    $("saga").append(reason);
  }
}

// Whether the saga waits longer than the objective of the step it waits for, and since when.
function objective(saga) {
  const line = document.createElement("p");
  line.dataset.testid = "saga-overdue";
  line.dataset.overdue = saga.overdue ? "yes" : "no";
  const limit = window.SagaDiagram.seconds(saga.objectiveSeconds);
  if (saga.overdue) {
    line.className = "overdue-line";
    line.append(
      text("overdue-mark", "overdue"), " waiting for ", text("mono", saga.waitingFor || "?"),
      " since " + timeOfDay(saga.waitingSince) + (limit ? ", longer than its objective of " + limit : "") +
      "; overdue since " + timeOfDay(saga.overdueSince),
    );
  } else if (saga.waitingFor && limit) {
    line.className = "muted";
    line.append("objective for ", text("mono", saga.waitingFor), ": " + limit);
  }
  return line;
}

function outcomeSpan(kept, id) {
  const result = kept || text("muted", "");
  result.id = id;
  result.dataset.testid = id;
  return result;
}

// The reason a refusal gives, or what went wrong on the way.
function refusal(error) {
  return error.status ? error.reason || String(error.status) : error.message;
}

// An admin has the command a running saga waits on published again, for a step whose service
// lost it or failed: the saga's own id and message id go out, so its service can tell a repeat.
function adminRetry(saga, context, kept) {
  const holder = document.createElement("div");
  holder.className = "admin-retry";
  const result = outcomeSpan(kept, "retry-outcome");
  if (saga.status !== "pending" || !saga.waitingFor) {
    holder.append(result);
    return holder;
  }
  const retry = document.createElement("button");
  retry.type = "button";
  retry.dataset.testid = "retry-saga";
  retry.textContent = "Retry " + saga.waitingFor;
  retry.title = "publish again the command this saga waits on";
  retry.addEventListener("click", () => {
    retry.disabled = true;
    result.textContent = "retrying…";
    context.client.request("POST", "/operations/" + encodeURIComponent(saga.id) + "/saga/retry")
      .then((done) => {
        result.textContent = done.repeated
          ? "Already retried within the retry window: nothing published again."
          : "Published again: " + done.published + " message" + (done.published === 1 ? "" : "s") + ".";
        result.dataset.outcome = "published";
        retry.disabled = false;
      }, (error) => {
        result.textContent = "Not retried: " + refusal(error);
        result.dataset.outcome = "refused";
        retry.disabled = false;
      })
      .then(() => context.reload());
  });
  holder.append(retry, result);
  return holder;
}

// An admin cancels a running saga with a reason; the outcome shows here, and the diagram moves
// with the pushes that follow.
function adminCancel(saga, context, typed, kept) {
  const form = document.createElement("form");
  form.className = "admin-cancel";
  form.dataset.testid = "admin-cancel";
  const result = outcomeSpan(kept, "cancel-outcome");
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
    context.client.cancel(saga.id, reason.value.trim() || null)
      .then(() => {
        result.textContent = "Cancellation accepted: its steps are being compensated.";
        result.dataset.outcome = "accepted";
        context.reload();
      }, (error) => {
        result.textContent = "Not cancelled: " + refusal(error);
        if (error.status) {
          result.dataset.outcome = "refused";
          context.reload();
        } else {
          button.disabled = false;
        }
      });
  });
  return form;
}
