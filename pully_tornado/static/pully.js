// Pully browser client: protocol v1 over a native WebSocket, with reconnect, resubscribe and
// recovery. A dependency-free ES module served by every node at GET /pully.js:
//
//   import { Pully } from "/pully.js";
//   const p = new Pully();                       // ws(s)://<this page's host>/ws
//   await p.connect();
//   const sub = await p.subscribe("chat", (m) => console.log(m.offset, m.data));
//   const offset = await p.publish("chat", { text: "hi" });
//
// Same API and semantics as the Python client (pully_tornado.client); times are milliseconds.
// See docs/clients.md.

const EVENTS = new Set([
  "connected", "disconnected", "reconnecting", "error", "recovery_failed", "unsubscribed",
  "presence", "frame",
]);
const DRAIN_GRACE_MS = 5000; // the node has this long to close after advising a reconnect
// a token provider's token is renewed when 20 % of its remaining life is left (1 s to 60 s ahead)
const RENEW_AHEAD = { fraction: 0.2, minMs: 1000, maxMs: 60000 };

/** The `exp` claim of a JWT in ms since the epoch (unverified: the node verifies), or null. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims?.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** Milliseconds from `now` until a token expiring at `expires` should be renewed. */
export function renewDelay(expires, now) {
  const left = expires - now;
  const ahead = Math.min(RENEW_AHEAD.maxMs, Math.max(RENEW_AHEAD.minMs, left * RENEW_AHEAD.fraction));
  return Math.max(0, left - ahead);
}

// -- errors ------------------------------------------------------------------------------------

/** Base of every error the client throws. */
export class PullyError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** The node answered a command with an `error` frame; `code` is the wire error code. */
export class ServerError extends PullyError {
  constructor(message, code) {
    super(message);
    this.code = code ?? new.target.code ?? "internal";
  }
}
export class BadRequest extends ServerError { static code = "bad_request"; }
export class UnknownType extends ServerError { static code = "unknown_type"; }
export class InvalidChannel extends ServerError { static code = "invalid_channel"; }
export class TooLarge extends ServerError { static code = "too_large"; }
export class Forbidden extends ServerError { static code = "forbidden"; }
export class RateLimited extends ServerError { static code = "rate_limited"; }
export class FunctionFailed extends ServerError { static code = "function_failed"; }
export class Unavailable extends ServerError { static code = "unavailable"; }
export class Internal extends ServerError { static code = "internal"; }

export const SERVER_ERRORS = Object.fromEntries(
  [BadRequest, UnknownType, InvalidChannel, TooLarge, Forbidden, RateLimited, FunctionFailed,
    Unavailable, Internal].map((cls) => [cls.code, cls]),
);

/** No connection and `offline: "fail"`, or the client is not connected yet. */
export class NotConnected extends PullyError {}
/** The client was closed. */
export class ClientClosed extends NotConnected {}
/** The connection dropped after the command was sent: a publish may or may not have happened. */
export class ConnectionLost extends PullyError {}
/** No reply (or no connection, in "wait" mode) within the timeout. */
export class RequestTimeout extends PullyError {}
/** subscribe() on a channel this client is already subscribed to. */
export class AlreadySubscribed extends PullyError {}

/** A `message` frame (or a history entry) as the application sees it. */
function toMessage(frame) {
  return { channel: frame.channel, data: frame.data, offset: frame.offset, epoch: frame.epoch };
}

function serverError(frame) {
  const cls = SERVER_ERRORS[frame.code];
  return cls ? new cls(frame.message ?? frame.code) : new ServerError(frame.message, frame.code);
}

// -- helpers -----------------------------------------------------------------------------------

/** The largest delay of reconnect attempt `attempt`: min(cap, base * 2^attempt). */
export function backoffCeiling(attempt, base = 500, cap = 20000) {
  return Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 62));
}

/** Full jitter: a delay uniformly drawn from [0, backoffCeiling(attempt)]. */
export function backoffDelay(attempt, base = 500, cap = 20000, rng = Math.random) {
  return rng() * backoffCeiling(attempt, base, cap);
}

/** `url` as ws(s)://.../ws: http(s) becomes ws(s), relative URLs resolve against the page. */
export function toWsUrl(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  const u = new URL(url ?? "/ws", base);
  u.protocol = { "http:": "ws:", "https:": "wss:" }[u.protocol] ?? u.protocol;
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`not a WebSocket URL: ${url}`);
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  return u.toString();
}

