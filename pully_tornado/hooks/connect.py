"""The connect proxy (``PULLY_CONNECT_PROXY_URL``): the app's backend admits a handshake that
carries no JWT, from its cookie session (Django, Rails) or whatever else the request shows.

The node POSTs ``{client, headers: {cookie, authorization, origin, user-agent,
x-forwarded-for}, query}``; a 200 ``{user, channels?, publish?, subscribe?, expire_at?,
info?}`` admits the connection with those rights, a 403 refuses it (HTTP 403 at the
handshake), anything else, a reply that does not validate, or no answer within
``PULLY_PROXY_TIMEOUT`` refuses it with 503 (and the reason is logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from ..auth import Identity, server_channels, user_problem
from ..errors import Forbidden, Unavailable
from .post import Poster

logger = logging.getLogger("pully.hooks")

FORWARDED_HEADERS = ("cookie", "authorization", "origin", "user-agent", "x-forwarded-for")
MAX_GLOBS = 1000


def _user(value: str) -> None:
    problem = user_problem(value)
    if problem is not None:
        raise ValidationError(problem)


def _server_channels(value: list[str]) -> None:
    try:
        server_channels(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class ConnectReply(Schema):
    """A 200 answer of the connect proxy."""

    class Meta:
        unknown = RAISE

    user = fields.String(required=True, validate=_user)
    channels = fields.List(
        fields.String(), load_default=list, validate=validate.Length(max=MAX_GLOBS)
    )
    publish = fields.List(
        fields.String(), load_default=list, validate=validate.Length(max=MAX_GLOBS)
    )
    subscribe = fields.List(fields.String(), load_default=list, validate=_server_channels)
    expire_at = fields.Float(load_default=None, allow_none=True)  # unix time, seconds
    info = fields.Dict(load_default=None, allow_none=True)  # accepted; not yet shown anywhere


class ConnectProxy:
    def __init__(self, url: str, timeout: float) -> None:
        self._poster = Poster(url, timeout, max_clients=100)
        self.results: dict[str, int] = {}  # admitted, refused, failed: for /metrics

    def _count(self, result: str) -> None:
        self.results[result] = self.results.get(result, 0) + 1

    async def admit(
        self, client: str, headers: Mapping[str, str], query: dict[str, list[bytes]]
    ) -> Identity:
        """The identity the backend gives this handshake. Raises ``Forbidden`` (it said 403)
        or ``Unavailable`` (anything else; logged)."""
        body = orjson.dumps({
            "client": client,
            "headers": {name: headers.get(name, "") for name in FORWARDED_HEADERS},
            "query": {k: v[-1].decode("utf-8", "replace") for k, v in query.items() if v},
        })  # fmt: skip
        answer = await self._poster.post(body)
        if answer.status == 403:
            self._count("refused")
            raise Forbidden("the connect proxy refused this connection")
        try:
            if answer.status != 200:
                raise ValueError(answer.problem or f"HTTP {answer.status}")
            identity = _identity(answer.json())
        except ValueError as exc:
            self._count("failed")
            logger.warning("connect proxy %s: %s; connection refused (503)", self._poster.url, exc)
            raise Unavailable("the connect proxy did not admit this connection") from None
        self._count("admitted")
        return identity

    def close(self) -> None:
        self._poster.close()


def _identity(reply: Any) -> Identity:
    """The identity a 200 reply gives; ``ValueError`` listing every problem of the reply."""
    if not isinstance(reply, dict):
        raise ValueError("the reply must be a JSON object")
    try:
        doc: dict[str, Any] = ConnectReply().load(reply)
    except ValidationError as exc:
        raise ValueError(f"invalid reply: {orjson.dumps(exc.messages).decode()}") from None
    expires = doc["expire_at"]
    if expires is not None and expires <= time.time():
        raise ValueError(f"invalid reply: expire_at {expires} has passed")
    return Identity(
        user=doc["user"],
        subscribe=tuple(doc["channels"]),
        publish=tuple(doc["publish"]),
        expires=expires,
        server_subscriptions=server_channels(doc["subscribe"]),
    )
