"""The write path's batching: every frame a connection is sent in one loop tick goes out in one
write at the end of that tick.

A connection (``handlers/websocket.py``) queues its frames, replies and messages alike, in
order, and registers with the node's one :class:`Outbox` the first time in a tick; one
callback per tick then lets each registered connection write everything it queued. Fan-out of
one publication to N subscribers is N list appends here and N writes once the tick ends;
several messages for one client in one tick cost one write (see docs/performance.md).
"""

from __future__ import annotations

import asyncio
from typing import Protocol


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
