// The client's logic, shared by the browser entry (operations.js, with the vendored Socket.IO
// client) and the Node entry (node.js, with the socket.io-client package): `clientWith(io)` gives
// the `connect(options)` they export. See docs/clients.md and operations.d.ts.

const TERMINAL = new Set(["completed", "rejected"]);
const PUSHES = ["operation_pending", "operation_completed", "operation_rejected"];
// What the service pushes to admins (the ops room) about sagas, handed on to on(name) as it comes.
const SAGA_EVENTS = ["saga_overdue", "saga_overdue_cleared"];
const RENEW_AHEAD_MS = 30_000; // a token is renewed this long before its exp (half its life if shorter)
const NOT_FOUND_WAIT_MS = 30_000; // how long watch() waits for an operation not recorded yet
const REMEMBERED_IDS = 1000; // the operations whose changes seen are kept for a new watch()
const START_WAITS_FOR_SOCKET_MS = 10_000; // start() is sent once the socket is open, or after this
const REMEMBERED_LISTS = 50; // the list() queries read again after a gap (the live page reads 25)

/** A refusal from the service: its HTTP status and its `{code, reason}`. */
export class OperationsError extends Error {
  constructor(status, code, reason) {
    super(`${status} ${code}: ${reason}`);
    this.name = "OperationsError";
    this.status = status;
    this.code = code;
    this.reason = reason;
  }
}

// One spelling per operation id: a GUID in any format is written as its 32 hex digits.
function idKey(id) {
  const hex = String(id).replace(/[{}()-]/g, "");
  return /^[0-9a-fA-F]{32}$/.test(hex) ? hex.toLowerCase() : String(id);
}

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

function storage() {
  try {
    return globalThis.sessionStorage || null;
  } catch {
    return null; // a sandboxed frame may refuse it
  }
}

// The records of one operation, in rising versions, for one watch() or start().
class Handle {
  constructor(client, id, notFoundWait) {
    this.id = id;
    this.key = idKey(id);
    this._client = client;
    this._notFoundWait = notFoundWait;
    this._records = [];
    this._wake = [];
    this._closed = false;
    this._failure = null;
    this._final = null;
    this._results = [];
    this._iterations = 0;
    this._ended = new Promise((resolve) => (this._end = resolve)); // its end, however it came
  }

  get _version() {
    return this._records.length ? this._records[this._records.length - 1].version : 0;
  }

  _offer(record) {
    if (this._done() || record.version <= this._version) return;
    this._records.push(record);
    if (TERMINAL.has(record.state)) {
      this._final = record;
      this._results.splice(0).forEach(({ resolve }) => resolve(record));
      this._client._forget(this);
      this._end();
    }
    this._wake.splice(0).forEach((wake) => wake());
  }

  _fail(error) {
    if (this._done()) return;
    this._failure = error;
    this._results.splice(0).forEach(({ reject }) => reject(error));
    this._client._forget(this);
    this._end();
    this._wake.splice(0).forEach((wake) => wake());
  }

  _done() {
    return this._closed || this._failure !== null || this._final !== null;
  }

  /** A promise of the terminal record. */
  result() {
    if (this._final) return Promise.resolve(this._final);
    if (this._failure) return Promise.reject(this._failure);
    return new Promise((resolve, reject) => this._results.push({ resolve, reject }));
  }

  /** Stops following: iterations end, and a result() still waiting is rejected. */
  close() {
    if (this._done()) return;
    this._fail(new OperationsError(0, "closed", "the watch was closed"));
    this._closed = true;
  }

  // A loop left early (break, return, a throw) closes the handle, unless another loop over it
  // or a result() still waits for it: nothing is left following an operation nobody reads.
  async *[Symbol.asyncIterator]() {
    this._iterations += 1;
    try {
      let next = 0;
      for (;;) {
        if (next < this._records.length) {
          yield this._records[next++];
          continue;
        }
        if (this._final || this._closed) return;
        if (this._failure) throw this._failure;
        await new Promise((wake) => this._wake.push(wake));
      }
    } finally {
      this._iterations -= 1;
      if (!this._iterations && !this._results.length) this.close();
    }
  }
}

