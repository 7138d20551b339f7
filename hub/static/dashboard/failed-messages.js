// The dashboard's "Failed messages" view: the dead letters the service keeps, counted by queue
// and reason (polled every two seconds, so the counts follow new failures live), listed newest
// first, one at a time with its headers and body pretty-printed, and redriven or discarded, one
// or a whole group, after a confirmation. Requests go through the dashboard's client
// (/client/operations.js), which dashboard.js announces with a "dashboard:client" event once
// signed in; the client keeps the token in memory and sends it only in headers.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;
  let client = null; // the dashboard's, once signed in
  let group = null; // {queue, reason} the list is narrowed to, or null for every dead letter
  let selected = null; // the id of the dead letter shown whole
  let pending = null; // the action waiting for its confirmation

  // Through the dashboard's client (/client/operations.js), which holds the token.
  function call(method, path, body) {
    return client.request(method, path, body).catch((error) => {
      throw new Error(error.reason || error.message);
    });
  }

  function text(tag, value, className) {
    const element = document.createElement(tag);
    element.textContent = value === undefined || value === null ? "" : String(value);
    if (className) element.className = className;
    return element;
  }

  function button(label, testid, action) {
    const element = text("button", label);
    element.type = "button";
    element.dataset.testid = testid;
    element.addEventListener("click", (event) => { event.stopPropagation(); action(); });
    return element;
  }

  function when(iso) {
    const date = new Date(iso);
    return isNaN(date) ? iso : date.toLocaleString();
  }

  function showTab(failed) {
    document.querySelectorAll("main > :not(.tabs):not(#failed)").forEach((element) => {
      element.classList.toggle("tab-hidden", failed);
    });
    $("failed").hidden = !failed;
    $("tab-operations").classList.toggle("active", !failed);
    $("tab-failed").classList.toggle("active", failed);
    if (failed) refresh();
  }

  function notice(message, failed) {
    $("failed-notice").textContent = message;
    $("failed-notice").className = failed ? "notice error" : "notice";
  }

  function refresh() {
    if (!client) return Promise.resolve();
    return call("GET", "/dead-letters/groups").then((found) => {
      renderGroups(found.items);
      if ($("failed").hidden) return null;
      const query = new URLSearchParams({ limit: "100" });
      if (group) { query.set("queue", group.queue); query.set("reason", group.reason); }
      return call("GET", "/dead-letters?" + query).then((page) => renderList(page.items));
    }).catch((error) => notice("Cannot load the dead letters: " + error.message, true));
  }

  function renderGroups(groups) {
    const total = groups.reduce((sum, g) => sum + g.count, 0);
    $("failed-total").textContent = total;
    $("failed-groups").replaceChildren(...groups.map((g) => {
      const tr = document.createElement("tr");
      tr.dataset.queue = g.queue;
      tr.dataset.reason = g.reason;
      if (group && group.queue === g.queue && group.reason === g.reason) tr.className = "selected";
      tr.append(
        text("td", g.count, "failed-count"), text("td", g.reason), text("td", g.queue, "mono"),
        text("td", when(g.first)), text("td", when(g.last)),
      );
      const actions = document.createElement("td");
      actions.append(
        button("Redrive all", "group-redrive", () => confirmAction(
          "Redrive all " + g.count + " dead letters of " + g.queue + " failed with “" + g.reason + "”?",
          () => call("POST", "/dead-letters/redrive", { queue: g.queue, reason: g.reason })
            .then((done) => "Redriven " + done.redriven + (done.skipped ? ", skipped " + done.skipped : "")))),
        button("Discard all", "group-discard", () => confirmAction(
          "Discard all " + g.count + " dead letters of " + g.queue + " failed with “" + g.reason + "”? They cannot be brought back.",
          () => call("POST", "/dead-letters/discard", { queue: g.queue, reason: g.reason })
            .then((done) => "Discarded " + done.discarded))),
      );
      tr.append(actions);
      tr.addEventListener("click", () => {
        group = { queue: g.queue, reason: g.reason };
        $("failed-filter").textContent = g.queue + " · " + g.reason;
        $("failed-all").hidden = false;
        refresh();
      });
      return tr;
    }));
  }

  function renderList(items) {
    $("failed-list").replaceChildren(...items.map((item) => {
      const tr = document.createElement("tr");
      tr.dataset.id = item.id;
      if (item.id === selected) tr.className = "selected";
      tr.append(
        text("td", when(item.deadLetteredAt)), text("td", item.queue, "mono"),
        text("td", (item.exchange || "(default)") + " / " + item.routingKey, "mono"),
        text("td", item.attempts), text("td", item.reason),
      );
      tr.addEventListener("click", () => show(item));
      return tr;
    }));
    if (selected && !items.some((item) => item.id === selected)) {
      selected = null;
      $("failed-detail").hidden = true;
    }
  }

  function pretty(item) {
    if (item.bodyEncoding === "base64") return "(binary, base64)\n" + item.body;
    try {
      return JSON.stringify(JSON.parse(item.body), null, 2);
    } catch (error) {
      return item.body;
    }
  }

  function show(item) {
    selected = item.id;
    $("failed-detail").hidden = false;
    $("failed-id").textContent = item.id;
    $("failed-reason").textContent = item.reason + " (attempts " + item.attempts + ", " + item.disposition + ")";
    $("failed-origin").textContent = (item.exchange || "(default)") + " / " + item.routingKey + " → " + item.queue;
    $("failed-properties").textContent = JSON.stringify(item.properties, null, 2);
    $("failed-headers").textContent = JSON.stringify(item.headers, null, 2);
    $("failed-body").textContent = pretty(item) + (item.bodyTruncated
      ? "\n… cut to " + item.body.length + " of " + item.bodyBytes + " bytes" : "");
    $("failed-redrive").disabled = item.bodyTruncated;
    document.querySelectorAll("#failed-list tr").forEach((tr) => {
      tr.classList.toggle("selected", tr.dataset.id === item.id);
    });
  }

  function confirmAction(question, action) {
    pending = action;
    $("failed-question").textContent = question;
    $("failed-confirm").showModal();
  }

  function confirmed() {
    const action = pending;
    pending = null;
    $("failed-confirm").close();
    if (!action) return;
    action().then((message) => { notice(message, false); return refresh(); })
      .catch((error) => notice(error.message, true));
  }

  $("tab-operations").addEventListener("click", () => showTab(false));
  $("tab-failed").addEventListener("click", () => showTab(true));
  $("failed-yes").addEventListener("click", confirmed);
  $("failed-no").addEventListener("click", () => { pending = null; $("failed-confirm").close(); });
  $("failed-all").addEventListener("click", () => {
    group = null;
    $("failed-filter").textContent = "every queue and reason";
    $("failed-all").hidden = true;
    refresh();
  });
  $("failed-redrive").addEventListener("click", () => {
    const id = selected;
    confirmAction("Redrive dead letter " + id + " to its original exchange and routing key?",
      () => call("POST", "/dead-letters/" + encodeURIComponent(id) + "/redrive").then(() => "Redriven " + id));
  });
  $("failed-discard").addEventListener("click", () => {
    const id = selected;
    confirmAction("Discard dead letter " + id + "? It cannot be brought back.",
      () => call("DELETE", "/dead-letters/" + encodeURIComponent(id)).then(() => "Discarded " + id));
  });
  document.addEventListener("dashboard:client", (event) => {
    client = event.detail;
    if (client) refresh();
  });
  setInterval(refresh, POLL_MS);
})();
