// One channel's messages, in offset order, each exactly once, across reconnects.
import { ClientClosed } from "./errors.js";
import type { Frame, Handler, Message, Position } from "./types.js";
import { deadline, Deferred } from "./util.js";

/** What a Subscription needs of its client. @internal */
export interface SubscriptionOwner {
  _unsubscribe(sub: Subscription, timeout: number | undefined): Promise<void>;
  _handlerFailed(error: unknown, channel: string): void;
}

/** A `message` frame (or a history entry) as the application sees it. @internal */
export function toMessage(frame: Frame): Message {
  return {
    channel: frame.channel as string,
    data: frame.data,
    offset: frame.offset as number,
    epoch: frame.epoch as string,
  };
}

type Waiter = [(item: IteratorResult<Message, undefined>) => void, (error: unknown) => void];

/**
 * Messages of one channel, in offset order, each exactly once, across reconnects. With a
 * handler every message goes to it (an async handler is awaited before the next one); without
 * one, iterate: `for await (const m of sub)`, or `await sub.get(timeoutMs)`. `position`
 * ({offset, epoch}) is the last one seen; after a reconnect the client resubscribes with
 * `since` = position. `server` is true for a server-side subscription (the node subscribed
 * this connection on its own: only the server ends it).
 */
export class Subscription implements AsyncIterableIterator<Message> {
  readonly channel: string;
  position: Position | null = null;
  server = false;
  #owner: SubscriptionOwner;
  #handler: Handler | null;
  #queue: Message[] = [];
  #waiters: Waiter[] = [];
  #ended = false;
  #error: unknown = null;
  #chain: Promise<void> = Promise.resolve();
  /** @internal */ _ready = new Deferred<void>();
  /** @internal */ _sentOn: object | null = null;
  /** @internal */ _retries = 0;

  /** @internal */
  constructor(owner: SubscriptionOwner, channel: string, handler: Handler | null) {
    this.channel = channel;
    this.#owner = owner;
    this.#handler = handler;
  }

  get offset(): number | null { return this.position?.offset ?? null; }
  get epoch(): string | null { return this.position?.epoch ?? null; }
  get active(): boolean { return !this.#ended; }

  /** Stop receiving the channel; no message is delivered after the promise resolves. */
  unsubscribe({ timeout }: { timeout?: number } = {}): Promise<void> {
    return this.#owner._unsubscribe(this, timeout);
  }

  /**
   * From now on give every message to `handler` (the ones waiting first). For server-side
   * subscriptions, which have none at first: call it in the `subscribed` event's listener.
   */
  handle(handler: Handler): void {
    if (this.#handler) throw new TypeError(`subscription to ${this.channel} has a handler already`);
    this.#handler = handler;
    for (const message of this.#queue.splice(0)) this.#deliver(message);
  }

  [Symbol.asyncIterator](): this { return this; }

  /** Async-iterator protocol: the next message, or done once the subscription ended. */
  next(): Promise<IteratorResult<Message, undefined>> { return this.#next().promise; }

  /** The next message, waiting up to `timeout` ms (RequestTimeout after that). */
  async get(timeout: number | null = null): Promise<Message> {
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

  #next(): { promise: Promise<IteratorResult<Message, undefined>>; cancel(): void } {
    const cancel = (): void => {};
    if (this.#handler) {
      return { promise: Promise.reject(new TypeError(`subscription to ${this.channel} has a handler`)), cancel };
    }
    const queued = this.#queue.shift();
    if (queued) return { promise: Promise.resolve({ value: queued, done: false }), cancel };
    if (this.#ended) {
      const end = this.#error ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true as const });
      return { promise: end, cancel };
    }
    let waiter: Waiter;
    const promise = new Promise<IteratorResult<Message, undefined>>((resolve, reject) => {
      waiter = [resolve, reject];
      this.#waiters.push(waiter);
    });
    return {
      promise,
      cancel: () => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
      },
    };
  }

  /** The node confirmed the subscription at `reply`'s position; returns its `recovered`. @internal */
  _onSubscribed(reply: Frame): boolean | null {
    const offset = reply.offset as number;
    const epoch = reply.epoch as string;
    const last = this.position;
    if (!last || last.epoch !== epoch || last.offset < offset) this.position = { offset, epoch };
    return typeof reply.recovered === "boolean" ? reply.recovered : null;
  }

  /** @internal */
  _onMessage(frame: Frame): void {
    if (this.#ended) return;
    const offset = frame.offset as number;
    const epoch = frame.epoch as string;
    const last = this.position;
    if (last && epoch === last.epoch && offset <= last.offset) return; // duplicate
    this.position = { offset, epoch };
    this.#deliver(toMessage(frame));
  }

  #deliver(message: Message): void {
    const handler = this.#handler;
    if (handler) {
      this.#chain = this.#chain
        .then(() => (this.#ended ? undefined : handler(message)))
        .catch((error: unknown) => this.#owner._handlerFailed(error, this.channel));
    } else if (this.#waiters.length) {
      this.#waiters.shift()![0]({ value: message, done: false });
    } else {
      this.#queue.push(message);
    }
  }

  /** @internal */
  _end(error: unknown = null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#queue = [];
    for (const [resolve, reject] of this.#waiters.splice(0)) {
      if (error) reject(error);
      else resolve({ value: undefined, done: true });
    }
    this._ready.reject(error ?? new ClientClosed(`subscription to ${this.channel} ended`));
  }
}