class Client {
  constructor(io, options) {
    const origin = globalThis.location ? globalThis.location.origin : undefined;
    this.url = String(options.url || origin || "").replace(/\/+$/, "");
    if (!this.url) throw new TypeError("connect(): no url, and no page whose origin to use");
    this._io = io;
    this._token = options.token || null;
    this._getToken = options.getToken || null;
    if (!this._token && !this._getToken) throw new TypeError("connect(): give a token or getToken");
    this._renewing = null;
    this._renewTimer = null;
    this._socket = null;
    this._status = "closed";
    this._statusCode = null;
    this._listeners = { change: new Set(), status: new Set() };
    for (const name of SAGA_EVENTS) this._listeners[name] = new Set();
    this._handles = new Map(); // key -> Set of Handle
    this._seen = new Map(); // key -> the records seen of it, rising versions
    this._lists = new Map(); // the list() queries made, to read again after a gap
    this._listed = new Map(); // key -> the version list() gave (no change for a re-read of it)
    this._cursor = null;
    this._opened = null;
    this._closed = false;
    this._pauses = new Set(); // the ends of the pauses under way, which close() cuts short
    this._scheduleRenewal();
  }

  // A pause of `ms`, or until `until` settles: its timer is cleared either way, and close() ends
  // every pause, so a closed client holds no timer (Node exits at once).
  _pause(ms, until) {
    if (this._closed) return Promise.resolve();
    return new Promise((resolve) => {
      const end = () => {
        clearTimeout(timer);
        this._pauses.delete(end);
        resolve();
      };
      const timer = setTimeout(end, ms);
      this._pauses.add(end);
      if (until) until.then(end, end);
    });
  }

  // ------------------------------------------------------------------------ the token

  async _currentToken() {
    if (this._token) return this._token;
    return this._renew();
  }

  // Asks getToken() for a new token (once, however many ask at the same time).
  _renew() {
    if (!this._getToken) {
      return this._token ? Promise.resolve(this._token) : Promise.reject(new OperationsError(401, "unauthorized", "no token"));
    }
    if (!this._renewing) {
      this._renewing = (async () => {
        try {
          const token = await this._getToken();
          if (typeof token !== "string" || !token) throw new OperationsError(401, "unauthorized", "getToken() gave no token");
          this._token = token;
          this._scheduleRenewal();
          return token;
        } finally {
          this._renewing = null;
        }
      })();
    }
    return this._renewing;
  }

  _scheduleRenewal() {
    clearTimeout(this._renewTimer);
    this._renewTimer = null;
    if (!this._getToken || !this._token || this._closed) return;
    const exp = claims(this._token).exp;
    if (typeof exp !== "number") return;
    const left = exp * 1000 - Date.now();
    // at least a second apart, should getToken() keep giving a token about to expire
    const delay = Math.max(1_000, left - Math.min(RENEW_AHEAD_MS, left / 2));
    this._renewTimer = setTimeout(() => {
      this._renewTimer = null;
      this._renew()
        .then(() => this._reconnect())
        .catch(() => this._pause(5_000).then(() => this._scheduleRenewal()));
    }, delay);
  }

  _user() {
    return this._token ? String(claims(this._token).sub || "") : "";
  }

  // ------------------------------------------------------------------------ the cursor

  _cursorKey() {
    return `operations-client:cursor:${this.url}:${this._user()}`;
  }

  _loadCursor() {
    const store = storage();
    if (this._cursor || !store) return;
    try {
      this._cursor = store.getItem(this._cursorKey()) || null;
    } catch {
      // none kept
    }
  }

  _keepCursor(cursor) {
    if (!cursor) return;
    this._cursor = cursor;
    const store = storage();
    try {
      if (store) store.setItem(this._cursorKey(), cursor);
    } catch {
      // the page forbids storage: the cursor lives as long as the page
    }
  }

  // ------------------------------------------------------------------------ HTTP

