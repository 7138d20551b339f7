// A user's operations: the list from GET /operations, then every change pushed over Socket.IO.
// The token (typed in, or from the URL fragment #token=...) is sent only in the Authorization header
// and the Socket.IO handshake, never in a URL. The page keeps the last cursor and reconnects with it,
// so that nothing is missed; a row only ever moves to a newer version.
(function () {
  "use strict";
  const MAX_PAGES = 25; // at most 5,000 operations, 200 a page
  const rows = new Map(); // id -> {row, version}
  const table = document.getElementById("operations");
  const body = table.querySelector("tbody");
  const status = document.getElementById("status");
  const empty = document.getElementById("empty");
  let socket = null;
  let token = null;
  let cursor = null;
  let loads = 0; // bumped per sign-in and per reload of the list, so a stale load stops

  // atTop: a live change moves its row to the top; a listed one keeps its place in the list.
  function show(record, atTop) {
    const known = rows.get(record.id);
    if (known && known.version >= record.version) return; // never go backwards
    const row = known ? known.row : document.createElement("tr");
    row.dataset.id = record.id;
    row.dataset.state = record.state;
    row.dataset.version = String(record.version);
    row.replaceChildren(
      badge(record.state), text(record.name || ""), text(record.id, "id"),
      text(String(record.version)), text(new Date(record.updatedAt).toLocaleTimeString()),
      text(record.reason || ""),
    );
    if (atTop) {
      row.classList.remove("flash");
      void row.offsetWidth;
      row.classList.add("flash");
      body.insertBefore(row, body.firstChild);
    } else if (!known) {
      body.appendChild(row);
    }
    rows.set(record.id, { row: row, version: record.version });
    empty.hidden = rows.size > 0;
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
        const query = "limit=200" + (next ? "&cursor=" + encodeURIComponent(next) : "");
        const response = await fetch("/operations?" + query, {
          headers: { Authorization: "Bearer " + token },
          cache: "no-store",
        });
        if (mine !== loads) return;
        if (!response.ok) {
          status.textContent = "cannot list operations (" + response.status + ")";
          return;
        }
        const page = await response.json();
        if (mine !== loads) return;
        page.items.forEach((record) => show(record, false));
        next = page.next;
        pages += 1;
      } while (next && pages < MAX_PAGES);
    } catch (error) {
      if (mine === loads) status.textContent = "cannot list operations: " + error.message;
    } finally {
      if (mine === loads) table.setAttribute("aria-busy", "false");
    }
  }

  function remember(next) {
    if (next) cursor = next;
  }

  function connect(value) {
    if (socket) socket.disconnect();
    token = value;
    cursor = null;
    loads += 1;
    rows.clear();
    body.replaceChildren();
    empty.hidden = false;
    socket = io({ transports: ["websocket"], auth: (send) => send({ token: token, since: cursor }) });
    socket.on("connect", () => {
      status.textContent = "connected";
      // With a cursor the server sends operations_sync; without one, the list is (re)loaded. The
      // request leaves after the server has taken this socket in, so a change either is in the
      // list or arrives live.
      if (!cursor) load();
    });
    socket.on("connect_error", (error) => {
      const code = error && error.data && error.data.code;
      status.textContent = code === "unauthorized" ? "token refused" : "cannot connect: " + error.message;
    });
    socket.on("disconnect", (reason) => { status.textContent = "disconnected (" + reason + ")"; });
    socket.on("disconnected", (info) => { status.textContent = "signed out: " + ((info && info.code) || ""); });
    socket.on("operations_sync", (sync) => {
      sync.operations.forEach((record) => show(record, true));
      remember(sync.cursor);
      if (!sync.recovered) load(); // the cursor was too old: the list is the only full answer
    });
    ["operation_pending", "operation_completed", "operation_rejected"].forEach((name) => {
      socket.on(name, (record) => { show(record, true); remember(record.cursor); });
    });
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
})();
