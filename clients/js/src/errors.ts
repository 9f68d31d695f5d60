// Every error the client throws derives from PullyError. An `error` frame from the node becomes
// the ServerError subclass of its wire code (docs/protocol.md), with `.code`.

/** Base of every error the client throws. */
export class PullyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The node answered a command with an `error` frame; `code` is the wire error code. */
export class ServerError extends PullyError {
  /** The wire code of the subclass (undefined on ServerError itself). */
  static code: string | undefined;
  readonly code: string;

  constructor(message: string, code?: string) {
    super(message);
    this.code = code ?? (new.target as typeof ServerError).code ?? "internal";
  }
}
export class BadRequest extends ServerError { static override code = "bad_request"; }
export class UnknownType extends ServerError { static override code = "unknown_type"; }
export class InvalidChannel extends ServerError { static override code = "invalid_channel"; }
export class TooLarge extends ServerError { static override code = "too_large"; }
export class Forbidden extends ServerError { static override code = "forbidden"; }
export class RateLimited extends ServerError { static override code = "rate_limited"; }
export class FunctionFailed extends ServerError { static override code = "function_failed"; }
export class Unavailable extends ServerError { static override code = "unavailable"; }
export class Internal extends ServerError { static override code = "internal"; }

/** The ServerError subclass of each wire code. */
export const SERVER_ERRORS: Readonly<Record<string, typeof ServerError>> = Object.fromEntries(
  [BadRequest, UnknownType, InvalidChannel, TooLarge, Forbidden, RateLimited, FunctionFailed,
    Unavailable, Internal].map((cls) => [cls.code as string, cls]),
);

/** No connection and `offline: "fail"`, or the client is not connected yet. */
export class NotConnected extends PullyError {}
/** The client was closed. */
export class ClientClosed extends NotConnected {}
/** The connection dropped after the command was sent and the command could not be re-sent. */
export class ConnectionLost extends PullyError {}
/** No reply (or no connection, in "wait" mode) within the timeout. */
export class RequestTimeout extends PullyError {}
/** subscribe() on a channel this client is already subscribed to. */
export class AlreadySubscribed extends PullyError {}

/** The error an `error` frame stands for. */
export function serverError(frame: Readonly<Record<string, unknown>>): ServerError {
  const code = typeof frame.code === "string" ? frame.code : "internal";
  const message = typeof frame.message === "string" ? frame.message : code;
  const cls = SERVER_ERRORS[code];
  return cls ? new cls(message) : new ServerError(message, code);
}
