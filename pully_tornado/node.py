"""The node: one per process. It owns the hub, the broker and the connections, and is the only
thing handlers talk to (they translate WebSocket frames and HTTP requests into Node calls)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

import orjson

from . import __version__, protocol
from .api.methods import ServerApi
from .auth import ANONYMOUS, Identity
from .broker import Broker, create_broker
from .broker.base import History
from .consumers.base import ConsumersCollector
from .consumers.factory import create_consumers
from .errors import BadRequest, Forbidden
from .functions.pipeline import Pipeline
from .hooks import Hooks
from .hub import Conn, Hub
from .keepalive import KeepAlive
from .listener import Listener
from .metrics import Metrics
from .presence import Presence
from .publishing import Publisher
from .relationships import Relationships
from .relationships.manager import RelationshipsManager
from .relationships.store import Store
from .relationships.stores import create_store
from .settings import Settings
from .subscriptions import Subscriptions
from .tasks import Background

logger = logging.getLogger("pully.node")


class Node:
    def __init__(
        self, settings: Settings, broker: Broker | None = None, store: Store | None = None
    ) -> None:
        self.settings = settings
        self.id = settings.node_id
        self._background = Background(logger)
        self.hub = Hub(settings.compression_min_bytes if settings.compression else None)
        self.broker = broker if broker is not None else create_broker(settings)
        self.relationships = RelationshipsManager(
            store or create_store(settings, self.broker), self.id, self._send_relationships
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
        self.hooks = Hooks(settings, self.broker)
        self.metrics.registry.register(self.hooks.collector())
        self.subscriptions = Subscriptions(
            self.hub, self.broker, self.presence, self._background, self.identity,
            settings.max_subscriptions, self.hooks,
        )  # fmt: skip
        self.publisher = Publisher(
            self.broker, self.relationships, self.pipeline, self.identity,
            settings.max_message_bytes,
        )  # fmt: skip
        self.api = ServerApi(self)  # docs/server-api.md
        self.consumers = create_consumers(settings, self.publisher)  # docs/consumers.md
        self.metrics.registry.register(ConsumersCollector(self.consumers))
        self.disconnects: collections.Counter[str] = collections.Counter()
        self.connections: dict[Conn, Identity] = {}
        self._connections_gone = asyncio.Event()
        self._broker_was_up = False
        self.started_at = time.time()
        self.draining = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self.presence.start()
        self.keepalive.start()
        await self.relationships.start()
        await self.hooks.start()
        self.api.survey.start()
        for consumer in self.consumers:
            consumer.start()

    async def close(self) -> None:
        """Stop everything: connections still open (normally drained before) are dropped."""
        for consumer in self.consumers:
            await consumer.close()
        await self.api.survey.close()
        for conn in list(self.connections):
            conn.abort()
        await self._connections_closed(2.0)
        await self.keepalive.close()
        await self.relationships.close()
        await self.presence.close()
        await self._background.close(2.0)  # let leaves and unsubscribes of closed clients go out
        await self.hooks.close(2.0)  # and their webhook events
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
        self.subscriptions.on_publication(channel, offset, epoch, payload)

    def on_presence(self, channel: str, payload: bytes) -> None:
        self.hub.deliver_event(channel, payload)

    def on_control(self, topic: str, payload: bytes) -> None:
        if topic == "control":
            self.api.survey.on_message(payload)
            return
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
            self.subscriptions.check_all_channels()
            self.relationships.reload_soon()
        self._broker_was_up = True

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
        self.hooks.connected(conn.client_id, identity.user)

    def reidentify(self, conn: Conn, identity: Identity) -> list[str]:
        """Replace a connection's identity (token refresh); the user must stay the same.

        Every subscription is checked against the new rights: those no longer allowed are
        dropped here, and returned (sorted) so the caller tells the client."""
        if self.connections.get(conn, identity).user != identity.user:
            raise Forbidden("a refreshed token must be for the same user")
        self.connections[conn] = identity
        return self.subscriptions.revoke(conn, identity)

    def unregister(self, conn: Conn, reason: str | None = None) -> None:
        """Forget a closed connection and all its subscriptions (``reason``: for webhooks)."""
        identity = self.connections.get(conn)
        if identity is None:
            return
        self.keepalive.remove(conn)
        self.subscriptions.drop_all(conn)
        del self.connections[conn]
        self.hooks.disconnected(conn.client_id, identity.user, reason)
        if not self.connections:
            self._connections_gone.set()

    def identity(self, conn: Conn | None) -> Identity:
        return ANONYMOUS if conn is None else self.connections.get(conn, ANONYMOUS)

    # -- reading channels ----------------------------------------------------------------------

    async def history(self, conn: Conn, channel: str, limit: int | None) -> History:
        self.subscriptions.check_read(conn, channel)
        return await self.broker.history(channel, limit=limit)

    async def presence_of(self, conn: Conn, channel: str) -> list[bytes]:
        """Who is subscribed to ``channel`` on every node (``presence`` entries)."""
        self.subscriptions.check_read(conn, channel)
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
            "consumers": {consumer.kind: consumer.describe() for consumer in self.consumers},
            "uptime": round(time.time() - self.started_at, 3),
        }
