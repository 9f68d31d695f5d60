"""The Pully client: one logical connection that survives drops, and the commands of protocol v1.

:meth:`Pully.connect` starts a task that connects and reconnects after every drop with
full-jitter backoff, rotating through the URLs; each new connection first resubscribes with
``since`` (``recovered: true``, or the ``recovery_failed`` event), then releases waiting commands.
It stops only on :meth:`Pully.close` or a 401/403 refusal (a token provider turns a 401 into
another attempt); a token provider also renews the token in place ahead of its ``exp``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Any, Literal

from ..backoff import Backoff
from .connection import Connection, ws_url
from .emitter import Emitter
from .errors import (
    AlreadySubscribed,
    ClientClosed,
    ConnectionLost,
    HandshakeRefused,
    NotConnected,
    PullyClientError,
    RequestTimeout,
    Unavailable,
)
from .events import EventSource
from .models import (
    Connected,
    Disconnected,
    ErrorEvent,
    FrameEvent,
    History,
    Message,
    PresenceEntry,
    Reconnecting,
)
from .registry import Subscriptions
from .subscription import MessageHandler, Subscription
from .tokens import TokenProvider, current_token, keep_renewed, token_expiry

Offline = Literal["wait", "fail"]


class Pully(EventSource):
    """A protocol v1 client for asyncio; use it as ``async with Pully(url) as p: ...``.

    - ``url``: ``ws://host:port/ws`` (``http(s)://`` and a bare ``host:port/`` path work too), or
      a list of them: each connection attempt takes the next one, so a client whose node died
      or drained moves on to another node. Behind a load balancer, give its one URL.
    - ``token``: a JWT sent as ``Authorization: Bearer``, or a callable (sync or async) returning
      one, called before every connection attempt and, while connected, ahead of the current
      token's ``exp`` to renew it in place (:meth:`refresh`).
    - ``offline``: what commands do while there is no connection: ``"wait"`` (default) for one,
      up to their timeout, or ``"fail"`` at once with :class:`NotConnected`. Either way a
      publish never vanishes: it returns an offset or raises.
    - ``timeout``: default seconds a command may take, waiting for a connection included.
    - ``connect_timeout``: seconds :meth:`connect` keeps trying before :class:`NotConnected`
      (None: until it succeeds).
    - ``backoff``: reconnect delays, :class:`Backoff` (0.5 s doubling up to 20 s, full jitter).
    - ``ping_interval``: seconds between WebSocket pings that detect a dead node (None: off).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | TokenProvider | None = None,
        offline: Offline = "wait",
        timeout: float = 10.0,
        connect_timeout: float | None = 10.0,
        backoff: Backoff | None = None,
        ping_interval: float | None = 20.0,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("at least one URL is required")
        if offline not in ("wait", "fail"):
            raise ValueError(f"offline must be 'wait' or 'fail', not {offline!r}")
        self.urls = [ws_url(u) for u in urls]
        self.offline: Offline = offline
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.ping_interval = ping_interval
        self.client_id: str | None = None
        self.node: str | None = None
        self.user: str | None = None
        self._token = token
        self._emitter = Emitter()
        self._subs = Subscriptions(self._emitter, self.backoff)
        self._conn: Connection | None = None
        self._ready: asyncio.Future[Connection] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal: BaseException | None = None
        self._last_error: BaseException | None = None
        self._next_url = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Pully:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._ready is not None and self._ready.done()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the client stopped after a fatal refusal."""
        return self._closed

    def _is_closed(self) -> bool:  # a call: mypy must not carry narrowing across awaits
        return self._closed

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """The active subscriptions by channel (a copy)."""
        return self._subs.as_dict()

    async def connect(self) -> None:
        """Start the connection task and return once connected (welcomed, resubscribed).

        Keeps trying for ``connect_timeout`` seconds (whatever ``offline`` says), then raises
        :class:`NotConnected`; raises :class:`HandshakeRefused` at once for a 401/403 refusal.
        When it raises, the client is closed. Calling it again while running just waits for
        the connection."""
        if self._closed:
            raise self._fatal or ClientClosed("the client is closed")
        if self._runner is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._runner = asyncio.ensure_future(self._run())
        assert self._ready is not None
        try:
            async with asyncio.timeout(self.connect_timeout):
                await asyncio.shield(self._ready)
        except TimeoutError:
            await self.close()
            raise NotConnected(
                f"could not connect to {', '.join(self.urls)} within {self.connect_timeout}s"
                f" (last error: {self._last_error!r})"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop reconnecting; subscriptions end, waiting commands
        raise :class:`ClientClosed`. Idempotent."""
        was_connected = self.connected
        self._stop(None)
        if self._conn is not None:
            await self._conn.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if was_connected and self._conn is not None:
            self._emit("disconnected", Disconnected(self._conn.url, 1000, "client closed", False))
        self._conn = None
        await self._emitter.aclose()

    def _stop(self, error: BaseException | None) -> None:
        """Stop for good: end subscriptions and fail everything waiting with ``error``."""
        if self._closed:
            return
        self._closed = True
        self._fatal = error
        failure = error or ClientClosed("the client is closed")
        self._subs.end_all(error, failure)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(failure)
            self._ready.exception()  # retrieved: there may be nobody waiting

    # -- events ------------------------------------------------------------------------------

    def _emit(self, event: str, value: object) -> None:
        self._emitter.emit(event, value)

    # -- commands ----------------------------------------------------------------------------

    async def subscribe(
        self, channel: str, handler: MessageHandler | None = None, *, timeout: float | None = None
    ) -> Subscription:
        """Subscribe to ``channel``; return once the node confirmed it.

        From then on every message of the channel reaches ``handler`` (sync or async) or, with
        no handler, the returned subscription's async iterator, in order and exactly once, across
        reconnects. Raises the node's refusal (:class:`InvalidChannel`, :class:`Forbidden`,
        :class:`Unavailable`, ...), :class:`AlreadySubscribed`, :class:`NotConnected`
        (``offline="fail"``), :class:`RequestTimeout`."""
        if channel in self._subs:
            raise AlreadySubscribed(f"already subscribed to {channel!r}")
        conn = self._current()
        sub = Subscription(self, channel, handler)
        self._subs.add(sub)
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                if conn is not None:
                    await self._subs.send(sub, conn)
                await asyncio.shield(sub._ready)
        except BaseException as exc:
            self._subs.remove(sub)
            sub._end(exc if isinstance(exc, PullyClientError) else None)
            if isinstance(exc, TimeoutError):
                raise RequestTimeout(f"subscribe to {channel!r}: no confirmation in time") from None
            raise
        return sub

    async def publish(
        self, channel: str, data: Any, *, timeout: float | None = None, idempotency_key: str = ""
    ) -> int | None:
        """Publish ``data`` (any JSON value) to ``channel``; return its offset once acked (None:
        a channel function dropped it). Sent with ``idempotency_key`` (default: a fresh random
        one) and, after a lost connection or ``unavailable``, again with the same key until the
        timeout: a retry never publishes twice. Raises the node's refusal (:class:`TooLarge`,
        :class:`Forbidden`, ...), :class:`NotConnected` (``offline="fail"``),
        :class:`RequestTimeout` (outcome unknown), ``TypeError``/``ValueError`` for bad data."""
        key = idempotency_key or secrets.token_urlsafe(16)
        frame = {"type": "publish", "channel": channel, "data": data, "idempotency_key": key}
        reply = await self._command(frame, timeout, retry_unavailable=True)
        return None if reply.get("dropped") else int(reply["offset"])

    async def presence(self, channel: str, *, timeout: float | None = None) -> list[PresenceEntry]:
        """Who is subscribed to presence channel ``channel``, on every node.

        Raises :class:`BadRequest` for a channel without presence, and as :meth:`publish`."""
        reply = await self._command({"type": "presence", "channel": channel}, timeout)
        return [PresenceEntry(str(c["client"]), c.get("user")) for c in reply["clients"]]

    async def history(
        self, channel: str, limit: int | None = None, *, timeout: float | None = None
    ) -> History:
        """The channel's retained messages, oldest first (the newest ``limit`` of them), with
        its latest position. Raises as :meth:`presence`."""
        frame: dict[str, Any] = {"type": "history", "channel": channel}
        if limit is not None:
            frame["limit"] = limit
        reply = await self._command(frame, timeout)
        messages = [Message.from_frame(m) for m in reply["messages"]]
        return History(channel, messages, int(reply["offset"]), str(reply["epoch"]))

    async def ping(self, *, timeout: float | None = None) -> None:
        """An application-level round trip to the node."""
        await self._command({"type": "ping"}, timeout)

    async def refresh(self, token: str | None = None, *, timeout: float | None = None) -> None:
        """Replace the connection's token now with ``token`` (or a new one from the token
        provider); a string token given here is also the one used to reconnect from now on.
        The client does this on its own ahead of ``exp`` when it has a token provider.

        Raises :class:`BadRequest` (the node does not use tokens), :class:`Forbidden` (invalid,
        expired, or for another user), and as :meth:`publish`."""
        if token is None:
            token = await current_token(self._token)
            if token is None:
                raise ValueError("refresh() needs a token: this client has none")
        elif not callable(self._token):
            self._token = token
        await self._command({"type": "refresh", "token": token}, timeout)

    async def _command(
        self, frame: dict[str, Any], timeout: float | None, retry_unavailable: bool = False
    ) -> dict[str, Any]:
        """Send ``frame`` on the current connection and return its reply; send it again on the
        next connection when this one drops before the reply, and (``retry_unavailable``)
        after an ``unavailable`` refusal, with backoff, until the timeout."""
        attempt = 0
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                while True:
                    conn = await self._connection()
                    try:
                        return await conn.command(frame)
                    except ConnectionLost:
                        pass
                    except Unavailable:
                        if not retry_unavailable:
                            raise
                        await asyncio.sleep(self.backoff.delay(attempt))
                        attempt += 1
        except TimeoutError:
            raise RequestTimeout(f"{frame['type']}: no reply in time") from None

    def _current(self) -> Connection | None:
        """The connection if it is up, else None or :class:`NotConnected` per ``offline``."""
        if self._closed:
            raise self._fatal or ClientClosed("the client is closed")
        if self._ready is None:
            raise NotConnected("not connected: call connect() (or use async with) first")
        if self._ready.done():
            return self._ready.result()
        if self.offline == "fail":
            raise NotConnected("not connected right now (offline='fail')")
        return None

    async def _connection(self) -> Connection:
        conn = self._current()
        if conn is not None:
            return conn
        assert self._ready is not None
        return await asyncio.shield(self._ready)

    # -- subscriptions ----------------------------------------------------------------------

    async def _unsubscribe(self, sub: Subscription, timeout: float | None) -> None:
        await self._subs.unsubscribe(sub, self._conn, self.timeout if timeout is None else timeout)

    # -- the connection task -----------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        sessions = 0
        while not self._is_closed():
            url = self._peek_url()
            error: BaseException | None = None
            try:
                token = await current_token(self._token)
                recover_url = self._subs.with_recover(url)  # server-side subscriptions' positions
                conn = await Connection.open(recover_url, token, self.ping_interval, self.timeout)
            except asyncio.CancelledError:
                raise
            except HandshakeRefused as exc:
                error = exc
                if exc.status in (401, 403):
                    self._emit("error", ErrorEvent(exc))
                    if exc.status == 403 or not callable(self._token):
                        self._stop(exc)
                        if sessions:  # it had been connected: say it is over for good
                            self._emit("disconnected", Disconnected(url, None, exc.message, False))
                        return
            except Exception as exc:  # network errors of every kind: try again
                error = exc
            else:
                attempt = 0
                await self._session(conn, sessions > 0, token)
                sessions += 1
                if self._is_closed():
                    return
            self._last_error = error
            self._next_url += 1
            delay = self.backoff.delay(attempt)
            self._emit("reconnecting", Reconnecting(attempt, delay, self._peek_url(), error))
            attempt += 1
            await asyncio.sleep(delay)

    def _peek_url(self) -> str:
        return self.urls[self._next_url % len(self.urls)]

    async def _session(self, conn: Connection, reconnect: bool, token: str | None) -> None:
        """Serve one connection: resubscribe, release waiting commands, read until it drops."""
        self._conn = conn
        conn.on_in = lambda frame: self._log_frame("in", frame)
        conn.on_out = lambda frame: self._log_frame("out", frame)
        welcome = conn.welcome
        self._log_frame("in", welcome)
        self.client_id, self.node = str(welcome.get("client")), str(welcome.get("node"))
        self.user = welcome.get("user")
        await self._subs.send_all(conn)  # before any waiting command is released: order holds
        assert self._ready is not None
        if not self._ready.done():
            self._ready.set_result(conn)
        self._emit(
            "connected", Connected(conn.url, self.client_id, self.node, self.user, reconnect)
        )
        renewer = None
        expires = token_expiry(token) if callable(self._token) else None
        if expires is not None and callable(self._token):
            renewer = asyncio.ensure_future(
                keep_renewed(
                    conn, self._token, expires, lambda e: self._emit("error", ErrorEvent(e))
                )
            )
        try:
            code, reason = await conn.read(self._on_frame)
        finally:
            if renewer is not None:
                renewer.cancel()
        if conn.reconnect_advised and not reason:
            reason = "draining"
        if self._closed:
            return
        if self._ready is not None and self._ready.done():  # else its waiters keep waiting
            self._ready = asyncio.get_running_loop().create_future()
        self._conn = None
        self._emit("disconnected", Disconnected(conn.url, code, reason, True))

    def _on_frame(self, frame: dict[str, Any]) -> None:
        self._subs.on_frame(self._conn, frame, lambda channel: Subscription(self, channel, None))

    def _log_frame(self, direction: Literal["in", "out"], frame: dict[str, Any]) -> None:
        if self._emitter.wants("frame"):
            self._emit("frame", FrameEvent(direction, frame))
