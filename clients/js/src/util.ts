// Small pure helpers: backoff, URLs, token expiry, promises with a deadline, idempotency keys.
import { RequestTimeout } from "./errors.js";

// a token provider's token is renewed when 20 % of its remaining life is left (1 s to 60 s ahead)
const RENEW_AHEAD = { fraction: 0.2, minMs: 1000, maxMs: 60000 };

/** The `exp` claim of a JWT in ms since the epoch (unverified: the node verifies), or null. */
export function tokenExpiry(token: string | null | undefined): number | null {
  try {
    const part = (token as string).split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/");
    const claims: unknown = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    const exp = (claims as { exp?: unknown } | null)?.exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** Milliseconds from `now` until a token expiring at `expires` should be renewed. */
export function renewDelay(expires: number, now: number): number {
  const left = expires - now;
  const ahead = Math.min(RENEW_AHEAD.maxMs, Math.max(RENEW_AHEAD.minMs, left * RENEW_AHEAD.fraction));
  return Math.max(0, left - ahead);
}

/** The largest delay of reconnect attempt `attempt`: min(cap, base * 2^attempt). */
export function backoffCeiling(attempt: number, base = 500, cap = 20000): number {
  return Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 62));
}

/** Full jitter: a delay uniformly drawn from [0, backoffCeiling(attempt)]. */
export function backoffDelay(attempt: number, base = 500, cap = 20000, rng: () => number = Math.random): number {
  return rng() * backoffCeiling(attempt, base, cap);
}

/** `url` as ws(s)://.../ws: http(s) becomes ws(s), relative URLs resolve against the page. */
export function toWsUrl(url?: string | null): string {
  const location = (globalThis as { location?: { href: string } }).location;
  const u = new URL(url ?? "/ws", location ? location.href : undefined);
  u.protocol = ({ "http:": "ws:", "https:": "wss:" } as Record<string, string>)[u.protocol] ?? u.protocol;
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`not a WebSocket URL: ${url}`);
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  return u.toString();
}

/** A fresh idempotency key: 22 random URL-safe characters, 132 bits (the node takes 1 to 64). */
export function newIdempotencyKey(): string {
  const bytes = new Uint8Array(22);
  const crypto = (globalThis as { crypto?: { getRandomValues?(a: Uint8Array): Uint8Array } }).crypto;
  if (crypto?.getRandomValues) {
    crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  return Array.from(bytes, (b) => alphabet[b & 63]).join("");
}

/** A promise with its resolve/reject at hand; settles once, later calls are ignored. */
export class Deferred<T> {
  readonly promise: Promise<T>;
  settled = false;
  #resolve!: (value: T) => void;
  #reject!: (error: unknown) => void;

  constructor() {
    this.promise = new Promise<T>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.promise.catch(() => {}); // a rejection nobody awaits is not an error
  }

  resolve(value: T): void {
    if (this.settled) return;
    this.settled = true;
    this.#resolve(value);
  }

  reject(error: unknown): void {
    if (this.settled) return;
    this.settled = true;
    this.#reject(error);
  }
}

/** A promise that rejects with RequestTimeout after `ms` (never, with null); `clear()` it. */
export interface Deadline {
  promise: Promise<never>;
  clear(): void;
}

export function deadline(ms: number | null, what: string): Deadline {
  const d = new Deferred<never>();
  const timer = ms == null ? null : setTimeout(() => d.reject(new RequestTimeout(`${what}: no reply within ${ms} ms`)), ms);
  return { promise: d.promise, clear: () => { if (timer !== null) clearTimeout(timer); } };
}

/** Resolve after `ms`, or when the returned `wake()` is called. */
export function sleep(ms: number): { done: Promise<void>; wake(): void } {
  let wake = (): void => {};
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => { clearTimeout(timer); resolve(); };
  });
  return { done, wake };
}
