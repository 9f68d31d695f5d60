// The client: one logical connection that survives drops (URL rotation, backoff, resubscribe
// with `since`, token renewal, drain advice), and the commands of protocol v1.
import { Connection } from "./connection.js";
import {
  AlreadySubscribed, ClientClosed, ConnectionLost, Forbidden, NotConnected, RateLimited,
  RequestTimeout, serverError, Unavailable,
} from "./errors.js";
import { renewAhead } from "./renewal.js";
import { Subscription, toMessage } from "./subscription.js";
import {
  type Backoff, type CallOptions, EVENTS, type EventName, type Frame, type Handler, type History,
  type Listener, type Position, type PresenceEntry, type PublishOptions, type PullyEvents,
  type PullyOptions, type TokenProvider,
} from "./types.js";
import { backoffDelay, deadline, Deferred, newIdempotencyKey, sleep, toWsUrl } from "./util.js";
import {
  canImportWs, findWebSocket, globalWebSocket, NO_WEBSOCKET, type WebSocketConstructor,
} from "./websocket.js";

/**
 * One logical connection that survives drops. `url` may be a list: each attempt takes the next
 * one. Times are milliseconds. See docs/clients.md.
 */
export class Pully {
  readonly urls: string[];
  token: string | TokenProvider | null;
  readonly offline: "wait" | "fail";
  readonly timeout: number;
  readonly connectTimeout: number | null;
  readonly backoff: Backoff;
  clientId: string | null = null;
  node: string | null = null;
  user: string | null = null;
  #WebSocket: WebSocketConstructor | null;
  #listeners = new Map<string, Set<Listener<EventName>>>();
  #subs = new Map<string, Subscription>();
  #conn: Connection | null = null;
  #ready: Deferred<Connection> | null = null;
  #running = false;
  #closed = false;
  #nextUrl = 0;
  #wake: (() => void) | null = null;
  #lastError: unknown = null;

