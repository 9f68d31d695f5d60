"""``GET /ws``: one client connection speaking protocol v1."""

from __future__ import annotations

import fnmatch
import logging
import secrets
from typing import Any

import tornado.websocket
from tornado.iostream import StreamBufferFullError, StreamClosedError

from .. import protocol
from ..errors import Internal, PullyError
from ..node import Node
from ..protocol import Command, FrameRejected

logger = logging.getLogger("pully.ws")


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

    # -- handshake ---------------------------------------------------------------------------

    def check_origin(self, origin: str) -> bool:
        """Called by Tornado for cross-origin browser requests only (same-origin pages and
        clients sending no Origin always pass)."""
        allowed = self.node.settings.allowed_origins
        origin = origin.rstrip("/")
        return any(a == "*" or fnmatch.fnmatchcase(origin, a) for a in allowed)

    def get_compression_options(self) -> None:
        return None  # frames are built once per node and shared, which compression would defeat

    def open(self, *args: str, **kwargs: str) -> None:
        if self.node.draining:
            self.close(protocol.CLOSE_DRAINING, "draining")
            return
        self.client_id = secrets.token_urlsafe(12)
        stream = self._stream()
        if stream is not None:
            stream.max_write_buffer_size = self.node.settings.max_buffer_bytes
        self.node.register(self)
        self.send(protocol.welcome(self.client_id, self.node.id))

    def on_close(self) -> None:
        if self.client_id:
            self.node.unregister(self)

    # -- writing -----------------------------------------------------------------------------

    def _stream(self) -> Any:
        conn = self.ws_connection
        return getattr(conn, "stream", None) if conn is not None else None

    def write_frame(self, frame: bytes) -> None:
        """Queue a complete frame on the socket. A client whose unread output passes
        ``PULLY_MAX_BUFFER_BYTES`` is a slow consumer: it is closed with 4008."""
        stream = self._stream()
        if stream is None:
            return
        try:
            stream.write(frame)
        except StreamClosedError:
            pass
        except StreamBufferFullError:
            logger.warning("client %s is not reading; closing it (slow consumer)", self.client_id)
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
        return self._handle(cmd)  # Tornado awaits it before reading the next frame

    async def _handle(self, cmd: Command) -> None:
        try:
            if cmd.type == "publish":
                result = await self.node.publish(cmd.channel, cmd.data, self.client_id)
                if result.position is None:
                    self.send(protocol.reply("ack", cmd.id, channel=cmd.channel, dropped=True))
                else:
                    self.send(
                        protocol.reply(
                            "ack", cmd.id, channel=cmd.channel, offset=result.position.offset
                        )
                    )
            elif cmd.type == "subscribe":
                sub = await self.node.subscribe(self, cmd.channel)
                # reply, then what arrived during set-up: nothing may be awaited in between
                self.send(
                    protocol.reply(
                        "subscribed",
                        cmd.id,
                        channel=cmd.channel,
                        offset=sub.position.offset,
                        epoch=sub.position.epoch,
                    )
                )
                for payload in sub.backlog:
                    self.send(payload)
            else:  # unsubscribe
                await self.node.unsubscribe(self, cmd.channel)
                self.send(protocol.reply("unsubscribed", cmd.id, channel=cmd.channel))
        except PullyError as exc:
            self.send(protocol.error(cmd.id, exc))
        except Exception:
            logger.exception("client %s: %s failed", self.client_id, cmd.type)
            self.send(protocol.error(cmd.id, Internal("internal error")))
