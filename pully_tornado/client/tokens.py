"""When to renew a connection's JWT: read its ``exp`` (unverified: the node verifies) and
renew ahead of it, so a long-lived connection never reaches ``exp`` (close 4001)."""

from __future__ import annotations

import base64
import binascii
import json

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
