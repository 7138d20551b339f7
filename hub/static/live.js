// Connects with a token (typed in, or from the URL fragment #token=...), keeps the last cursor,
// and reconnects with it so that nothing is missed. The token never goes into a query string.
(function () {
  "use strict";
  const rows = new Map();
  const body = document.querySelector("#operations tbody");
  const status = document.getElementById("status");
  const empty = document.getElementById("empty");
  let socket = null;
  let cursor = null;

  function show(record) {
    const known = rows.get(record.id);
    if (known && known.version >= record.version) return; // never go backwards
    const row = known ? known.row : document.createElement("tr");
    row.dataset.id = record.id;
    row.innerHTML = "";
    const cells = [
      badge(record.state), text(record.name), text(record.id, "id"), text(String(record.version)),
      text(new Date(record.updatedAt).toLocaleTimeString()), text(record.reason || ""),
    ];
    cells.forEach((cell) => row.appendChild(cell));
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
    body.insertBefore(row, body.firstChild);
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

  function remember(next) {
    if (next) cursor = next;
  }

  function connect(token) {
    if (socket) socket.disconnect();
    socket = io({ transports: ["websocket"], auth: (send) => send({ token: token, since: cursor }) });
    socket.on("connect", () => { status.textContent = "connected"; });
    socket.on("connect_error", (error) => {
      const code = error && error.data && error.data.code;
      status.textContent = code === "unauthorized" ? "token refused" : "cannot connect: " + error.message;
    });
    socket.on("disconnect", (reason) => { status.textContent = "disconnected (" + reason + ")"; });
    socket.on("disconnected", (info) => { status.textContent = "signed out: " + ((info && info.code) || ""); });
    socket.on("operations_sync", (sync) => {
      sync.operations.forEach(show);
      remember(sync.cursor);
      if (!sync.recovered) status.textContent = "connected (missed changes: reload for the full list)";
    });
    ["operation_pending", "operation_completed", "operation_rejected"].forEach((name) => {
      socket.on(name, (record) => { show(record); remember(record.cursor); });
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
