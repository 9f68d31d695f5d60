"""In-process broker: the embedded default, and the reference the Redis broker is tested against."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from .. import protocol
from ..protocol import Since
from ..settings import Settings
from .base import Broker, BrokerEvents, History, Position, covered, new_epoch


class _Channel:
    __slots__ = ("epoch", "history", "offset", "published", "touched")

    def __init__(self, size: int) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.history: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=size)
        self.touched = self.published = time.monotonic()


class MemoryBroker(Broker):
    """Offsets, history and presence inside this process.

    History keeps the last ``history_size`` messages of a channel and is dropped
    ``history_ttl`` seconds after the channel's last publish. A channel idle for ``meta_ttl``
    seconds forgets its offset; its next use starts a new epoch, so no client mistakes one
    sequence for another."""

    kind = "memory"

    def __init__(self, settings: Settings) -> None:
        self._meta_ttl = settings.meta_ttl
        self._history_size = settings.history_size
        self._history_ttl = settings.history_ttl
        self._channels: dict[str, _Channel] = {}
        self._presence: dict[str, dict[str, bytes]] = {}
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

    def _channel(self, name: str) -> _Channel:
        ch = self._channels.get(name)
        now = time.monotonic()
        if ch is None:
            ch = self._channels[name] = _Channel(self._history_size)
        else:
            ch.touched = now
            if ch.history and now - ch.published > self._history_ttl:
                ch.history.clear()
        return ch

    async def publish(self, channel: str, data: bytes) -> Position:
        ch = self._channel(channel)
        ch.offset += 1
        ch.published = ch.touched
        payload = protocol.message(channel, data, ch.offset, ch.epoch)
        if self._history_size:
            ch.history.append((ch.offset, payload))
        if self._events is not None:
            self._events.on_publication(channel, ch.offset, ch.epoch, payload)
        return Position(ch.offset, ch.epoch)

    async def history(
        self, channel: str, since: Since | None = None, limit: int | None = None
    ) -> History:
        ch = self._channel(channel)
        position = Position(ch.offset, ch.epoch)
        if since is not None:
            kept = [(o, p) for o, p in ch.history if o > since.offset]
        elif limit == 0:
            kept = []
        else:
            kept = list(ch.history)[-limit:] if limit else list(ch.history)
        offsets = [o for o, _ in kept]
        return History(position, [p for _, p in kept], offsets, covered(since, position, offsets))

    async def subscribe(self, channel: str) -> None:
        """Nothing to do: every publication in this process reaches ``on_publication``."""

    async def unsubscribe(self, channel: str) -> None:
        """Nothing to do (see :meth:`subscribe`)."""

    async def publish_control(self, topic: str, payload: bytes) -> None:
        if self._events is not None:
            self._events.on_control(topic, payload)

    async def presence_join(self, channel: str, client: str, info: bytes) -> None:
        members = self._presence.setdefault(channel, {})
        if client not in members:
            members[client] = info
            self._announce("join", channel, info)

    async def presence_leave(self, channel: str, client: str, info: bytes) -> None:
        members = self._presence.get(channel)
        if members is not None and members.pop(client, None) is not None:
            if not members:
                del self._presence[channel]
            self._announce("leave", channel, info)

    async def presence(self, channel: str) -> list[bytes]:
        return list(self._presence.get(channel, {}).values())

    def _announce(self, kind: str, channel: str, info: bytes) -> None:
        if self._events is not None:
            self._events.on_presence(channel, protocol.presence_event(kind, channel, info))

    async def _sweep_forever(self) -> None:
        interval = min(self._meta_ttl, 60.0)
        while True:
            await asyncio.sleep(interval)
            horizon = time.monotonic() - self._meta_ttl
            for name in [n for n, c in self._channels.items() if c.touched < horizon]:
                del self._channels[name]
