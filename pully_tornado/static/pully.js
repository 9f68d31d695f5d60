// Pully browser client 0.1.0: protocol v1 over a WebSocket, with reconnect, resubscribe and
// recovery. Served by every node at GET /pully.js:
//
//   import { Pully } from "/pully.js";
//   const p = new Pully();                       // ws(s)://<this page's host>/ws
//   await p.connect();
//   const sub = await p.subscribe("chat", (m) => console.log(m.offset, m.data));
//   const offset = await p.publish("chat", { text: "hi" });
//
// GENERATED from clients/js/src (the pully-client npm package) by clients/js/build.mjs: edit the
// sources there and run `npm run build -- --write` in clients/js. See docs/clients.md.

// src/errors.ts
var PullyError = class extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
};
var ServerError = class extends PullyError {
  /** The wire code of the subclass (undefined on ServerError itself). */
  static code;
  code;
  constructor(message, code) {
    super(message);
    this.code = code ?? new.target.code ?? "internal";
  }
};
var BadRequest = class extends ServerError {
  static code = "bad_request";
};
var UnknownType = class extends ServerError {
  static code = "unknown_type";
};
var InvalidChannel = class extends ServerError {
  static code = "invalid_channel";
};
var TooLarge = class extends ServerError {
  static code = "too_large";
};
var Forbidden = class extends ServerError {
  static code = "forbidden";
};
var RateLimited = class extends ServerError {
  static code = "rate_limited";
};
var FunctionFailed = class extends ServerError {
  static code = "function_failed";
};
var Unavailable = class extends ServerError {
  static code = "unavailable";
};
var Internal = class extends ServerError {
  static code = "internal";
};
var SERVER_ERRORS = Object.fromEntries(
  [
    BadRequest,
    UnknownType,
    InvalidChannel,
    TooLarge,
    Forbidden,
    RateLimited,
    FunctionFailed,
    Unavailable,
    Internal
  ].map((cls) => [cls.code, cls])
);
var NotConnected = class extends PullyError {
};
var ClientClosed = class extends NotConnected {
};
var ConnectionLost = class extends PullyError {
};
var RequestTimeout = class extends PullyError {
};
var AlreadySubscribed = class extends PullyError {
};
function serverError(frame) {
  const code = typeof frame.code === "string" ? frame.code : "internal";
  const message = typeof frame.message === "string" ? frame.message : code;
  const cls = SERVER_ERRORS[code];
  return cls ? new cls(message) : new ServerError(message, code);
}

