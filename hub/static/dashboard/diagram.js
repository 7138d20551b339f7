// The saga diagram: a saga type's path drawn as SVG, with one instance's progress on it. Steps
// run left to right and wrap onto further rows; each is marked done (with the time it took),
// waiting (with the time waited, ticking, against the step's objective when it has one, and
// marked overdue past it), remaining or compensated. Under them runs the branch
// to compensation: the steps that can be undone, in the order they would be, each marked
// compensated, failed or still to undo. The deadline, when there is one, ticks above.
// Plain SVG drawn by hand: no library, nothing loaded.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const NODE_W = 118;
  const NODE_H = 50;
  const GAP_X = 26;
  const GAP_Y = 30;
  const MARGIN = 10;
  const PER_ROW = 4;

  function el(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    Object.entries(attributes || {}).forEach(([key, value]) => node.setAttribute(key, String(value)));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "";
    const s = Math.max(0, value);
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  function short(name, room) {
    return name.length > room ? name.slice(0, room - 1) + "…" : name;
  }

  // A message name on at most two lines, broken at underscores.
  function lines(name) {
    const words = name.split("_");
    let first = "";
    while (words.length && (first + "_" + words[0]).length <= 19) first += (first ? "_" : "") + words.shift();
    if (!first) return [short(name, 19)];
    return words.length ? [first + "_", short(words.join("_"), 19)] : [first];
  }

  // A step box: its name, and under it what this instance did there.
  function box(x, y, cls, message, detail, attributes) {
    const g = el("g", Object.assign({ class: cls, transform: "translate(" + x + "," + y + ")" }, attributes));
    const title = el("title", {}, message + (detail ? " · " + detail : ""));
    g.append(title, el("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
    const name = lines(message);
    name.forEach((part, i) => {
      g.append(el("text", { x: NODE_W / 2, y: (name.length === 1 ? 19 : 14) + i * 12, class: "name" }, part));
    });
    const line = el("text", { x: NODE_W / 2, y: 41, class: "detail" }, detail);
    g.append(line);
    return g;
  }

  function arrow(points, cls) {
    return el("polyline", { points: points.map((p) => p.join(",")).join(" "), class: cls || "edge", "marker-end": "url(#saga-arrow)" });
  }

  function undoStatus(saga, message) {
    const taken = saga.steps.filter((step) => step.message === message);
    if (!taken.length) return "idle";
    if (taken.some((step) => step.compensationError)) return "failed";
    if (taken.every((step) => step.compensated)) return "compensated";
    if (taken.some((step) => step.compensated) || saga.status === "compensating") return "undoing";
    return "idle";
  }

  // saga: GET /operations/{id}/saga; kind: its entry in GET /sagas/types (or undefined).
  function draw(saga, kind) {
    const path = saga.path || uniqueSteps(saga).map((message) => ({ message: message, status: "done" }));
    const times = saga.stepSeconds || {};
    const count = path.length;
    const perRow = Math.min(PER_ROW, Math.max(1, count));
    const rows = Math.ceil((count + 1) / perRow); // + the end node
    const compensable = path.map((p) => p.message)
      .filter((message) => kind && kind.compensations.includes(message)).reverse();
    const width = MARGIN * 2 + perRow * NODE_W + (perRow - 1) * GAP_X;
    const laneY = MARGIN + 22 + rows * (NODE_H + GAP_Y);
    const laneRows = Math.ceil((compensable.length + 1) / perRow);
    const height = laneY + 18 + laneRows * (NODE_H + GAP_Y);
    const svg = el("svg", {
      viewBox: "0 0 " + width + " " + height, width: "100%", class: "saga-diagram",
      "data-testid": "saga-diagram", "data-saga": saga.saga, "data-status": saga.status, role: "img",
      "aria-label": "saga " + saga.saga + ", " + saga.status,
    });
    const defs = el("defs");
    const marker = el("marker", { id: "saga-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.append(el("path", { d: "M0,0 L10,5 L0,10 z" }));
    defs.append(marker);
    svg.append(defs);
    const header = el("text", { x: MARGIN, y: MARGIN + 8, class: "deadline", "data-testid": "saga-deadline" });
    if (saga.deadline && !["completed", "rejected", "compensation_failed"].includes(saga.status)) {
      header.dataset.deadline = String(epochSeconds(saga.deadline));
    } else if (saga.deadline) {
      header.textContent = "deadline was " + new Date(saga.deadline).toLocaleTimeString();
    }
    svg.append(header);

    const at = (i) => {
      const row = Math.floor(i / perRow);
      const col = i % perRow;
      return [MARGIN + col * (NODE_W + GAP_X), MARGIN + 22 + row * (NODE_H + GAP_Y)];
    };
    const endIndex = count;
    const edges = el("g", { class: "edges" });
    svg.append(edges);
    for (let i = 0; i < endIndex; i++) {
      const [x1, y1] = at(i);
      const [x2, y2] = at(i + 1);
      if (y1 === y2) {
        edges.append(arrow([[x1 + NODE_W, y1 + NODE_H / 2], [x2, y2 + NODE_H / 2]]));
      } else { // wraps: down from under this box, back left, into the next row's first box
        const mid = y1 + NODE_H + GAP_Y / 2;
        edges.append(arrow([[x1 + NODE_W / 2, y1 + NODE_H], [x1 + NODE_W / 2, mid], [x2 + NODE_W / 2, mid], [x2 + NODE_W / 2, y2]]));
      }
    }
    const stoppedAt = saga.status === "pending" || saga.status === "completed"
      ? -1 : path.findIndex((p) => p.status === "remaining");
    path.forEach((entry, i) => {
      const [x, y] = at(i);
      let detail = "";
      let cls = "node " + entry.status;
      if (entry.status === "done") detail = "done · " + seconds(times[entry.message]);
      else if (entry.status === "compensated") detail = "↺ compensated";
      else if (i === stoppedAt) { detail = "✗ stopped here"; cls += " stopped"; }
      else if (entry.status === "remaining") detail = stoppedAt >= 0 ? "not reached" : "ahead";
      const attributes = { "data-message": entry.message, "data-status": entry.status, "data-step": i + 1 };
      const waiting = entry.status === "waiting";
      if (waiting && saga.waitingSince) attributes["data-since"] = epochSeconds(saga.waitingSince);
      if (waiting && typeof saga.objectiveSeconds === "number") attributes["data-objective"] = saga.objectiveSeconds;
      if (waiting && saga.overdue) {
        cls += " overdue";
        attributes["data-overdue"] = "yes";
        attributes["data-overdue-since"] = saga.overdueSince || "";
        const since = saga.overdueSince ? " since " + new Date(saga.overdueSince).toLocaleTimeString() : "";
        svg.append(el("text", { x: x + NODE_W / 2, y: y - 4, class: "overdue-label", "data-testid": "overdue-label" }, "overdue" + since));
      }
      svg.append(box(x, y, cls, entry.message, detail || "waiting", attributes));
    });
    const [ex, ey] = at(endIndex);
    const endStatus = saga.status === "completed" ? "done" : "remaining";
    svg.append(box(ex, ey, "node end " + endStatus, "✓ completed", saga.status === "completed" ? "finished" : "", { "data-end": "completed" }));

    // The branch to compensation.
    const rejected = ["compensating", "rejected", "compensation_failed"].includes(saga.status);
    svg.append(el("text", { x: MARGIN, y: laneY + 4, class: "lane" }, "on rejection, undo in this order:"));
    const laneAt = (i) => [MARGIN + (i % perRow) * (NODE_W + GAP_X), laneY + 14 + Math.floor(i / perRow) * (NODE_H + GAP_Y)];
    const branch = el("g", { class: "edges compensation" });
    svg.append(branch);
    const [rx, ry] = laneAt(0);
    const failedAt = path.findIndex((p) => p.status === "remaining" || p.status === "waiting");
    const from = at(failedAt >= 0 ? failedAt : Math.max(0, count - 1));
    branch.append(arrow([[from[0] + 10, from[1] + NODE_H], [from[0] + 10, ry - 8], [rx + NODE_W / 2, ry - 8], [rx + NODE_W / 2, ry]], "edge branch" + (rejected ? " taken" : "")));
    svg.append(box(rx, ry, "rejection " + (rejected ? "taken" : "idle"), "✗ rejected", rejected ? (saga.code || "") : "", { "data-rejected": rejected ? "yes" : "no" }));
    compensable.forEach((message, i) => {
      const [x, y] = laneAt(i + 1);
      const [px, py] = laneAt(i);
      if (py === y) branch.append(arrow([[px + NODE_W, py + NODE_H / 2], [x, y + NODE_H / 2]], "edge branch"));
      else branch.append(arrow([[px + NODE_W / 2, py + NODE_H], [px + NODE_W / 2, py + NODE_H + GAP_Y / 2], [x + NODE_W / 2, py + NODE_H + GAP_Y / 2], [x + NODE_W / 2, y]], "edge branch"));
      const status = undoStatus(saga, message);
      const detail = { compensated: "↺ undone", failed: "✗ undo failed", undoing: "undoing…", idle: "" }[status];
      svg.append(box(x, y, "undo " + status, "undo " + message, detail, { "data-message": message, "data-status": status }));
    });
    tick(svg);
    return svg;
  }

  function uniqueSteps(saga) {
    return Array.from(new Set(saga.steps.map((step) => step.message)));
  }

  // A time of the API (RFC 3339, "2026-12-07T12:00:00.000Z") in seconds since the epoch.
  function epochSeconds(time) {
    return Date.parse(time) / 1000;
  }

  // Moves the clocks: the time the awaited step has waited, the time left to the deadline.
  function tick(root) {
    const now = Date.now() / 1000;
    root.querySelectorAll("[data-since]").forEach((node) => {
      const waited = now - Number(node.dataset.since);
      const objective = node.dataset.objective ? " / " + seconds(Number(node.dataset.objective)) : "";
      node.querySelector(".detail").textContent = "waiting " + seconds(waited) + objective;
      node.dataset.waited = String(Math.floor(waited));
    });
    root.querySelectorAll("[data-deadline]").forEach((node) => {
      const left = Number(node.dataset.deadline) - now;
      node.textContent = "deadline " + new Date(Number(node.dataset.deadline) * 1000).toLocaleTimeString() +
        (left > 0 ? " · " + seconds(left) + " left" : " · passed");
    });
  }

  window.SagaDiagram = { draw: draw, tick: tick, seconds: seconds };
})();
