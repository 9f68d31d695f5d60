// Renewing a connection's token in place ahead of its `exp`, from a token function.
import type { Connection } from "./connection.js";
import { ConnectionLost, PullyError } from "./errors.js";
import type { TokenProvider } from "./types.js";
import { renewDelay, tokenExpiry } from "./util.js";

/**
 * Renew `conn`'s token ahead of each `exp` with a `refresh` frame; returns a function that
 * stops it. On failure (the function throws, the node refuses the token, or it does not expire
 * later) `onError`, and no more renewals: the node closes the connection at `exp` (4001) and
 * reconnecting asks the function again. A token without `exp` is never renewed. @internal
 */
export function renewAhead(
  conn: Connection, token: string | null, provider: TokenProvider, onError: (error: unknown) => void,
): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const schedule = (current: string | null): void => {
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
