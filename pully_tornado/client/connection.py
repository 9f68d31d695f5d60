"""One WebSocket session with a node: open it, match replies to commands by ``id``, read frames.

The :class:`~pully_tornado.client.Pully` client makes one of these per connection attempt and
throws it away when it drops; everything that must survive a reconnect lives in the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .errors import ConnectionLost, HandshakeRefused, PullyClientError, server_error

WELCOME_TIMEOUT = 10.0
DRAIN_GRACE = 5.0  # seconds the node has to close after advising a reconnect
MAX_FRAME_BYTES = 64 * 1024 * 1024  # history replies can be large; the node is trusted

ReplyHook = Callable[[dict[str, Any]], None]


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as seen: its awaiter may have gone (a timeout)."""
    if not future.cancelled():
        future.exception()


def ws_url(url: str) -> str:
    """``url`` as a ``ws(s)://.../ws`` URL: ``http(s)`` becomes ``ws(s)``, an empty path ``/ws``.

    Raises ``ValueError`` for any other scheme."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {url!r} (use ws://host:port/ws)")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit(parts._replace(scheme=scheme, path=path))


def _refusal(exc: InvalidStatus) -> HandshakeRefused:
    status = exc.response.status_code
    message = f"handshake refused with HTTP {status}"
    with contextlib.suppress(ValueError, AttributeError):
        body = json.loads(exc.response.body or b"")
        message += f": {body['message']}"
    return HandshakeRefused(message, status)


class Connection:
    """An open, welcomed WebSocket session.

    Replies (any frame carrying an ``id`` this side sent) resolve the command's future, an
    ``error`` reply as its :class:`~pully_tornado.client.errors.ServerError`; every other frame
    goes to ``on_frame`` in arrival order. When the session ends, pending commands fail with
    :class:`~pully_tornado.client.errors.ConnectionLost`.
    """

    def __init__(self, ws: ClientConnection, url: str, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.url = url
        self.welcome = welcome
        self.reconnect_advised = False  # the node sent {"type": "reconnect"}
        self.active = True  # until read() returns
        self._pending: dict[int, tuple[asyncio.Future[dict[str, Any]], ReplyHook | None]] = {}
        self._next_id = 0
        self.on_out: Callable[[dict[str, Any]], None] | None = None  # frame log hooks
        self.on_in: Callable[[dict[str, Any]], None] | None = None

    @classmethod
    async def open(
        cls, url: str, token: str | None, ping_interval: float | None, open_timeout: float
    ) -> Connection:
        """Connect and wait for ``welcome``.

        Raises :class:`HandshakeRefused` for an HTTP refusal, ``OSError``/``TimeoutError``/
        websockets exceptions for network failures, :class:`PullyClientError` for a first frame
        that is not a welcome."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                compression=None,  # messages are small JSON: not worth inflating here
                open_timeout=open_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_interval,
                close_timeout=2.0,
                max_size=MAX_FRAME_BYTES,
            )
        except InvalidStatus as exc:
            raise _refusal(exc) from None
        try:
            async with asyncio.timeout(WELCOME_TIMEOUT):
                raw = await ws.recv()
            welcome = json.loads(raw)
            if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
                raise PullyClientError(f"expected a welcome frame, got {str(raw)[:200]}")
        except BaseException:
            await ws.close()
            raise
        return cls(ws, url, welcome)

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one frame; raises :class:`ConnectionLost` if the session is gone."""
        if self.on_out is not None:
            self.on_out(frame)
        try:
            await self.ws.send(json.dumps(frame, allow_nan=False))
        except ConnectionClosed:
            raise ConnectionLost(f"connection to {self.url} closed") from None

    async def send_command(
        self, frame: dict[str, Any], on_reply: ReplyHook | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Send ``frame`` with a fresh ``id``; the future resolves with its reply.

        ``on_reply`` (optional) gets the reply frame, ``error`` included, synchronously as it is
        read: before any later frame is dispatched (a ``subscribed`` reply must set a channel's
        position before the channel's next message is looked at). ``frame`` is JSON-encoded
        first: ``TypeError``/``ValueError`` for data JSON cannot hold."""
        json.dumps(frame, allow_nan=False)  # fail before registering anything
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        self._pending[rid] = (future, on_reply)
        try:
            await self.send({**frame, "id": rid})
        except BaseException:
            self._pending.pop(rid, None)
            raise
        return future

    async def command(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send ``frame`` and return its reply; raises the reply's ``ServerError`` for an
        ``error`` reply, :class:`ConnectionLost` if the session ends first."""
        return await (await self.send_command(frame))

    async def read(self, on_frame: Callable[[dict[str, Any]], None]) -> tuple[int | None, str]:
        """Read until the session ends; return the close code and reason (1006: it dropped).

        Replies resolve their commands; every other frame goes to ``on_frame``, in order. After
        a ``reconnect`` frame the node closes the session; if it does not within
        ``DRAIN_GRACE`` seconds, this side does."""
        closer: asyncio.Task[None] | None = None
        try:
            async for raw in self.ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue  # not protocol v1: ignore rather than die
                if not isinstance(frame, dict):
                    continue
                if self.on_in is not None:
                    self.on_in(frame)
                rid = frame.get("id")
                if isinstance(rid, int) and rid in self._pending and frame.get("type") != "message":
                    future, hook = self._pending.pop(rid)
                    if hook is not None:
                        hook(frame)
                    if not future.done():
                        if frame.get("type") == "error":
                            future.set_exception(server_error(frame))
                        else:
                            future.set_result(frame)
                    continue
                if frame.get("type") == "reconnect" and closer is None:
                    self.reconnect_advised = True
                    closer = asyncio.ensure_future(self._close_after(DRAIN_GRACE))
                on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            self.active = False
            if closer is not None:
                closer.cancel()
            self.fail_pending(ConnectionLost(f"connection to {self.url} lost before the reply"))
        await self.ws.close()
        code = self.ws.close_code
        return (1006 if code is None else int(code)), self.ws.close_reason or ""

    async def _close_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.ws.close(1001, "going away after reconnect advice")

    def fail_pending(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        await self.ws.close()
