"""In-process broker: the embedded default, and the reference the Redis broker is tested against."""

from __future__ import annotations

import asyncio
import collections
import time

from .. import protocol
from ..settings import Settings
from ..tasks import stop
from .base import Broker, BrokerEvents, History, Position, covered, new_epoch

# Idempotency keys remembered at most (about 200 bytes each): past it the oldest is forgotten
# before its TTL and counted (``idempotency_keys_forgotten``), so a flood of unique keys cannot
# grow the process without bound. Redis keeps every key its TTL (bounded by its maxmemory).
MAX_IDEMPOTENCY_KEYS = 100_000


class _Channel:
    __slots__ = ("epoch", "history", "offset", "published", "touched", "ttl")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.offset = 0
        self.ttl = 0.0  # seconds history is kept after the last publish (set by each publish)
        # made by the first publish, dropped when it expires: an idle channel is ~200 bytes
        self.history: collections.deque[tuple[int, bytes]] | None = None
        self.touched = self.published = time.monotonic()


class MemoryBroker(Broker):
    """Offsets, history and presence inside this process.

    History keeps the last ``history_size`` messages of a channel and is dropped
    ``history_ttl`` seconds after the channel's last publish. What the broker keeps follows
    what is live, whatever churn of channel names clients cause: reading a channel nobody uses
    creates nothing, a channel never published to is forgotten with its last subscriber, and a
    published channel keeps only its offset and epoch once its history expired, until it has
    been idle ``meta_ttl`` seconds. A forgotten channel's next use starts a new epoch, so no
    client mistakes one sequence for another."""

    kind = "memory"

    def __init__(self, settings: Settings) -> None:
        self._meta_ttl = settings.meta_ttl
        self._history_size = settings.history_size
        self._history_ttl = settings.history_ttl
        self._idempotency_ttl = settings.idempotency_ttl
        # (channel, key) -> (forgotten at, position), oldest first
        self._seen: collections.OrderedDict[tuple[str, str], tuple[float, Position]] = (
            collections.OrderedDict()
        )
        self._channels: dict[str, _Channel] = {}
        self._subscribed: set[str] = set()
        # The epoch a channel created now gets, and what a channel nobody uses reports. It
        # changes whenever a channel that handed out offsets is forgotten, so a forgotten
        # sequence is never resumed (a channel forgotten at offset 0 named no message).
        self._fresh_epoch = new_epoch()
        self._presence: dict[str, dict[str, bytes]] = {}
        self._events: BrokerEvents | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, events: BrokerEvents) -> None:
        self._events = events
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        await stop(self._sweeper)
        self._sweeper = None

    @property
    def connected(self) -> bool:
        return True

    @property
    def reconnects(self) -> int:
        return 0

    @property
    def channel_count(self) -> int:
        """Channels this broker keeps an offset (and maybe history) for."""
        return len(self._channels)

    def _channel(self, name: str) -> _Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = _Channel(self._fresh_epoch)
        else:
            ch.touched = time.monotonic()
            self._expire_history(ch, ch.touched)
        return ch

    def _expire_history(self, ch: _Channel, now: float) -> None:
        if ch.history is not None and now - ch.published > ch.ttl:
            ch.history = None

    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        history_size: int | None = None,
        history_ttl: float | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
    ) -> Position:
        if idempotency_key is not None:
            seen = self._seen.get((channel, idempotency_key))
            if seen is not None and seen[0] > time.monotonic():
                return seen[1]
        ch = self._channel(channel)
        ch.offset += 1
        ch.published = ch.touched
        payload = protocol.message(channel, data, ch.offset, ch.epoch)
        size = self._history_size if history_size is None else history_size
        if size:
            if ch.history is None or ch.history.maxlen != size:  # new, or its window changed
                ch.history = collections.deque(ch.history or (), maxlen=size)
            ch.history.append((ch.offset, payload))
            ch.ttl = self._history_ttl if history_ttl is None else history_ttl
        else:
            ch.history = None
        if self._events is not None:
            self._events.on_publication(channel, ch.offset, ch.epoch, payload)
        position = Position(ch.offset, ch.epoch)
        if idempotency_key is not None:
            self._remember(channel, idempotency_key, position, idempotency_ttl)
        return position

    def _remember(self, channel: str, key: str, position: Position, ttl: float | None) -> None:
        until = time.monotonic() + (self._idempotency_ttl if ttl is None else ttl)
        self._seen.pop((channel, key), None)  # an expired entry: the new one goes last
        self._seen[(channel, key)] = (until, position)
        if len(self._seen) > MAX_IDEMPOTENCY_KEYS:
            self._seen.popitem(last=False)
            self.idempotency_keys_forgotten += 1

    async def history(
        self, channel: str, since: Position | None = None, limit: int | None = None
    ) -> History:
        if channel not in self._channels:  # nobody uses it: answer without keeping anything
            position = Position(0, self._fresh_epoch)
            return History(position, [], [], covered(since, position, []))
        ch = self._channel(channel)
        position = Position(ch.offset, ch.epoch)
        retained = ch.history or ()
        if since is not None:
            kept = [(o, p) for o, p in retained if o > since.offset]
        elif limit == 0:
            kept = []
        else:
            kept = list(retained)[-limit:] if limit else list(retained)
        offsets = [o for o, _ in kept]
        return History(position, [p for _, p in kept], offsets, covered(since, position, offsets))

    async def history_remove(self, channel: str) -> None:
        if channel in self._channels:
            self._channels[channel] = _Channel(new_epoch())

    async def subscribe(self, channel: str) -> None:
        """Keep ``channel`` while it is subscribed (every publication in this process reaches
        ``on_publication`` anyway)."""
        self._subscribed.add(channel)
        self._channel(channel)

    async def unsubscribe(self, channel: str) -> None:
        """Forget ``channel`` at once if it was never published to (the sweep handles the
        rest)."""
        self._subscribed.discard(channel)
        ch = self._channels.get(channel)
        if ch is not None and ch.offset == 0:
            del self._channels[channel]

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
        """Free expired history, and forget channels nobody subscribes to that were idle
        ``meta_ttl`` (or never published to)."""
        ttls = [t for t in (self._history_ttl, self._meta_ttl) if t > 0]
        interval = max(1.0, min([60.0, *ttls]))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            horizon = now - self._meta_ttl if self._meta_ttl else float("-inf")
            forgotten = False
            for name, ch in list(self._channels.items()):
                if name in self._subscribed:
                    continue
                self._expire_history(ch, now)
                if ch.offset == 0 or ch.touched < horizon:
                    del self._channels[name]
                    forgotten = forgotten or ch.offset > 0
            if forgotten:
                self._fresh_epoch = new_epoch()
            for entry, (until, _) in list(self._seen.items()):
                if until <= now:
                    del self._seen[entry]
