// Which WebSocket implementation the client uses: the one passed in options, else the
// runtime's global one (browsers, Node 22+, Deno, Bun), else the `ws` package (Node 18 and 20),
// imported on first connect. Without any, connect() fails at once saying what to install.

/** What the client needs of a WebSocket: the browser API, which `ws` implements too. */
export interface WebSocketLike {
  readonly readyState: number;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Any WebSocket class: the browser's, the one of the `ws` package, or your own. */
export type AnyWebSocketClass = new (url: string) => object;

export const NO_WEBSOCKET =
  "no WebSocket implementation: this runtime has no global WebSocket and the 'ws' package " +
  "could not be imported (npm install ws; Node 22+ needs neither); or pass one: " +
  "new Pully(url, { WebSocket })";

/** The global WebSocket class, if this runtime has one. */
export function globalWebSocket(): WebSocketConstructor | null {
  const impl = (globalThis as { WebSocket?: unknown }).WebSocket;
  return typeof impl === "function" ? (impl as WebSocketConstructor) : null;
}

/** True in Node, where the `ws` package may stand in for a missing global WebSocket. */
export function canImportWs(): boolean {
  const process = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof process?.versions?.node === "string";
}

/** The global WebSocket, else the `ws` package's; a TypeError saying what to do otherwise. */
export async function findWebSocket(): Promise<WebSocketConstructor> {
  const found = globalWebSocket();
  if (found) return found;
  const name = "ws"; // a variable: bundlers for browsers leave it alone
  let mod: { default?: unknown; WebSocket?: unknown };
  try {
    mod = await import(/* webpackIgnore: true */ /* @vite-ignore */ name);
  } catch (error) {
    throw new TypeError(`${NO_WEBSOCKET} (${(error as Error)?.message ?? error})`);
  }
  const impl = typeof mod.WebSocket === "function" ? mod.WebSocket : mod.default;
  if (typeof impl !== "function") throw new TypeError(`${NO_WEBSOCKET} ('ws' exports no WebSocket class)`);
  return impl as WebSocketConstructor;
}
