"""Redis broker: one Redis (or Redis-compatible server) shared by every node of a cluster.

Keys, scripts and the payload format are :mod:`.redis_scripts`'; the commands and the reading of
replies :mod:`.redis_common`'s. What is this topology's own: ONE pipelined command link and ONE
subscriber link (:mod:`.redis_subscriber`) per process, classic ``PUBLISH``/``SUBSCRIBE``, and
the check that the server is not a Redis Cluster: a node pointed at one master of a cluster would
otherwise answer ``unavailable (MOVED ...)`` for every channel on the other masters, so it says
at once, in the log and in ``/healthz`` (503), which URL to use instead.

When a channel's meta is gone (Redis restarted without persistence, expiry, eviction) the next
use creates a new epoch and drops any stale stream, so a recovery is never answered from another
sequence.
"""

from __future__ import annotations

import logging

from ..errors import Unavailable
from ..settings import Settings
from .base import BrokerEvents
from .redis_common import RedisBase
from .redis_subscriber import Subscriber
from .redis_url import RedisTarget, parse_redis_url
from .resp import CommandLink, Link, LinkDown, RedisReplyError, open_link

logger = logging.getLogger("pully.broker.redis")


class RedisBroker(RedisBase):
    kind = "redis"

    def __init__(self, settings: Settings, target: RedisTarget | None = None) -> None:
        assert settings.redis_url
        super().__init__(settings, target or parse_redis_url(settings.redis_url))
        self._commands = CommandLink(self._open)
        self._subscriber = Subscriber(
            "subscriber", self._open, self._resubscribe, self._on_link, self._on_reply
        )

    async def _open(self) -> Link:
        """A link to the server; raises :class:`LinkDown` when it is one master of a Cluster."""
        link = await open_link(self._target.endpoint)
        if self.problem is None:
            try:
                info = await link.request("INFO", "cluster")
            except RedisReplyError:  # INFO refused (restricted managed Redis): cannot tell
                info = b""
            if b"cluster_enabled:1" in info:
                self._cluster_found(str(self._target.endpoint))
        if self.problem is not None:
            link.close()
            raise LinkDown(self.problem)
        return link

    def _cluster_found(self, where: str) -> None:
        self.problem = (
            f"the Redis server at {where} is a Redis Cluster: set PULLY_REDIS_URL to "
            f"redis+cluster://{where} (rediss+cluster:// with TLS)"
        )
        logger.error("%s", self.problem)
        self._commands.reset()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, events: BrokerEvents) -> None:
        self._events = events
        self._subscriber.start()

    async def close(self) -> None:
        self._closing = True
        await self._subscriber.close()
        self._fail_waiters(Unavailable("broker closed"))
        await self._commands.close()

    @property
    def connected(self) -> bool:
        return self._subscriber.link is not None and self.problem is None

    # -- topology ----------------------------------------------------------------------------

    def _commands_for(self, key: str) -> CommandLink:
        return self._commands

    def _subscriber_for(self, key: bytes) -> Subscriber | None:
        return self._subscriber if self.connected else None

    async def _redirected(self, error: str) -> bool:
        if error.startswith(("MOVED", "ASK", "CLUSTERDOWN")) and self.problem is None:
            self._cluster_found(str(self._target.endpoint))
            if self._subscriber.link is not None:  # /healthz says so from now on
                self._subscriber.link.close()
        return False

    def _resubscribe(self, subscriber: Subscriber, link: Link) -> None:
        self._send_batched(link, b"SUBSCRIBE", [*self._control, *self._channels])

    def _on_link(self, subscriber: Subscriber, up: bool) -> None:
        if up:
            if self._reported is not None:
                logger.info("redis subscriber reconnected; %d channels", len(self._channels))
        else:
            self._fail_waiters(Unavailable("redis connection lost"))
            # the command connection to the lost server is stale too: reconnect it on next use
            self._commands.reset()
        self._report(up)

    async def publish_control(self, topic: str, payload: bytes) -> None:
        try:
            await self._commands.call(b"PUBLISH", f"pully:{topic}", payload)
        except (LinkDown, RedisReplyError) as exc:
            raise Unavailable(f"redis is unreachable, control message not sent ({exc})") from None
