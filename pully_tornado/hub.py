"""This process's channel -> connections map, and the local fan-out.

A publication arrives once per node as the finished ``message`` frame payload; the hub wraps it in
one WebSocket frame and writes those same bytes to every live local subscriber, in arrival order
(which is offset order). Connections still setting up a subscription are *pending*: what arrives
for them is kept, so the node can send ``subscribed`` first and then exactly the messages after
the offset it reported, with no gap and no duplicate at the seam.
"""

from __future__ import annotations

from typing import Protocol

from .protocol import text_frame


class Conn(Protocol):
    """A client connection as the hub and node see it."""

    client_id: str
    channels: set[str]

    def write_frame(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; never raises, never blocks."""

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class _Channel:
    __slots__ = ("live", "pending", "snapshot")

    def __init__(self) -> None:
        self.live: dict[Conn, None] = {}  # an insertion-ordered set
        self.pending: dict[Conn, list[bytes]] = {}
        self.snapshot: tuple[Conn, ...] | None = None  # live, frozen for iteration


class Hub:
    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}
        self.subscriptions = 0

    def __contains__(self, channel: str) -> bool:
        return channel in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    def is_live(self, channel: str, conn: Conn) -> bool:
        ch = self._channels.get(channel)
        return ch is not None and conn in ch.live

    def add_pending(self, channel: str, conn: Conn) -> bool:
        """Buffer ``channel``'s publications for ``conn``; True if the channel is new here."""
        ch = self._channels.get(channel)
        new = ch is None
        if ch is None:
            ch = self._channels[channel] = _Channel()
        ch.pending[conn] = []
        return new

    def activate(self, channel: str, conn: Conn) -> list[bytes] | None:
        """Make a pending subscription live; returns what was buffered for it, in order, or
        None if ``conn`` is no longer pending there (it closed meanwhile)."""
        ch = self._channels.get(channel)
        if ch is None or conn not in ch.pending:
            return None
        backlog = ch.pending.pop(conn)
        ch.live[conn] = None
        ch.snapshot = None
        self.subscriptions += 1
        return backlog

    def remove(self, channel: str, conn: Conn) -> bool:
        """Forget ``conn`` on ``channel``; True if no local connection wants the channel now."""
        ch = self._channels.get(channel)
        if ch is None:
            return False
        if ch.live.pop(conn, 0) is None:
            ch.snapshot = None
            self.subscriptions -= 1
        ch.pending.pop(conn, None)
        if ch.live or ch.pending:
            return False
        del self._channels[channel]
        return True

    def deliver(self, channel: str, payload: bytes) -> None:
        """Fan one publication out to this node's subscribers of ``channel``."""
        ch = self._channels.get(channel)
        if ch is None:
            return
        if ch.live:
            subscribers = ch.snapshot
            if subscribers is None:
                subscribers = ch.snapshot = tuple(ch.live)
            frame = text_frame(payload)
            for conn in subscribers:
                conn.write_frame(frame)
        for backlog in ch.pending.values():
            backlog.append(payload)