function deferred() {
  const d = {};
  d.promise = new Promise((resolve, reject) => Object.assign(d, { resolve, reject }));
  d.promise.catch(() => {}); // a rejection nobody awaits is not an error
  d.settle = (value, error) => {
    if (d.settled) return;
    d.settled = true;
    error ? d.reject(error) : d.resolve(value);
  };
  return d;
}

function deadline(ms, what) {
  const d = deferred();
  d.timer = ms == null ? null : setTimeout(() => d.settle(null, new RequestTimeout(`${what}: no reply within ${ms} ms`)), ms);
  d.clear = () => clearTimeout(d.timer);
  return d;
}

// -- one WebSocket session ---------------------------------------------------------------------

class Connection {
  /** Open `fullUrl`, resolve once `welcome` arrived; reject on close or after `timeoutMs`. */
  static open(fullUrl, url, timeoutMs, WebSocketImpl) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocketImpl(fullUrl);
      let conn = null;
      const fail = (error) => { clearTimeout(timer); reject(error); };
      const timer = setTimeout(() => { fail(new RequestTimeout(`no welcome from ${url}`)); ws.close(); }, timeoutMs);
      ws.onmessage = (event) => {
        if (conn) return conn.handleMessage(event.data);
        let frame = null;
        try { frame = JSON.parse(event.data); } catch { /* checked below */ }
        if (!frame || frame.type !== "welcome") {
          fail(new PullyError(`expected a welcome frame from ${url}`));
          return ws.close();
        }
        clearTimeout(timer);
        conn = new Connection(ws, url, frame);
        resolve(conn);
      };
      ws.onclose = (event) => {
        if (conn) return conn.handleClose(event);
        fail(new ConnectionLost(`could not connect to ${url} (close ${event.code})`));
      };
      ws.onerror = () => {}; // a close event follows with the details browsers allow
    });
  }

  constructor(ws, url, welcome) {
    Object.assign(this, { ws, url, welcome, active: true, reconnectAdvised: false });
    this.pending = new Map(); // id -> [deferred, onReply]
    this.nextId = 0;
    this.closed = deferred(); // resolves with {code, reason}
    this.onFrame = this.onIn = this.onOut = null;
  }

  send(frame) {
    if (!this.active || this.ws.readyState !== 1) throw new ConnectionLost(`connection to ${this.url} closed`);
    this.onOut?.(frame);
    this.ws.send(JSON.stringify(frame));
  }

  /** Send `frame` with a fresh id; resolve with its reply (`onReply` sees it synchronously). */
  command(frame, onReply = null) {
    JSON.stringify(frame); // throws before anything is registered
    const id = ++this.nextId;
    const reply = deferred();
    this.pending.set(id, [reply, onReply]);
    try {
      this.send({ ...frame, id });
    } catch (error) {
      this.pending.delete(id);
      reply.settle(null, error);
    }
    return reply.promise;
  }

  handleMessage(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (!frame || typeof frame !== "object") return;
    this.onIn?.(frame);
    const entry = frame.type !== "message" ? this.pending.get(frame.id) : undefined;
    if (entry) {
      this.pending.delete(frame.id);
      entry[1]?.(frame);
      entry[0].settle(frame, frame.type === "error" ? serverError(frame) : null);
      return;
    }
    if (frame.type === "reconnect" && !this.reconnectAdvised) {
      this.reconnectAdvised = true;
      this.graceTimer = setTimeout(() => this.ws.close(1000, "going away after reconnect advice"), DRAIN_GRACE_MS);
    }
    this.onFrame?.(frame);
  }

  handleClose(event) {
    this.active = false;
    clearTimeout(this.graceTimer);
    for (const [reply] of this.pending.values()) {
      reply.settle(null, new ConnectionLost(`connection to ${this.url} lost before the reply`));
    }
    this.pending.clear();
    this.closed.settle({ code: event.code, reason: event.reason || (this.reconnectAdvised ? "draining" : "") });
  }

  close() {
    if (this.ws.readyState <= 1) this.ws.close(1000, "client closed");
  }
}

// -- subscriptions -----------------------------------------------------------------------------

/**
 * Messages of one channel, in offset order, each exactly once, across reconnects. With a
 * handler every message goes to it (an async handler is awaited before the next one); without
 * one, iterate: `for await (const m of sub)`. `position` ({offset, epoch}) is the last one
 * seen; after a reconnect the client resubscribes with `since` = position.
 */
export class Subscription {
  #client; #handler; #queue = []; #waiters = []; #ended = false; #error = null;
  #chain = Promise.resolve();

  constructor(client, channel, handler) {
    this.channel = channel;
    this.position = null;
    this.#client = client;
    this.#handler = handler ?? null;
    this._ready = deferred();
    this._sentOn = null;
    this._retries = 0;
  }

