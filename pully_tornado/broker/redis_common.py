"""The Redis broker's topology-free half: scripts run, replies read, subscriptions kept.

:class:`RedisBase` implements the :class:`~.base.Broker` interface over two things each topology
supplies: which command link serves a key (:meth:`RedisBase._commands_for`, one Redis has one,
a Cluster one per shard) and which subscriber link carries a pub/sub channel
(:meth:`RedisBase._subscriber_for`). A publish is one ``EVALSHA`` (offset increment, epoch
check, history append and ``PUBLISH``/``SPUBLISH`` atomically: pub/sub order is offset order,
history never disagrees with what was delivered). It is never retried after a connection error
(it might have run): the caller gets ``unavailable``. It is retried after a redirect (``MOVED``,
``TRYAGAIN``, ``CLUSTERDOWN``: it did not run) once the topology has been re-read.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections import deque
from typing import Any

import hiredis

from .. import protocol
from ..errors import Unavailable
from ..settings import Settings
from .base import Broker, BrokerEvents, History, Position, covered, new_epoch
from .redis_scripts import (
    CONTROL_TOPICS,
    Script,
    Scripts,
    control_channel,
    history_key,
    meta_key,
    parse_history,
    parse_publication,
    presence_keys,
    pubsub_channel,
    seen_key,
)
from .redis_subscriber import BATCH, Subscriber
from .redis_url import RedisTarget
from .resp import REPLID, CommandLink, Link, LinkDown, RedisReplyError

logger = logging.getLogger("pully.broker.redis")

SUBSCRIBE_TIMEOUT = 5.0
ACK_WAIT_MS = 1000  # PULLY_REDIS_ACK_REPLICAS: how long WAIT may take before 'unavailable'
REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


class RedisBase(Broker):
    publish_command = "PUBLISH"
    subscribe_command = b"SUBSCRIBE"
    unsubscribe_command = b"UNSUBSCRIBE"

    def __init__(self, settings: Settings, target: RedisTarget) -> None:
        self._target = target
        self._meta_ttl = str(int(settings.meta_ttl))
        self._history_size = str(settings.history_size)
        self._history_ttl = str(max(1, int(settings.history_ttl)))
        self._idempotency_ttl = settings.idempotency_ttl
        self._presence_ttl = settings.presence_ttl
        self._ack_replicas = settings.redis_ack_replicas
        self._scripts = Scripts(self.publish_command)
        self._channels: dict[bytes, str] = {}  # pub/sub channel -> Pully channel, wanted here
        self._control = {control_channel(t): t for t in CONTROL_TOPICS}
        self._waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._events: BrokerEvents | None = None
        self._closing = False
        self._reconnects = 0
        self._reported: bool | None = None  # what on_broker_state said last
        self.problem: str | None = None  # a misconfiguration /healthz reports

    # -- what a topology supplies ------------------------------------------------------------

    @abc.abstractmethod
    def _commands_for(self, key: str) -> CommandLink:
        """The command link of the server that owns ``key``."""

    def commands_for(self, key: str) -> CommandLink:
        """The command link serving ``key`` (the relationships store shares it)."""
        return self._commands_for(key)

    @abc.abstractmethod
    def _subscriber_for(self, key: bytes) -> Subscriber | None:
        """The subscriber link that carries pub/sub channel ``key`` (None: none up)."""

    async def _redirected(self, error: str) -> bool:
        """A command met ``error`` (a redirect): True when it is worth sending again."""
        return False

    # -- state -------------------------------------------------------------------------------

    @property
    def reconnects(self) -> int:
        return self._reconnects

    @property
    def channel_count(self) -> int:
        """Channels subscribed in Redis for this node's clients (offsets live in Redis)."""
        return len(self._channels)

    def describe(self) -> dict[str, Any]:
        found = {**super().describe(), "reconnects": self.reconnects}
        if self.problem:
            found["problem"] = self.problem
        return found

    def _report(self, connected: bool) -> None:
        if self._reported == connected or self._events is None or self._closing:
            return
        if connected and self._reported is not None:
            self._reconnects += 1
        self._reported = connected
        self._events.on_broker_state(connected)

    # -- commands ----------------------------------------------------------------------------

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` where ``keys[0]`` lives, following redirects (it did not run then)."""
        for attempt in range(4):
            commands = self._commands_for(keys[0])
            try:
                return commands, await commands.script(script.sha, script.body, keys, args)
            except RedisReplyError as exc:
                if attempt == 3 or not await self._redirected(str(exc)):
                    raise
        raise AssertionError("unreachable")

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
        if self._subscriber_for(pubsub_channel(channel)) is None:
            # our own subscribers could not receive it: do not ack
            raise Unavailable(self.problem or "redis is unreachable, message not published")
        size = self._history_size if history_size is None else str(history_size)
        ttl = self._history_ttl if history_ttl is None else str(max(1, int(history_ttl)))
        keys = [meta_key(channel), history_key(channel)]
        if idempotency_key is not None:
            keys.append(seen_key(channel, idempotency_key))
        remember = self._idempotency_ttl if idempotency_ttl is None else idempotency_ttl
        try:
            commands, (offset, epoch) = await self._run(
                self._scripts.publish, keys,
                [data, new_epoch(), pubsub_channel(channel), self._meta_ttl, size, ttl, REPLID,
                 str(max(1, round(remember)))],
            )  # fmt: skip
            if self._ack_replicas:
                have = await commands.call(b"WAIT", self._ack_replicas, ACK_WAIT_MS)
        except (LinkDown, RedisReplyError) as exc:
            detail = self.problem or f"redis is unreachable ({exc})"
            raise Unavailable(f"{detail}, message not published") from None
        if self._ack_replicas and int(have) < self._ack_replicas:
            raise Unavailable(
                f"only {have} of {self._ack_replicas} redis replicas have the message after "
                f"{ACK_WAIT_MS} ms (it may still be delivered)"
            )
        return Position(int(offset), epoch.decode())

    async def history(
        self, channel: str, since: Position | None = None, limit: int | None = None
    ) -> History:
        args = [
            new_epoch(), self._meta_ttl,
            "-1" if since is None else str(since.offset),
            "-1" if limit is None else str(limit), REPLID,
        ]  # fmt: skip
        reply = await self._idempotent(
            self._scripts.history, [meta_key(channel), history_key(channel)], args
        )
        offset, epoch, offsets, messages = parse_history(channel, reply)
        position = Position(offset, epoch)
        return History(position, messages, offsets, covered(since, position, offsets))

    async def history_remove(self, channel: str) -> None:
        try:
            keys = [meta_key(channel), history_key(channel)]
            await self._run(self._scripts.history_remove, keys, [])
        except (LinkDown, RedisReplyError) as exc:
            raise Unavailable(f"redis is unreachable, history not removed ({exc})") from None

    async def run_script(self, body: bytes, keys: list[str], args: list[Any]) -> Any:
        """Run the Lua script ``body`` of another module (``hooks/occupancy.py``) once, where
        ``keys[0]`` lives (all its keys in one slot). Raises ``Unavailable``."""
        try:
            return (await self._run(Script(body.decode()), keys, args))[1]
        except (LinkDown, RedisReplyError) as exc:
            raise Unavailable(self.problem or f"redis is unreachable ({exc})") from None

    async def _idempotent(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script that is safe to repeat, retrying once on a fresh connection."""
        for attempt in (1, 2):
            try:
                return (await self._run(script, keys, args))[1]
            except (LinkDown, RedisReplyError) as exc:
                if attempt == 2 or not self.connected:
                    raise Unavailable(self.problem or f"redis is unreachable ({exc})") from None
        raise AssertionError("unreachable")

    async def presence_join(self, channel: str, client: str, info: bytes) -> None:
        frame = protocol.presence_event("join", channel, info)
        expires = int(time.time() + self._presence_ttl)
        args = [client, info, expires, int(self._presence_ttl) + 1, pubsub_channel(channel), frame]
        await self._idempotent(self._scripts.join, presence_keys(channel), args)

    async def presence_leave(self, channel: str, client: str, info: bytes) -> None:
        frame = protocol.presence_event("leave", channel, info)
        args = [client, pubsub_channel(channel), frame]
        await self._idempotent(self._scripts.leave, presence_keys(channel), args)

    async def presence(self, channel: str) -> list[bytes]:
        return list(
            await self._idempotent(self._scripts.presence, presence_keys(channel), [time.time()])
        )

    async def presence_refresh(self, entries: list[tuple[str, str, bytes]]) -> None:
        expires = int(time.time() + self._presence_ttl)
        ttl = int(self._presence_ttl) + 1
        calls = []
        for channel, client, info in entries:  # pipelined on the command link(s)
            hash_key, zset_key = presence_keys(channel)
            commands = self._commands_for(hash_key)
            calls += [commands.call(b"HSET", hash_key, client, info),
                      commands.call(b"ZADD", zset_key, expires, client),
                      commands.call(b"EXPIRE", hash_key, ttl),
                      commands.call(b"EXPIRE", zset_key, ttl)]  # fmt: skip
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise Unavailable(f"redis is unreachable, presence not refreshed ({failed[0]})")

    # -- subscriptions -----------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        key = pubsub_channel(channel)
        self._channels[key] = channel
        subscriber = self._subscriber_for(key)
        if subscriber is None:
            raise Unavailable(self.problem or "redis is unreachable, cannot subscribe")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, deque()).append(waiter)
        subscriber.send(self.subscribe_command, key)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await waiter
        except TimeoutError:
            raise Unavailable("redis did not confirm the subscription in time") from None

    async def unsubscribe(self, channel: str) -> None:
        key = pubsub_channel(channel)
        if self._channels.pop(key, None) is not None:
            subscriber = self._subscriber_for(key)
            if subscriber is not None:
                subscriber.send(self.unsubscribe_command, key)

    def _send_batched(self, link: Link, command: bytes, keys: list[bytes]) -> None:
        for i in range(0, len(keys), BATCH):
            link.send(command, *keys[i : i + BATCH])

    def _on_reply(self, subscriber: Subscriber, reply: Any) -> None:
        """Every reply a subscriber link reads: publications, presence, control, confirmations."""
        if isinstance(reply, list) and len(reply) == 3:
            kind = reply[0]
            if kind == b"message" or kind == b"smessage":
                channel = self._channels.get(reply[1])
                events = self._events
                assert events is not None
                if channel is not None:
                    publication = parse_publication(channel, reply[2])
                    if publication is None:
                        events.on_presence(channel, reply[2][1:])
                    else:
                        events.on_publication(channel, *publication)
                elif reply[1] in self._control:
                    events.on_control(self._control[reply[1]], reply[2])
                return
            if kind == b"subscribe" or kind == b"ssubscribe":
                self._confirmed(reply[1])
                return
            if kind == b"sunsubscribe":
                self._on_sunsubscribe(subscriber, reply[1])
                return
        if isinstance(reply, hiredis.ReplyError):
            self._on_error_reply(subscriber, str(reply))
        # unsubscribe confirmations and pongs need no action

    def _confirmed(self, key: bytes) -> None:
        waiters = self._waiters.get(key)
        if waiters:
            waiter = waiters.popleft()
            if not waiters:
                del self._waiters[key]
            if not waiter.done():
                waiter.set_result(None)

    def _on_sunsubscribe(self, subscriber: Subscriber, key: bytes) -> None:
        """A sharded channel ended on ``subscriber``'s server (only a Cluster has them)."""

    def _on_error_reply(self, subscriber: Subscriber, error: str) -> None:
        logger.error("redis subscriber error reply: %s", error)

    def _fail_waiters(self, reason: Unavailable, keys: set[bytes] | None = None) -> None:
        """Fail the subscribe calls waiting for ``keys`` (None: all)."""
        for key in list(self._waiters) if keys is None else keys & set(self._waiters):
            for waiter in self._waiters.pop(key):
                if not waiter.done():
                    waiter.set_exception(reason)
