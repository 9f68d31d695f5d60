"""The node: one per process. It owns the hub, the broker and the connections, and is the only
thing handlers talk to (they translate WebSocket frames and HTTP requests into Node calls)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import __version__, protocol
from .auth import ANONYMOUS, Identity
from .broker import Broker, Position, create_broker
from .broker.base import History
from .errors import BadRequest, Forbidden, PullyError, RateLimited, TooLarge
from .functions.pipeline import Pipeline
from .hub import Channel, Conn, Hub
from .keepalive import KeepAlive
from .metrics import Metrics
from .protocol import Since
from .relationships import Relationships
from .relationships.manager import RelationshipsManager
from .relationships.store import Store, create_store
from .settings import Settings

logger = logging.getLogger("pully.node")

RECOVERY_CONCURRENCY = 16  # channels checked at once after the broker reconnects


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Result of :meth:`Node.subscribe`. The caller sends, in this order and without awaiting
    anything in between: ``replay`` (recovered messages), the ``subscribed`` reply, ``backlog``
    (what arrived during set-up)."""

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
        self.hub = Hub()
        self.broker = broker if broker is not None else create_broker(settings)
        self.relationships = RelationshipsManager(store or create_store(settings))
        self.keepalive = KeepAlive(
            settings.ping_interval,
            settings.ping_timeout,
            lambda: self.count_disconnect("ping_timeout"),
        )
        self.metrics = Metrics(self)
        self.pipeline = Pipeline(settings, self._observe_function)
        self.publishes: collections.Counter[str] = collections.Counter()
        self.disconnects: collections.Counter[str] = collections.Counter()
        self.connections: dict[Conn, Identity] = {}
        self._broker_subs: dict[str, asyncio.Future[None]] = {}
        self._present: dict[tuple[str, str], bytes] = {}  # (channel, client) -> info, this node's
        self._background: set[asyncio.Task[Any]] = set()
        self._connections_gone = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None
        self._broker_was_up = False
        self.started_at = time.time()
        self.draining = False
        self.gaps_filled = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self._refresher = asyncio.create_task(self._refresh_presence_forever())
        self.keepalive.start()
        await self.relationships.start()

    async def close(self) -> None:
        """Stop everything: connections still open (normally drained before) are dropped."""
        for conn in list(self.connections):
            conn.abort()
        await self._connections_closed(2.0)
        await self.keepalive.close()
        await self.relationships.close()
        if self._refresher is not None:
            self._refresher.cancel()
        if self._background:  # let leaves and unsubscribes of closed clients go out
            await asyncio.wait(self._background, timeout=2.0)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, PullyError):
                logger.warning("background %s failed: %s", task.get_coro(), exc.message)
            else:
                logger.error("background task failed", exc_info=exc)

    def _observe_function(self, name: str, outcome: str, seconds: float) -> None:
        self.metrics.function_seconds.labels(name, outcome).observe(seconds)

    def count_disconnect(self, reason: str) -> None:
        self.disconnects[reason] += 1

    @property
    def full(self) -> bool:
        limit = self.settings.max_connections
        return bool(limit) and len(self.connections) >= limit

    # -- broker events -----------------------------------------------------------------------

    def on_publication(self, channel: str, offset: int, epoch: str, payload: bytes) -> None:
        ch = self.hub.channels.get(channel)
        if ch is None:
            return
        if ch.recovering is not None:
            ch.recovering.append((offset, epoch, payload))
            return
        if ch.live and ch.epoch:
            if epoch == ch.epoch:
                if offset <= ch.offset:
                    return  # already delivered (a recovery read it from history first)
                if offset != ch.offset + 1:
                    self._fill_gap(channel, ch, (offset, epoch, payload))
                    return
            elif offset != 1:  # a new sequence whose start we missed
                self._fill_gap(channel, ch, (offset, epoch, payload))
                return
        self.hub.deliver(ch, offset, epoch, payload)

    def on_presence(self, channel: str, payload: bytes) -> None:
        self.hub.deliver_event(channel, payload)

    def on_control(self, topic: str, payload: bytes) -> None:
        if topic != "relationships":
            return
        try:
            message = orjson.loads(payload)
            version, sender = int(message["version"]), str(message["node"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("ignoring a malformed relationships control message: %r", payload[:200])
            return
        if sender != self.id and version > (self.relationships.version or 0):
            logger.info("node %s saved relationships version %d; reloading", sender, version)
            self.relationships.reload_soon()

    def on_broker_state(self, connected: bool) -> None:
        if not connected:
            logger.warning(
                "broker %s unreachable; publishes answer 'unavailable'", self.broker.kind
            )
            return
        logger.info("broker %s connected", self.broker.kind)
        if self._broker_was_up:  # publications and reloads may have been missed while down
            self._spawn(self._check_all_channels())
            self.relationships.reload_soon()
        self._broker_was_up = True

    # -- gap filling ---------------------------------------------------------------------------

    def _fill_gap(self, channel: str, ch: Channel, first: tuple[int, str, bytes] | None) -> None:
        """Hold ``channel``'s publications back and read what this node missed from history."""
        ch.recovering = [first] if first is not None else []
        self._spawn(self._recover_channel(channel, ch))

    async def _recover_channel(self, channel: str, ch: Channel) -> None:
        try:
            history: History | None = await self._history_after(channel, ch.epoch, ch.offset)
        except PullyError as exc:
            logger.warning("could not fill a gap on %s from history: %s", channel, exc.message)
            history = None
        held, ch.recovering = ch.recovering or [], None
        if self.hub.channels.get(channel) is not ch:
            return  # everyone left meanwhile
        if history is not None:
            epoch = history.position.epoch
            for offset, payload in zip(history.offsets, history.messages, strict=True):
                if epoch != ch.epoch or offset > ch.offset:
                    self.hub.deliver(ch, offset, epoch, payload)
                    self.gaps_filled += 1
        held = [m for m in held if m[1] != ch.epoch or m[0] > ch.offset]
        if history is None or not history.covered:
            logger.warning(
                "channel %s: history does not cover all this node missed; subscribers see the "
                "jump in offsets", channel,
            )  # fmt: skip
            ch.epoch = ""  # continue from whatever comes next instead of retrying forever
        for message in held:
            self.on_publication(channel, *message)

    async def _history_after(self, channel: str, epoch: str, offset: int) -> History:
        """Everything after (``epoch``, ``offset``); if the epoch changed, the new one from 1."""
        history = await self.broker.history(channel, since=Since(offset, epoch))
        if history.position.epoch != epoch:
            history = await self.broker.history(channel, since=Since(0, history.position.epoch))
        return history

    async def _check_all_channels(self) -> None:
        """After a broker outage: catch up every channel with local subscribers."""
        semaphore = asyncio.Semaphore(RECOVERY_CONCURRENCY)

        async def check(channel: str, ch: Channel) -> None:
            async with semaphore:
                if ch.recovering is None and ch.live and ch.epoch:
                    self._fill_gap(channel, ch, None)

        await asyncio.gather(*(check(n, c) for n, c in list(self.hub.channels.items())))

    # -- relationships -------------------------------------------------------------------------

    async def save_relationships(self, relationships: Relationships) -> int:
        """Store a new version, apply it here, and tell every node to reload from the store.
        Raises ``Unavailable`` when the store cannot be reached (nothing changed then)."""

        async def announce(version: int) -> None:
            payload = orjson.dumps({"version": version, "node": self.id})
            await self.broker.publish_control("relationships", payload)

        return await self.relationships.save(relationships, announce)

    # -- connections -------------------------------------------------------------------------

    def register(self, conn: Conn, identity: Identity = ANONYMOUS) -> None:
        self.connections[conn] = identity
        self.keepalive.add(conn)

    def reidentify(self, conn: Conn, identity: Identity) -> None:
        """Replace a connection's identity (token refresh); the user must stay the same."""
        if self.connections.get(conn, identity).user != identity.user:
            raise Forbidden("a refreshed token must be for the same user")
        self.connections[conn] = identity

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

    async def subscribe(self, conn: Conn, channel: str, since: Since | None = None) -> Subscribed:
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
            sub = self._broker_subs.get(channel)
            if sub is None or (sub.done() and (sub.cancelled() or sub.exception() is not None)):
                sub = self._broker_subs[channel] = asyncio.ensure_future(
                    self.broker.subscribe(channel)
                )
                sub.add_done_callback(_retrieve)
            await asyncio.shield(sub)
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
        if self._presence_enabled(channel):
            self._join(conn, channel)
        return Subscribed(position, recovered, replay, [m[2] for m in backlog])

    async def unsubscribe(self, conn: Conn, channel: str) -> None:
        if channel in conn.channels:
            conn.channels.discard(channel)
            self._drop(conn, channel)

    def _drop(self, conn: Conn, channel: str) -> None:
        """``conn`` no longer wants ``channel``: its presence there leaves, and the broker
        subscription goes with the channel's last local subscriber."""
        self._leave(conn, channel)
        if self.hub.remove(channel, conn):
            self._release(channel)

    def _release(self, channel: str) -> None:
        """No local connection wants ``channel`` any more: stop receiving it from the broker."""
        self._broker_subs.pop(channel, None)
        self._spawn(self.broker.unsubscribe(channel))

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
        return Published(await self.broker.publish(channel, result))

    async def history(self, conn: Conn, channel: str, limit: int | None) -> History:
        self._check_read(conn, channel)
        return await self.broker.history(channel, limit=limit)

    async def presence(self, conn: Conn, channel: str) -> list[bytes]:
        self._check_read(conn, channel)
        if not self._presence_enabled(channel):
            raise BadRequest(
                f"channel {channel!r} has no presence (PULLY_PRESENCE_CHANNELS: "
                f"{', '.join(self.settings.presence_channels) or 'none'})"
            )
        return await self.broker.presence(channel)

    def _presence_enabled(self, channel: str) -> bool:
        return any(fnmatch.fnmatchcase(channel, g) for g in self.settings.presence_channels)

    def _join(self, conn: Conn, channel: str) -> None:
        info = protocol.presence_info(conn.client_id, self._identity(conn).user)
        self._present[(channel, conn.client_id)] = info
        self._spawn(self.broker.presence_join(channel, conn.client_id, info))

    def _leave(self, conn: Conn, channel: str) -> None:
        info = self._present.pop((channel, conn.client_id), None)
        if info is not None:
            self._spawn(self.broker.presence_leave(channel, conn.client_id, info))

    async def _refresh_presence_forever(self) -> None:
        interval = self.settings.presence_ttl / 3
        while True:
            await asyncio.sleep(interval)
            if not self._present:
                continue
            try:
                entries = [(ch, client, info) for (ch, client), info in self._present.items()]
                await self.broker.presence_refresh(entries)
            except PullyError as exc:
                logger.warning("presence refresh failed: %s", exc.message)

    # -- reporting ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        healthy = (
            self.broker.connected and not self.draining and self.relationships.version is not None
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
            "relationships": self.relationships.describe(),
            "uptime": round(time.time() - self.started_at, 3),
        }


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
