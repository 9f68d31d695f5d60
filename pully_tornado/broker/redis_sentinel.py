"""Redis Sentinel broker (``redis+sentinel://S1:P1,S2:P2/MASTER[/DB]``, ``rediss+sentinel://``).

The same engine as one Redis (:mod:`.redis`: one command link, one subscriber link, classic
pub/sub), whose links open to whatever server the sentinels name as ``MASTER``'s master, checked
with ``ROLE`` (a demoted master that still answers is refused). It follows a failover two ways:
a link to the old master fails or meets ``READONLY``, and a task subscribed to the sentinels'
``+switch-master`` drops both links at once; the links reconnect to the new master, the node
fills its gaps from history as after any outage, and the publish script's replication id check
starts a new epoch on the promoted replica (no position handed out twice).

Sentinels are asked without credentials (the URL's user and password are the master's): a
Sentinel deployment that requires AUTH on the sentinels is not supported yet.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from ..settings import Settings
from .base import BrokerEvents
from .redis import RedisBroker
from .redis_subscriber import Subscriber
from .redis_url import Endpoint, RedisTarget
from .resp import Link, LinkDown, RedisReplyError, open_link

logger = logging.getLogger("pully.broker.redis")


class RedisSentinelBroker(RedisBroker):
    def __init__(self, settings: Settings, target: RedisTarget) -> None:
        super().__init__(settings, target)
        assert target.master
        self._master_name = target.master
        self._sentinels = [
            replace(e, username=None, password=None, db=0) for e in target.seed_endpoints()
        ]
        self.master: tuple[str, int] | None = None
        self._watcher = Subscriber(
            "sentinels", self._open_sentinel, self._watch, lambda *_: None, self._on_switch
        )
        self._next_sentinel = 0

    async def start(self, events: BrokerEvents) -> None:
        await super().start(events)
        self._watcher.start()

    async def close(self) -> None:
        await self._watcher.close()
        await super().close()

    def describe(self) -> dict[str, Any]:
        found = super().describe()
        found["topology"] = "sentinel"
        if self.master is not None:
            found["master"] = f"{self.master[0]}:{self.master[1]}"
        return found

    # -- finding the master ------------------------------------------------------------------

    async def _open(self) -> Link:
        host, port = await self._ask_master()
        endpoint: Endpoint = self._target.endpoint.at(host, port)
        link = await open_link(endpoint)
        try:
            role = await link.request("ROLE")
            if not role or role[0] != b"master":
                raise LinkDown(f"{endpoint} is not a master yet (role {role[0]!r})")
        except BaseException:
            link.close()
            raise
        if self.master != (host, port):
            logger.info("redis sentinel: master %s is at %s:%d", self._master_name, host, port)
            self.master = (host, port)
        return link

    async def _ask_master(self) -> tuple[str, int]:
        errors = []
        for _ in range(len(self._sentinels)):
            sentinel = self._sentinels[self._next_sentinel % len(self._sentinels)]
            try:
                link = await open_link(sentinel)
                try:
                    reply = await link.request(
                        "SENTINEL", "get-master-addr-by-name", self._master_name
                    )
                finally:
                    link.close()
                if reply:
                    return reply[0].decode(), int(reply[1])
                errors.append(f"{sentinel}: does not know master {self._master_name!r}")
            except (OSError, TimeoutError, LinkDown, RedisReplyError) as exc:
                errors.append(f"{sentinel}: {exc or type(exc).__name__}")
            self._next_sentinel += 1
        raise LinkDown("no sentinel named the master: " + "; ".join(errors))

    async def _open_sentinel(self) -> Link:
        sentinel = self._sentinels[self._next_sentinel % len(self._sentinels)]
        try:
            return await open_link(sentinel)
        except BaseException:
            self._next_sentinel += 1
            raise

    def _watch(self, subscriber: Subscriber, link: Link) -> None:
        link.send(b"SUBSCRIBE", b"+switch-master")

    def _on_switch(self, subscriber: Subscriber, reply: Any) -> None:
        if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"):
            return
        fields = reply[2].split()  # <master name> <old ip> <old port> <new ip> <new port>
        if len(fields) == 5 and fields[0].decode() == self._master_name:
            logger.warning("redis sentinel: %s failed over to %s:%s", self._master_name,
                           fields[3].decode(), fields[4].decode())  # fmt: skip
            self._reconnect()

    def _reconnect(self) -> None:
        """Drop both links: they reconnect to the master the sentinels name now."""
        self._commands.reset()
        if self._subscriber.link is not None:
            self._subscriber.link.close()

    async def _redirected(self, error: str) -> bool:
        if error.startswith("READONLY"):  # still linked to the demoted master
            self._reconnect()
            return True
        return await super()._redirected(error)
