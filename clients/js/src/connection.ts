// One WebSocket session: the welcome handshake, request ids and their replies, reconnect advice.
// A Connection never reconnects; the client (client.ts) opens a new one.
import { ConnectionLost, PullyError, RequestTimeout, serverError } from "./errors.js";
import type { Frame } from "./types.js";
import { Deferred } from "./util.js";
import type { WebSocketConstructor, WebSocketLike } from "./websocket.js";

const DRAIN_GRACE_MS = 5000; // the node has this long to close after advising a reconnect

type OnReply = ((reply: Frame) => void) | null;

/** @internal */
export class Connection {
  readonly ws: WebSocketLike;
  readonly url: string;
  readonly welcome: Frame;
  active = true;
  reconnectAdvised = false;
  /** Resolves with the close code and reason once the socket closed. */
  readonly closed = new Deferred<{ code: number; reason: string }>();
  onFrame: ((frame: Frame) => void) | null = null;
  onIn: ((frame: Frame) => void) | null = null;
  onOut: ((frame: Frame) => void) | null = null;
  #pending = new Map<number, [Deferred<Frame>, OnReply]>();
  #nextId = 0;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  // Frames after the welcome, until attach(): `ws` (Node) emits every message of one TCP read
  // at once, before the client's await of open() resumes: the first ones must wait, not vanish.
  #early: unknown[] | null = [];

  /** Open `fullUrl`, resolve once `welcome` arrived; reject on close or after `timeoutMs`. */
  static open(fullUrl: string, url: string, timeoutMs: number, Impl: WebSocketConstructor): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const ws = new Impl(fullUrl);
      let conn: Connection | null = null;
      const fail = (error: unknown): void => { clearTimeout(timer); reject(error); };
      const timer = setTimeout(() => { fail(new RequestTimeout(`no welcome from ${url}`)); ws.close(); }, timeoutMs);
      ws.onmessage = (event) => {
        if (conn) return conn.handleMessage(event.data);
        const frame = parse(event.data);
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

  constructor(ws: WebSocketLike, url: string, welcome: Frame) {
    this.ws = ws;
    this.url = url;
    this.welcome = welcome;
  }

  /** Route frames from now on (the ones that arrived since the welcome first). */
  attach(onIn: (frame: Frame) => void, onOut: (frame: Frame) => void, onFrame: (frame: Frame) => void): void {
    Object.assign(this, { onIn, onOut, onFrame });
    const early = this.#early ?? [];
    this.#early = null;
    for (const data of early) this.handleMessage(data);
  }

  send(frame: Frame): void {
    if (!this.active || this.ws.readyState !== 1) throw new ConnectionLost(`connection to ${this.url} closed`);
    this.onOut?.(frame);
    this.ws.send(JSON.stringify(frame));
  }

  /** Send `frame` with a fresh id; resolve with its reply (`onReply` sees it synchronously). */
  command(frame: Frame, onReply: OnReply = null): Promise<Frame> {
    JSON.stringify(frame); // throws before anything is registered
    const id = ++this.#nextId;
    const reply = new Deferred<Frame>();
    this.#pending.set(id, [reply, onReply]);
    try {
      this.send({ ...frame, id });
    } catch (error) {
      this.#pending.delete(id);
      reply.reject(error);
    }
    return reply.promise;
  }

  handleMessage(data: unknown): void {
    if (this.#early) {
      this.#early.push(data);
      return;
    }
    const frame = parse(data);
    if (!frame) return;
    this.onIn?.(frame);
    const entry = frame.type !== "message" && typeof frame.id === "number" ? this.#pending.get(frame.id) : undefined;
    if (entry) {
      this.#pending.delete(frame.id as number);
      entry[1]?.(frame);
      if (frame.type === "error") entry[0].reject(serverError(frame));
      else entry[0].resolve(frame);
      return;
    }
    if (frame.type === "reconnect" && !this.reconnectAdvised) {
      this.reconnectAdvised = true;
      this.#graceTimer = setTimeout(() => this.ws.close(1000, "going away after reconnect advice"), DRAIN_GRACE_MS);
    }
    this.onFrame?.(frame);
  }

  handleClose(event: { code: number; reason: string }): void {
    this.active = false;
    clearTimeout(this.#graceTimer);
    for (const [reply] of this.#pending.values()) {
      reply.reject(new ConnectionLost(`connection to ${this.url} lost before the reply`));
    }
    this.#pending.clear();
    this.closed.resolve({ code: event.code, reason: event.reason || (this.reconnectAdvised ? "draining" : "") });
  }

  close(): void {
    if (this.ws.readyState <= 1) this.ws.close(1000, "client closed");
  }
}

function parse(data: unknown): Frame | null {
  if (typeof data !== "string") return null;
  try {
    const frame: unknown = JSON.parse(data);
    return frame && typeof frame === "object" && !Array.isArray(frame) ? (frame as Frame) : null;
  } catch {
    return null;
  }
}
