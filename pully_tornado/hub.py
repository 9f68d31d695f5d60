"""This process's channel -> connections map, and the local fan-out.

A publication arrives once per node as the finished ``message`` frame payload; the hub wraps it in
one WebSocket frame and writes those same bytes to every live local subscriber, in offset order.

Per channel the hub keeps a *cursor*: the epoch and offset of the last publication it delivered.
:meth:`Hub.receive` checks each publication against it: one that does not follow starts a *hold*
(later publications are kept back) while the node fills the gap from history and then
releases it (:meth:`Hub.release`); the cursor never jumps: when history cannot fill the gap, or the
epoch changes, the node ends the channel's live subscriptions instead. All of this state is the
hub's; the node asks through these methods.

Connections still setting up a subscription are *pending*: publications that arrive for them
are kept, so the node can send ``subscribed`` first and then exactly the messages after the
offset it reported. A connection that just became live may be told a position ahead of the
cursor (its position was read while those publications were still on their way to this node):
it is *fresh* until the cursor passes that position, and is not sent what it already has.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .deflate import Deflater
from .protocol import Position, text_frame


class Conn(Protocol):
    """A client connection as the hub and node see it."""

    client_id: str
    deflate: bool  # it negotiated permessage-deflate: compressed message frames are for it

    def write_frame(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; never raises, never blocks."""

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...

    def send_ping(self) -> None: ...

    def pong_overdue(self) -> bool: ...

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (node shutdown)."""


class Arrival(enum.Enum):
    """What :meth:`Hub.receive` did with a publication."""

    IGNORED = "no local subscriber"
    HELD = "held: the channel's gap is being filled"
    STALE = "already delivered"
    GAP = "it does not follow the cursor: the hub holds the channel from it on"
    NEW_EPOCH = "live subscribers follow another epoch: nothing done"
    DELIVERED = "delivered"


class Channel:
    __slots__ = (
        "broker_sub", "epoch", "fresh", "live", "offset", "pending", "recovering", "snapshot",
    )  # fmt: skip

    def __init__(self) -> None:
        self.live: dict[Conn, None] = {}  # an insertion-ordered set
        self.pending: dict[Conn, list[tuple[int, str, bytes]]] = {}
        self.snapshot: tuple[Conn, ...] | None = None  # live, frozen for iteration
        self.fresh: dict[Conn, tuple[str, int]] = {}  # live conns that already have up to here
        self.epoch = ""  # the cursor: last publication delivered to live subscribers
        self.offset = 0
        # while the node fills a gap from history: publications held back, in arrival order
        self.recovering: list[tuple[int, str, bytes]] | None = None
        # this node's one broker subscription to the channel: it lives as long as the record,
        # that is while any local connection is subscribed or subscribing
        self.broker_sub: asyncio.Future[None] | None = None

    def subscribers(self) -> tuple[Conn, ...]:
        subscribers = self.snapshot
        if subscribers is None:
            subscribers = self.snapshot = tuple(self.live)
        return subscribers


class Hub:
    def __init__(self, compress_from: int | None = None) -> None:
        """``compress_from``: with ``PULLY_COMPRESSION=on``, the payload size from which a
        message is compressed (once) for the subscribers that negotiated it."""
        self._compress_from = compress_from or 0
        self._deflater = Deflater() if compress_from is not None else None
        self.channels: dict[str, Channel] = {}
        self._of: dict[Conn, set[str]] = {}  # each connection's channels, pending or live
        self.subscriptions = 0
        self.deliveries = 0  # messages written to live subscribers (for /metrics)

    def __contains__(self, channel: str) -> bool:
        return channel in self.channels

    def __len__(self) -> int:
        return len(self.channels)

    def is_live(self, channel: str, conn: Conn) -> bool:
        ch = self.channels.get(channel)
        return ch is not None and conn in ch.live

    def channels_of(self, conn: Conn) -> frozenset[str]:
        """The channels ``conn`` is subscribed or subscribing to."""
        return frozenset(self._of.get(conn, ()))

    def count_of(self, conn: Conn) -> int:
        return len(self._of.get(conn, ()))

    def add_pending(self, channel: str, conn: Conn) -> bool:
        """Buffer ``channel``'s publications for ``conn``; True if the channel is new here."""
        ch = self.channels.get(channel)
        new = ch is None
        if ch is None:
            ch = self.channels[channel] = Channel()
        ch.pending[conn] = []
        self._of.setdefault(conn, set()).add(channel)
        return new

    def activate(
        self, channel: str, conn: Conn, epoch: str, offset: int
    ) -> list[tuple[int, str, bytes]] | None:
        """Make a pending subscription live at position (``epoch``, ``offset``): returns what
        arrived meanwhile after that position, in order (the caller sends it right after its
        reply), or None if ``conn`` is no longer pending there (it closed meanwhile)."""
        ch = self.channels.get(channel)
        if ch is None or conn not in ch.pending:
            return None
        backlog = [m for m in ch.pending.pop(conn) if m[1] != epoch or m[0] > offset]
        if backlog:
            offset, epoch = backlog[-1][0], backlog[-1][1]
        if not ch.live:
            ch.epoch, ch.offset = epoch, offset
        elif epoch == ch.epoch and offset > ch.offset:
            ch.fresh[conn] = (epoch, offset)
        ch.live[conn] = None
        ch.snapshot = None
        self.subscriptions += 1
        return backlog

    def remove(self, channel: str, conn: Conn) -> bool:
        """Forget ``conn`` on ``channel``; True if no local connection wants the channel now."""
        mine = self._of.get(conn)
        if mine is not None:
            mine.discard(channel)
            if not mine:
                del self._of[conn]
        ch = self.channels.get(channel)
        if ch is None:
            return False
        if ch.live.pop(conn, 0) is None:
            ch.snapshot = None
            ch.fresh.pop(conn, None)
            self.subscriptions -= 1
        ch.pending.pop(conn, None)
        if ch.live or ch.pending:
            return False
        del self.channels[channel]
        return True

    def broker_subscription(
        self, channel: str, subscribe: Callable[[str], Coroutine[Any, Any, None]]
    ) -> asyncio.Future[None]:
        """The channel's one broker subscription here, started with ``subscribe`` by the first
        local subscriber (or again after one that failed); concurrent subscribers share it. The
        channel must have a pending or live subscriber (:meth:`add_pending` first); the caller
        unsubscribes in the broker when :meth:`remove` says the channel is gone."""
        ch = self.channels[channel]
        sub = ch.broker_sub
        if sub is None or (sub.done() and (sub.cancelled() or sub.exception() is not None)):
            sub = ch.broker_sub = asyncio.ensure_future(subscribe(channel))
            sub.add_done_callback(_retrieve)
        return sub

    def names(self) -> list[str]:
        return list(self.channels)

    def live(self, channel: str) -> list[Conn]:
        """The live local subscribers of ``channel``."""
        ch = self.channels.get(channel)
        return [] if ch is None else list(ch.live)

    def receive(self, channel: str, offset: int, epoch: str, payload: bytes) -> Arrival:
        """A publication from the broker: delivered when it follows the cursor (or nobody here
        follows one yet); otherwise the caller is told what to do about it (``GAP``: fill it
        from history and :meth:`release` the channel; ``NEW_EPOCH``: end the live
        subscriptions, then offer it again)."""
        ch = self.channels.get(channel)
        if ch is None:
            return Arrival.IGNORED
        if ch.recovering is not None:
            ch.recovering.append((offset, epoch, payload))
            return Arrival.HELD
        if ch.live and ch.epoch:
            if epoch != ch.epoch:
                return Arrival.NEW_EPOCH
            if offset <= ch.offset:
                return Arrival.STALE  # a recovery read it from history first
            if offset != ch.offset + 1:
                ch.recovering = [(offset, epoch, payload)]
                return Arrival.GAP
        self.deliver(ch, offset, epoch, payload)
        return Arrival.DELIVERED

    def hold(self, channel: str) -> Channel | None:
        """Start holding ``channel``'s publications (to check it against history after a broker
        outage): the channel, or None if it has no live subscriber with a cursor or is held
        already."""
        ch = self.channels.get(channel)
        if ch is None or ch.recovering is not None or not ch.live or not ch.epoch:
            return None
        ch.recovering = []
        return ch

    def holding(self, channel: str) -> Channel | None:
        ch = self.channels.get(channel)
        return ch if ch is not None and ch.recovering is not None else None

    @staticmethod
    def cursor(ch: Channel) -> Position:
        """The last publication delivered to the channel's live subscribers."""
        return Position(ch.offset, ch.epoch)

    @staticmethod
    def release(ch: Channel) -> list[tuple[int, str, bytes]]:
        """Stop holding ``ch``: what was held, in arrival order."""
        held, ch.recovering = ch.recovering or [], None
        return held

    def is_current(self, channel: str, ch: Channel) -> bool:
        """False once everyone left ``channel`` (a later subscriber gets a new one)."""
        return self.channels.get(channel) is ch

    def deliver(self, ch: Channel, offset: int, epoch: str, payload: bytes) -> None:
        """Fan one publication out to this node's subscribers of ``ch`` and move its cursor.
        The caller has checked that it follows the cursor."""
        ch.epoch, ch.offset = epoch, offset
        if ch.live:
            frame = text_frame(payload)
            self.deliveries += len(ch.live)
            compress = self._deflater is not None and len(payload) >= self._compress_from
            if compress or ch.fresh:
                self._deliver_each(ch, offset, epoch, frame, payload if compress else None)
            else:
                for conn in ch.subscribers():
                    conn.write_frame(frame)
        if ch.pending:
            for backlog in ch.pending.values():
                backlog.append((offset, epoch, payload))

    def _deliver_each(
        self, ch: Channel, offset: int, epoch: str, frame: bytes, compress: bytes | None
    ) -> None:
        """The frame to each live subscriber that does not have it yet (``ch.fresh``: those
        that recovered past it); with ``compress`` (the payload, when compression is on and it
        is large enough), the compressed frame, made once on first need, to the subscribers
        that negotiated permessage-deflate."""
        fresh = ch.fresh
        compressed: bytes | None = None
        for conn in ch.subscribers():
            if fresh:
                has = fresh.get(conn)
                if has is not None:
                    if has[0] == epoch and offset <= has[1]:
                        continue
                    del fresh[conn]
            if compress is not None and conn.deflate:
                if compressed is None:
                    assert self._deflater is not None
                    compressed = self._deflater.frame(compress) or frame
                conn.write_frame(compressed)
            else:
                conn.write_frame(frame)

    def deliver_event(self, channel: str, payload: bytes) -> None:
        """Send a frame outside the offset sequence (``join``/``leave``) to live subscribers."""
        ch = self.channels.get(channel)
        if ch is not None and ch.live:
            frame = text_frame(payload)
            for conn in ch.subscribers():
                conn.write_frame(frame)


def _retrieve(fut: asyncio.Future[None]) -> None:
    """Mark a broker subscription's failure as seen (its subscribers get it from awaiting)."""
    if not fut.cancelled():
        fut.exception()
