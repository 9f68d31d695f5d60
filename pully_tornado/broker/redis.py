"""Redis broker: one Redis (or Redis-compatible server) shared by every node of a cluster.

Keys and channels, per Pully channel ``C`` (the ``{C}`` hash tag keeps them in one cluster slot):

* ``pully:meta:{C}``: hash ``o`` (latest offset), ``e`` (epoch); expires after ``meta_ttl`` idle.
* ``pully:ch:{C}``: the pub/sub channel carrying finished ``message`` frame payloads.
* ``pully:<topic>``: node-to-node control messages (``pully:relationships``).

A publish is one ``EVALSHA``: offset increment, epoch creation and ``PUBLISH`` happen atomically,
so pub/sub order is offset order and every node receives the same bytes. The script is never
retried after a connection error (it might have run): the caller gets ``unavailable`` instead.

Each process keeps ONE subscriber connection, driven by one task: it subscribes only to channels
with local subscribers, confirms each ``SUBSCRIBE`` before :meth:`RedisBroker.subscribe`
returns, pings when idle, and after any failure reconnects with capped jittered backoff and
resubscribes everything. It is a small RESP reader over hiredis rather than redis-py's PubSub,
because that one retries and resubscribes inside its own calls, where the broker must see each
outage (to answer ``unavailable``, report ``/healthz`` and tell the node that state may have
been missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .. import protocol
from ..errors import Unavailable
from ..settings import Settings
from .base import Backoff, Broker, BrokerEvents, Position, new_epoch

logger = logging.getLogger("pully.broker.redis")

CONTROL_TOPICS = ("relationships", "control")

# KEYS[1] meta hash; ARGV[1] message frame head (up to "offset":), ARGV[2] epoch to create if the
# channel has none, ARGV[3] pub/sub channel, ARGV[4] meta TTL in seconds ('0': none).
PUBLISH_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
redis.call('PUBLISH', ARGV[3], ARGV[1] .. offset .. ',"epoch":"' .. epoch .. '"}')
return {offset, epoch}
"""

# KEYS[1] meta hash; ARGV[1] epoch to create if none, ARGV[2] meta TTL ('0': none).
POSITION_LUA = """
redis.call('HSETNX', KEYS[1], 'e', ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'o', 'e')
if ARGV[2] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {tonumber(v[1] or '0'), v[2]}
"""

POOL_SIZE = 32  # command connections per node
COMMAND_TIMEOUT = 5.0  # seconds for a command (or a free pool connection) before 'unavailable'
SUBSCRIBE_TIMEOUT = 5.0
IDLE_PING_AFTER = 10.0  # seconds without any traffic before the subscriber pings
DEAD_AFTER = 25.0  # seconds without any traffic (pong included) before the link is dropped
RESUBSCRIBE_BATCH = 500


def meta_key(channel: str) -> str:
    return f"pully:meta:{{{channel}}}"


def pubsub_channel(channel: str) -> bytes:
    return f"pully:ch:{{{channel}}}".encode()


