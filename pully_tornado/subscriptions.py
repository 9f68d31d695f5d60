"""Subscribing connections to channels on this node, and keeping what they receive gap-free.

The hub (``hub.py``) holds the state: who is subscribed to what, each channel's cursor and
broker subscription. This module is the logic around it: the subscribe and unsubscribe
commands (rights, limits, recovery with ``since``, presence), and what happens when a
publication does not follow a channel's cursor: the gap is filled from history, or, when
history cannot vouch for it, the channel's subscribers here are told ``insufficient_state``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from . import protocol
from .auth import Identity
from .broker import Broker, Position
from .broker.base import History
from .errors import Forbidden, PullyError, RateLimited
from .hooks import Hooks
from .hub import Arrival, Channel, Conn, Hub
from .presence import Presence
from .tasks import Background

logger = logging.getLogger("pully.node")


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Result of :meth:`Subscriptions.subscribe`. The caller sends, in this order and without
    awaiting anything in between: ``replay`` (recovered messages), the ``subscribed`` reply,
    ``backlog`` (what arrived during set-up; ending with an ``unsubscribed`` frame if that has a
    hole)."""

    position: Position
    recovered: bool | None = None  # None: no recovery was asked for
    replay: list[bytes] = field(default_factory=list)
    backlog: list[bytes] = field(default_factory=list)


