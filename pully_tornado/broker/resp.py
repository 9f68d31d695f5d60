"""Redis connections for the broker, over asyncio streams and the hiredis parser.

* :class:`Link`: one connection and its parser; :func:`open_link` connects (TLS for
  ``rediss``), authenticates, selects the URL's database and reads the server's replication id.
* :class:`CommandLink`: ONE pipelined connection for all of a node's commands. Requests are
  written in order and their replies matched in order, so concurrent publishes cost one round
  trip each without a connection per request, and a node's commands reach Redis in the order
  they were issued. Nothing is retried here: after a connection error every pending request
  fails and the next one reconnects.

The broker drives these directly rather than through redis-py's client, whose per-command
machinery (pool, retry layer, response callbacks) was the largest part of a publish's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis

from ..tasks import stop
from .redis_url import Endpoint, parse_redis_url

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 5.0  # seconds for a reply before the link is dropped


# In a command's arguments: replaced by the replication id of the link it is sent on (the
# scripts compare it with the one a channel's epoch was written under).
REPLID = object()


class RedisReplyError(Exception):
    """Redis answered with an error reply (the command reached it; not a connection problem)."""


class LinkDown(Exception):
    """The connection failed or closed; the request may or may not have been executed."""


class Link:
    """One connection: a stream pair plus a hiredis reader."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()
        self.loop = asyncio.get_running_loop()
        self.last_read = self.loop.time()
        self.dead: str | None = None
        self.replid = b""  # the server's master_replid (b"" when it would not say)
        self._watchdog: asyncio.TimerHandle | None = None

    def send(self, *args: bytes | str | int) -> None:
        self.writer.write(hiredis.pack_command(args))  # type: ignore[arg-type]

    async def read(self) -> bytes:
        data = await self.reader.read(262144)
        if not data:
            raise LinkDown(self.dead or "redis closed the connection")
        self.last_read = self.loop.time()
        return data

    async def request(self, *args: bytes | str | int) -> Any:
        """Send a command and read its reply (only while nothing else reads this link)."""
        self.send(*args)
        while True:
            reply = self.parser.gets()
            if reply is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise RedisReplyError(str(reply))
                return reply
            self.parser.feed(await self.read())

    def watch(self, ping_after: float, dead_after: float) -> None:
        """Keepalive: ping after ``ping_after`` quiet seconds, abort after ``dead_after`` (the
        pending read then fails). A timer, not a timeout per read: cheap and cancellation-safe."""
        idle = self.loop.time() - self.last_read
        if idle >= dead_after:
            self.dead = f"redis did not answer a ping within {dead_after:g}s"
            self.writer.transport.abort()
            return
        if idle >= ping_after:
            self.send(b"PING")
            delay = dead_after - idle
        else:
            delay = ping_after - idle
        self._watchdog = self.loop.call_later(delay, self.watch, ping_after, dead_after)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()

    async def wait_closed(self, timeout: float = 1.0) -> None:
        """After :meth:`close`: wait until the socket is really closed (a TLS close waits for
        the server's close_notify), aborting it after ``timeout`` (a hung Redis). Never raises
        but for cancellation."""
        try:
            async with asyncio.timeout(timeout):
                await self.writer.wait_closed()
        except Exception:
            self.writer.transport.abort()


