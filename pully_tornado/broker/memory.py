"""In-process broker: the embedded default, and the reference the Redis broker is tested against."""

from __future__ import annotations

import asyncio
import contextlib
import time

from .. import protocol
from ..settings import Settings
from .base import Broker, BrokerEvents, Position, new_epoch


class _Meta:
    __slots__ = ("epoch", "offset", "touched")

    def __init__(self) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.touched = time.monotonic()


class MemoryBroker(Broker):
    """Offsets and delivery inside this process. A channel idle for ``meta_ttl`` seconds forgets
    its offset; its next use starts a new epoch, so no client mistakes one sequence for another."""

    kind = "memory"

    def __init__(self, settings: Settings) -> None:
        self._meta_ttl = settings.meta_ttl
        self._meta: dict[str, _Meta] = {}
        self._events: BrokerEvents | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, events: BrokerEvents) -> None:
        self._events = events
        if self._meta_ttl > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    @property
    def connected(self) -> bool:
        return True

    def _touch(self, channel: str) -> _Meta:
        meta = self._meta.get(channel)
        if meta is None:
            meta = self._meta[channel] = _Meta()
        else:
            meta.touched = time.monotonic()
        return meta

    async def publish(self, channel: str, data: bytes) -> Position:
        meta = self._touch(channel)
        meta.offset += 1
        if self._events is not None:
            self._events.on_publication(
                channel, protocol.message(channel, data, meta.offset, meta.epoch)
            )
        return Position(meta.offset, meta.epoch)

    async def position(self, channel: str) -> Position:
        meta = self._touch(channel)
        return Position(meta.offset, meta.epoch)

    async def subscribe(self, channel: str) -> None:
        """Nothing to do: every publication in this process reaches ``on_publication``."""

    async def unsubscribe(self, channel: str) -> None:
        """Nothing to do (see :meth:`subscribe`)."""

    async def publish_control(self, topic: str, payload: bytes) -> None:
        if self._events is not None:
            self._events.on_control(topic, payload)

    async def _sweep_forever(self) -> None:
        interval = min(self._meta_ttl, 60.0)
        while True:
            await asyncio.sleep(interval)
            horizon = time.monotonic() - self._meta_ttl
            for channel in [c for c, m in self._meta.items() if m.touched < horizon]:
                del self._meta[channel]
