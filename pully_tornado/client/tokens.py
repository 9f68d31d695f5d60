"""The client's tokens: a fixed JWT or a provider called for each one, and when to renew a
connection's JWT: read its ``exp`` (unverified: the node verifies) and renew ahead of it, so a
long-lived connection never reaches ``exp`` (close 4001)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import time
from collections.abc import Awaitable, Callable

from .connection import Connection
from .errors import ConnectionLost

TokenProvider = Callable[[], str | Awaitable[str]]

AHEAD_FRACTION = 0.2  # renew when this share of the token's remaining life is left ...
AHEAD_MIN, AHEAD_MAX = 1.0, 60.0  # ... but at least 1 s and at most 60 s before exp


def token_expiry(token: str | None) -> float | None:
    """The ``exp`` claim of a JWT as a Unix time; None when absent or not a JWT."""
    if not token:
        return None
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def refresh_delay(expires: float, now: float) -> float:
    """Seconds from ``now`` until a token expiring at ``expires`` should be renewed."""
    left = expires - now
    ahead = min(AHEAD_MAX, max(AHEAD_MIN, left * AHEAD_FRACTION))
    return max(0.0, left - ahead)


async def current_token(token: str | TokenProvider | None) -> str | None:
    """The token itself, or a fresh one from the provider (sync or async)."""
    if token is None or isinstance(token, str):
        return token
    value = token()
    if inspect.isawaitable(value):
        value = await value
    return str(value)


async def keep_renewed(
    conn: Connection,
    provider: TokenProvider,
    expires: float | None,
    on_error: Callable[[BaseException], None],
) -> None:
    """Renew ``conn``'s token from ``provider`` ahead of each ``exp``. When that fails (the
    provider raises, the node refuses the new token, or the new one does not expire later) it
    reports it to ``on_error`` and stops: the node then closes the connection at ``exp`` (4001)
    and reconnecting asks the provider again."""
    while expires is not None:
        await asyncio.sleep(refresh_delay(expires, time.time()))
        try:
            token = await current_token(provider)
            renewed = token_expiry(token)
            if renewed is not None and renewed <= expires:
                raise ValueError(
                    "the token provider returned a token that does not expire later than "
                    "the current one: not renewed"
                )
            await conn.command({"type": "refresh", "token": token})
        except ConnectionLost:
            return
        except Exception as exc:
            on_error(exc)
            return
        expires = renewed