// src/util.ts
var RENEW_AHEAD = { fraction: 0.2, minMs: 1e3, maxMs: 6e4 };
function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - part.length % 4) % 4)));
    const exp = claims?.exp;
    return typeof exp === "number" ? exp * 1e3 : null;
  } catch {
    return null;
  }
}
function renewDelay(expires, now) {
  const left = expires - now;
  const ahead = Math.min(RENEW_AHEAD.maxMs, Math.max(RENEW_AHEAD.minMs, left * RENEW_AHEAD.fraction));
  return Math.max(0, left - ahead);
}
function backoffCeiling(attempt, base = 500, cap = 2e4) {
  return Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 62));
}
function backoffDelay(attempt, base = 500, cap = 2e4, rng = Math.random) {
  return rng() * backoffCeiling(attempt, base, cap);
}
function toWsUrl(url) {
  const location = globalThis.location;
  const u = new URL(url ?? "/ws", location ? location.href : void 0);
  u.protocol = { "http:": "ws:", "https:": "wss:" }[u.protocol] ?? u.protocol;
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`not a WebSocket URL: ${url}`);
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  return u.toString();
}
function newIdempotencyKey() {
  const bytes = new Uint8Array(22);
  const crypto = globalThis.crypto;
  if (crypto?.getRandomValues) {
    crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  return Array.from(bytes, (b) => alphabet[b & 63]).join("");
}
var Deferred = class {
  promise;
  settled = false;
  #resolve;
  #reject;
  constructor() {
    this.promise = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.promise.catch(() => {
    });
  }
  resolve(value) {
    if (this.settled) return;
    this.settled = true;
    this.#resolve(value);
  }
  reject(error) {
    if (this.settled) return;
    this.settled = true;
    this.#reject(error);
  }
};
function deadline(ms, what) {
  const d = new Deferred();
  const timer = ms == null ? null : setTimeout(() => d.reject(new RequestTimeout(`${what}: no reply within ${ms} ms`)), ms);
  return { promise: d.promise, clear: () => {
    if (timer !== null) clearTimeout(timer);
  } };
}
function sleep(ms) {
  let wake = () => {
  };
  const done = new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { done, wake };
}

// src/connection.ts
var DRAIN_GRACE_MS = 5e3;
var Connection = class _Connection {
  ws;
  url;
  welcome;
  active = true;
  reconnectAdvised = false;
  /** Resolves with the close code and reason once the socket closed. */
  closed = new Deferred();
  onFrame = null;
  onIn = null;
  onOut = null;
  #pending = /* @__PURE__ */ new Map();
  #nextId = 0;
  #graceTimer;
  // Frames after the welcome, until attach(): `ws` (Node) emits every message of one TCP read
  // at once, before the client's await of open() resumes: the first ones must wait, not vanish.
  #early = [];
  /** Open `fullUrl`, resolve once `welcome` arrived; reject on close or after `timeoutMs`. */
  static open(fullUrl, url, timeoutMs, Impl) {
    return new Promise((resolve, reject) => {
      const ws = new Impl(fullUrl);
      let conn = null;
      const fail = (error) => {
        clearTimeout(timer);
        reject(error);
      };
      const timer = setTimeout(() => {
        fail(new RequestTimeout(`no welcome from ${url}`));
        ws.close();
      }, timeoutMs);
      ws.onmessage = (event) => {
        if (conn) return conn.handleMessage(event.data);
        const frame = parse(event.data);
        if (!frame || frame.type !== "welcome") {
          fail(new PullyError(`expected a welcome frame from ${url}`));
          return ws.close();
        }
        clearTimeout(timer);
        conn = new _Connection(ws, url, frame);
        resolve(conn);
      };
      ws.onclose = (event) => {
        if (conn) return conn.handleClose(event);
        fail(new ConnectionLost(`could not connect to ${url} (close ${event.code})`));
      };
      ws.onerror = () => {
      };
    });
  }
  constructor(ws, url, welcome) {
    this.ws = ws;
    this.url = url;
    this.welcome = welcome;
  }
  /** Route frames from now on (the ones that arrived since the welcome first). */
  attach(onIn, onOut, onFrame) {
    Object.assign(this, { onIn, onOut, onFrame });
    const early = this.#early ?? [];
    this.#early = null;
    for (const data of early) this.handleMessage(data);
  }
  send(frame) {
    if (!this.active || this.ws.readyState !== 1) throw new ConnectionLost(`connection to ${this.url} closed`);
    this.onOut?.(frame);
    this.ws.send(JSON.stringify(frame));
  }
  /** Send `frame` with a fresh id; resolve with its reply (`onReply` sees it synchronously). */
  command(frame, onReply = null) {
    JSON.stringify(frame);
    const id = ++this.#nextId;
    const reply = new Deferred();
    this.#pending.set(id, [reply, onReply]);
    try {
      this.send({ ...frame, id });
    } catch (error) {
      this.#pending.delete(id);
      reply.reject(error);
    }
    return reply.promise;
  }
  handleMessage(data) {
    if (this.#early) {
      this.#early.push(data);
      return;
    }
    const frame = parse(data);
    if (!frame) return;
    this.onIn?.(frame);
    const entry = frame.type !== "message" && typeof frame.id === "number" ? this.#pending.get(frame.id) : void 0;
    if (entry) {
      this.#pending.delete(frame.id);
      entry[1]?.(frame);
      if (frame.type === "error") entry[0].reject(serverError(frame));
      else entry[0].resolve(frame);
      return;
    }
    if (frame.type === "reconnect" && !this.reconnectAdvised) {
      this.reconnectAdvised = true;
      this.#graceTimer = setTimeout(() => this.ws.close(1e3, "going away after reconnect advice"), DRAIN_GRACE_MS);
    }
    this.onFrame?.(frame);
  }
  handleClose(event) {
    this.active = false;
    clearTimeout(this.#graceTimer);
    for (const [reply] of this.#pending.values()) {
      reply.reject(new ConnectionLost(`connection to ${this.url} lost before the reply`));
    }
    this.#pending.clear();
    this.closed.resolve({ code: event.code, reason: event.reason || (this.reconnectAdvised ? "draining" : "") });
  }
  close() {
    if (this.ws.readyState <= 1) this.ws.close(1e3, "client closed");
  }
};
function parse(data) {
  if (typeof data !== "string") return null;
  try {
    const frame = JSON.parse(data);
    return frame && typeof frame === "object" && !Array.isArray(frame) ? frame : null;
  } catch {
    return null;
  }
}

// src/renewal.ts
function renewAhead(conn, token, provider, onError) {
  let timer;
  const schedule = (current) => {
    const expires = tokenExpiry(current);
    if (expires == null) return;
    timer = setTimeout(async () => {
      if (!conn.active) return;
      try {
        const next = await provider();
        const nextExpires = tokenExpiry(next);
        if (nextExpires != null && nextExpires <= expires) {
          throw new PullyError("the token function returned a token that does not expire later than the current one: not renewed");
        }
        await conn.command({ type: "refresh", token: next });
        schedule(next);
      } catch (error) {
        if (!(error instanceof ConnectionLost) && conn.active) onError(error);
      }
    }, renewDelay(expires, Date.now()));
  };
  schedule(token);
  return () => clearTimeout(timer);
}

// src/subscription.ts
function toMessage(frame) {
  return {
    channel: frame.channel,
    data: frame.data,
    offset: frame.offset,
    epoch: frame.epoch
  };
}
var Subscription = class {
  channel;
  position = null;
  server = false;
  #owner;
  #handler;
  #queue = [];
  #waiters = [];
  #ended = false;
  #error = null;
  #chain = Promise.resolve();
  /** @internal */
  _ready = new Deferred();
  /** @internal */
  _sentOn = null;
  /** @internal */
  _retries = 0;
  /** @internal */
  constructor(owner, channel, handler) {
    this.channel = channel;
    this.#owner = owner;
    this.#handler = handler;
  }
  get offset() {
    return this.position?.offset ?? null;
  }
  get epoch() {
    return this.position?.epoch ?? null;
  }
  get active() {
    return !this.#ended;
  }
  /** Stop receiving the channel; no message is delivered after the promise resolves. */
  unsubscribe({ timeout } = {}) {
    return this.#owner._unsubscribe(this, timeout);
  }
  /**
   * From now on give every message to `handler` (the ones waiting first). For server-side
   * subscriptions, which have none at first: call it in the `subscribed` event's listener.
   */
  handle(handler) {
    if (this.#handler) throw new TypeError(`subscription to ${this.channel} has a handler already`);
    this.#handler = handler;
    for (const message of this.#queue.splice(0)) this.#deliver(message);
  }
  [Symbol.asyncIterator]() {
    return this;
  }
  /** Async-iterator protocol: the next message, or done once the subscription ended. */
  next() {
    return this.#next().promise;
  }
  /** The next message, waiting up to `timeout` ms (RequestTimeout after that). */
  async get(timeout = null) {
    const waiting = this.#next();
    const limit = deadline(timeout, `message on ${this.channel}`);
    try {
      const item = await Promise.race([waiting.promise, limit.promise]);
      if (item.done) throw new ClientClosed(`subscription to ${this.channel} ended`);
      return item.value;
    } finally {
      limit.clear();
      waiting.cancel();
    }
  }
  #next() {
    const cancel = () => {
    };
    if (this.#handler) {
      return { promise: Promise.reject(new TypeError(`subscription to ${this.channel} has a handler`)), cancel };
    }
    const queued = this.#queue.shift();
    if (queued) return { promise: Promise.resolve({ value: queued, done: false }), cancel };
    if (this.#ended) {
      const end = this.#error ? Promise.reject(this.#error) : Promise.resolve({ value: void 0, done: true });
      return { promise: end, cancel };
    }
    let waiter;
    const promise = new Promise((resolve, reject) => {
      waiter = [resolve, reject];
      this.#waiters.push(waiter);
    });
    return {
      promise,
      cancel: () => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
      }
    };
  }
  /** The node confirmed the subscription at `reply`'s position; returns its `recovered`. @internal */
  _onSubscribed(reply) {
    const offset = reply.offset;
    const epoch = reply.epoch;
    const last = this.position;
    if (!last || last.epoch !== epoch || last.offset < offset) this.position = { offset, epoch };
    return typeof reply.recovered === "boolean" ? reply.recovered : null;
  }
  /** @internal */
  _onMessage(frame) {
    if (this.#ended) return;
    const offset = frame.offset;
    const epoch = frame.epoch;
    const last = this.position;
    if (last && epoch === last.epoch && offset <= last.offset) return;
    this.position = { offset, epoch };
    this.#deliver(toMessage(frame));
  }
  #deliver(message) {
    const handler = this.#handler;
    if (handler) {
      this.#chain = this.#chain.then(() => this.#ended ? void 0 : handler(message)).catch((error) => this.#owner._handlerFailed(error, this.channel));
    } else if (this.#waiters.length) {
      this.#waiters.shift()[0]({ value: message, done: false });
    } else {
      this.#queue.push(message);
    }
  }
  /** @internal */
  _end(error = null) {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#queue = [];
    for (const [resolve, reject] of this.#waiters.splice(0)) {
      if (error) reject(error);
      else resolve({ value: void 0, done: true });
    }
    this._ready.reject(error ?? new ClientClosed(`subscription to ${this.channel} ended`));
  }
};

// src/types.ts
var EVENTS = /* @__PURE__ */ new Set([
  "connected",
  "disconnected",
  "reconnecting",
  "error",
  "recovery_failed",
  "subscribed",
  "unsubscribed",
  "presence",
  "frame"
]);

// src/websocket.ts
var NO_WEBSOCKET = "no WebSocket implementation: this runtime has no global WebSocket and the 'ws' package could not be imported (npm install ws; Node 22+ needs neither); or pass one: new Pully(url, { WebSocket })";
function globalWebSocket() {
  const impl = globalThis.WebSocket;
  return typeof impl === "function" ? impl : null;
}
function canImportWs() {
  const process = globalThis.process;
  return typeof process?.versions?.node === "string";
}
async function findWebSocket() {
  const found = globalWebSocket();
  if (found) return found;
  const name = "ws";
  let mod;
  try {
    mod = await import(
      /* webpackIgnore: true */
      /* @vite-ignore */
      name
    );
  } catch (error) {
    throw new TypeError(`${NO_WEBSOCKET} (${error?.message ?? error})`);
  }
  const impl = typeof mod.WebSocket === "function" ? mod.WebSocket : mod.default;
  if (typeof impl !== "function") throw new TypeError(`${NO_WEBSOCKET} ('ws' exports no WebSocket class)`);
  return impl;
}

// src/client.ts
var Pully = class {
  urls;
  token;
  offline;
  timeout;
  connectTimeout;
  backoff;
  clientId = null;
  node = null;
  user = null;
  #WebSocket;
  #listeners = /* @__PURE__ */ new Map();
  #subs = /* @__PURE__ */ new Map();
  #conn = null;
  #ready = null;
  #running = false;
  #closed = false;
  #nextUrl = 0;
  #wake = null;
  #lastError = null;
  constructor(url = null, options = {}) {
    const urls = Array.isArray(url) ? url : [url];
    if (!urls.length) throw new TypeError("at least one URL is required");
    this.urls = urls.map(toWsUrl);
    this.token = options.token ?? null;
    this.offline = options.offline ?? "wait";
    if (this.offline !== "wait" && this.offline !== "fail") throw new TypeError(`offline must be "wait" or "fail"`);
    this.timeout = options.timeout ?? 1e4;
    this.connectTimeout = options.connectTimeout === void 0 ? 1e4 : options.connectTimeout;
    this.backoff = { base: 500, cap: 2e4, rng: Math.random, ...options.backoff };
    this.#WebSocket = options.WebSocket ?? globalWebSocket();
    if (!this.#WebSocket && !canImportWs()) throw new TypeError(NO_WEBSOCKET);
  }
  get connected() {
    return Boolean(this.#conn && this.#ready?.settled);
  }
  get closed() {
    return this.#closed;
  }
  /** The subscriptions in force, by channel (server-side ones have `server: true`). */
  get subscriptions() {
    return new Map(this.#subs);
  }
  /** Call `listener(event)` for each event named `name`; returns a function that removes it. */
  on(name, listener) {
    if (!EVENTS.has(name)) throw new TypeError(`unknown event ${name}; one of ${[...EVENTS].join(", ")}`);
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, set = /* @__PURE__ */ new Set());
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }
  #emit(name, event) {
    for (const listener of [...this.#listeners.get(name) ?? []]) {
      try {
        Promise.resolve(listener(event)).catch((error) => console.error(`pully: ${name} listener failed`, error));
      } catch (error) {
        console.error(`pully: ${name} listener failed`, error);
      }
    }
  }
  /** @internal */
  _handlerFailed(error, channel) {
    this.#emit("error", { error, channel });
  }
  /** Start connecting (and reconnecting); resolves once connected, rejects after connectTimeout. */
  async connect() {
    if (this.#closed) throw new ClientClosed("the client is closed");
    if (!this.#WebSocket) {
      try {
        this.#WebSocket = await findWebSocket();
      } catch (error) {
        this.close();
        throw error;
      }
    }
    if (!this.#running) {
      this.#running = true;
      this.#ready = new Deferred();
      void this.#run(this.#WebSocket);
    }
    const limit = deadline(this.connectTimeout, "connect");
    try {
      await Promise.race([this.#ready.promise, limit.promise]);
    } catch (error) {
      if (!(error instanceof RequestTimeout)) throw error;
      this.close();
      const last = this.#lastError?.message ?? "none";
      throw new NotConnected(`could not connect to ${this.urls.join(", ")} within ${this.connectTimeout} ms (last error: ${last})`);
    } finally {
      limit.clear();
    }
  }
  /** Close and stop reconnecting; subscriptions end, waiting commands reject with ClientClosed. */
  close() {
    if (this.#closed) return;
    const wasConnected = this.connected;
    this.#closed = true;
    for (const sub of this.#subs.values()) sub._end();
    this.#subs.clear();
    this.#ready?.reject(new ClientClosed("the client is closed"));
    this.#wake?.();
    const conn = this.#conn;
    this.#conn = null;
    if (conn) {
      conn.close();
      if (wasConnected) this.#emit("disconnected", { url: conn.url, code: 1e3, reason: "client closed", reconnecting: false });
    }
  }
  /** Subscribe; resolves with the Subscription once the node confirmed it. */
  async subscribe(channel, handler = null, { timeout } = {}) {
    if (this.#subs.has(channel)) throw new AlreadySubscribed(`already subscribed to ${channel}`);
    const conn = this.#current();
    const sub = new Subscription(this, channel, handler);
    this.#subs.set(channel, sub);
    const limit = deadline(timeout ?? this.timeout, `subscribe to ${channel}`);
    try {
      if (conn) this.#sendSubscribe(sub, conn);
      await Promise.race([sub._ready.promise, limit.promise]);
      return sub;
    } catch (error) {
      this.#dropSub(sub, error);
      throw error;
    } finally {
      limit.clear();
    }
  }
  /**
   * Publish `data` (any JSON value); resolves with its offset (null: a function dropped it).
   * The frame carries an idempotency key; after a lost connection or `unavailable` the client
   * sends it again with the same key (within the timeout), so it is published at most once.
   */
  async publish(channel, data, { timeout, idempotencyKey } = {}) {
    const key = idempotencyKey ?? newIdempotencyKey();
    if (typeof key !== "string" || key.length < 1 || key.length > 64) {
      throw new TypeError("idempotencyKey must be a string of 1 to 64 characters");
    }
    const frame = { type: "publish", channel, data: data ?? null, idempotency_key: key };
    const reply = await this.#command(frame, timeout, true);
    return reply.dropped ? null : reply.offset;
  }
  /** [{client, user}] subscribed to presence channel `channel`, on every node. */
  async presence(channel, { timeout } = {}) {
    return (await this.#command({ type: "presence", channel }, timeout)).clients;
  }
  /** Retained messages, oldest first (the newest `limit`), and the channel's latest position. */
  async history(channel, limit = null, { timeout } = {}) {
    const frame = { type: "history", channel };
    if (limit != null) frame.limit = limit;
    const reply = await this.#command(frame, timeout);
    const messages = reply.messages.map((m) => toMessage({ channel, ...m }));
    return { channel, messages, offset: reply.offset, epoch: reply.epoch };
  }
  async ping({ timeout } = {}) {
    await this.#command({ type: "ping" }, timeout);
  }
  /**
   * Replace the connection's token now with `token` (or a new one from the token function); a
   * string given here is also used to reconnect from now on. Done automatically ahead of `exp`
   * when `token` is a function.
   */
  async refresh(token = null, { timeout } = {}) {
    if (token == null) {
      token = await this.#tokenValue();
      if (token == null) throw new TypeError("refresh() needs a token: this client has none");
    } else if (typeof this.token !== "function") {
      this.token = token;
    }
    await this.#command({ type: "refresh", token }, timeout);
  }
  // Send `frame` and wait for its reply, on this connection or the next ones, within the
  // timeout: a command lost with its connection is sent again (publish: with the same key),
  // and a publish refused with `unavailable` is retried with backoff.
  async #command(frame, timeout, isPublish = false) {
    const limit = deadline(timeout ?? this.timeout, frame.type);
    let attempt = 0;
    try {
      for (; ; ) {
        let conn;
        try {
          conn = this.#current();
        } catch (error) {
          if (attempt > 0 && error instanceof NotConnected && !(error instanceof ClientClosed)) {
            throw new ConnectionLost(`${frame.type}: the connection dropped and offline is "fail"`);
          }
          throw error;
        }
        conn ??= await Promise.race([this.#ready.promise, limit.promise]);
        try {
          return await Promise.race([conn.command(frame), limit.promise]);
        } catch (error) {
          if (error instanceof Unavailable && isPublish) {
            await Promise.race([sleep(backoffDelay(attempt, this.backoff.base, this.backoff.cap, this.backoff.rng)).done, limit.promise]);
          } else if (error instanceof ConnectionLost) {
            await Promise.race([conn.closed.promise, limit.promise]);
          } else {
            throw error;
          }
          attempt += 1;
        }
      }
    } finally {
      limit.clear();
    }
  }
  #current() {
    if (this.#closed) throw new ClientClosed("the client is closed");
    if (!this.#ready) throw new NotConnected("not connected: call connect() first");
    if (this.#ready.settled) return this.#conn;
    if (this.offline === "fail") throw new NotConnected("not connected right now (offline: fail)");
    return null;
  }
  // -- subscriptions across connections ----------------------------------------------------
  #sendSubscribe(sub, conn) {
    if (sub._sentOn === conn || !sub.active) return;
    sub._sentOn = conn;
    const since = sub.position;
    const frame = { type: "subscribe", channel: sub.channel };
    if (since) frame.since = { offset: since.offset, epoch: since.epoch };
    conn.command(frame, (reply) => this.#onSubscribeReply(conn, sub, since, reply)).catch(() => {
    });
  }
  #onSubscribeReply(conn, sub, since, reply) {
    if (this.#subs.get(sub.channel) !== sub) {
      if (reply.type === "subscribed") conn.command({ type: "unsubscribe", channel: sub.channel }).catch(() => {
      });
      return;
    }
    if (reply.type === "error") {
      const error = serverError(reply);
      if (!sub._ready.settled) return this.#dropSub(sub, error);
      this.#emit("error", { error, channel: sub.channel });
      if (error instanceof Unavailable || error instanceof RateLimited) {
        const delay = backoffDelay(sub._retries++, this.backoff.base, this.backoff.cap, this.backoff.rng);
        setTimeout(() => this.#resend(sub, conn), delay);
      } else {
        this.#dropSub(sub, error);
      }
      return;
    }
    this.#confirmed(sub, since, reply);
  }
  #confirmed(sub, since, reply) {
    const recovered = sub._onSubscribed(reply);
    sub._retries = 0;
    sub._ready.resolve();
    if (recovered === false) {
      this.#emit("recovery_failed", { channel: sub.channel, subscription: sub, previous: since, position: sub.position });
    }
    return recovered;
  }
  // Send `sub` again on `conn`, since its position, unless it was given up meanwhile or `conn`
  // dropped (the next connection sends it then).
  #resend(sub, conn) {
    if (conn.active && this.#subs.get(sub.channel) === sub) {
      sub._sentOn = null;
      this.#sendSubscribe(sub, conn);
    }
  }
  // The node subscribed this connection on its own (`/api/subscribe`, the token's `subscribe`
  // claim), or again after a reconnect since the position we gave in `?recover=`.
  #onServerSubscribed(frame, conn) {
    const channel = frame.channel;
    let sub = this.#subs.get(channel);
    const fresh = !sub;
    if (!sub) {
      sub = new Subscription(this, channel, null);
      this.#subs.set(channel, sub);
    }
    sub.server = true;
    sub._sentOn = conn;
    const previous = fresh ? null : sub.position;
    if (fresh) {
      const recovered = sub._onSubscribed(frame);
      sub._ready.resolve();
      this.#emit("subscribed", { channel, subscription: sub, server: true, recovered });
    } else {
      this.#confirmed(sub, previous, frame);
    }
  }
  // The node ended a subscription on its own. With `resubscribe: true` (insufficient_state: it
  // cannot vouch that every message reached us) subscribe again at once, since our position:
  // the reply tells the truth (recovered, or recovery_failed). Otherwise the subscription ends
  // and the `unsubscribed` event gives the reason (forbidden: a refreshed token dropped it;
  // server: `/api/unsubscribe`; not_renewed: a server-side subscription that ended with its
  // connection).
  #onUnsubscribed(frame, conn) {
    const sub = this.#subs.get(frame.channel);
    if (!sub) return;
    const server = frame.server === true;
    if (!server && sub._sentOn !== conn) return;
    if (frame.resubscribe === true) return this.#resend(sub, conn);
    this.#dropSub(sub, null);
    const reason = typeof frame.reason === "string" ? frame.reason : "server";
    this.#emit("unsubscribed", { channel: sub.channel, subscription: sub, reason, server: server || sub.server });
  }
  #dropSub(sub, error) {
    if (this.#subs.get(sub.channel) === sub) this.#subs.delete(sub.channel);
    sub._end(error);
  }
  /** @internal */
  async _unsubscribe(sub, timeout) {
    if (sub.server && sub.active) {
      throw new Forbidden(`${sub.channel} is a server-side subscription: only the server ends it`);
    }
    const registered = this.#subs.get(sub.channel) === sub;
    if (registered) this.#subs.delete(sub.channel);
    sub._end();
    const conn = this.#conn;
    if (!registered || !conn || sub._sentOn !== conn || !conn.active) return;
    const limit = deadline(timeout ?? this.timeout, `unsubscribe from ${sub.channel}`);
    try {
      await Promise.race([conn.command({ type: "unsubscribe", channel: sub.channel }), limit.promise]);
    } catch (error) {
      if (!(error instanceof ConnectionLost)) throw error;
    } finally {
      limit.clear();
    }
  }
  // -- the connection loop -----------------------------------------------------------------
  async #run(Impl) {
    let attempt = 0;
    let sessions = 0;
    while (!this.#closed) {
      const url = this.#peekUrl();
      let error = null;
      try {
        const token = await this.#tokenValue();
        const conn = await Connection.open(this.#handshakeUrl(url, token), url, this.timeout, Impl);
        attempt = 0;
        await this.#session(conn, sessions++ > 0, token);
        if (this.#closed) return;
      } catch (e) {
        error = e;
      }
      if (this.#closed) return;
      this.#lastError = error;
      this.#nextUrl += 1;
      const delay = backoffDelay(attempt, this.backoff.base, this.backoff.cap, this.backoff.rng);
      this.#emit("reconnecting", { attempt, delay, url: this.#peekUrl(), error });
      attempt += 1;
      const pause = sleep(delay);
      this.#wake = pause.wake;
      await pause.done;
      this.#wake = null;
    }
  }
  // `url` with ?token= and, for the server-side subscriptions held, ?recover= their positions
  #handshakeUrl(url, token) {
    const full = new URL(url);
    if (token) full.searchParams.set("token", token);
    const recover = {};
    for (const sub of this.#subs.values()) {
      if (sub.server && sub.position) recover[sub.channel] = { offset: sub.position.offset, epoch: sub.position.epoch };
    }
    if (Object.keys(recover).length) full.searchParams.set("recover", JSON.stringify(recover));
    return full.toString();
  }
  async #session(conn, reconnect, token) {
    if (this.#closed) return conn.close();
    this.#conn = conn;
    const { welcome } = conn;
    this.#emit("frame", { direction: "in", frame: welcome });
    this.clientId = welcome.client;
    this.node = welcome.node;
    this.user = welcome.user ?? null;
    conn.onOut = (frame) => this.#emit("frame", { direction: "out", frame });
    for (const sub of [...this.#subs.values()]) if (!sub.server) this.#sendSubscribe(sub, conn);
    this.#ready.resolve(conn);
    this.#emit("connected", { url: conn.url, client: this.clientId, node: this.node, user: this.user, reconnect });
    conn.attach(
      (frame) => this.#emit("frame", { direction: "in", frame }),
      (frame) => this.#emit("frame", { direction: "out", frame }),
      (frame) => this.#onFrame(frame, conn)
    );
    const provider = this.token;
    const stopRenewing = typeof provider === "function" ? renewAhead(conn, token, provider, (error) => this.#emit("error", { error })) : () => {
    };
    const { code, reason } = await conn.closed.promise;
    stopRenewing();
    if (this.#closed) return;
    if (this.#ready.settled) this.#ready = new Deferred();
    this.#conn = null;
    this.#emit("disconnected", { url: conn.url, code, reason, reconnecting: true });
  }
  #peekUrl() {
    return this.urls[this.#nextUrl % this.urls.length];
  }
  async #tokenValue() {
    return typeof this.token === "function" ? await this.token() : this.token;
  }
  #onFrame(frame, conn) {
    if (frame.type === "message") {
      this.#subs.get(frame.channel)?._onMessage(frame);
    } else if (frame.type === "subscribed" && frame.server === true) {
      this.#onServerSubscribed(frame, conn);
    } else if (frame.type === "unsubscribed") {
      this.#onUnsubscribed(frame, conn);
    } else if (frame.type === "join" || frame.type === "leave") {
      this.#emit("presence", {
        kind: frame.type,
        channel: frame.channel,
        client: frame.client,
        user: frame.user ?? null
      });
    }
  }
};

// src/index.ts
var index_default = Pully;
export {
  AlreadySubscribed,
  BadRequest,
  ClientClosed,
  ConnectionLost,
  Forbidden,
  FunctionFailed,
  Internal,
  InvalidChannel,
  NotConnected,
  Pully,
  PullyError,
  RateLimited,
  RequestTimeout,
  SERVER_ERRORS,
  ServerError,
  Subscription,
  TooLarge,
  Unavailable,
  UnknownType,
  backoffCeiling,
  backoffDelay,
  index_default as default,
  newIdempotencyKey,
  renewDelay,
  toWsUrl,
  tokenExpiry
};
