// pully-client: protocol v1 over a WebSocket, with reconnect, resubscribe and recovery.
//
//   import { Pully } from "pully-client";      // in a page served by a node: "/pully.js"
//   const p = new Pully("ws://localhost:8080/ws");
//   await p.connect();
//   const sub = await p.subscribe("chat", (m) => console.log(m.offset, m.data));
//   const offset = await p.publish("chat", { text: "hi" });
//
// Same API and semantics as the Python client (pully_tornado.client); times are milliseconds.
// See docs/clients.md.
import { Pully } from "./client.js";

export { Pully } from "./client.js";
export {
  AlreadySubscribed, BadRequest, ClientClosed, ConnectionLost, Forbidden, FunctionFailed, Internal,
  InvalidChannel, NotConnected, PullyError, RateLimited, RequestTimeout, SERVER_ERRORS, ServerError,
  TooLarge, Unavailable, UnknownType,
} from "./errors.js";
export { Subscription } from "./subscription.js";
export type {
  Backoff, CallOptions, EventName, Frame, Handler, History, Listener, Message, Position,
  PresenceEntry, PublishOptions, PullyEvents, PullyOptions, TokenProvider,
} from "./types.js";
export { backoffCeiling, backoffDelay, newIdempotencyKey, renewDelay, tokenExpiry, toWsUrl } from "./util.js";
export type { AnyWebSocketClass, WebSocketLike } from "./websocket.js";

export default Pully;
