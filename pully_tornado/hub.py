"""This process's channel -> connections map, and the local fan-out.

A publication arrives once per node as the finished ``message`` frame payload; the hub wraps it in
one WebSocket frame and writes those same bytes to every live local subscriber, in offset order.

Per channel the hub keeps a *cursor*: the epoch and offset of the last publication it delivered.
The node uses it to notice a gap (a publication that does not follow the cursor) and fill it
from history before delivering further; the cursor never jumps: when history cannot fill the
gap, or the epoch changes, the node ends the channel's live subscriptions instead.

Connections still setting up a subscription are *pending*: publications that arrive for them
are kept, so the node can send ``subscribed`` first and then exactly the messages after the
offset it reported. A connection that just became live may be told a position ahead of the
cursor (its position was read while those publications were still on their way to this node):
it is *fresh* until the cursor passes that position, and is not sent what it already has.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .protocol import text_frame


class Conn(Protocol):
    """A client connection as the hub and node see it."""

    client_id: str
    channels: set[str]

    def write_frame(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; never raises, never blocks."""

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...

    def send_ping(self) -> None: ...

    def pong_overdue(self) -> bool: ...

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (node shutdown)."""


class Flushable(Protocol):
    def write_pending(self) -> None:
        """Write everything queued for this connection."""


class Outbox:
    """Connections with frames queued in this loop tick, written once at the end of the tick.

    A connection queues its frames (replies and messages alike, in order) and registers here
    once per tick; one callback per tick then lets each of them write all its frames at once.
    Several messages for one client in one tick cost one write."""

    __slots__ = ("_loop", "_pending", "_scheduled")

    def __init__(self) -> None:
        self._pending: list[Flushable] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, conn: Flushable) -> None:
        self._pending.append(conn)
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for conn in pending:
            conn.write_pending()


class Channel:
    __slots__ = ("epoch", "fresh", "live", "offset", "pending", "recovering", "snapshot")

    def __init__(self) -> None:
        self.live: dict[Conn, None] = {}  # an insertion-ordered set
        self.pending: dict[Conn, list[tuple[int, str, bytes]]] = {}
        self.snapshot: tuple[Conn, ...] | None = None  # live, frozen for iteration
        self.fresh: dict[Conn, tuple[str, int]] = {}  # live conns that already have up to here
        self.epoch = ""  # the cursor: last publication delivered to live subscribers
        self.offset = 0
        # while the node fills a gap from history: publications held back, in arrival order
        self.recovering: list[tuple[int, str, bytes]] | None = None

    def subscribers(self) -> tuple[Conn, ...]:
        subscribers = self.snapshot
        if subscribers is None:
            subscribers = self.snapshot = tuple(self.live)
        return subscribers


class Hub:
    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.subscriptions = 0
        self.deliveries = 0  # messages written to live subscribers (for /metrics)
        self.outbox = Outbox()

    def __contains__(self, channel: str) -> bool:
        return channel in self.channels

    def __len__(self) -> int:
        return len(self.channels)

    def is_live(self, channel: str, conn: Conn) -> bool:
        ch = self.channels.get(channel)
        return ch is not None and conn in ch.live

    def add_pending(self, channel: str, conn: Conn) -> bool:
        """Buffer ``channel``'s publications for ``conn``; True if the channel is new here."""
        ch = self.channels.get(channel)
        new = ch is None
        if ch is None:
            ch = self.channels[channel] = Channel()
        ch.pending[conn] = []
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

    def deliver(self, ch: Channel, offset: int, epoch: str, payload: bytes) -> None:
        """Fan one publication out to this node's subscribers of ``ch`` and move its cursor.
        The caller has checked that it follows the cursor."""
        ch.epoch, ch.offset = epoch, offset
        if ch.live:
            frame = text_frame(payload)
            self.deliveries += len(ch.live)
            if ch.fresh:
                self._deliver_fresh(ch, offset, epoch, frame)
            else:
                for conn in ch.subscribers():
                    conn.write_frame(frame)
        if ch.pending:
            for backlog in ch.pending.values():
                backlog.append((offset, epoch, payload))

    @staticmethod
    def _deliver_fresh(ch: Channel, offset: int, epoch: str, frame: bytes) -> None:
        fresh = ch.fresh
        for conn in ch.subscribers():
            has = fresh.get(conn)
            if has is not None:
                if has[0] == epoch and offset <= has[1]:
                    continue
                del fresh[conn]
            conn.write_frame(frame)

    def deliver_event(self, channel: str, payload: bytes) -> None:
        """Send a frame outside the offset sequence (``join``/``leave``) to live subscribers."""
        ch = self.channels.get(channel)
        if ch is not None and ch.live:
            frame = text_frame(payload)
            for conn in ch.subscribers():
                conn.write_frame(frame)