  async _request(method, path, { body, headers = {} } = {}) {
    for (let attempt = 0; ; attempt += 1) {
      const token = await this._currentToken();
      const response = await fetch(this.url + path, {
        method,
        cache: "no-store",
        headers: {
          Authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.status === 401 && this._getToken && attempt === 0) {
        // Requests refused together share one new token.
        if (this._token === token) {
          this._token = null;
          await this._renew();
        }
        continue;
      }
      const text = await response.text();
      let answer = null;
      try {
        answer = text ? JSON.parse(text) : null;
      } catch {
        answer = null;
      }
      if (!response.ok) {
        const code = (answer && answer.code) || "http_error";
        const reason = (answer && answer.reason) || response.statusText || String(response.status);
        throw new OperationsError(response.status, code, reason);
      }
      return { status: response.status, body: answer };
    }
  }

  /** Any other route of the service, with the token: its JSON answer (null when empty). */
  async request(method, path, body) {
    return (await this._request(method, path, { body })).body;
  }

  async get(id) {
    return (await this._request("GET", `/operations/${encodeURIComponent(id)}`)).body;
  }

  async list(options = {}) {
    const text = this._query(options);
    const page = (await this._request("GET", `/operations${text ? "?" + text : ""}`)).body;
    this._lists.delete(text); // re-inserted last: the oldest queries are forgotten first
    this._lists.set(text, true);
    if (this._lists.size > REMEMBERED_LISTS) this._lists.delete(this._lists.keys().next().value);
    this._noteListed(page);
    return page;
  }

  _noteListed(page) {
    for (const record of (page && page.items) || []) {
      const key = idKey(record.id);
      const version = Math.max(this._listed.get(key) || 0, record.version);
      this._listed.delete(key); // re-inserted last: the oldest ids are forgotten first
      this._listed.set(key, version);
      if (this._listed.size > REMEMBERED_IDS * 5) this._listed.delete(this._listed.keys().next().value);
    }
  }

  _query({ state, name, limit, cursor } = {}) {
    const query = new URLSearchParams();
    if (state) query.set("state", state);
    if (name) query.set("name", name);
    if (limit) query.set("limit", String(limit));
    if (cursor) query.set("cursor", cursor);
    return query.toString();
  }

  async cancel(id, reason) {
    const body = reason === undefined || reason === null ? undefined : { reason };
    return (await this._request("POST", `/operations/${encodeURIComponent(id)}/cancel`, { body })).body;
  }

  async start(sagaName, body, { idempotencyKey, wait } = {}) {
    this._ensureSocket();
    await this._pause(START_WAITS_FOR_SOCKET_MS, this._opened); // then pushes reach it
    if (this._closed) throw new OperationsError(0, "closed", "the client is closed");
    const headers = {};
    if (idempotencyKey !== undefined && idempotencyKey !== null) headers["Idempotency-Key"] = idempotencyKey;
    if (wait) headers.Prefer = `wait=${Math.ceil(wait)}`;
    const answer = await this._request("POST", `/sagas/${encodeURIComponent(sagaName)}`, { body: body || {}, headers });
    const record = answer.status === 200 ? answer.body : null;
    const handle = this._follow(record ? record.id : answer.body.operationId, Infinity);
    if (record) this._apply(record);
    return handle;
  }

  watch(id) {
    return this._follow(id, NOT_FOUND_WAIT_MS);
  }

  _follow(id, notFoundWait) {
    if (this._closed) throw new OperationsError(0, "closed", "the client is closed");
    const handle = new Handle(this, id, notFoundWait);
    if (!this._handles.has(handle.key)) this._handles.set(handle.key, new Set());
    this._handles.get(handle.key).add(handle);
    (this._seen.get(handle.key) || []).forEach((record) => handle._offer(record));
    this._ensureSocket();
    this._opened.then(() => this._read(handle));
    return handle;
  }

  _forget(handle) {
    const handles = this._handles.get(handle.key);
    if (!handles) return;
    handles.delete(handle);
    if (!handles.size) this._handles.delete(handle.key);
  }

  // Reads the operation (after the socket was admitted, so a later change is pushed), waiting
  // through a 404 while its first message is not consumed yet.
  async _read(handle) {
    const until = Date.now() + handle._notFoundWait;
    for (let pause = 200; !handle._done(); pause = Math.min(pause * 2, 2_000)) {
      try {
        this._apply(await this.get(handle.id));
        return;
      } catch (error) {
        if (handle._done()) return;
        const transient = !(error instanceof OperationsError) || error.status >= 500 || error.status === 429;
        if (error instanceof OperationsError && error.status === 404 && Date.now() < until) {
          // not recorded yet
        } else if (!transient) {
          handle._fail(error);
          return;
        }
      }
      await this._pause(pause, handle._ended);
    }
  }

  // After a gap the sync cannot fill: every watched operation and every list read again; a
  // record newer than the one seen (or listed) is a change.
  _refetch() {
    for (const handles of this._handles.values()) {
      const handle = handles.values().next().value;
      if (handle) this._read(handle);
    }
    for (const text of this._lists.keys()) {
      this._request("GET", `/operations${text ? "?" + text : ""}`).then(
        ({ body }) => {
          for (const record of (body && body.items) || []) {
            if (record.version > (this._listed.get(idKey(record.id)) || 0)) this._apply(record);
          }
          this._noteListed(body);
        },
        () => {}, // the next gap reads it again
      );
    }
  }

  // A record read or pushed: a change when it is newer than any seen of its operation.
  _apply(record) {
    if (!record || typeof record.id !== "string" || typeof record.version !== "number") return;
    const key = idKey(record.id);
    const seen = this._seen.get(key) || [];
    if (seen.length && seen[seen.length - 1].version >= record.version) return;
    this._seen.delete(key); // re-inserted last: the oldest ids are forgotten first
    this._seen.set(key, [...seen, record].slice(-50));
    if (this._seen.size > REMEMBERED_IDS) this._seen.delete(this._seen.keys().next().value);
    for (const handle of this._handles.get(key) || []) handle._offer(record);
    this._emit("change", record);
  }

  // ------------------------------------------------------------------------ Socket.IO

  // The status, and why when the service refused the socket (its connect error's code, e.g.
  // "unauthorized" or "too_many_sockets"), so a page can say what to do about it.
  _setStatus(status, code = null) {
    if (this._status === status && this._statusCode === code) return;
    this._status = status;
    this._statusCode = code;
    this._emit("status", status, code);
  }

  _ensureSocket() {
    if (this._socket || this._closed) return;
    let open;
    this._opened = new Promise((resolve) => (open = resolve));
    this._setStatus("connecting");
    const socket = this._io(this.url, {
      path: "/socket.io",
      transports: ["websocket"],
      auth: (send) => {
        this._currentToken().then(
          (token) => {
            this._loadCursor();
            send(this._cursor ? { token, since: this._cursor } : { token });
          },
          () => send({}),
        );
      },
    });
    this._socket = socket;
    let reconnect = false;
    socket.on("connect", () => {
      this._setStatus("open");
      // Without a cursor there is no operations_sync: what is watched or listed is read again.
      if (reconnect && !this._cursor) this._refetch();
      reconnect = true;
      open();
    });
    socket.on("connect_error", (error) => {
      if (this._closed) return;
      const code = (error && error.data && error.data.code) || null;
      this._setStatus("reconnecting", code);
      if (socket.active) return; // a transport error: Socket.IO tries again by itself
      if (code === "unauthorized" && !this._getToken) {
        // No other token to try: what waits on the socket fails, as a request would.
        const refused = new OperationsError(401, "unauthorized", "the token was refused");
        for (const handles of [...this._handles.values()]) [...handles].forEach((handle) => handle._fail(refused));
        this._setStatus("closed", code);
        return;
      }
      // Refused by the service: not retried by Socket.IO, so here, with a new token if refused.
      if (code === "unauthorized") this._token = null;
      const retry = code === "unauthorized" ? this._renew().catch(() => this._pause(5_000)) : this._pause(2_000);
      retry.then(() => this._pause(250)).then(() => {
        if (!this._closed && !socket.connected) socket.connect();
      });
    });
    socket.on("disconnect", (reason) => {
      if (this._closed) return;
      this._setStatus("reconnecting");
      if (reason === "io server disconnect") {
        // put out by the service (its token expired): back with a new one
        const renewed = this._getToken ? this._renew().catch(() => this._pause(5_000)) : this._pause(2_000);
        renewed.then(() => {
          if (!this._closed && !socket.connected) socket.connect();
        });
      }
    });
    socket.on("operations_sync", (sync) => {
      (sync.operations || []).forEach((record) => this._apply(record));
      this._keepCursor(sync.cursor);
      if (!sync.recovered) this._refetch(); // the cursor was too old: read again
    });
    for (const name of PUSHES) {
      socket.on(name, (record) => {
        this._apply(record);
        this._keepCursor(record.cursor);
      });
    }
    for (const name of SAGA_EVENTS) socket.on(name, (event) => this._emit(name, event));
  }

  // A new token for the socket before the service puts it out: it connects again with it and
  // its cursor, so nothing is missed.
  _reconnect() {
    const socket = this._socket;
    if (!socket || this._closed || !socket.connected) return;
    socket.disconnect();
    this._setStatus("reconnecting");
    socket.connect();
  }

  // ------------------------------------------------------------------------ events

  on(event, fn) {
    const listeners = this._listeners[event];
    if (!listeners) {
      const known = Object.keys(this._listeners).join(", ");
      throw new TypeError(`on(): no event ${JSON.stringify(event)} (${known})`);
    }
    listeners.add(fn);
    if (event === "change" || SAGA_EVENTS.includes(event)) this._ensureSocket();
    return () => listeners.delete(fn);
  }

  _emit(event, value, detail) {
    for (const fn of [...this._listeners[event]]) {
      try {
        fn(value, detail);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
  }

  get status() {
    return this._status;
  }

  get cursor() {
    return this._cursor;
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._renewTimer);
    [...this._pauses].forEach((end) => end());
    for (const handles of [...this._handles.values()]) [...handles].forEach((handle) => handle.close());
    if (this._socket) this._socket.disconnect();
    this._status = "closing";
    this._setStatus("closed");
  }
}

/** `connect` for a Socket.IO `io` function: the same client in the browser and in Node. */
export function clientWith(io) {
  return function connect(options = {}) {
    return new Client(io, options);
  };
}
