// The ops dashboard: every user's operations live, filters, counts, a throughput sparkline,
// per-operation timelines with their saga, and a saga view. The admin token comes from the
// sign-in field or the URL fragment (#token=...): it is kept in memory, sent only in headers
// and the Socket.IO handshake, never in a URL.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const operations = new Map(); // id -> record
  const changes = []; // arrival times (ms) of live changes, for the sparkline
  let token = null;
  let socket = null;
  let cursor = null;
  let selected = null;

  function api(path) {
    return fetch(path, { headers: { Authorization: "Bearer " + token } }).then((response) => {
      if (!response.ok) {
        return response.json().catch(() => ({})).then((body) => {
          const error = new Error(body.reason || response.statusText);
          error.status = response.status;
          throw error;
        });
      }
      return response.json();
    });
  }

  function signIn(value) {
    token = value;
    $("refused").hidden = true;
    $("status").textContent = "checking token…";
    api("/sagas?limit=200")
      .then((sagas) => {
        $("main").hidden = false;
        renderSagas(sagas.items);
        return api("/operations?limit=200");
      })
      .then((page) => {
        page.items.forEach((record) => operations.set(record.id, record));
        render();
        connect();
      })
      .catch((error) => {
        $("main").hidden = true;
        const refusal = error.status === 403 || error.status === 401;
        $("refused").textContent = refusal
          ? "Refused: this dashboard needs a valid token with the admin role."
          : "Cannot load: " + error.message;
        $("refused").hidden = false;
        $("status").textContent = "signed out";
      });
  }

  function connect() {
    if (socket) socket.disconnect();
    socket = io({ transports: ["websocket"], auth: (send) => send({ token: token, since: cursor }) });
    socket.on("connect", () => { $("status").textContent = "live"; });
    socket.on("disconnect", () => { $("status").textContent = "reconnecting…"; });
    socket.on("connect_error", () => { $("status").textContent = "cannot connect"; });
    socket.on("operations_sync", (sync) => {
      sync.operations.forEach((record) => upsert(record, false));
      if (sync.cursor) cursor = sync.cursor;
      render();
    });
    ["operation_pending", "operation_completed", "operation_rejected"].forEach((name) => {
      socket.on(name, (record) => {
        if (record.cursor) cursor = record.cursor;
        upsert(record, true);
        render();
        if (selected === record.id) openTimeline(record.id);
      });
    });
  }

  function upsert(record, live) {
    const known = operations.get(record.id);
    if (known && known.version >= record.version) return; // never backwards
    operations.set(record.id, record);
    if (live) changes.push(Date.now());
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
    const all = Array.from(operations.values())
      .sort((a, b) => (b.createdAt || "").localeCompare(a.createdAt || ""));
    const counts = { pending: 0, completed: 0, rejected: 0 };
    all.forEach((record) => { counts[record.state] = (counts[record.state] || 0) + 1; });
    Object.keys(counts).forEach((state) => { $("count-" + state).textContent = counts[state]; });
    const shown = all.filter(matches);
    $("shown").textContent = shown.length + " of " + all.length + " shown";
    const body = $("operations");
    body.replaceChildren(...shown.slice(0, 500).map(row));
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

  function cell(content, cls) {
    const td = document.createElement("td");
    if (typeof content === "string") td.textContent = content; else td.append(content);
    if (cls) td.className = cls;
    return td;
  }

  function badge(state) {
    const span = document.createElement("span");
    span.className = "badge " + state;
    span.textContent = state.replace("_", " ");
    return span;
  }

  function openTimeline(id) {
    selected = id;
    $("timeline").hidden = false;
    $("timeline-id").textContent = id;
    render();
    api("/operations/" + encodeURIComponent(id) + "/history").then((history) => {
      $("transitions").replaceChildren(...history.items.map((t) => {
        const li = document.createElement("li");
        li.append(badge(t.state), " ", t.name, " ");
        const meta = document.createElement("div");
        meta.className = "muted mono";
        meta.textContent = t.at + " · " + t.message + " · " + (t.messageId || "no message id") +
          (t.reason ? " · " + (t.code || "") + " " + t.reason : "");
        li.append(meta);
        return li;
      }));
    }).catch(() => $("transitions").replaceChildren());
    api("/operations/" + encodeURIComponent(id) + "/saga").then((saga) => {
      const box = $("saga");
      const title = document.createElement("h2");
      title.append("Saga ", saga.saga, " ", badge(saga.status));
      const steps = document.createElement("ol");
      saga.steps.forEach((step) => {
        const li = document.createElement("li");
        li.textContent = step.message + " · " + new Date(step.at * 1000).toLocaleTimeString();
        if (step.compensated) {
          const span = document.createElement("span");
          span.className = "compensated";
          span.textContent = " · compensated";
          li.append(span);
        }
        if (step.compensationError) {
          const span = document.createElement("span");
          span.className = "error";
          span.textContent = " · compensation failed: " + step.compensationError;
          li.append(span);
        }
        steps.append(li);
      });
      box.replaceChildren(title, steps);
      if (saga.reason) {
        const reason = document.createElement("p");
        reason.textContent = (saga.code || "") + ": " + saga.reason;
        box.append(reason);
      }
    }).catch(() => $("saga").replaceChildren());
  }

  function renderSagas(items) {
    const counts = { pending: 0, completed: 0, rejected: 0, compensation_failed: 0 };
    items.forEach((saga) => { counts[saga.status] += 1; });
    Object.keys(counts).forEach((status) => { $("sagas-" + status).textContent = counts[status]; });
    const wanted = $("saga-status").value;
    $("sagas").replaceChildren(...items.filter((s) => !wanted || s.status === wanted).map((saga) => {
      const tr = document.createElement("tr");
      tr.dataset.status = saga.status;
      tr.append(
        cell(badge(saga.status)), cell(saga.saga), cell(saga.id, "mono"),
        cell(saga.steps.map((s) => s.message + (s.compensated ? "↺" : "")).join(" → ")),
        cell(saga.reason ? (saga.code || "") + " " + saga.reason : ""),
        cell(new Date(saga.updatedAt * 1000).toLocaleTimeString()),
      );
      tr.addEventListener("click", () => openTimeline(saga.id));
      return tr;
    }));
  }

  function refreshSagas() {
    if (!token || $("main").hidden) return;
    api("/sagas?limit=200").then((sagas) => renderSagas(sagas.items)).catch(() => {});
  }

  function drawSparkline() {
    const now = Date.now();
    while (changes.length && changes[0] < now - 60000) changes.shift();
    const buckets = new Array(60).fill(0);
    changes.forEach((t) => { buckets[Math.min(59, Math.floor((now - t) / 1000))] += 1; });
    buckets.reverse();
    const peak = Math.max(1, ...buckets);
    const points = buckets.map((n, i) => (i * 2) + "," + (29 - (n / peak) * 28).toFixed(1));
    document.querySelector("#sparkline polyline").setAttribute("points", points.join(" "));
    $("rate").textContent = (changes.length / 60).toFixed(1);
  }

  ["filter-state", "filter-name", "filter-user", "filter-text"].forEach((id) => {
    $(id).addEventListener("input", render);
  });
  $("saga-status").addEventListener("change", refreshSagas);
  $("close-timeline").addEventListener("click", () => {
    selected = null;
    $("timeline").hidden = true;
    render();
  });
  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value.trim());
  });
  setInterval(drawSparkline, 1000);
  setInterval(refreshSagas, 3000);

  const fragment = new URLSearchParams(window.location.hash.slice(1));
  if (fragment.get("token")) {
    const value = fragment.get("token");
    history.replaceState(null, "", window.location.pathname);
    $("token").value = value;
    signIn(value);
  }
})();
