"""The client's subscriptions across connections: what to (re)subscribe on each new connection,
from which position, and where each channel's messages go."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..backoff import Backoff
from .connection import Connection
from .emitter import Emitter
from .errors import (
    ConnectionLost,
    PullyClientError,
    RateLimited,
    RequestTimeout,
    Unavailable,
    server_error,
)
from .models import (
    ErrorEvent,
    Position,
    PresenceEvent,
    RecoveryFailed,
    ServerSubscribed,
    Unsubscribed,
)
from .subscription import Subscription


class Subscriptions:
    """One :class:`Subscription` per channel, kept across reconnects.

    On every connection each subscription is sent once, with ``since`` = its position when it
    has one; the reply is applied as it is read (before the channel's next message is
    dispatched). A refused resubscribe is retried with backoff when the refusal is temporary
    (``unavailable``, ``rate_limited``) and ends the subscription otherwise; either way the
    ``error`` event says so, since no caller is waiting. ``recovered: false`` becomes the
    ``recovery_failed`` event.

    The node may end a subscription on its own (an ``unsubscribed`` frame without ``id``). With
    ``resubscribe: true`` (``reason: insufficient_state``: it cannot vouch that every message
    reached this client) the subscription is sent again at once, ``since`` its position, so the
    reply tells the truth as after a reconnect. Otherwise the subscription ends and the
    ``unsubscribed`` event gives the reason.
    """

    def __init__(self, emitter: Emitter, backoff: Backoff) -> None:
        self._emitter = emitter
        self._backoff = backoff
        self._by_channel: dict[str, Subscription] = {}

    def __contains__(self, channel: str) -> bool:
        return channel in self._by_channel

    def __iter__(self) -> Iterator[Subscription]:
        return iter(list(self._by_channel.values()))

    def as_dict(self) -> dict[str, Subscription]:
        return dict(self._by_channel)

    def add(self, sub: Subscription) -> None:
        self._by_channel[sub.channel] = sub

    def remove(self, sub: Subscription) -> bool:
        """Forget ``sub``; False if it was not (or no longer) registered."""
        if self._by_channel.get(sub.channel) is not sub:
            return False
        del self._by_channel[sub.channel]
        return True

    async def unsubscribe(self, sub: Subscription, conn: Connection | None, timeout: float) -> None:
        """End ``sub`` and tell the node, on ``conn``, when that is where it was made."""
        registered = self.remove(sub)
        sub._end()
        if not registered or conn is None or sub._sent_on is not conn or not conn.active:
            return  # the node forgot it with the connection it was made on
        try:
            async with asyncio.timeout(timeout):
                await conn.command({"type": "unsubscribe", "channel": sub.channel})
        except ConnectionLost:
            pass
        except TimeoutError:
            raise RequestTimeout(f"unsubscribe from {sub.channel!r}: no reply in time") from None

    def end_all(self, error: BaseException | None, failure: BaseException) -> None:
        """End every subscription (iterators raise ``error``; unconfirmed ones ``failure``)."""
        for sub in self:
            if not sub._ready.done():
                sub._ready.set_exception(failure)
                sub._ready.exception()
            sub._end(error)
        self._by_channel.clear()

    def on_frame(
        self,
        conn: Connection | None,
        frame: dict[str, Any],
        make: Callable[[str], Subscription],
    ) -> None:
        """Dispatch a frame the node sent on its own (not a reply) read on ``conn``."""
        kind = frame.get("type")
        if kind == "message":
            self.on_message(frame)
        elif kind == "subscribed" and conn is not None:  # a server-side subscription
            self.on_server_subscribed(conn, frame, make)
        elif kind == "unsubscribed" and conn is not None:  # the node ended it on its own
            self.on_unsubscribed(conn, frame)
        elif kind == "join" or kind == "leave":
            channel, client, user = frame.get("channel"), frame.get("client"), frame.get("user")
            self._emitter.emit("presence", PresenceEvent(kind, str(channel), str(client), user))

    def on_message(self, frame: dict[str, Any]) -> None:
        sub = self._by_channel.get(str(frame.get("channel")))
        if sub is not None:
            sub._on_message(frame)

    def on_unsubscribed(self, conn: Connection, frame: dict[str, Any]) -> None:
        """The node ended a subscription on ``conn`` on its own (a frame without ``id``)."""
        sub = self._by_channel.get(str(frame.get("channel")))
        if sub is None or sub._sent_on is not conn:
            return
        if frame.get("resubscribe") is True:
            sub.server = False  # resent as the client's own (the node allows its token's list)
            self._emitter.spawn(self._resend(sub, conn), f"resubscribe {sub.channel}")
            return
        self.remove(sub)
        sub._end()
        reason = str(frame.get("reason") or "server")
        self._emitter.emit("unsubscribed", Unsubscribed(sub.channel, sub, reason))

    # -- server-side subscriptions ---------------------------------------------------------------

    def on_server_subscribed(
        self, conn: Connection, frame: dict[str, Any], make: Callable[[str], Subscription]
    ) -> None:
        """The node subscribed this client on its own (``"server": true``, no ``id``)."""
        channel = str(frame.get("channel"))
        sub = self._by_channel.get(channel)
        if sub is None or not sub.active:
            sub = make(channel)
            self.add(sub)
        sub.server = True
        sub._sent_on = conn
        previous = sub.position
        recovered = sub._on_subscribed(frame)
        if not sub._ready.done():
            sub._ready.set_result(None)
        self._emitter.emit("server_subscribed", ServerSubscribed(channel, sub, recovered))
        if recovered is False:
            assert sub.position is not None
            self._emitter.emit(
                "recovery_failed", RecoveryFailed(channel, sub, previous, sub.position)
            )

    def with_recover(self, url: str) -> str:
        """``url`` plus the handshake's ``recover`` parameter: where each server-side
        subscription stands, so the node renews them from there (or ends them)."""
        positions = {
            s.channel: {"offset": s.position.offset, "epoch": s.position.epoch}
            for s in self if s.server and s.position is not None
        }  # fmt: skip
        if not positions:
            return url
        parts = urlsplit(url)
        query = [*parse_qsl(parts.query), ("recover", json.dumps(positions))]
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def send_all(self, conn: Connection) -> None:
        """Send every subscription not yet sent on ``conn``, those added meanwhile included
        (server-side ones are the node's to renew: they are only marked as on ``conn``)."""
        for sub in self:
            if sub.server:
                sub._sent_on = conn
        while unsent := [s for s in self if s._sent_on is not conn]:
            for sub in unsent:
                await self.send(sub, conn)

    async def send(self, sub: Subscription, conn: Connection) -> None:
        """Send ``sub``'s subscribe on ``conn`` (once per connection), ``since`` its position."""
        if sub._sent_on is conn or not sub.active:
            return
        sub._sent_on = conn
        since = sub.position
        frame: dict[str, Any] = {"type": "subscribe", "channel": sub.channel}
        if since is not None:
            frame["since"] = {"offset": since.offset, "epoch": since.epoch}
        with contextlib.suppress(ConnectionLost):  # the next connection sends it again
            await conn.send_command(frame, lambda reply: self._on_reply(conn, sub, since, reply))

    def _on_reply(
        self, conn: Connection, sub: Subscription, since: Position | None, reply: dict[str, Any]
    ) -> None:
        if self._by_channel.get(sub.channel) is not sub:
            if reply.get("type") == "subscribed":  # given up on meanwhile: tell the node
                self._emitter.spawn(_quiet_unsubscribe(conn, sub.channel), "unsubscribe")
            return
        if reply.get("type") == "error":
            self._on_refused(conn, sub, server_error(reply))
            return
        recovered = sub._on_subscribed(reply)
        sub._retries = 0
        if not sub._ready.done():
            sub._ready.set_result(None)
        if recovered is False:
            assert sub.position is not None
            self._emitter.emit(
                "recovery_failed", RecoveryFailed(sub.channel, sub, since, sub.position)
            )

    def _on_refused(self, conn: Connection, sub: Subscription, error: PullyClientError) -> None:
        if sub._confirmed:  # else the subscribe() call is waiting: it raises the error
            self._emitter.emit("error", ErrorEvent(error, sub.channel))
            if isinstance(error, Unavailable | RateLimited):
                self._emitter.spawn(self._retry(sub, conn), f"resubscribe {sub.channel}")
                return
        self.remove(sub)
        sub._end(error)

    async def _retry(self, sub: Subscription, conn: Connection) -> None:
        await asyncio.sleep(self._backoff.delay(sub._retries))
        sub._retries += 1
        await self._resend(sub, conn)

    async def _resend(self, sub: Subscription, conn: Connection) -> None:
        """Send ``sub`` again on ``conn``, ``since`` its position, unless it was given up
        meanwhile or ``conn`` dropped (the next connection sends it then)."""
        if conn.active and self._by_channel.get(sub.channel) is sub:
            sub._sent_on = None
            await self.send(sub, conn)


async def _quiet_unsubscribe(conn: Connection, channel: str) -> None:
    with contextlib.suppress(PullyClientError):
        await conn.command({"type": "unsubscribe", "channel": channel})