class _Link:
    """One subscriber connection: a stream pair, a hiredis reader and a keepalive watchdog."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()
        self.loop = asyncio.get_running_loop()
        self.last_read = self.loop.time()
        self.dead: str | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def send(self, *args: bytes | str) -> None:
        self.writer.write(hiredis.pack_command(args))  # type: ignore[arg-type]

    async def request(self, *args: bytes | str) -> Any:
        """Send a command and read its reply (only before the link enters pub/sub mode)."""
        self.send(*args)
        while True:
            reply = self.parser.gets()
            if reply is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise RedisError(str(reply))
                return reply
            self.parser.feed(await self.read())

    async def read(self) -> bytes:
        data = await self.reader.read(262144)
        if not data:
            if self.dead:
                raise TimeoutError(self.dead)
            raise ConnectionResetError("redis closed the connection")
        self.last_read = self.loop.time()
        return data

    def watch(self) -> None:
        """Ping after IDLE_PING_AFTER quiet seconds; abort the link after DEAD_AFTER (the read
        then fails). A timer rather than a timeout per read: cheaper, and cancellation-safe."""
        idle = self.loop.time() - self.last_read
        if idle >= DEAD_AFTER:
            self.dead = f"redis did not answer a ping within {DEAD_AFTER:g}s"
            self.writer.transport.abort()
            return
        if idle >= IDLE_PING_AFTER:
            self.send(b"PING")
            delay = DEAD_AFTER - idle
        else:
            delay = IDLE_PING_AFTER - idle
        self._watchdog = self.loop.call_later(delay, self.watch)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()


class RedisBroker(Broker):
    kind = "redis"

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url
        self._url = settings.redis_url
        self._meta_ttl = str(int(settings.meta_ttl))
        # Bounded, and waiting for a free connection under bursts (the default pool refuses).
        # No retries: a publish script that may have run must not run twice.
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url,
            max_connections=POOL_SIZE,
            timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=2.0,
        )
        self._client = aioredis.Redis(connection_pool=pool)
        self._publish_script = self._client.register_script(PUBLISH_LUA)
        self._position_script = self._client.register_script(POSITION_LUA)
        self._channels: dict[bytes, str] = {}  # pub/sub channel -> Pully channel, wanted here
        self._control = {f"pully:{t}".encode(): t for t in CONTROL_TOPICS}
        self._waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._link: _Link | None = None
        self._events: BrokerEvents | None = None
        self._task: asyncio.Task[None] | None = None
        self._ever_connected = False
        self._closing = False
        self.reconnects = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, events: BrokerEvents) -> None:
        self._events = events
        self._task = asyncio.create_task(self._run_forever(), name="pully-redis-subscriber")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._closing = True
        self._drop_link(Unavailable("broker closed"))
        await self._client.aclose(close_connection_pool=True)

    @property
    def connected(self) -> bool:
        return self._link is not None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reconnects": self.reconnects}

    # -- commands ----------------------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> Position:
        if self._link is None:  # our own subscribers could not receive it: do not ack
            raise Unavailable("redis is unreachable, message not published")
        head = protocol.message_head(channel, data)
        try:
            offset, epoch = await self._publish_script(
                keys=[meta_key(channel)],
                args=[head, new_epoch(), pubsub_channel(channel), self._meta_ttl],
            )
        except (RedisError, OSError) as exc:
            raise Unavailable(f"redis is unreachable, message not published ({exc})") from None
        return Position(int(offset), epoch.decode())

    async def position(self, channel: str) -> Position:
        for attempt in (1, 2):  # idempotent, so one retry on a fresh connection is safe
            try:
                offset, epoch = await self._position_script(
                    keys=[meta_key(channel)], args=[new_epoch(), self._meta_ttl]
                )
                return Position(int(offset), epoch.decode())
            except (RedisError, OSError) as exc:
                if attempt == 2 or self._link is None:
                    raise Unavailable(f"redis is unreachable ({exc})") from None
        raise AssertionError("unreachable")

    async def publish_control(self, topic: str, payload: bytes) -> None:
        try:
            await self._client.publish(f"pully:{topic}", payload)
        except (RedisError, OSError) as exc:
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

    async def _open_link(self) -> _Link:
        params: dict[str, Any] = dict(parse_url(self._url))
        if "path" in params:
            reader, writer = await asyncio.open_unix_connection(params["path"])
        else:
            tls = ssl.create_default_context() if self._url.startswith("rediss:") else None
            reader, writer = await asyncio.open_connection(
                params.get("host", "localhost"), params.get("port", 6379), ssl=tls
            )
        link = _Link(reader, writer)
        try:
            if params.get("password"):
                auth = [params["username"]] if params.get("username") else []
                await link.request("AUTH", *auth, params["password"])
            await link.request("PING")
        except BaseException:
            link.close()
            raise
        return link

    async def _run_forever(self) -> None:
        backoff = Backoff(base=0.05, cap=2.0)
        while True:
            try:
                async with asyncio.timeout(5.0):
                    link = await self._open_link()
                backoff.reset()
                await self._serve(link)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, EOFError) as exc:
                log = (
                    logger.warning
                    if self._link is not None or backoff.attempt == 0
                    else logger.debug
                )
                log("redis subscriber link down (%s); reconnecting", exc or type(exc).__name__)
            except Exception:
                logger.exception("redis subscriber failed; reconnecting")
            self._drop_link(Unavailable("redis connection lost"))
            # pooled command connections to the lost server are stale: drop them all now rather
            # than fail one publish per connection once it is back
            with contextlib.suppress(Exception):
                await self._client.connection_pool.disconnect()
            await asyncio.sleep(backoff.next())

    async def _serve(self, link: _Link) -> None:
        """Resubscribe everything on a fresh link, then read it until it fails."""
        wanted = [*self._control, *self._channels]
        for i in range(0, len(wanted), RESUBSCRIBE_BATCH):
            link.send(b"SUBSCRIBE", *wanted[i : i + RESUBSCRIBE_BATCH])
        self._link = link
        if self._ever_connected:
            self.reconnects += 1
            logger.info("redis subscriber reconnected; %d channels resubscribed", len(wanted))
        self._ever_connected = True
        assert self._events is not None
        self._events.on_broker_state(True)
        parser = link.parser
        on_publication, channels = self._events.on_publication, self._channels
        link.watch()
        while True:
            parser.feed(await link.read())
            while (reply := parser.gets()) is not False:
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    channel = channels.get(reply[1])
                    if channel is not None:
                        on_publication(channel, reply[2])
                    elif reply[1] in self._control:
                        self._events.on_control(self._control[reply[1]], reply[2])
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
