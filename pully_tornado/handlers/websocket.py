"""``GET /ws``: one client connection speaking protocol v1."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import secrets
import time
from typing import Any

import orjson
import tornado.httputil
import tornado.websocket
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError

from .. import protocol
from ..auth import ANONYMOUS, Identity, authenticate
from ..errors import BadRequest, Internal, PullyError, RateLimited, Unauthorized, Unavailable
from ..limits import TokenBucket
from ..logs import events
from ..node import Node
from ..protocol import Command, FrameRejected
from .base import error_body
from .framing import chunked_protocol

logger = logging.getLogger("pully.ws")

PING_FRAME = b"\x89\x00"  # FIN + ping, no payload
_NO_HEADERS = tornado.httputil.HTTPHeaders()  # shared, never written to


class WebSocketHandler(tornado.websocket.WebSocketHandler):
    """Frames from one connection are handled in order: the next is read once the previous one
    is answered, so one client's publishes reach the broker in the order it sent them."""

    node: Node
    client_id: str
    channels: set[str]

    def initialize(self, node: Node) -> None:
        self.node = node
        self.channels = set()
        self.client_id = ""
        self._identity: Identity = ANONYMOUS
        self._bucket: TokenBucket | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._out: list[bytes] | None = None  # frames queued in this loop tick
        self._awaiting_pong = False
        self._stream_out: IOStream | None = None  # set while the connection is open
        self._sock: Any = None  # the raw socket, for writes that skip IOStream

    # -- handshake ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Refuse before upgrading: 503 while draining or full, 401 without a valid token.
        (In ``prepare``, not ``get``: nothing of it stays on the connection's stack.)"""
        if self.node.draining or self.node.full:
            why = "draining" if self.node.draining else "node is at PULLY_MAX_CONNECTIONS"
            return self._refuse(Unavailable(f"not accepting connections: {why}"))
        secret = self.node.settings.jwt_secret
        if secret:
            try:
                self._identity = authenticate(self._token(), secret)
            except Unauthorized as exc:
                self.set_header("WWW-Authenticate", 'Bearer realm="pully"')
                return self._refuse(exc)
        return None

    def get_websocket_protocol(self) -> Any:
        return chunked_protocol(super().get_websocket_protocol())

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
        """Called by Tornado for cross-origin browser requests only (same-origin pages and
        clients sending no Origin always pass)."""
        allowed = self.node.settings.allowed_origins
        origin = origin.rstrip("/")
        return any(a == "*" or fnmatch.fnmatchcase(origin, a) for a in allowed)

    def get_compression_options(self) -> None:
        return None  # frames are built once per node and shared, which compression would defeat

    def open(self, *args: str, **kwargs: str) -> None:
        self.client_id = secrets.token_urlsafe(12)
        stream = getattr(self.ws_connection, "stream", None)
        if isinstance(stream, IOStream):
            stream.max_write_buffer_size = self.node.settings.max_buffer_bytes
            self._stream_out = stream
            if type(stream) is IOStream:  # plain TCP (not TLS): raw sends are safe
                self._sock = stream.socket
        self.node.register(self, self._identity)
        self._schedule_expiry()
        self.send(protocol.welcome(self.client_id, self.node.id, self._identity.user))
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
        self._stream_out = self._sock = self._out = None
        if self._expiry is not None:
            self._expiry.cancel()
        if self.client_id:
            self.node.unregister(self)
            events.info(
                "disconnected",
                extra={"event": "disconnect", "client": self.client_id,
                       "code": self.close_code, "reason": self.close_reason},
            )  # fmt: skip

    def abort(self) -> None:
        stream = self._stream_out or getattr(self.ws_connection, "stream", None)
        self._stream_out = self._sock = self._out = None
        if stream is not None:
            stream.close()  # the reader sees the stream closed and the connection ends

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.write_pending()  # frames queued before the close frame go out before it
        self._stream_out = self._sock = None
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

    def write_frame(self, frame: bytes) -> None:
        """Queue a complete frame; it is written at the end of this loop tick, together with
        every other frame queued for this connection meanwhile, in order."""
        out = self._out
        if out is not None:
            out.append(frame)
        elif self._stream_out is not None:
            self._out = [frame]
            self.node.hub.outbox.add(self)

    def write_pending(self) -> None:
        """Write the queued frames: straight to the socket when Tornado has nothing pending
        for it, through the IOStream otherwise. A client whose unread output passes
        ``PULLY_MAX_BUFFER_BYTES`` is a slow consumer: it is closed with 4008."""
        out, self._out = self._out, None
        stream = self._stream_out
        if not out or stream is None:
            return
        data: bytes | memoryview = out[0] if len(out) == 1 else b"".join(out)
        if self._sock is not None and not stream.writing():
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return  # the connection is gone; Tornado's reader notices and closes it
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        try:
            stream.write(data)
        except StreamClosedError:
            pass
        except StreamBufferFullError:
            logger.warning("client %s is not reading; closing it (slow consumer)", self.client_id)
            self.node.count_disconnect("slow_consumer")
            stream.max_write_buffer_size = None  # room for the close frame
            self.close(protocol.CLOSE_SLOW_CONSUMER, "slow consumer")

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
        if cmd.type == "publish" and not self._may_publish_now(cmd):
            return None
        return self._handle(cmd)  # Tornado awaits it before reading the next frame

    def _may_publish_now(self, cmd: Command) -> bool:
        rate = self.node.settings.publish_rate
        if not rate:
            return True
        if self._bucket is None:
            self._bucket = TokenBucket(rate, self.node.settings.publish_burst)
        if self._bucket.take():
            return True
        self.node.publishes["rate_limited"] += 1
        if self._stream_out is None:
            pass  # already closing: frames still arriving are ignored
        elif self._bucket.refused > self._bucket.burst:
            logger.warning(
                "client %s keeps publishing past the rate limit; closing", self.client_id
            )
            self.node.count_disconnect("rate_limited")
            self.close(protocol.CLOSE_RATE_LIMITED, "rate limit exceeded")
        else:
            limit = f"{rate:g} publishes/s (PULLY_PUBLISH_RATE)"
            self.send(protocol.error(cmd.id, RateLimited(f"publish rate limit: {limit}")))
        return False

    async def _handle(self, cmd: Command) -> None:
        try:
            handler = getattr(self, "_on_" + cmd.type)
            await handler(cmd)
        except PullyError as exc:
            self.send(protocol.error(cmd.id, exc))
        except Exception:
            logger.exception("client %s: %s failed", self.client_id, cmd.type)
            self.send(protocol.error(cmd.id, Internal("internal error")))

    async def _on_publish(self, cmd: Command) -> None:
        result = await self.node.publish(cmd.channel, cmd.data, self)
        if result.position is None:
            self.send(protocol.reply("ack", cmd.id, channel=cmd.channel, dropped=True))
        else:
            offset = result.position.offset
            self.send(protocol.reply("ack", cmd.id, channel=cmd.channel, offset=offset))

    async def _on_subscribe(self, cmd: Command) -> None:
        sub = await self.node.subscribe(self, cmd.channel, cmd.since)
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
        await self.node.unsubscribe(self, cmd.channel)
        self.send(protocol.reply("unsubscribed", cmd.id, channel=cmd.channel))

    async def _on_presence(self, cmd: Command) -> None:
        entries = await self.node.presence(self, cmd.channel)
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
        identity = authenticate(cmd.token, secret)
        self.node.reidentify(self, identity)
        self._identity = identity
        self._schedule_expiry()
        self.send(protocol.reply("refreshed", cmd.id, user=identity.user, expires=identity.expires))
