// What every part of the dashboard builds its elements with. Every value goes in as text
// (textContent, dataset): values come from users, and none is ever parsed as HTML.

export const $ = (id) => document.getElementById(id);

export const STATES = ["pending", "completed", "rejected"];
// Saga statuses in the order the saga view shows them; any other status still shows, as itself.
export const SAGA_STATUSES = ["pending", "compensating", "completed", "rejected", "compensation_failed"];
const BADGES = new Set([...STATES, ...SAGA_STATUSES]);

export function cell(content, cls) {
  const td = document.createElement("td");
  if (typeof content === "string") td.textContent = content; else td.append(content);
  if (cls) td.className = cls;
  return td;
}

export function badge(state) {
  const span = document.createElement("span");
  span.className = "badge " + (BADGES.has(state) ? state : "other");
  span.textContent = String(state).replace(/_/g, " ");
  return span;
}

export function text(cls, content) {
  const span = document.createElement("span");
  span.className = cls;
  span.textContent = content === undefined || content === null ? "" : String(content);
  return span;
}

export function option(value, label) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = label;
  return item;
}

export function button(label, testid, cls) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.dataset.testid = testid;
  if (cls) element.className = cls;
  return element;
}

// A time of the API (RFC 3339) as the reader's local time of day; "—" for none.
export function timeOfDay(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return isNaN(date) ? String(iso) : date.toLocaleTimeString();
}

// The operation a saga belongs to: its correlation id, which is the operation's id.
export function operationOf(saga) {
  return saga.correlationId || saga.id;
}

// A saga's business keys as "field value" pairs, in the order its type declares them.
export function businessKeys(saga) {
  const keys = saga.businessKeys || {};
  const span = document.createElement("span");
  span.className = "business-keys";
  Object.keys(keys).forEach((name) => {
    const pair = text("business-key mono", name + " " + keys[name]);
    pair.dataset.key = name;
    pair.dataset.value = String(keys[name]);
    span.append(pair);
  });
  if (!span.childElementCount) span.textContent = "—";
  return span;
}
