"""One keepalive loop per node instead of a ping task per connection.

Tornado's own pinging runs one task, one coroutine and one timer per connection: memory and
wake-ups that grow with every idle client. Here connections are spread over ``SLICES`` groups;
every ``interval / SLICES`` seconds one group gets a WebSocket ping (through its outbox, like any
frame) and the group pinged about ``timeout`` ago is checked: a connection that has not answered
is closed with 1001 "ping timed out". Pings go out in slices, so 20,000 clients never cost one
burst.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

from .tasks import stop

SLICES = 8


class Pingable(Protocol):
    def send_ping(self) -> None:
        """Write a WebSocket ping and start waiting for its pong."""

    def pong_overdue(self) -> bool:
        """True if the last ping is still unanswered."""

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class KeepAlive:
    def __init__(
        self, interval: float, timeout: float, on_timeout: Callable[[], None] = lambda: None
    ) -> None:
        self.on_timeout = on_timeout
        self.interval = interval  # 0: no pings
        self.tick = interval / SLICES
        # the group checked now was pinged this many ticks ago (>= timeout)
        wait = timeout or interval
        self.lag = min(SLICES, max(1, math.ceil(wait / self.tick))) if interval else SLICES
        self._slices: list[dict[Pingable, None]] = [{} for _ in range(SLICES)]
        self._where: dict[Pingable, int] = {}
        self._next = 0
        self._task: asyncio.Task[None] | None = None
        self.timeouts = 0

    def add(self, conn: Pingable) -> None:
        index = self._next
        self._next = (index + 1) % SLICES
        self._slices[index][conn] = None
        self._where[conn] = index

    def remove(self, conn: Pingable) -> None:
        index = self._where.pop(conn, None)
        if index is not None:
            self._slices[index].pop(conn, None)

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="pully-keepalive")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _run(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(self.tick)
            tick += 1
            checked = self._slices[(tick - self.lag) % SLICES]
            for conn in [c for c in checked if c.pong_overdue()]:
                self.timeouts += 1
                self.on_timeout()
                conn.close(1001, "ping timed out")
            for conn in list(self._slices[tick % SLICES]):
                conn.send_ping()