class Subscriptions:
    def __init__(
        self,
        hub: Hub,
        broker: Broker,
        presence: Presence,
        background: Background,
        identity: Callable[[Conn | None], Identity],
        max_subscriptions: int,
        hooks: Hooks,
    ) -> None:
        self._hub = hub
        self._broker = broker
        self._presence = presence
        self._background = background
        self._identity = identity
        self._max = max_subscriptions
        self._hooks = hooks
        # server-side subscriptions (the server made them; the client may not end them)
        self._server: dict[Conn, set[str]] = {}
        self.gaps_filled = 0
        self.insufficient_states = 0  # subscriptions ended with reason insufficient_state

    def check_read(self, conn: Conn, channel: str) -> None:
        if not self._identity(conn).may_subscribe(channel):
            raise Forbidden(f"not allowed to subscribe to {channel!r}")

    # -- commands ------------------------------------------------------------------------------

    async def subscribe(
        self, conn: Conn, channel: str, since: Position | None = None
    ) -> Subscribed:
        """Subscribe ``conn`` to ``channel`` on this node (and in the broker if it is the first).

        With ``since``, replays what the client missed when history covers it (``recovered``).
        Subscribing twice is harmless: the second call reports the current position.
        A channel of the identity's server-side list needs no read right (the client
        resubscribes one that ``insufficient_state`` ended).
        Raises ``Forbidden``, ``RateLimited`` (too many subscriptions), ``Unavailable``."""
        identity = self._identity(conn)
        if channel not in identity.server_subscriptions:
            self.check_read(conn, channel)
        if self._hub.is_live(channel, conn):
            return Subscribed(await self._broker.position(channel))
        if self._hooks.subscribe_proxy is not None:  # the backend decides too
            await self._hooks.authorize_subscribe(conn.client_id, identity.user, channel)
        return await self._subscribe(conn, channel, since)

    async def _subscribe(self, conn: Conn, channel: str, since: Position | None) -> Subscribed:
        hub = self._hub
        if hub.is_live(channel, conn):
            return Subscribed(await self._broker.position(channel))
        if hub.count_of(conn) >= self._max:
            raise RateLimited(
                f"subscription limit reached: {self._max} channels per connection "
                "(PULLY_MAX_SUBSCRIPTIONS)"
            )
        hub.add_pending(channel, conn)
        try:
            await asyncio.shield(hub.broker_subscription(channel, self._broker.subscribe))
            history = await self._broker.history(channel, since=since, limit=0)
        except BaseException:
            self.drop(conn, channel)
            raise
        position = history.position
        recovered = None if since is None else history.covered
        replay = history.messages if recovered else []
        backlog = hub.activate(channel, conn, position.epoch, position.offset)
        if backlog is None:  # closed meanwhile
            return Subscribed(position, recovered)
        frames = [m[2] for m in backlog]
        follow = _following(position, backlog)
        if follow < len(backlog):  # this node missed publications while it was set up
            logger.warning(
                "channel %s: publications missed while a subscription was set up; it is told "
                "to resubscribe (insufficient_state)", channel,
            )  # fmt: skip
            self.drop(conn, channel, "insufficient_state")
            self.insufficient_states += 1
            frames[follow:] = [protocol.insufficient_state(channel)]
            return Subscribed(position, recovered, replay, frames)
        if self._presence.enabled(channel):
            self._presence.join(channel, conn.client_id, self._identity(conn).user)
        if self._hooks.tracks_subscriptions:
            first = len(hub.live(channel)) == 1
            self._hooks.subscribed(conn.client_id, self._identity(conn).user, channel, first)
        return Subscribed(position, recovered, replay, frames)

    async def unsubscribe(self, conn: Conn, channel: str) -> None:
        """The client's ``unsubscribe``. Raises ``Forbidden`` for a server-side subscription:
        only the server ends those (``/api/unsubscribe``)."""
        if channel in self._server.get(conn, ()):
            raise Forbidden(f"{channel!r} is a server-side subscription: only the server ends it")
        if channel in self._hub.channels_of(conn):
            self.drop(conn, channel, "client")

    # -- server-side subscriptions ---------------------------------------------------------------

    async def server_subscribe(
        self, conn: Conn, channel: str, since: Position | None = None
    ) -> Subscribed:
        """Subscribe ``conn`` because the server says so (``/api/subscribe``, the token's or the
        connect proxy's ``subscribe`` list): no rights check, no subscribe proxy. The client is
        sent the replay, ``{"type":"subscribed","server":true,...}`` and the backlog, in that
        order; from then on its ``unsubscribe`` of the channel is refused. Already subscribed
        (by itself or the server): the subscription becomes server-side and the client is told
        the current position. Raises ``RateLimited``, ``Unavailable``."""
        sub = await self._subscribe(conn, channel, since)
        if channel in self._hub.channels_of(conn):  # else closed meanwhile, or ended at once
            self._server.setdefault(conn, set()).add(channel)
        for payload in sub.replay:
            conn.write_frame(protocol.text_frame(payload))
        frame = protocol.server_subscribed(channel, sub.position, sub.recovered)
        conn.write_frame(protocol.text_frame(frame))
        for payload in sub.backlog:
            conn.write_frame(protocol.text_frame(payload))
        return sub

    def server_unsubscribe(self, conn: Conn, channel: str) -> bool:
        """End ``conn``'s subscription to ``channel`` (server-side or not) and tell the client
        ``{"type":"unsubscribed","channel":C,"server":true}``; False if it had none."""
        if channel not in self._hub.channels_of(conn):
            return False
        self.drop(conn, channel, "server")
        conn.write_frame(protocol.text_frame(protocol.server_unsubscribed(channel)))
        return True

    def subscribe_at_connect(
        self, conn: Conn, identity: Identity, recover: dict[str, Position]
    ) -> None:
        """In the background, in order: subscribe ``conn`` to ``identity``'s server-side
        channels (``since`` its ``recover`` position when it gave one), and tell it that any
        other channel in ``recover`` is no longer subscribed (``reason: not_renewed``:
        ``/api/subscribe`` subscriptions end with their connection). Stops if ``conn`` closes."""
        if identity.server_subscriptions or recover:
            self._background.spawn(self._at_connect(conn, identity, recover))

    async def _at_connect(
        self, conn: Conn, identity: Identity, recover: dict[str, Position]
    ) -> None:
        channels = identity.server_subscriptions
        for channel in recover.keys() - set(channels):
            conn.write_frame(
                protocol.text_frame(protocol.server_unsubscribed(channel, "not_renewed"))
            )
        for channel in channels:
            if self._identity(conn) is not identity:
                return  # closed (or its token refreshed) meanwhile
            try:
                await self.server_subscribe(conn, channel, recover.get(channel))
            except PullyError as exc:
                logger.warning(
                    "client %s: server-side subscription to %s failed: %s", conn.client_id,
                    channel, exc.message,
                )  # fmt: skip
                frame = protocol.server_unsubscribed(channel, exc.code)
                conn.write_frame(protocol.text_frame(frame))

    def revoke(self, conn: Conn, identity: Identity) -> list[str]:
        """Drop the subscriptions ``identity`` no longer allows; returns them, sorted."""
        server = self._server.get(conn, set())
        revoked = sorted(
            c for c in self._hub.channels_of(conn)
            if not identity.may_subscribe(c) and c not in server
        )  # fmt: skip
        for channel in revoked:
            self.drop(conn, channel, "forbidden")
        return revoked

    def drop_all(self, conn: Conn) -> None:
        """``conn`` closed: every subscription it had ends."""
        for channel in self._hub.channels_of(conn):
            self.drop(conn, channel, "disconnect")
        self._server.pop(conn, None)

    def drop(self, conn: Conn, channel: str, reason: str = "client") -> None:
        """``conn`` no longer wants ``channel``: its presence there leaves, and the broker
        subscription goes with the channel's last local subscriber. ``reason`` (client,
        server, disconnect, forbidden, insufficient_state) is for the ``unsubscribe`` webhook."""
        self._presence.leave(channel, conn.client_id)
        server = self._server.get(conn)
        if server is not None:
            server.discard(channel)
            if not server:
                del self._server[conn]
        hooks = self._hooks
        if hooks.tracks_subscriptions and self._hub.is_live(channel, conn):
            hooks.unsubscribed(conn.client_id, self._identity(conn).user, channel, reason)
        if self._hub.remove(channel, conn):
            self._background.spawn(self._broker.unsubscribe(channel))
            hooks.channel_gone(channel)

    # -- keeping channels gap-free -------------------------------------------------------------

    def on_publication(self, channel: str, offset: int, epoch: str, payload: bytes) -> None:
        arrival = self._hub.receive(channel, offset, epoch, payload)
        if arrival is Arrival.GAP:  # the hub holds the channel's publications meanwhile
            ch = self._hub.holding(channel)
            assert ch is not None
            self._background.spawn(self._recover_channel(channel, ch))
        elif arrival is Arrival.NEW_EPOCH:  # the sequence they follow ended: its end may be lost
            self._end_subscriptions(channel, f"its epoch changed to {epoch}")
            self.on_publication(channel, offset, epoch, payload)  # for subscribers setting up

    def check_all_channels(self) -> None:
        """After a broker outage: catch up every channel with live subscribers here."""
        for channel in self._hub.names():
            ch = self._hub.hold(channel)
            if ch is not None:
                self._background.spawn(self._recover_channel(channel, ch))

    async def _recover_channel(self, channel: str, ch: Channel) -> None:
        """Deliver what history holds after the cursor of ``channel`` (held by the hub as ``ch``),
        then the publications held meanwhile. When history does not hold all of it (trimmed,
        expired, another epoch, or unreadable), the channel's subscribers here are ended instead
        (:meth:`_end_subscriptions`)."""
        hub = self._hub
        since = hub.cursor(ch)
        try:
            history: History | None = await self._broker.history(channel, since=since)
        except PullyError as exc:
            logger.warning("could not fill a gap on %s from history: %s", channel, exc.message)
            history = None
        held = hub.release(ch)
        if not hub.is_current(channel, ch):
            return  # everyone left meanwhile
        if hub.cursor(ch) != since:
            pass  # everyone it was for left; those live now got their position from the broker
        elif history is None or not history.covered:
            self._end_subscriptions(channel, "history does not hold all this node missed")
        else:
            for offset, payload in zip(history.offsets, history.messages, strict=True):
                hub.deliver(ch, offset, since.epoch, payload)
                self.gaps_filled += 1
        for message in held:  # for subscribers still setting up, if the live ones were ended
            self.on_publication(channel, *message)

    def _end_subscriptions(self, channel: str, why: str) -> None:
        """This node cannot vouch that its live subscribers of ``channel`` got every message
        after its cursor: rather than let them see a jump (or a new epoch), it drops their
        subscriptions and tells each ``unsubscribed`` with ``reason: insufficient_state`` and
        ``resubscribe: true``. Their clients subscribe again with ``since`` at once, and that
        answer says truthfully whether the gap was recovered (Centrifugo's "insufficient
        state"). Subscribers still setting up are kept: their position comes from the broker."""
        subscribers = self._hub.live(channel)
        if not subscribers:
            return
        logger.warning(
            "channel %s: %s; its %d subscribers here are told to resubscribe "
            "(insufficient_state)", channel, why, len(subscribers),
        )  # fmt: skip
        frame = protocol.text_frame(protocol.insufficient_state(channel))
        for conn in subscribers:
            conn.write_frame(frame)
            self.drop(conn, channel, "insufficient_state")
        self.insufficient_states += len(subscribers)


def _following(position: Position, messages: list[tuple[int, str, bytes]]) -> int:
    """How many of ``messages`` (offset, epoch, payload) follow ``position`` without a hole."""
    for i, (offset, epoch, _) in enumerate(messages):
        if epoch != position.epoch or offset != position.offset + i + 1:
            return i
    return len(messages)
