"""The node: one per process. It owns the hub, the broker and the connections, and is the only
thing handlers talk to (they translate WebSocket frames and HTTP requests into Node calls)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import __version__, protocol
from .broker import Broker, Position, create_broker
from .hub import Conn, Hub
from .settings import Settings

logger = logging.getLogger("pully.node")


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Result of :meth:`Node.subscribe`: the position to report, then the messages to send after
    the reply (publications that arrived while the subscription was being set up)."""

    position: Position
    backlog: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Published:
    position: Position | None  # None when a function dropped the message

    @property
    def dropped(self) -> bool:
        return self.position is None


class Node:
    def __init__(self, settings: Settings, broker: Broker | None = None) -> None:
        self.settings = settings
        self.id = settings.node_id
        self.hub = Hub()
        self.broker = broker if broker is not None else create_broker(settings)
        self.connections: dict[Conn, None] = {}
        self._broker_subs: dict[str, asyncio.Future[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._connections_gone = asyncio.Event()
        self.started_at = time.time()
        self.draining = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)

    async def close(self) -> None:
        await self.broker.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def drain(self, timeout: float) -> None:
        """Tell every client to reconnect elsewhere, close them with 1012, and wait (up to
        ``timeout`` seconds) for them to go."""
        self.draining = True
        frame = protocol.text_frame(protocol.reconnect("draining"))
        for conn in list(self.connections):
            conn.write_frame(frame)
            conn.close(protocol.CLOSE_DRAINING, "draining")
        if self.connections:
            self._connections_gone.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._connections_gone.wait()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- broker events -----------------------------------------------------------------------

    def on_publication(self, channel: str, payload: bytes) -> None:
        self.hub.deliver(channel, payload)

    def on_control(self, topic: str, payload: bytes) -> None:
        logger.debug("control message on %s ignored: %r", topic, payload[:200])

    def on_broker_state(self, connected: bool) -> None:
        if connected:
            logger.info("broker %s connected", self.broker.kind)
        else:
            logger.warning(
                "broker %s unreachable; publishes answer 'unavailable'", self.broker.kind
            )

    # -- connections -------------------------------------------------------------------------

    def register(self, conn: Conn) -> None:
        self.connections[conn] = None

    def unregister(self, conn: Conn) -> None:
        """Forget a closed connection and all its subscriptions."""
        self.connections.pop(conn, None)
        for channel in conn.channels:
            if self.hub.remove(channel, conn):
                self._release(channel)
        conn.channels.clear()
        if not self.connections:
            self._connections_gone.set()

    async def subscribe(self, conn: Conn, channel: str) -> Subscribed:
        """Subscribe ``conn`` to ``channel`` on this node (and in the broker if it is the first).

        The caller must write the ``subscribed`` reply and then the backlog before awaiting
        anything else, so no live message slips in between. Subscribing twice is harmless: the
        second call reports the current position and changes nothing.
        Raises :class:`~pully_tornado.errors.Unavailable` when the broker cannot be reached.
        """
        if self.hub.is_live(channel, conn):
            return Subscribed(await self.broker.position(channel))
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
            position = await self.broker.position(channel)
        except BaseException:
            conn.channels.discard(channel)
            if self.hub.remove(channel, conn):
                self._release(channel)
            raise
        backlog = self.hub.activate(channel, conn)
        if not backlog:
            return Subscribed(position)
        return Subscribed(position, [p for p in backlog if _is_after(p, position)])

    async def unsubscribe(self, conn: Conn, channel: str) -> None:
        conn.channels.discard(channel)
        if self.hub.remove(channel, conn):
            self._release(channel)

    def _release(self, channel: str) -> None:
        """No local connection wants ``channel`` any more: stop receiving it from the broker."""
        self._broker_subs.pop(channel, None)
        self._spawn(self.broker.unsubscribe(channel))

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, channel: str, data: bytes, client: str | None = None) -> Published:
        """Publish JSON ``data`` to ``channel``: returns the assigned position once the broker
        has it. Raises ``PullyError`` subclasses (``unavailable`` when the broker is down)."""
        return Published(await self.broker.publish(channel, data))

    # -- reporting ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        healthy = self.broker.connected and not self.draining
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
            "uptime": round(time.time() - self.started_at, 3),
        }


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _is_after(payload: bytes, position: Position) -> bool:
    """True if a buffered message comes after ``position`` (or belongs to another epoch)."""
    frame = orjson.loads(payload)
    return bool(frame["offset"] > position.offset or frame["epoch"] != position.epoch)
