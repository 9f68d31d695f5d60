// The shapes the application sees: messages, positions, presence, events.
import type { Subscription } from "./subscription.js";
import type { AnyWebSocketClass } from "./websocket.js";

/** Where a subscription is in its channel: the last offset seen, in the epoch it was seen in. */
export interface Position {
  offset: number;
  epoch: string;
}

/** A published message (live, replayed after a reconnect, or from history). */
export interface Message<T = unknown> {
  channel: string;
  data: T;
  offset: number;
  epoch: string;
}

/** One connection subscribed to a presence channel. */
export interface PresenceEntry {
  client: string;
  user: string | null;
}

/** The retained messages of a channel, oldest first, and its latest position. */
export interface History {
  channel: string;
  messages: Message[];
  offset: number;
  epoch: string;
}

/** A frame as it goes over the wire (protocol v1: one JSON object per text frame). */
export interface Frame {
  type: string;
  [field: string]: unknown;
}

/** A JWT, or a function returning one (or a promise of one); null: no token. */
export type TokenProvider = () => string | null | Promise<string | null>;

/** Called with each message of a subscription; an async handler is awaited before the next. */
export type Handler<T = unknown> = (message: Message<T>) => void | Promise<void>;

/** The payload of each event, by name (see `Pully.on`). */
export interface PullyEvents {
  /** A connection is up and every subscription was sent again. */
  connected: { url: string; client: string; node: string; user: string | null; reconnect: boolean };
  /** The connection dropped (`reconnecting: false` once the client stopped for good). */
  disconnected: { url: string; code: number; reason: string; reconnecting: boolean };
  /** The next attempt goes to `url` in `delay` ms; `error` is why the last one failed. */
  reconnecting: { attempt: number; delay: number; url: string; error: unknown };
  /** A failure with no caller to throw it to. */
  error: { error: unknown; channel?: string };
  /** The node could not replay what was missed: messages jumped from `previous` to `position`. */
  recovery_failed: {
    channel: string;
    subscription: Subscription;
    previous: Position | null;
    position: Position | null;
  };
  /** The node subscribed this connection on its own (a server-side subscription). */
  subscribed: { channel: string; subscription: Subscription; server: true; recovered: boolean | null };
  /** The node ended a subscription on its own, for good. */
  unsubscribed: { channel: string; subscription: Subscription; reason: string; server: boolean };
  /** A `join` or `leave` on a presence channel this client subscribes to. */
  presence: { kind: "join" | "leave"; channel: string; client: string; user: string | null };
  /** Every frame in and out, for logs and debugging. */
  frame: { direction: "in" | "out"; frame: Frame };
}

export type EventName = keyof PullyEvents;
export type Listener<K extends EventName> = (event: PullyEvents[K]) => void | Promise<void>;

/** @internal */
export const EVENTS: ReadonlySet<string> = new Set<EventName>([
  "connected", "disconnected", "reconnecting", "error", "recovery_failed", "subscribed",
  "unsubscribed", "presence", "frame",
]);

export interface Backoff {
  /** ms; attempt n waits a random time in [0, min(cap, base * 2^n)] (500) */
  base: number;
  /** ms (20000) */
  cap: number;
  /** random numbers in [0, 1) (Math.random) */
  rng: () => number;
}

export interface PullyOptions {
  /** A JWT, or a function returning one, called before every attempt and ahead of `exp`. */
  token?: string | TokenProvider | null;
  /** While disconnected, commands "wait" for a connection (up to their timeout) or "fail". */
  offline?: "wait" | "fail";
  /** ms a command may take, waiting for a connection included (10000). */
  timeout?: number;
  /** ms connect() keeps trying (10000); null: forever. */
  connectTimeout?: number | null;
  backoff?: Partial<Backoff>;
  /** A WebSocket class, for runtimes with neither a global one nor the `ws` package. */
  WebSocket?: AnyWebSocketClass;
}

export interface CallOptions {
  /** ms; the client's `timeout` by default */
  timeout?: number;
}

export interface PublishOptions extends CallOptions {
  /** 1 to 64 chars; a fresh random key by default. A repeat within the node's idempotency TTL
   * publishes nothing and gets the first publication's ack. */
  idempotencyKey?: string;
}
