"""One subscriber link, driven by one task: the reading half every Redis topology shares.

A :class:`Subscriber` connects, lets its owner resubscribe everything on the fresh link, reports
the link up, then drains the socket at once into its owner's ``on_reply`` (one call per reply:
the owner turns messages into per-channel work). It pings when idle, and after any failure
reports the link down and reconnects with capped jittered backoff. One Redis or Sentinel has one;
a Redis Cluster one per shard master. It is a small RESP reader over hiredis rather than
redis-py's PubSub, because that one retries and resubscribes inside its own calls, where the
broker must see each outage (to answer ``unavailable``, report ``/healthz`` and let the node
recover what it missed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..backoff import Backoff
from ..tasks import stop
from .resp import Link, LinkDown, Opener, RedisReplyError

logger = logging.getLogger("pully.broker.redis")

IDLE_PING_AFTER = 10.0  # seconds without any traffic before the subscriber pings
DEAD_AFTER = 25.0  # seconds without any traffic (pong included) before the link is dropped
BATCH = 500  # channels per (S)SUBSCRIBE command when resubscribing


class Subscriber:
    """``resubscribe(link)`` sends the subscribe commands on a fresh link; ``on_state(self,
    up)`` follows the link; ``on_reply(self, reply)`` gets every reply read from it."""

    def __init__(
        self,
        name: str,
        opener: Opener,
        resubscribe: Callable[[Subscriber, Link], None],
        on_state: Callable[[Subscriber, bool], None],
        on_reply: Callable[[Subscriber, Any], None],
    ) -> None:
        self.name = name
        self.link: Link | None = None
        self.failures = 0  # connection attempts failed since the link was last up
        self._open = opener
        self._resubscribe = resubscribe
        self._on_state = on_state
        self._on_reply = on_reply
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name=f"pully-redis-{self.name}")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None
        link, self.link = self.link, None
        if link is not None:
            link.close()

    def send(self, *args: bytes | str | int) -> bool:
        """Send a command on the live link; False when there is none."""
        if self.link is None:
            return False
        self.link.send(*args)
        return True

    async def _run_forever(self) -> None:
        backoff = Backoff(base=0.05, cap=2.0)
        while True:
            try:
                link = await self._open()
                self.failures = 0
                await self._serve(link)
            except asyncio.CancelledError:
                raise
            except (LinkDown, RedisReplyError, OSError, TimeoutError, EOFError) as exc:
                log = logger.warning if self.link is not None or not self.failures else logger.debug
                log("redis subscriber %s down (%s); reconnecting", self.name, exc or type(exc))
            except Exception:
                logger.exception("redis subscriber %s failed; reconnecting", self.name)
            lost, self.link = self.link, None
            if lost is not None:
                lost.close()
                self._on_state(self, False)
            await asyncio.sleep(backoff.delay(self.failures))
            self.failures += 1

    async def _serve(self, link: Link) -> None:
        self._resubscribe(self, link)
        self.link = link
        self._on_state(self, True)
        parser, on_reply = link.parser, self._on_reply
        link.watch(IDLE_PING_AFTER, DEAD_AFTER)
        while True:
            parser.feed(await link.read())
            while (reply := parser.gets()) is not False:
                on_reply(self, reply)