  get offset() { return this.position?.offset ?? null; }
  get epoch() { return this.position?.epoch ?? null; }
  get active() { return !this.#ended; }

  /** Stop receiving the channel; no message is delivered after the promise resolves. */
  unsubscribe({ timeout } = {}) { return this.#client._unsubscribe(this, timeout); }

  [Symbol.asyncIterator]() { return this; }

  /** Async-iterator protocol: the next message, or done once the subscription ended. */
  next() { return this.#next().promise; }

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
      waiting.cancel(); // a message arriving later stays queued for the next reader
    }
  }

  #next() {
    const cancel = () => {};
    if (this.#handler) return { promise: Promise.reject(new TypeError(`subscription to ${this.channel} has a handler`)), cancel };
    if (this.#queue.length) return { promise: Promise.resolve({ value: this.#queue.shift(), done: false }), cancel };
    if (this.#ended) {
      const end = this.#error ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true });
      return { promise: end, cancel };
    }
    let waiter;
    const promise = new Promise((resolve, reject) => { waiter = [resolve, reject]; this.#waiters.push(waiter); });
    return { promise, cancel: () => { const i = this.#waiters.indexOf(waiter); if (i >= 0) this.#waiters.splice(i, 1); } };
  }

  _onSubscribed(reply) {
    this.position = { offset: reply.offset, epoch: reply.epoch };
    return reply.recovered ?? null;
  }

  _onMessage(frame) {
    if (this.#ended) return;
    const last = this.position;
    if (last && frame.epoch === last.epoch && frame.offset <= last.offset) return; // duplicate
    this.position = { offset: frame.offset, epoch: frame.epoch };
    const message = toMessage(frame);
    if (this.#handler) {
      this.#chain = this.#chain
        .then(() => (this.#ended ? undefined : this.#handler(message)))
        .catch((error) => this.#client._emit("error", { error, channel: this.channel }));
    } else if (this.#waiters.length) {
      this.#waiters.shift()[0]({ value: message, done: false });
    } else {
      this.#queue.push(message);
    }
  }

  _end(error = null) {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#queue = [];
    for (const [resolve, reject] of this.#waiters.splice(0)) {
      error ? reject(error) : resolve({ value: undefined, done: true });
    }
    this._ready.settle(null, error ?? new ClientClosed(`subscription to ${this.channel} ended`));
  }
}

// -- the client --------------------------------------------------------------------------------

/**
 * One logical connection that survives drops. Options: `token` (string, or a function returning
 * one or a promise of one, called before every attempt, sent as ?token=, and called again to
 * renew the token in place ahead of its `exp`), `offline` ("wait" |
 * "fail"), `timeout` (ms per command, 10000), `connectTimeout` (ms for connect(), 10000; null:
 * forever), `backoff` ({base: 500, cap: 20000, rng}), `WebSocket` (an implementation, for
 * runtimes without a global one). `url` may be a list: each attempt takes the next one.
 */
export class Pully {
  #listeners = new Map(); #subs = new Map(); #conn = null; #ready = null; #running = false;
  #closed = false; #nextUrl = 0; #sleep = null; #lastError = null;

  constructor(url = null, options = {}) {
    const urls = Array.isArray(url) ? url : [url];
    if (!urls.length) throw new TypeError("at least one URL is required");
    this.urls = urls.map(toWsUrl);
    this.token = options.token ?? null;
    this.offline = options.offline ?? "wait";
    if (this.offline !== "wait" && this.offline !== "fail") throw new TypeError(`offline must be "wait" or "fail"`);
    this.timeout = options.timeout ?? 10000;
    this.connectTimeout = options.connectTimeout === undefined ? 10000 : options.connectTimeout;
    this.backoff = { base: 500, cap: 20000, rng: Math.random, ...options.backoff };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: this runtime has no global WebSocket " +
        "(Node 20: run node --experimental-websocket, or use Node 22+); or pass one: " +
        "new Pully(url, { WebSocket }) with WebSocket from the 'ws' package");
    }
    this.clientId = this.node = this.user = null;
  }

  get connected() { return Boolean(this.#conn && this.#ready?.settled); }
  get closed() { return this.#closed; }
  get subscriptions() { return new Map(this.#subs); }

  /** Call `listener(event)` for each event named `name`; returns a function that removes it. */
  on(name, listener) {
    if (!EVENTS.has(name)) throw new TypeError(`unknown event ${name}; one of ${[...EVENTS].join(", ")}`);
    if (!this.#listeners.has(name)) this.#listeners.set(name, new Set());
    this.#listeners.get(name).add(listener);
    return () => this.#listeners.get(name).delete(listener);
  }

  _emit(name, event) {
    for (const listener of [...(this.#listeners.get(name) ?? [])]) {
      try {
        Promise.resolve(listener(event)).catch((error) => console.error(`pully: ${name} listener failed`, error));
      } catch (error) {
        console.error(`pully: ${name} listener failed`, error);
      }
    }
  }

  /** Start connecting (and reconnecting); resolves once connected, rejects after connectTimeout. */
  async connect() {
    if (this.#closed) throw new ClientClosed("the client is closed");
    if (!this.#running) {
      this.#running = true;
      this.#ready = deferred();
      this.#run();
    }
    const limit = deadline(this.connectTimeout, "connect");
    try {
      await Promise.race([this.#ready.promise, limit.promise]);
    } catch (error) {
      if (!(error instanceof RequestTimeout)) throw error;
      this.close();
      throw new NotConnected(`could not connect to ${this.urls.join(", ")} within ${this.connectTimeout} ms (last error: ${this.#lastError?.message ?? "none"})`);
    } finally { limit.clear(); }
  }

  /** Close and stop reconnecting; subscriptions end, waiting commands reject with ClientClosed. */
  close() {
    if (this.#closed) return;
    const wasConnected = this.connected;
    this.#closed = true;
    for (const sub of this.#subs.values()) sub._end();
    this.#subs.clear();
    this.#ready?.settle(null, new ClientClosed("the client is closed"));
    this.#sleep?.();
    const conn = this.#conn;
    this.#conn = null;
    if (conn) {
      conn.close();
      if (wasConnected) this._emit("disconnected", { url: conn.url, code: 1000, reason: "client closed", reconnecting: false });
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
    } finally { limit.clear(); }
  }

  /** Publish `data` (any JSON value); resolves with its offset (null: a function dropped it). */
  async publish(channel, data, { timeout } = {}) {
    const reply = await this.#command({ type: "publish", channel, data: data ?? null }, timeout, false);
    return reply.dropped ? null : reply.offset;
  }

  /** [{client, user}] subscribed to presence channel `channel`, on every node. */
  async presence(channel, { timeout } = {}) {
    return (await this.#command({ type: "presence", channel }, timeout)).clients;
  }

  /** {channel, messages, offset, epoch}: retained messages, oldest first (the newest `limit`). */
  async history(channel, limit = null, { timeout } = {}) {
    const frame = { type: "history", channel };
    if (limit != null) frame.limit = limit;
    const reply = await this.#command(frame, timeout);
    return { channel, messages: reply.messages.map(toMessage), offset: reply.offset, epoch: reply.epoch };
  }

  async ping({ timeout } = {}) { await this.#command({ type: "ping" }, timeout); }

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

  async #command(frame, timeout, retry = true) {
    const limit = deadline(timeout ?? this.timeout, frame.type);
    try {
      for (;;) {
        const conn = this.#current() ?? (await Promise.race([this.#ready.promise, limit.promise]));
        try {
          return await Promise.race([conn.command(frame), limit.promise]);
        } catch (error) {
          if (!(error instanceof ConnectionLost) || !retry) throw error;
        }
      }
    } finally { limit.clear(); }
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
    conn.command(frame, (reply) => this.#onSubscribeReply(conn, sub, since, reply)).catch(() => {});
  }

  #onSubscribeReply(conn, sub, since, reply) {
    if (this.#subs.get(sub.channel) !== sub) {
      if (reply.type === "subscribed") conn.command({ type: "unsubscribe", channel: sub.channel }).catch(() => {});
      return;
    }
    if (reply.type === "error") {
      const error = serverError(reply);
      if (!sub._ready.settled) return this.#dropSub(sub, error); // subscribe() rejects with it
      this._emit("error", { error, channel: sub.channel });
      if (error instanceof Unavailable || error instanceof RateLimited) {
        setTimeout(() => this.#resend(sub, conn),
          backoffDelay(sub._retries++, this.backoff.base, this.backoff.cap, this.backoff.rng));
      } else {
        this.#dropSub(sub, error);
      }
      return;
    }
    const recovered = sub._onSubscribed(reply);
    sub._retries = 0;
    sub._ready.settle(null);
    if (recovered === false) {
      this._emit("recovery_failed", { channel: sub.channel, subscription: sub, previous: since, position: sub.position });
    }
  }

  // Send `sub` again on `conn`, since its position, unless it was given up meanwhile or `conn`
  // dropped (the next connection sends it then).
  #resend(sub, conn) {
    if (conn.active && this.#subs.get(sub.channel) === sub) {
      sub._sentOn = null;
      this.#sendSubscribe(sub, conn);
    }
  }

  // The node ended a subscription on its own. With `resubscribe: true` (insufficient_state: it
  // cannot vouch that every message reached us) subscribe again at once, since our position:
  // the reply tells the truth (recovered, or recovery_failed). Otherwise the subscription ends
  // and the `unsubscribed` event gives the reason (forbidden: a refreshed token dropped it).
  #onUnsubscribed(frame, conn) {
    const sub = this.#subs.get(frame.channel);
    if (!sub || sub._sentOn !== conn) return;
    if (frame.resubscribe === true) return this.#resend(sub, conn);
    this.#dropSub(sub, null);
    this._emit("unsubscribed", { channel: sub.channel, subscription: sub, reason: frame.reason ?? "server" });
  }

  #dropSub(sub, error) {
    if (this.#subs.get(sub.channel) === sub) this.#subs.delete(sub.channel);
    sub._end(error);
  }

  async _unsubscribe(sub, timeout) {
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
    } finally { limit.clear(); }
  }

  // -- the connection loop -----------------------------------------------------------------

  async #run() {
    let attempt = 0;
    let sessions = 0;
    while (!this.#closed) {
      const url = this.#peekUrl();
      let error = null;
      try {
        const token = await this.#tokenValue();
        const full = new URL(url);
        if (token) full.searchParams.set("token", token);
        const conn = await Connection.open(full.toString(), url, this.timeout, this.WebSocket);
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
      this._emit("reconnecting", { attempt, delay, url: this.#peekUrl(), error });
      attempt += 1;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#sleep = () => { clearTimeout(timer); resolve(); };
      });
      this.#sleep = null;
    }
  }

  async #session(conn, reconnect, token) {
    if (this.#closed) return conn.close();
    this.#conn = conn;
    conn.onIn = (frame) => this._emit("frame", { direction: "in", frame });
    conn.onOut = (frame) => this._emit("frame", { direction: "out", frame });
    conn.onFrame = (frame) => this.#onFrame(frame, conn);
    const { welcome } = conn;
    this._emit("frame", { direction: "in", frame: welcome });
    Object.assign(this, { clientId: welcome.client, node: welcome.node, user: welcome.user ?? null });
    // resubscribe everything before any waiting command goes out: the node handles frames in order
    for (const sub of [...this.#subs.values()]) this.#sendSubscribe(sub, conn);
    this.#ready.settle(conn);
    this._emit("connected", { url: conn.url, client: this.clientId, node: this.node, user: this.user, reconnect });
    const renewal = { timer: null };
    if (typeof this.token === "function") this.#renewToken(conn, token, renewal);
    const { code, reason } = await conn.closed.promise;
    clearTimeout(renewal.timer);
    if (this.#closed) return;
    if (this.#ready.settled) this.#ready = deferred();
    this.#conn = null;
    this._emit("disconnected", { url: conn.url, code, reason, reconnecting: true });
  }

  // Renew the connection's token ahead of each `exp`. On failure (the function throws, the node
  // refuses the token, or it does not expire later) an `error` event, and no more renewals: the
  // node closes the connection at `exp` (4001) and reconnecting asks the function again.
  #renewToken(conn, token, renewal) {
    const expires = tokenExpiry(token);
    if (expires == null) return;
    renewal.timer = setTimeout(async () => {
      if (!conn.active) return;
      try {
        const next = await this.token();
        const nextExpires = tokenExpiry(next);
        if (nextExpires != null && nextExpires <= expires) {
          throw new PullyError("the token function returned a token that does not expire later than the current one: not renewed");
        }
        await conn.command({ type: "refresh", token: next });
        this.#renewToken(conn, next, renewal);
      } catch (error) {
        if (!(error instanceof ConnectionLost) && conn.active) this._emit("error", { error });
      }
    }, renewDelay(expires, Date.now()));
  }

  #peekUrl() { return this.urls[this.#nextUrl % this.urls.length]; }

  async #tokenValue() { return typeof this.token === "function" ? await this.token() : this.token; }

  #onFrame(frame, conn) {
    if (frame.type === "message") {
      this.#subs.get(frame.channel)?._onMessage(frame);
    } else if (frame.type === "unsubscribed") {
      this.#onUnsubscribed(frame, conn);
    } else if (frame.type === "join" || frame.type === "leave") {
      this._emit("presence", { kind: frame.type, channel: frame.channel, client: frame.client, user: frame.user ?? null });
    }
  }
}

export default Pully;
