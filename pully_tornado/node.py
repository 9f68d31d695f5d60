"""The node: one per process. It owns the hub, the broker and the connections, and is the only
thing handlers talk to (they translate WebSocket frames and HTTP requests into Node calls)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import __version__, protocol
from .auth import ANONYMOUS, Identity
from .broker import Broker, Position, create_broker
from .broker.base import History
from .errors import BadRequest, Forbidden, PullyError, RateLimited, TooLarge
from .functions.pipeline import Pipeline
from .hub import Arrival, Channel, Conn, Hub
from .keepalive import KeepAlive
from .listener import Listener
from .metrics import Metrics
from .presence import Presence
from .relationships import Relationships
from .relationships.manager import RelationshipsManager
from .relationships.store import Store
from .relationships.stores import create_store
from .settings import Settings
from .tasks import Background

logger = logging.getLogger("pully.node")


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Result of :meth:`Node.subscribe`. The caller sends, in this order and without awaiting
    anything in between: ``replay`` (recovered messages), the ``subscribed`` reply, ``backlog``
    (what arrived during set-up; ending with an ``unsubscribed`` frame if that has a hole)."""

    position: Position
    recovered: bool | None = None  # None: no recovery was asked for
    replay: list[bytes] = field(default_factory=list)
    backlog: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Published:
    position: Position | None  # None when a function dropped the message

    @property
    def dropped(self) -> bool:
        return self.position is None


