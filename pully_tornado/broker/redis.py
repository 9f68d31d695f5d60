"""Redis broker: one Redis (or Redis-compatible server) shared by every node of a cluster.

Keys and channels, per Pully channel ``C`` (the ``{C}`` hash tag keeps them in one cluster slot):

* ``pully:meta:{C}``: hash ``o`` (latest offset), ``e`` (epoch); expires after ``meta_ttl`` idle.
* ``pully:hist:{C}``: stream of the last ``history_size`` messages (entry id ``<offset>-0``,
  field ``d`` = the ``message`` frame); expires ``history_ttl`` after the last publish (both
  per channel when its relationships ``options`` set them, passed with each publish).
* ``pully:ch:{C}``: the pub/sub channel. A publication travels as ``<offset> <epoch>\n<frame>``
  so nodes check continuity without parsing JSON; ``join``/``leave`` frames as ``\n<frame>``.
* ``pully:pres:{C}`` (hash client -> info) and ``pully:presz:{C}`` (zset client -> expiry):
  presence, refreshed by each node for its own clients, so a crashed node's clients expire.
* ``pully:<topic>``: node-to-node control messages (``pully:relationships``).
* ``pully:relationships:doc``: the relationships document, when Redis is the store
  (:mod:`pully_tornado.relationships.redis`).

A publish is one ``EVALSHA``: offset increment, epoch creation, history append and ``PUBLISH``
happen atomically, so pub/sub order is offset order, history never disagrees with what was
delivered, and every node receives the same bytes. The script is never retried after a
connection error (it might have run): the caller gets ``unavailable`` instead. When a channel's
meta is gone (Redis restarted without persistence, expiry, eviction) the next use creates a new
epoch and drops any stale stream, so a recovery is never answered from another sequence.

Each process keeps ONE subscriber connection, driven by one task: it subscribes only to channels
with local subscribers, confirms each ``SUBSCRIBE`` before :meth:`RedisBroker.subscribe`
returns, pings when idle, and after any failure reconnects with capped jittered backoff and
resubscribes everything. It is a small RESP reader over hiredis rather than redis-py's PubSub,
because that one retries and resubscribes inside its own calls, where the broker must see each
outage (to answer ``unavailable``, report ``/healthz`` and let the node recover what it missed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from typing import Any

import hiredis

from .. import protocol
from ..backoff import Backoff
from ..errors import Unavailable
from ..settings import Settings
from ..tasks import stop
from .base import Broker, BrokerEvents, History, Position, covered, new_epoch
from .resp import CommandLink, Link, LinkDown, RedisReplyError, open_link

logger = logging.getLogger("pully.broker.redis")

CONTROL_TOPICS = ("relationships", "control")

# KEYS: meta, stream. ARGV: 1 message head (up to "offset":), 2 epoch to create if none,
# 3 pub/sub channel, 4 meta TTL s ('0': none), 5 history size ('0': none, and any kept is
# dropped), 6 history TTL s. 5 and 6 are per call: a channel's options may set its own window.
PUBLISH_LUA = r"""
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
local frame = ARGV[1] .. offset .. ',"epoch":"' .. epoch .. '"}'
if ARGV[5] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], offset .. '-0', 'd', frame)
  redis.call('EXPIRE', KEYS[2], ARGV[6])
else
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[3], offset .. ' ' .. epoch .. '\n' .. frame)
return {offset, epoch}
"""

# KEYS: meta, stream. ARGV: 1 epoch to create if none, 2 meta TTL s ('0': none),
# 3 'since' offset ('-1': none), 4 limit ('-1': all retained).
# Returns {offset, epoch, {id, {field, frame}}...} with entries oldest first.
HISTORY_LUA = r"""
if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'o', 0)
  redis.call('DEL', KEYS[2])
end
local v = redis.call('HMGET', KEYS[1], 'o', 'e')
if ARGV[2] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local entries
if ARGV[3] ~= '-1' then
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[3] .. '-0', '+')
elseif ARGV[4] == '0' then
  entries = {}
elseif ARGV[4] == '-1' then
  entries = redis.call('XRANGE', KEYS[2], '-', '+')
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[4])
  local n = #entries
  for i = 1, math.floor(n / 2) do
    entries[i], entries[n - i + 1] = entries[n - i + 1], entries[i]
  end