  constructor(url: string | string[] | null = null, options: PullyOptions = {}) {
    const urls = Array.isArray(url) ? url : [url];
    if (!urls.length) throw new TypeError("at least one URL is required");
    this.urls = urls.map(toWsUrl);
    this.token = options.token ?? null;
    this.offline = options.offline ?? "wait";
    if (this.offline !== "wait" && this.offline !== "fail") throw new TypeError(`offline must be "wait" or "fail"`);
    this.timeout = options.timeout ?? 10000;
    this.connectTimeout = options.connectTimeout === undefined ? 10000 : options.connectTimeout;
    this.backoff = { base: 500, cap: 20000, rng: Math.random, ...options.backoff };
    this.#WebSocket = (options.WebSocket as WebSocketConstructor | undefined) ?? globalWebSocket();
    if (!this.#WebSocket && !canImportWs()) throw new TypeError(NO_WEBSOCKET);
  }

  get connected(): boolean { return Boolean(this.#conn && this.#ready?.settled); }
  get closed(): boolean { return this.#closed; }
  /** The subscriptions in force, by channel (server-side ones have `server: true`). */
  get subscriptions(): Map<string, Subscription> { return new Map(this.#subs); }

  /** Call `listener(event)` for each event named `name`; returns a function that removes it. */
  on<K extends EventName>(name: K, listener: Listener<K>): () => void {
    if (!EVENTS.has(name)) throw new TypeError(`unknown event ${name}; one of ${[...EVENTS].join(", ")}`);
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(listener as Listener<EventName>);
    return () => { set.delete(listener as Listener<EventName>); };
  }

  #emit<K extends EventName>(name: K, event: PullyEvents[K]): void {
    for (const listener of [...(this.#listeners.get(name) ?? [])]) {
      try {
        Promise.resolve(listener(event)).catch((error) => console.error(`pully: ${name} listener failed`, error));
      } catch (error) {
        console.error(`pully: ${name} listener failed`, error);
      }
    }
  }

  /** @internal */
  _handlerFailed(error: unknown, channel: string): void { this.#emit("error", { error, channel }); }

  /** Start connecting (and reconnecting); resolves once connected, rejects after connectTimeout. */
  async connect(): Promise<void> {
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
      await Promise.race([this.#ready!.promise, limit.promise]);
    } catch (error) {
      if (!(error instanceof RequestTimeout)) throw error;
      this.close();
      const last = (this.#lastError as Error | null)?.message ?? "none";
      throw new NotConnected(`could not connect to ${this.urls.join(", ")} within ${this.connectTimeout} ms (last error: ${last})`);
    } finally { limit.clear(); }
  }

  /** Close and stop reconnecting; subscriptions end, waiting commands reject with ClientClosed. */
  close(): void {
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
      if (wasConnected) this.#emit("disconnected", { url: conn.url, code: 1000, reason: "client closed", reconnecting: false });
    }
  }

  /** Subscribe; resolves with the Subscription once the node confirmed it. */
  async subscribe(channel: string, handler: Handler | null = null, { timeout }: CallOptions = {}): Promise<Subscription> {
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

  /**
   * Publish `data` (any JSON value); resolves with its offset (null: a function dropped it).
   * The frame carries an idempotency key; after a lost connection or `unavailable` the client
   * sends it again with the same key (within the timeout), so it is published at most once.
   */
  async publish(channel: string, data: unknown, { timeout, idempotencyKey }: PublishOptions = {}): Promise<number | null> {
    const key = idempotencyKey ?? newIdempotencyKey();
    if (typeof key !== "string" || key.length < 1 || key.length > 64) {
      throw new TypeError("idempotencyKey must be a string of 1 to 64 characters");
    }
    const frame = { type: "publish", channel, data: data ?? null, idempotency_key: key };
    const reply = await this.#command(frame, timeout, true);
    return reply.dropped ? null : (reply.offset as number);
  }

  /** [{client, user}] subscribed to presence channel `channel`, on every node. */
  async presence(channel: string, { timeout }: CallOptions = {}): Promise<PresenceEntry[]> {
    return (await this.#command({ type: "presence", channel }, timeout)).clients as PresenceEntry[];
  }

  /** Retained messages, oldest first (the newest `limit`), and the channel's latest position. */
  async history(channel: string, limit: number | null = null, { timeout }: CallOptions = {}): Promise<History> {
    const frame: Frame = { type: "history", channel };
    if (limit != null) frame.limit = limit;
    const reply = await this.#command(frame, timeout);
    const messages = (reply.messages as Frame[]).map((m) => toMessage({ channel, ...m }));
    return { channel, messages, offset: reply.offset as number, epoch: reply.epoch as string };
  }

  async ping({ timeout }: CallOptions = {}): Promise<void> { await this.#command({ type: "ping" }, timeout); }

  /**
   * Replace the connection's token now with `token` (or a new one from the token function); a
   * string given here is also used to reconnect from now on. Done automatically ahead of `exp`
   * when `token` is a function.
   */
  async refresh(token: string | null = null, { timeout }: CallOptions = {}): Promise<void> {
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
  async #command(frame: Frame, timeout: number | undefined, isPublish = false): Promise<Frame> {
    const limit = deadline(timeout ?? this.timeout, frame.type);
    let attempt = 0;
    try {
      for (;;) {
        let conn: Connection | null;
        try {
          conn = this.#current();
        } catch (error) {
          if (attempt > 0 && error instanceof NotConnected && !(error instanceof ClientClosed)) {
            throw new ConnectionLost(`${frame.type}: the connection dropped and offline is "fail"`);
          }
          throw error;
        }
        conn ??= await Promise.race([this.#ready!.promise, limit.promise]);
        try {
          return await Promise.race([conn.command(frame), limit.promise]);
        } catch (error) {
          if (error instanceof Unavailable && isPublish) {
            await Promise.race([sleep(backoffDelay(attempt, this.backoff.base, this.backoff.cap, this.backoff.rng)).done, limit.promise]);
          } else if (error instanceof ConnectionLost) {
            // until the close is handled (a closing socket refuses at once: no busy loop)
            await Promise.race([conn.closed.promise, limit.promise]);
          } else {
            throw error;
          }
          attempt += 1;
        }
      }
    } finally { limit.clear(); }
  }

  #current(): Connection | null {
    if (this.#closed) throw new ClientClosed("the client is closed");
    if (!this.#ready) throw new NotConnected("not connected: call connect() first");
    if (this.#ready.settled) return this.#conn;
    if (this.offline === "fail") throw new NotConnected("not connected right now (offline: fail)");
    return null;
  }

  // -- subscriptions across connections ----------------------------------------------------

  #sendSubscribe(sub: Subscription, conn: Connection): void {
    if (sub._sentOn === conn || !sub.active) return;
    sub._sentOn = conn;
    const since = sub.position;
    const frame: Frame = { type: "subscribe", channel: sub.channel };
    if (since) frame.since = { offset: since.offset, epoch: since.epoch };
    conn.command(frame, (reply) => this.#onSubscribeReply(conn, sub, since, reply)).catch(() => {});
  }

  #onSubscribeReply(conn: Connection, sub: Subscription, since: Position | null, reply: Frame): void {
    if (this.#subs.get(sub.channel) !== sub) {
      if (reply.type === "subscribed") conn.command({ type: "unsubscribe", channel: sub.channel }).catch(() => {});
      return;
    }
    if (reply.type === "error") {
      const error = serverError(reply);
      if (!sub._ready.settled) return this.#dropSub(sub, error); // subscribe() rejects with it
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

  #confirmed(sub: Subscription, since: Position | null, reply: Frame): boolean | null {
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
  #resend(sub: Subscription, conn: Connection): void {
    if (conn.active && this.#subs.get(sub.channel) === sub) {
      sub._sentOn = null;
      this.#sendSubscribe(sub, conn);
    }
  }

  // The node subscribed this connection on its own (`/api/subscribe`, the token's `subscribe`
  // claim), or again after a reconnect since the position we gave in `?recover=`.
  #onServerSubscribed(frame: Frame, conn: Connection): void {
    const channel = frame.channel as string;
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
  #onUnsubscribed(frame: Frame, conn: Connection): void {
    const sub = this.#subs.get(frame.channel as string);
    if (!sub) return;
    const server = frame.server === true;
    if (!server && sub._sentOn !== conn) return;
    if (frame.resubscribe === true) return this.#resend(sub, conn);
    this.#dropSub(sub, null);
    const reason = typeof frame.reason === "string" ? frame.reason : "server";
    this.#emit("unsubscribed", { channel: sub.channel, subscription: sub, reason, server: server || sub.server });
  }

  #dropSub(sub: Subscription, error: unknown): void {
    if (this.#subs.get(sub.channel) === sub) this.#subs.delete(sub.channel);
    sub._end(error);
  }

  /** @internal */
  async _unsubscribe(sub: Subscription, timeout: number | undefined): Promise<void> {
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
    } finally { limit.clear(); }
  }

  // -- the connection loop -----------------------------------------------------------------

  async #run(Impl: WebSocketConstructor): Promise<void> {
    let attempt = 0;
    let sessions = 0;
    while (!this.#closed) {
      const url = this.#peekUrl();
      let error: unknown = null;
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
  #handshakeUrl(url: string, token: string | null): string {
    const full = new URL(url);
    if (token) full.searchParams.set("token", token);
    const recover: Record<string, Position> = {};
    for (const sub of this.#subs.values()) {
      if (sub.server && sub.position) recover[sub.channel] = { offset: sub.position.offset, epoch: sub.position.epoch };
    }
    if (Object.keys(recover).length) full.searchParams.set("recover", JSON.stringify(recover));
    return full.toString();
  }

  async #session(conn: Connection, reconnect: boolean, token: string | null): Promise<void> {
    if (this.#closed) return conn.close();
    this.#conn = conn;
    const { welcome } = conn;
    this.#emit("frame", { direction: "in", frame: welcome });
    this.clientId = welcome.client as string;
    this.node = welcome.node as string;
    this.user = (welcome.user as string | undefined) ?? null;
    // resubscribe everything before any waiting command goes out: the node handles frames in
    // order (server-side subscriptions the node renews itself, from ?recover=)
    conn.onOut = (frame) => this.#emit("frame", { direction: "out", frame });
    for (const sub of [...this.#subs.values()]) if (!sub.server) this.#sendSubscribe(sub, conn);
    this.#ready!.resolve(conn);
    this.#emit("connected", { url: conn.url, client: this.clientId, node: this.node, user: this.user, reconnect });
    conn.attach(
      (frame) => this.#emit("frame", { direction: "in", frame }),
      (frame) => this.#emit("frame", { direction: "out", frame }),
      (frame) => this.#onFrame(frame, conn),
    );
    const provider = this.token;
    const stopRenewing = typeof provider === "function"
      ? renewAhead(conn, token, provider, (error) => this.#emit("error", { error }))
      : () => {};
    const { code, reason } = await conn.closed.promise;
    stopRenewing();
    if (this.#closed) return;
    if (this.#ready!.settled) this.#ready = new Deferred();
    this.#conn = null;
    this.#emit("disconnected", { url: conn.url, code, reason, reconnecting: true });
  }

  #peekUrl(): string { return this.urls[this.#nextUrl % this.urls.length]!; }

  async #tokenValue(): Promise<string | null> {
    return typeof this.token === "function" ? await this.token() : this.token;
  }

  #onFrame(frame: Frame, conn: Connection): void {
    if (frame.type === "message") {
      this.#subs.get(frame.channel as string)?._onMessage(frame);
    } else if (frame.type === "subscribed" && frame.server === true) {
      this.#onServerSubscribed(frame, conn);
    } else if (frame.type === "unsubscribed") {
      this.#onUnsubscribed(frame, conn);
    } else if (frame.type === "join" || frame.type === "leave") {
      this.#emit("presence", {
        kind: frame.type, channel: frame.channel as string, client: frame.client as string,
        user: (frame.user as string | undefined) ?? null,
      });
    }
  }
}
