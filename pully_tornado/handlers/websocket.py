"""``GET /ws``: one client connection speaking protocol v1."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import tornado.httputil
import tornado.websocket
from tornado.iostream import IOStream

from .. import deflate, protocol
from ..auth import ANONYMOUS, Identity, authenticate
from ..errors import (
    BadRequest,
    Forbidden,
    Internal,
    PullyError,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from ..limits import TokenBucket
from ..logs import events
from ..node import Node
from ..outbox import FrameQueue, Outbox
from ..protocol import Command, FrameRejected
from ..wsframes import ChunkedProtocol, chunked_protocol
from . import guards
from .base import error_body

logger = logging.getLogger("pully.ws")

PING_FRAME = b"\x89\x00"  # FIN + ping, no payload
_NO_HEADERS = tornado.httputil.HTTPHeaders()  # shared, never written to
# Frames under a per-connection rate limit, and the bucket each draws from: subscribes and
# unsubscribes share one, so churn through channel names is bounded like publishing is.
_RATED = {"publish": "publish", "subscribe": "subscribe", "unsubscribe": "subscribe"}
_PLURAL = {"publish": "publishes", "subscribe": "subscribes"}


_IDS: list[str] = []


def new_client_id() -> str:
    """A connection's id: 12 random bytes, base64url (as ``secrets.token_urlsafe(12)``), drawn
    from the OS 256 at a time: one system call per 256 connections instead of one each."""
    if not _IDS:
        raw = secrets.token_bytes(12 * 256)
        _IDS.extend(base64.urlsafe_b64encode(raw[i : i + 12]).decode() for i in range(0, 3072, 12))
    return _IDS.pop()


class WebSocketHandler(tornado.websocket.WebSocketHandler):
    """Frames from one connection are handled in order: the next is read once the previous one
    is answered, so one client's publishes reach the broker in the order it sent them."""

    # Slots: Tornado's own attributes leave the instance dict just under the size at which it
    # stays compact (about 30 keys); ours there would cost each connection 1.3 KB.
    __slots__ = ("_awaiting_pong", "_buckets", "_expiry", "_identity", "_proxied_id", "_queue",
                 "_recover", "client_id", "deflate", "node", "write_frame")  # fmt: skip

    node: Node
    client_id: str
    write_frame: Callable[[bytes], None]  # Conn.write_frame: the connection's FrameQueue

    def initialize(self, node: Node, outbox: Outbox) -> None:
        self.node = node
        self._queue = FrameQueue(outbox, self._slow_consumer)
        self.write_frame = self._queue.write_frame  # the hub's fan-out calls it: no extra hop
        self.client_id = ""
        self.deflate = False  # permessage-deflate negotiated: the hub sends compressed messages
        self._identity: Identity = ANONYMOUS
        self._buckets: dict[str, TokenBucket] = {}  # "publish", "subscribe": made on first use
        self._expiry: asyncio.TimerHandle | None = None
        self._awaiting_pong = False
        self._recover: dict[str, protocol.Position] = {}  # ?recover=: server-side positions
        self._proxied_id = ""  # the client id the connect proxy was told

    # -- handshake ---------------------------------------------------------------------------

    def prepare(self) -> Awaitable[None] | None:
        """Refuse before upgrading: 403 to a browser page the origin rule refuses, 503 while
        draining or full, 401 without a valid token; without a token and with a connect proxy,
        what the proxy says (returned as an awaitable: Tornado awaits it).
        (In ``prepare``, not ``get``: nothing of it stays on the connection's stack.)"""
        refusal = self._origin_refusal()  # first: another site's page learns nothing more
        if refusal is not None:
            self._refuse(Forbidden(refusal))
            return None
        if self.node.draining or self.node.full:
            why = "draining" if self.node.draining else "node is at PULLY_MAX_CONNECTIONS"
            self._refuse(Unavailable(f"not accepting connections: {why}"))
            return None
        try:
            self._recover = protocol.recover_positions(self.get_query_argument("recover", None))
        except PullyError as exc:
            self._refuse(exc)
            return None
        secret = self.node.settings.jwt_secret
        if self.node.hooks.connect_proxy is not None and (not secret or self._token() is None):
            return self._admit_by_proxy()  # without a secret a token proves nothing: ask too
        if secret:
            try:
                self._identity = authenticate(self._token(), secret)
            except Unauthorized as exc:
                self.set_header("WWW-Authenticate", 'Bearer realm="pully"')
                self._refuse(exc)
                return None
        return None

    async def _admit_by_proxy(self) -> None:
        proxy = self.node.hooks.connect_proxy
        assert proxy is not None
        self._proxied_id = new_client_id()
        request = self.request
        try:
            self._identity = await proxy.admit(
                self._proxied_id, request.headers, request.query_arguments
            )
        except PullyError as exc:
            self._refuse(exc)

    def get_websocket_protocol(self) -> Any:
        ws = chunked_protocol(super().get_websocket_protocol())
        if ws is not None and self.node.settings.compression:
            agreed = deflate.negotiate(self.request.headers.get("Sec-WebSocket-Extensions"))
            if agreed is not None:  # Tornado's own negotiation is off: see get_compression_options
                self.set_header("Sec-WebSocket-Extensions", agreed.response)
                ws.accept_deflate(agreed)
                self.deflate = True
        return ws

    def _token(self) -> str | None:
        token = self.get_query_argument("token", None)
        if token is None:
            scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        return token

    def _refuse(self, err: PullyError) -> None:
        self.set_status(err.status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(error_body(err.status, err.code, err.message)))

    def check_origin(self, origin: str) -> bool:
        """Tornado asks this only of handshakes it takes for cross-origin, and takes whatever
        ``Host`` says for the node's own name; :meth:`prepare` has applied the node's rule
        (:func:`.guards.websocket_refusal`: DNS rebinding is refused) to every handshake
        already, with a JSON 403. This gives the same answer."""
        return self._origin_refusal() is None

    def _origin_refusal(self) -> str | None:
        """Why this handshake's browser page may not connect, or None."""
        return guards.websocket_refusal(self.request.headers, self.node.settings)

    def get_compression_options(self) -> None:
        """None: Tornado's per-connection compression would compress every frame for every
        client; the node negotiates permessage-deflate itself (:mod:`..deflate`), so each
        message is compressed once per node."""
        return None

    def open(self, *args: str, **kwargs: str) -> None:
        self.client_id = self._proxied_id or new_client_id()
        stream = getattr(self.ws_connection, "stream", None)
        if isinstance(stream, IOStream):
            stream.max_write_buffer_size = self.node.settings.max_buffer_bytes
            self._queue.attach(stream)
        self.node.register(self, self._identity)
        self._schedule_expiry()
        self.send(protocol.welcome(self.client_id, self.node.id, self._identity.user))
        self.node.subscriptions.subscribe_at_connect(self, self._identity, self._recover)
        events.info(
            "connected",
            extra={"event": "connect", "client": self.client_id, "user": self._identity.user,
                   "remote_ip": self.request.remote_ip},
        )  # fmt: skip
        self._release_handshake()

    def _release_handshake(self) -> None:
        """Drop what only the HTTP handshake needed: an idle connection keeps a few KB less.
        (Tornado itself drops ``ui`` when the connection closes; nothing reads these after
        the upgrade.)"""
        self.request.headers = _NO_HEADERS
        self.request.connection = None
        self.request.server_connection = None
        self._headers = _NO_HEADERS
        self.ui = None  # type: ignore[assignment]

    def send_ping(self) -> None:
        self._awaiting_pong = True
        self.write_frame(PING_FRAME)

    def pong_overdue(self) -> bool:
        return self._awaiting_pong

    def on_pong(self, data: bytes) -> None:
        self._awaiting_pong = False

    def on_close(self) -> None:
        self._queue.detach()
        if self._expiry is not None:
            self._expiry.cancel()
        if self.client_id:
            code = self.close_code
            self.node.unregister(self, "connection lost" if code is None else f"closed {code}")
            events.info(
                "disconnected",
                extra={"event": "disconnect", "client": self.client_id,
                       "code": self.close_code, "reason": self.close_reason},
            )  # fmt: skip

    def abort(self) -> None:
        stream = self._queue.detach() or getattr(self.ws_connection, "stream", None)
        if stream is not None:
            stream.close()  # the reader sees the stream closed and the connection ends

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close with ``code``: frames queued before go out first, and the close frame is the
        last (it may pass ``PULLY_MAX_BUFFER_BYTES`` by its few bytes)."""
        self._queue.write_pending()
        stream = self._queue.detach()
        if stream is not None:
            stream.max_write_buffer_size = None
        super().close(code, reason)

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires = self._identity.expires
        if expires is not None:
            delay = max(0.0, expires - time.time())
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        logger.info("client %s: token expired", self.client_id)
        self.node.count_disconnect("token_expired")
        self.close(protocol.CLOSE_TOKEN_EXPIRED, "token expired")

    # -- writing -----------------------------------------------------------------------------

    def _slow_consumer(self, rest: bytes | memoryview) -> None:
        """The client is not reading: its unread output passed ``PULLY_MAX_BUFFER_BYTES``.
        Close with 4008 ahead of the output the client has not read: that output is dropped,
        except the rest of a frame it has in part (``rest``, or in the stream), and the close
        frame follows what the kernel already holds for the client. The client gets as long to
        read it as any client gets to answer a ping (Tornado's 5 s when pings are off)."""
        logger.warning("client %s is not reading; closing it (slow consumer)", self.client_id)
        self.node.count_disconnect("slow_consumer")
        connection = self.ws_connection
        self.ws_connection = None  # closed, as Tornado's close() leaves it
        if isinstance(connection, ChunkedProtocol):
            settings = self.node.settings
            wait = 5.0
            if settings.ping_interval:
                wait = settings.ping_timeout or settings.ping_interval
            code = protocol.CLOSE_SLOW_CONSUMER
            connection.close_dropping_backlog(code, "slow consumer", wait, rest)

    def send(self, payload: bytes) -> None:
        self.write_frame(protocol.text_frame(payload))

    # -- reading -----------------------------------------------------------------------------

    def on_message(self, message: str | bytes) -> Any:
        try:
            cmd = protocol.decode(message, self.node.settings.max_message_bytes)
        except FrameRejected as exc:
            self.send(protocol.error(exc.id, exc.error))
            return None
        if cmd.type == "ping":
            self.send(protocol.reply("pong", cmd.id))
            return None
        if cmd.type in _RATED and not self._within_rate(cmd):
            return None
        return self._handle(cmd)  # Tornado awaits it before reading the next frame

    def _within_rate(self, cmd: Command) -> bool:
        """Publishes, and subscribes with unsubscribes, each have a token bucket per
        connection; a refused frame gets ``rate_limited``, and ``burst`` refusals in a row
        close the connection (4029)."""
        kind = _RATED[cmd.type]
        settings = self.node.settings
        rate = settings.publish_rate if kind == "publish" else settings.subscribe_rate
        if not rate:
            return True
        bucket = self._buckets.get(kind)
        if bucket is None:
            burst = settings.publish_burst if kind == "publish" else settings.subscribe_burst
            bucket = self._buckets[kind] = TokenBucket(rate, burst)
        if bucket.take():
            return True
        if kind == "publish":
            self.node.publisher.results["rate_limited"] += 1
        if self._queue.stream is None:
            pass  # already closing: frames still arriving are ignored
        elif bucket.refused > bucket.burst:
            logger.warning(
                "client %s keeps sending %s past the rate limit; closing", self.client_id,
                _PLURAL[kind],
            )  # fmt: skip
            self.node.count_disconnect("rate_limited")
            self.close(protocol.CLOSE_RATE_LIMITED, "rate limit exceeded")
        else:
            limit = f"{rate:g} {_PLURAL[kind]}/s (PULLY_{kind.upper()}_RATE)"
            self.send(protocol.error(cmd.id, RateLimited(f"{kind} rate limit: {limit}")))
        return False

    async def _handle(self, cmd: Command) -> None:
        try:
            await _COMMANDS[cmd.type](self, cmd)
        except PullyError as exc:
            self.send(protocol.error(cmd.id, exc))
        except Exception:
            logger.exception("client %s: %s failed", self.client_id, cmd.type)
            self.send(protocol.error(cmd.id, Internal("internal error")))

    async def _on_publish(self, cmd: Command) -> None:
        result = await self.node.publisher.publish(
            cmd.channel, cmd.data, self, idempotency_key=cmd.idempotency_key
        )
        if result.position is None:
            self.send(protocol.reply("ack", cmd.id, channel=cmd.channel, dropped=True))
        else:
            offset = result.position.offset
            self.send(protocol.reply("ack", cmd.id, channel=cmd.channel, offset=offset))

    async def _on_subscribe(self, cmd: Command) -> None:
        sub = await self.node.subscriptions.subscribe(self, cmd.channel, cmd.since)
        # replay, reply, then what arrived during set-up: nothing may be awaited in between
        for payload in sub.replay:
            self.send(payload)
        extra = {} if sub.recovered is None else {"recovered": sub.recovered}
        self.send(
            protocol.reply(
                "subscribed", cmd.id, channel=cmd.channel, offset=sub.position.offset,
                epoch=sub.position.epoch, **extra,
            )
        )  # fmt: skip
        for payload in sub.backlog:
            self.send(payload)

    async def _on_unsubscribe(self, cmd: Command) -> None:
        await self.node.subscriptions.unsubscribe(self, cmd.channel)
        self.send(protocol.reply("unsubscribed", cmd.id, channel=cmd.channel))

    async def _on_presence(self, cmd: Command) -> None:
        entries = await self.node.presence_of(self, cmd.channel)
        self.send(protocol.presence_reply(cmd.id, cmd.channel, entries))

    async def _on_history(self, cmd: Command) -> None:
        history = await self.node.history(self, cmd.channel, cmd.limit)
        position = history.position
        self.send(
            protocol.history_reply(
                cmd.id, cmd.channel, position.offset, position.epoch, history.messages
            )
        )

    async def _on_refresh(self, cmd: Command) -> None:
        secret = self.node.settings.jwt_secret
        if not secret:
            raise BadRequest("tokens are not used: PULLY_JWT_SECRET is not set")
        try:
            identity = authenticate(cmd.token, secret)
        except Unauthorized as exc:  # the connection is authenticated: the new token is refused
            raise Forbidden(exc.message) from None
        revoked = self.node.reidentify(self, identity)
        self._identity = identity
        self._schedule_expiry()
        self.send(protocol.reply("refreshed", cmd.id, user=identity.user, expires=identity.expires))
        for channel in revoked:  # the new token no longer allows these
            self.send(protocol.unsubscribed(channel, "forbidden"))


# One entry per command that reaches ``_handle`` (``ping`` is answered in ``on_message``).
_COMMANDS: dict[str, Callable[[WebSocketHandler, Command], Awaitable[None]]] = {
    "publish": WebSocketHandler._on_publish,
    "subscribe": WebSocketHandler._on_subscribe,
    "unsubscribe": WebSocketHandler._on_unsubscribe,
    "presence": WebSocketHandler._on_presence,
    "history": WebSocketHandler._on_history,
    "refresh": WebSocketHandler._on_refresh,
}