class Node:
    def __init__(
        self, settings: Settings, broker: Broker | None = None, store: Store | None = None
    ) -> None:
        self.settings = settings
        self.id = settings.node_id
        self._background = Background(logger)
        self.hub = Hub()
        self.broker = broker if broker is not None else create_broker(settings)
        self.relationships = RelationshipsManager(
            store or create_store(settings), self.id, self._send_relationships
        )
        self.keepalive = KeepAlive(
            settings.ping_interval,
            settings.ping_timeout,
            lambda: self.count_disconnect("ping_timeout"),
        )
        self.listener = Listener(settings.handshake_timeout, settings.max_connections)
        self.metrics = Metrics(self)
        self.pipeline = Pipeline(settings, self._observe_function)
        self.presence = Presence(
            self.broker, self.relationships, settings.presence_channels, settings.presence_ttl,
            self._background.spawn,
        )  # fmt: skip
        self.publishes: collections.Counter[str] = collections.Counter()
        self.disconnects: collections.Counter[str] = collections.Counter()
        self.connections: dict[Conn, Identity] = {}
        self._connections_gone = asyncio.Event()
        self._broker_was_up = False
        self.started_at = time.time()
        self.draining = False
        self.gaps_filled = 0
        self.insufficient_states = 0  # subscriptions ended with reason insufficient_state

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self.presence.start()
        self.keepalive.start()
        await self.relationships.start()

    async def close(self) -> None:
        """Stop everything: connections still open (normally drained before) are dropped."""
        for conn in list(self.connections):
            conn.abort()
        await self._connections_closed(2.0)
        await self.keepalive.close()
        await self.relationships.close()
        await self.presence.close()
        await self._background.close(2.0)  # let leaves and unsubscribes of closed clients go out
        await self.pipeline.close()
        await self.broker.close()

    async def drain(self, timeout: float) -> None:
        """Tell every client to reconnect elsewhere, close them with 1012, and wait (up to
        ``timeout`` seconds) for them to go."""
        self.draining = True
        frame = protocol.text_frame(protocol.reconnect("draining"))
        for conn in list(self.connections):
            conn.write_frame(frame)
            conn.close(protocol.CLOSE_DRAINING, "draining")
            self.count_disconnect("draining")
        await self._connections_closed(timeout)

    async def _connections_closed(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every connection to be unregistered."""
        if self.connections:
            self._connections_gone.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._connections_gone.wait()

    def _observe_function(self, name: str, outcome: str, seconds: float) -> None:
        self.metrics.function_seconds.labels(name, outcome).observe(seconds)

    def count_disconnect(self, reason: str) -> None:
        self.disconnects[reason] += 1

    @property
    def full(self) -> bool:
        """At ``PULLY_MAX_CONNECTIONS``: WebSockets plus connections that have not finished a
        request (a handshake asking is not one of them: its request was read)."""
        limit = self.settings.max_connections
        return bool(limit) and len(self.connections) + self.listener.pending >= limit

    # -- broker events -----------------------------------------------------------------------

    def on_publication(self, channel: str, offset: int, epoch: str, payload: bytes) -> None:
        arrival = self.hub.receive(channel, offset, epoch, payload)
        if arrival is Arrival.GAP:  # the hub holds the channel's publications meanwhile
            ch = self.hub.holding(channel)
            assert ch is not None
            self._background.spawn(self._recover_channel(channel, ch))
        elif arrival is Arrival.NEW_EPOCH:  # the sequence they follow ended: its end may be lost
            self._end_subscriptions(channel, f"its epoch changed to {epoch}")
            self.on_publication(channel, offset, epoch, payload)  # for subscribers setting up

    def on_presence(self, channel: str, payload: bytes) -> None:
        self.hub.deliver_event(channel, payload)

    def on_control(self, topic: str, payload: bytes) -> None:
        if topic != "relationships":
            return
        try:
            message = orjson.loads(payload)
            version, sender = int(message["version"]), str(message["node"])
            digest = message.get("digest")  # absent from nodes older than the split check
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("ignoring a malformed relationships control message: %r", payload[:200])
            return
        self.relationships.on_peer(sender, version, digest if isinstance(digest, str) else None)

    def on_broker_state(self, connected: bool) -> None:
        if not connected:
            logger.warning(
                "broker %s unreachable; publishes answer 'unavailable'", self.broker.kind
            )
            return
        logger.info("broker %s connected", self.broker.kind)
        if self._broker_was_up:  # publications and reloads may have been missed while down
            self._check_all_channels()
            self.relationships.reload_soon()
        self._broker_was_up = True

    # -- gap filling ---------------------------------------------------------------------------

    async def _recover_channel(self, channel: str, ch: Channel) -> None:
        """Deliver what history holds after the cursor of ``channel`` (held by the hub as ``ch``),
        then the publications held meanwhile. When history does not hold all of it (trimmed,
        expired, another epoch, or unreadable), the channel's subscribers here are ended instead
        (:meth:`_end_subscriptions`)."""
        since = self.hub.cursor(ch)
        try:
            history: History | None = await self.broker.history(channel, since=since)
        except PullyError as exc:
            logger.warning("could not fill a gap on %s from history: %s", channel, exc.message)
            history = None
        held = self.hub.release(ch)
        if not self.hub.is_current(channel, ch):
            return  # everyone left meanwhile
        if self.hub.cursor(ch) != since:
            pass  # everyone it was for left; those live now got their position from the broker
        elif history is None or not history.covered:
            self._end_subscriptions(channel, "history does not hold all this node missed")
        else:
            for offset, payload in zip(history.offsets, history.messages, strict=True):
                self.hub.deliver(ch, offset, since.epoch, payload)
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
        subscribers = self.hub.live(channel)
        if not subscribers:
            return
        logger.warning(
            "channel %s: %s; its %d subscribers here are told to resubscribe "
            "(insufficient_state)", channel, why, len(subscribers),
        )  # fmt: skip
        frame = protocol.text_frame(protocol.insufficient_state(channel))
        for conn in subscribers:
            conn.write_frame(frame)
            conn.channels.discard(channel)
            self._drop(conn, channel)
        self.insufficient_states += len(subscribers)

    def _check_all_channels(self) -> None:
        """After a broker outage: catch up every channel with live subscribers here."""
        for channel in self.hub.names():
            ch = self.hub.hold(channel)
            if ch is not None:
                self._background.spawn(self._recover_channel(channel, ch))

    # -- relationships -------------------------------------------------------------------------

    async def save_relationships(self, relationships: Relationships) -> int:
        """Store a new version, apply it here, and tell every node to reload from the store.
        Raises ``Unavailable`` when the store cannot be reached (nothing changed then)."""
        return await self.relationships.save(relationships)

    async def _send_relationships(self, payload: bytes) -> None:
        """What this node runs (``{"version", "node", "digest"}``), to every node."""
        await self.broker.publish_control("relationships", payload)

    # -- connections -------------------------------------------------------------------------

    def register(self, conn: Conn, identity: Identity = ANONYMOUS) -> None:
        self.connections[conn] = identity
        self.keepalive.add(conn)

    def reidentify(self, conn: Conn, identity: Identity) -> list[str]:
        """Replace a connection's identity (token refresh); the user must stay the same.

        Every subscription is checked against the new rights: those no longer allowed are
        dropped here, and returned (sorted) so the caller tells the client."""
        if self.connections.get(conn, identity).user != identity.user:
            raise Forbidden("a refreshed token must be for the same user")
        self.connections[conn] = identity
        revoked = sorted(c for c in conn.channels if not identity.may_subscribe(c))
        for channel in revoked:
            conn.channels.discard(channel)
            self._drop(conn, channel)
        return revoked

    def unregister(self, conn: Conn) -> None:
        """Forget a closed connection and all its subscriptions."""
        if self.connections.pop(conn, None) is None:
            return
        self.keepalive.remove(conn)
        for channel in conn.channels:
            self._drop(conn, channel)
        conn.channels.clear()
        if not self.connections:
            self._connections_gone.set()

    def _identity(self, conn: Conn | None) -> Identity:
        return ANONYMOUS if conn is None else self.connections.get(conn, ANONYMOUS)

    def _check_read(self, conn: Conn, channel: str) -> None:
        if not self._identity(conn).may_subscribe(channel):
            raise Forbidden(f"not allowed to subscribe to {channel!r}")

    async def subscribe(
        self, conn: Conn, channel: str, since: Position | None = None
    ) -> Subscribed:
        """Subscribe ``conn`` to ``channel`` on this node (and in the broker if it is the first).

        With ``since``, replays what the client missed when history covers it (``recovered``).
        Subscribing twice is harmless: the second call reports the current position.
        Raises ``Forbidden``, ``RateLimited`` (too many subscriptions), ``Unavailable``."""
        self._check_read(conn, channel)
        if self.hub.is_live(channel, conn):
            return Subscribed(await self.broker.position(channel))
        if len(conn.channels) >= self.settings.max_subscriptions:
            raise RateLimited(
                f"subscription limit reached: {self.settings.max_subscriptions} channels per "
                "connection (PULLY_MAX_SUBSCRIPTIONS)"
            )
        self.hub.add_pending(channel, conn)
        conn.channels.add(channel)
        try:
            await asyncio.shield(self.hub.broker_subscription(channel, self.broker.subscribe))
            history = await self.broker.history(channel, since=since, limit=0)
        except BaseException:
            conn.channels.discard(channel)
            self._drop(conn, channel)
            raise
        position = history.position
        recovered = None if since is None else history.covered
        replay = history.messages if recovered else []
        backlog = self.hub.activate(channel, conn, position.epoch, position.offset)
        if backlog is None:  # closed meanwhile
            return Subscribed(position, recovered)
        frames = [m[2] for m in backlog]
        follow = _following(position, backlog)
        if follow < len(backlog):  # this node missed publications while it was set up
            logger.warning(
                "channel %s: publications missed while a subscription was set up; it is told "
                "to resubscribe (insufficient_state)", channel,
            )  # fmt: skip
            conn.channels.discard(channel)
            self._drop(conn, channel)
            self.insufficient_states += 1
            frames[follow:] = [protocol.insufficient_state(channel)]
            return Subscribed(position, recovered, replay, frames)
        if self.presence.enabled(channel):
            self.presence.join(channel, conn.client_id, self._identity(conn).user)
        return Subscribed(position, recovered, replay, frames)

    async def unsubscribe(self, conn: Conn, channel: str) -> None:
        if channel in conn.channels:
            conn.channels.discard(channel)
            self._drop(conn, channel)

    def _drop(self, conn: Conn, channel: str) -> None:
        """``conn`` no longer wants ``channel``: its presence there leaves, and the broker
        subscription goes with the channel's last local subscriber."""
        self.presence.leave(channel, conn.client_id)
        if self.hub.remove(channel, conn):
            self._release(channel)

    def _release(self, channel: str) -> None:
        """No local connection wants ``channel`` any more: stop receiving it from the broker."""
        self._background.spawn(self.broker.unsubscribe(channel))

    # -- publishing, history, presence -------------------------------------------------------

    async def publish(self, channel: str, data: bytes, conn: Conn | None = None) -> Published:
        """Publish JSON ``data`` to ``channel``: returns the assigned position once the broker
        has it. ``conn`` (None for the admin HTTP API) must be allowed to publish there.
        Raises ``PullyError`` subclasses (``unavailable`` when the broker is down)."""
        try:
            published = await self._publish(channel, data, conn)
        except PullyError as exc:
            self.publishes[exc.code] += 1
            raise
        self.publishes["dropped" if published.dropped else "ok"] += 1
        return published

    async def _publish(self, channel: str, data: bytes, conn: Conn | None) -> Published:
        if conn is not None and not self._identity(conn).may_publish(channel):
            raise Forbidden(f"not allowed to publish to {channel!r}")
        relationships = self.relationships.require()  # one document for the whole pipeline
        options = relationships.options_for(channel)
        if conn is not None and options.publish == "server":
            raise Forbidden(f"only the server publishes to {channel!r} (its options say so)")
        result = await self.pipeline.run(
            relationships, channel, data, None if conn is None else conn.client_id
        )
        if result is None:
            return Published(None)
        if result is not data and len(result) > self.settings.max_message_bytes:
            raise TooLarge(
                f"the functions made the message {len(result)} bytes; the limit is "
                f"{self.settings.max_message_bytes} (PULLY_MAX_MESSAGE_BYTES)"
            )
        return Published(
            await self.broker.publish(
                channel, result, history_size=options.history_size, history_ttl=options.history_ttl
            )
        )

    async def history(self, conn: Conn, channel: str, limit: int | None) -> History:
        self._check_read(conn, channel)
        return await self.broker.history(channel, limit=limit)

    async def presence_of(self, conn: Conn, channel: str) -> list[bytes]:
        """Who is subscribed to ``channel`` on every node (``presence`` entries)."""
        self._check_read(conn, channel)
        if not self.presence.enabled(channel):
            raise BadRequest(
                f"channel {channel!r} has no presence ({self.presence.describe_rule()}; or the "
                "channel's presence option)"
            )
        return await self.broker.presence(channel)

    # -- reporting ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        relationships = self.relationships.describe()
        healthy = (
            self.broker.connected
            and not self.draining
            and self.relationships.version is not None
            and not relationships["split"]
        )
        return {
            "status": "ok" if healthy else ("draining" if self.draining else "unavailable"),
            "node": self.id,
            "mode": self.settings.mode,
            "version": __version__,
            "protocol": protocol.PROTOCOL_VERSION,
            "broker": self.broker.describe(),
            "connections": len(self.connections),
            "channels": len(self.hub),
            "subscriptions": self.hub.subscriptions,
            "relationships": relationships,
            "uptime": round(time.time() - self.started_at, 3),
        }


def _following(position: Position, messages: list[tuple[int, str, bytes]]) -> int:
    """How many of ``messages`` (offset, epoch, payload) follow ``position`` without a hole."""
    for i, (offset, epoch, _) in enumerate(messages):
        if epoch != position.epoch or offset != position.offset + i + 1:
            return i
    return len(messages)