end
return {tonumber(v[1] or '0'), v[2], entries}
"""

# KEYS: presence hash, presence zset. ARGV: 1 client, 2 info, 3 expires at (unix s),
# 4 key TTL s, 5 pub/sub channel, 6 join frame. Publishes the join only for a new member.
JOIN_LUA = r"""
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if new == 1 then redis.call('PUBLISH', ARGV[5], '\n' .. ARGV[6]) end
return new
"""

# KEYS: presence hash, presence zset. ARGV: 1 client, 2 pub/sub channel, 3 leave frame.
LEAVE_LUA = r"""
redis.call('ZREM', KEYS[2], ARGV[1])
local gone = redis.call('HDEL', KEYS[1], ARGV[1])
if gone == 1 then redis.call('PUBLISH', ARGV[2], '\n' .. ARGV[3]) end
return gone
"""

# KEYS: presence hash, presence zset. ARGV: 1 now (unix s). Drops expired members first.
PRESENCE_LUA = r"""
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  redis.call('HDEL', KEYS[1], unpack(expired))
end
return redis.call('HVALS', KEYS[1])
"""


class _Script:
    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body).hexdigest().encode()


SUBSCRIBE_TIMEOUT = 5.0
IDLE_PING_AFTER = 10.0  # seconds without any traffic before the subscriber pings
DEAD_AFTER = 25.0  # seconds without any traffic (pong included) before the link is dropped
RESUBSCRIBE_BATCH = 500


def meta_key(channel: str) -> str:
    return f"pully:meta:{{{channel}}}"


def history_key(channel: str) -> str:
    return f"pully:hist:{{{channel}}}"


def presence_keys(channel: str) -> list[str]:
    return [f"pully:pres:{{{channel}}}", f"pully:presz:{{{channel}}}"]


def pubsub_channel(channel: str) -> bytes:
    return f"pully:ch:{{{channel}}}".encode()


class RedisBroker(Broker):
    kind = "redis"

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url
        self._url = settings.redis_url
        self._meta_ttl = str(int(settings.meta_ttl))
        self._history_size = str(settings.history_size)
        self._history_ttl = str(max(1, int(settings.history_ttl)))
        self._presence_ttl = settings.presence_ttl
        self._commands = CommandLink(self._url)
        self._publish_script = _Script(PUBLISH_LUA)
        self._history_script = _Script(HISTORY_LUA)
        self._join_script = _Script(JOIN_LUA)
        self._leave_script = _Script(LEAVE_LUA)
        self._presence_script = _Script(PRESENCE_LUA)
        self._channels: dict[bytes, str] = {}  # pub/sub channel -> Pully channel, wanted here
        self._control = {f"pully:{t}".encode(): t for t in CONTROL_TOPICS}
        self._waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._link: Link | None = None
        self._events: BrokerEvents | None = None
        self._task: asyncio.Task[None] | None = None
        self._ever_connected = False
        self._closing = False
        self._reconnects = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, events: BrokerEvents) -> None:
        self._events = events
        self._task = asyncio.create_task(self._run_forever(), name="pully-redis-subscriber")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None
        self._closing = True
        self._drop_link(Unavailable("broker closed"))
        await self._commands.close()

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def reconnects(self) -> int:
        return self._reconnects

    @property
    def channel_count(self) -> int:
        """Channels subscribed in Redis for this node's clients (offsets live in Redis)."""
        return len(self._channels)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reconnects": self.reconnects}

    # -- commands ----------------------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        history_size: int | None = None,
        history_ttl: float | None = None,
    ) -> Position:
        if self._link is None:  # our own subscribers could not receive it: do not ack
            raise Unavailable("redis is unreachable, message not published")
        size = self._history_size if history_size is None else str(history_size)
        ttl = self._history_ttl if history_ttl is None else str(max(1, int(history_ttl)))
        try:
            offset, epoch = await self._run(
                self._publish_script, [meta_key(channel), history_key(channel)],
                [protocol.message_head(channel, data), new_epoch(), pubsub_channel(channel),
                 self._meta_ttl, size, ttl],
            )  # fmt: skip
        except (LinkDown, RedisReplyError) as exc:
            raise Unavailable(f"redis is unreachable, message not published ({exc})") from None
        return Position(int(offset), epoch.decode())

    async def history(
        self, channel: str, since: Position | None = None, limit: int | None = None
    ) -> History:
        args = [
            new_epoch(), self._meta_ttl,
            "-1" if since is None else str(since.offset),
            "-1" if limit is None else str(limit),
        ]  # fmt: skip
        reply = await self._idempotent(
            self._history_script, [meta_key(channel), history_key(channel)], args
        )
        offset, epoch, entries = reply
        position = Position(int(offset), epoch.decode())
        offsets = [int(entry_id.split(b"-", 1)[0]) for entry_id, _ in entries]
        messages = [fields[1] for _, fields in entries]
        return History(position, messages, offsets, covered(since, position, offsets))

    async def _run(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        return await self._commands.script(script.sha, script.body, keys, args)

    async def _idempotent(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script that is safe to repeat, retrying once on a fresh connection."""
        for attempt in (1, 2):
            try:
                return await self._run(script, keys, args)
            except (LinkDown, RedisReplyError) as exc:
                if attempt == 2 or self._link is None:
                    raise Unavailable(f"redis is unreachable ({exc})") from None
        raise AssertionError("unreachable")

    async def presence_join(self, channel: str, client: str, info: bytes) -> None:
        frame = protocol.presence_event("join", channel, info)
        expires = int(time.time() + self._presence_ttl)
        args = [client, info, expires, int(self._presence_ttl) + 1, pubsub_channel(channel), frame]
        await self._idempotent(self._join_script, presence_keys(channel), args)

    async def presence_leave(self, channel: str, client: str, info: bytes) -> None:
        frame = protocol.presence_event("leave", channel, info)
        args = [client, pubsub_channel(channel), frame]
        await self._idempotent(self._leave_script, presence_keys(channel), args)

    async def presence(self, channel: str) -> list[bytes]:
        return list(
            await self._idempotent(self._presence_script, presence_keys(channel), [time.time()])
        )

    async def presence_refresh(self, entries: list[tuple[str, str, bytes]]) -> None:
        expires = int(time.time() + self._presence_ttl)
        ttl = int(self._presence_ttl) + 1
        calls = []
        for channel, client, info in entries:  # pipelined on the command link
            hash_key, zset_key = presence_keys(channel)
            calls += [self._commands.call(b"HSET", hash_key, client, info),
                      self._commands.call(b"ZADD", zset_key, expires, client),
                      self._commands.call(b"EXPIRE", hash_key, ttl),
                      self._commands.call(b"EXPIRE", zset_key, ttl)]  # fmt: skip
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise Unavailable(f"redis is unreachable, presence not refreshed ({failed[0]})")

    async def publish_control(self, topic: str, payload: bytes) -> None:
        try:
            await self._commands.call(b"PUBLISH", f"pully:{topic}", payload)
        except (LinkDown, RedisReplyError) as exc:
            raise Unavailable(f"redis is unreachable, control message not sent ({exc})") from None

    async def subscribe(self, channel: str) -> None:
        key = pubsub_channel(channel)
        self._channels[key] = channel
        link = self._link
        if link is None:
            raise Unavailable("redis is unreachable, cannot subscribe")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, deque()).append(waiter)
        link.send(b"SUBSCRIBE", key)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await waiter
        except TimeoutError:
            raise Unavailable("redis did not confirm the subscription in time") from None

    async def unsubscribe(self, channel: str) -> None:
        key = pubsub_channel(channel)
        if self._channels.pop(key, None) is not None and self._link is not None:
            self._link.send(b"UNSUBSCRIBE", key)

    # -- the subscriber task -----------------------------------------------------------------

    async def _run_forever(self) -> None:
        backoff = Backoff(base=0.05, cap=2.0)
        attempt = 0  # reconnects since the last link came up
        while True:
            try:
                link = await open_link(self._url)
                attempt = 0
                await self._serve(link)
            except asyncio.CancelledError:
                raise
            except (LinkDown, RedisReplyError, OSError, TimeoutError, EOFError) as exc:
                log = logger.warning if self._link is not None or attempt == 0 else logger.debug
                log("redis subscriber link down (%s); reconnecting", exc or type(exc).__name__)
            except Exception:
                logger.exception("redis subscriber failed; reconnecting")
            self._drop_link(Unavailable("redis connection lost"))
            # the command connection to the lost server is stale too: reconnect it on next use
            self._commands.reset()
            await asyncio.sleep(backoff.delay(attempt))
            attempt += 1

    async def _serve(self, link: Link) -> None:
        """Resubscribe everything on a fresh link, then read it until it fails."""
        wanted = [*self._control, *self._channels]
        for i in range(0, len(wanted), RESUBSCRIBE_BATCH):
            link.send(b"SUBSCRIBE", *wanted[i : i + RESUBSCRIBE_BATCH])
        self._link = link
        if self._ever_connected:
            self._reconnects += 1
            logger.info("redis subscriber reconnected; %d channels resubscribed", len(wanted))
        self._ever_connected = True
        assert self._events is not None
        self._events.on_broker_state(True)
        parser = link.parser
        events, channels = self._events, self._channels
        link.watch(IDLE_PING_AFTER, DEAD_AFTER)
        while True:
            parser.feed(await link.read())
            while (reply := parser.gets()) is not False:
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    channel = channels.get(reply[1])
                    if channel is not None:
                        head, _, frame = reply[2].partition(b"\n")
                        if head:
                            offset, _, epoch = head.partition(b" ")
                            events.on_publication(channel, int(offset), epoch.decode(), frame)
                        else:
                            events.on_presence(channel, frame)
                    elif reply[1] in self._control:
                        events.on_control(self._control[reply[1]], reply[2])
                else:
                    self._on_reply(reply)

    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            logger.error("redis subscriber error reply: %s", reply)
            return
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"subscribe":
            waiters = self._waiters.get(reply[1])
            if waiters:
                waiter = waiters.popleft()
                if not waiters:
                    del self._waiters[reply[1]]
                if not waiter.done():
                    waiter.set_result(None)
        # unsubscribe confirmations and pongs need no action

    def _drop_link(self, reason: Unavailable) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()
            if self._events is not None and not self._closing:
                self._events.on_broker_state(False)
        waiters, self._waiters = self._waiters, {}
        for queue in waiters.values():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_exception(reason)
