"""Client identity: HS256 JWTs when ``PULLY_JWT_SECRET`` is set, everyone allowed otherwise.

Claims: ``sub`` (required) is the user; ``channels`` lists globs the connection may subscribe
to (and read presence and history of); ``publish`` lists globs it may publish to; ``exp``
(optional) ends the connection unless a ``refresh`` frame brings a newer token; ``subscribe``
(optional) lists channels the node subscribes the connection to at connect (server-side
subscriptions: no rights check, the token's issuer decided; at most
``MAX_SERVER_SUBSCRIPTIONS``). The personal
channel ``user:<sub>`` (and ``user:<sub>:...``) is always the user's own; any other ``user:``
channel is never theirs, whatever the globs say. So that this reads one way only, a ``sub``
may not contain ``:`` (a user ``bob:inbox`` would own Bob's ``user:bob:inbox``): such a token
is refused.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import jwt

from .errors import Unauthorized
from .protocol import is_valid_channel

ALGORITHMS = ["HS256"]
MAX_SERVER_SUBSCRIPTIONS = 100


@dataclass(frozen=True, slots=True)
class Identity:
    user: str | None
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    expires: float | None = None  # unix time
    server_subscriptions: tuple[str, ...] = ()  # the "subscribe" claim: subscribed at connect
    anonymous: bool = False  # development mode: no secret configured, everything allowed

    def may_subscribe(self, channel: str) -> bool:
        return self._allowed(channel, self.subscribe)

    def may_publish(self, channel: str) -> bool:
        return self._allowed(channel, self.publish)

    def _allowed(self, channel: str, globs: tuple[str, ...]) -> bool:
        if self.anonymous:
            return True
        own = f"user:{self.user}"
        if channel == own or channel.startswith(own + ":"):
            return True
        if channel.startswith("user:"):
            return False
        return any(fnmatch.fnmatchcase(channel, g) for g in globs)


ANONYMOUS = Identity(user=None, anonymous=True)


def _globs(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise Unauthorized(f"invalid token: claim '{name}' must be a list of channel globs")
    return tuple(value)


def server_channels(value: object, name: str = "subscribe") -> tuple[str, ...]:
    """The ``subscribe`` list of a token or a connect proxy reply: channel names (no globs), at
    most ``MAX_SERVER_SUBSCRIPTIONS``, duplicates dropped in order. Raises ``ValueError``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ValueError(f"'{name}' must be a list of channel names")
    if len(value) > MAX_SERVER_SUBSCRIPTIONS:
        raise ValueError(
            f"'{name}' lists {len(value)} channels; at most {MAX_SERVER_SUBSCRIPTIONS}"
        )
    bad = [c for c in value if not is_valid_channel(c)]
    if bad:
        raise ValueError(f"'{name}' holds invalid channel names: {', '.join(map(repr, bad[:5]))}")
    return tuple(dict.fromkeys(value))


def user_problem(sub: object) -> str | None:
    """Why ``sub`` cannot be a user id, or None."""
    if not isinstance(sub, str) or not sub:
        return "must be a non-empty string"
    if ":" in sub:
        return (
            "must not contain ':' (user:<sub>:... are the user's own sub-channels, so a ':' in "
            "sub would make another user's channels look like its own)"
        )
    return None


def authenticate(token: str | None, secret: str) -> Identity:
    """Verify ``token`` (HS256 only, signature, ``exp``, ``nbf``) and read its capabilities.

    Raises :class:`~pully_tornado.errors.Unauthorized` naming what is wrong."""
    if not token:
        raise Unauthorized("a token is required: connect to /ws?token=<JWT>")
    try:
        claims = jwt.decode(token, secret, algorithms=ALGORITHMS, options={"require": ["sub"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized("invalid token: only HS256 is accepted") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    sub = claims.get("sub")
    problem = user_problem(sub)
    if problem is not None:
        raise Unauthorized(f"invalid token: 'sub' {problem}")
    assert isinstance(sub, str)
    try:
        server = server_channels(claims.get("subscribe"))
    except ValueError as exc:
        raise Unauthorized(f"invalid token: claim {exc}") from None
    exp = claims.get("exp")
    return Identity(
        user=sub,
        subscribe=_globs(claims, "channels"),
        publish=_globs(claims, "publish"),
        expires=float(exp) if isinstance(exp, int | float) else None,
        server_subscriptions=server,
    )