async def open_link(where: str | Endpoint) -> Link:
    """Connect to ``where`` (an endpoint, or a redis://, rediss://, unix:// URL), AUTH, SELECT
    its db, and read the server's replication id (``INFO replication``).

    ``rediss`` verifies the server against the system trust store, or against the CA file the
    endpoint names (``?ssl_ca_certs=PATH`` in the URL, or ``PULLY_REDIS_TLS_CA``)."""
    endpoint = where if isinstance(where, Endpoint) else parse_redis_url(where).endpoint
    async with asyncio.timeout(CONNECT_TIMEOUT):
        if endpoint.path:
            reader, writer = await asyncio.open_unix_connection(endpoint.path)
        else:
            reader, writer = await asyncio.open_connection(
                endpoint.host, endpoint.port, ssl=endpoint.ssl_context()
            )
        link = Link(reader, writer)
        try:
            if endpoint.password:
                auth = [endpoint.username] if endpoint.username else []
                await link.request("AUTH", *auth, endpoint.password)
            if endpoint.db:
                await link.request("SELECT", endpoint.db)
            try:
                info = await link.request("INFO", "replication")
            except RedisReplyError:  # INFO refused (a restricted managed Redis): no failover check
                info = b""
            for line in info.splitlines():
                if line.startswith(b"master_replid:"):
                    link.replid = line.partition(b":")[2].strip()
        except BaseException:
            link.close()
            raise
    return link


Opener = Callable[[], Awaitable[Link]]


class CommandLink:
    """A pipelined command connection, (re)connected on demand."""

    def __init__(self, where: str | Endpoint | Opener) -> None:
        self._open: Opener = where if callable(where) else lambda: open_link(where)
        self._link: Link | None = None
        self._connecting: asyncio.Future[Link] | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._scripts: dict[bytes, bytes] = {}  # sha1 -> script body

    async def _ensure(self) -> Link:
        if self._link is not None:
            return self._link
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            link = await asyncio.shield(self._connecting)
        except (OSError, TimeoutError, RedisReplyError, LinkDown) as exc:
            raise LinkDown(f"cannot connect: {exc or type(exc).__name__}") from None
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None
        if self._link is None:
            self._link = link
            self._reader = asyncio.ensure_future(self._read_replies(link))
        return self._link

    async def call(self, *args: bytes | str | int) -> Any:
        """Send one command; its reply, or :class:`RedisReplyError` / :class:`LinkDown`."""
        link = await self._ensure()
        waiter: asyncio.Future[Any] = link.loop.create_future()
        self._waiting.append(waiter)
        link.send(*(link.replid if a is REPLID else a for a in args))
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                return await waiter
        except TimeoutError:
            self._drop(link, f"no reply within {COMMAND_TIMEOUT:g}s")
            raise LinkDown(f"redis did not answer within {COMMAND_TIMEOUT:g}s") from None

    async def script(self, sha: bytes, body: bytes, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA``, loading the script first if Redis does not know it (after a restart)."""
        try:
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.call(b"SCRIPT", b"LOAD", body)  # NOSCRIPT: it did not run; safe to resend
        return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)

    async def _read_replies(self, link: Link) -> None:
        try:
            while True:
                link.parser.feed(await link.read())
                while (reply := link.parser.gets()) is not False:
                    waiter = self._waiting.popleft()
                    if waiter.done():
                        continue  # its caller gave up (timeout); the link is being dropped
                    if isinstance(reply, hiredis.ReplyError):
                        waiter.set_exception(RedisReplyError(str(reply)))
                    else:
                        waiter.set_result(reply)
        except (LinkDown, OSError) as exc:
            self._drop(link, str(exc) or type(exc).__name__)
        except asyncio.CancelledError:
            self._drop(link, "closed")
            raise

    def _drop(self, link: Link, reason: str) -> None:
        if self._link is not link:
            return
        self._link = None
        link.close()
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(LinkDown(reason))
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        self._reader = None

    @property
    def replid(self) -> bytes | None:
        """The replication id of the server the link is connected to (None: not connected)."""
        return None if self._link is None else self._link.replid

    def reset(self) -> None:
        """Drop the connection (e.g. Redis was lost): the next call reconnects."""
        if self._link is not None:
            self._drop(self._link, "reset")

    async def close(self) -> None:
        """Drop the connection (pending calls fail with :class:`LinkDown`) and wait until it is
        closed; a later call would connect again."""
        link, reader = self._link, self._reader
        self.reset()
        await stop(reader)
        if link is not None:
            await link.wait_closed()
