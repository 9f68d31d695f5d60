"""A minimal WebSocket client (RFC 6455) on ``asyncio.Protocol``, built for the load generator.

Only what a benchmark subscriber needs, done cheaply: the HTTP upgrade handshake, masked client
text frames, server frames parsed incrementally straight from ``data_received`` (one clock
reading per read, not per frame), ping answered with pong, close answered with close. No
extensions, no compression, no fragmented sends. ``message`` frames go to a :class:`Sink`
untouched (the sink parses only what it needs); every other frame is decoded with orjson and,
when it carries a request ``id`` this connection is waiting for, handed to that request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import orjson

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MESSAGE_PREFIX: Final = b'{"type":"message"'
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_MAX_HEADER: Final = 16 * 1024

Reply = dict[str, Any]
ReplyCallback = Callable[[Reply], None]


class HandshakeError(Exception):
    """The server did not upgrade the connection to a WebSocket."""


class Sink(Protocol):
    """Where a connection delivers ``message`` frames and unexpected closes."""

    def on_message(self, conn: WSConnection, payload: bytes, now_ns: int) -> None: ...

    def on_closed(self, conn: WSConnection) -> None: ...


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (RFC 6455 section 5.3)."""
    n = len(payload)
    if n == 0:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One masked, unfragmented client frame."""
    n = len(payload)
    head = 0x80 | opcode
    if n < 126:
        header = struct.pack("!BB", head, 0x80 | n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", head, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", head, 0x80 | 127, n)
    key = os.urandom(4)
    return header + key + mask(payload, key)


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class WSConnection(asyncio.Protocol):
    """One client connection speaking Pully protocol v1. Create it with :func:`connect`."""

    def __init__(self, host: str, port: int, path: str, sink: Sink) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, ReplyCallback] = {}
        self.others: list[Reply] = []  # frames without a matching request (welcome, errors)
        self.got = 0  # measured messages received, kept by the sink
        self.node = 0  # index of the target this connection went to
        self.idx = -1  # the subscriber's index in its scenario (its own channel's number)
        self.closing = False
        self.is_open = False
        self.lost = False  # connection_lost has run: the socket is closed
        self._key = base64.b64encode(os.urandom(16))
        self._buf = b""
        self._frag: list[bytes] = []
        self._next_id = 0

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.path.encode(), self.host.encode(), self.port, self._key)
        )

    def data_received(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if not self.is_open:
            data = self._handshake(data)
            if not data:
                return
        now = time.perf_counter_ns()
        pos = 0
        end_of_data = len(data)
        while end_of_data - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if end_of_data - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if end_of_data - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > end_of_data:
                break
            payload = data[start:end]
            pos = end
            if b0 == 0x81:  # FIN + text: every frame Pully sends
                if payload.startswith(MESSAGE_PREFIX):
                    self.sink.on_message(self, payload, now)
                else:
                    self._on_reply(payload)
            else:
                self._on_other_frame(b0, payload, now)
        if pos < end_of_data:
            self._buf = data[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.is_open
        self.is_open = False
        self.lost = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during handshake"))
        for callback in list(self.pending.values()):
            callback({"type": "error", "code": "closed"})
        self.pending.clear()
        if was_open and not self.closing:
            self.sink.on_closed(self)

    # -- frames ------------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> bytes:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_HEADER:
                self._fail(HandshakeError("response header too large"))
            else:
                self._buf = data
            return b""
        head = data[:end].decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if not head[0].startswith("HTTP/1.1 101"):
            self._fail(HandshakeError(f"upgrade refused: {head[0]}"))
            return b""
        if headers.get("sec-websocket-accept", "").encode() != accept_key(self._key):
            self._fail(HandshakeError("bad Sec-WebSocket-Accept"))
            return b""
        self.is_open = True
        self.opened.set_result(None)
        return data[end + 4 :]

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _on_reply(self, payload: bytes) -> None:
        try:
            frame = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(frame, dict):
            return
        rid = frame.get("id")
        callback = self.pending.pop(rid, None) if isinstance(rid, int) else None
        if callback is not None:
            callback(frame)
        elif frame.get("type") != "welcome":  # 20,000 welcome dicts are not worth keeping
            self.others.append(frame)

    def _on_other_frame(self, b0: int, payload: bytes, now: int) -> None:
        opcode = b0 & 0x0F
        if opcode == OP_PING:
            self._write(client_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            if not self.closing:
                self.closing = True
                self._write(client_frame(payload[:2], OP_CLOSE))
            if self.transport is not None:
                self.transport.close()
        elif opcode in (OP_TEXT, OP_BINARY, OP_CONT) and not b0 & 0x80:
            self._frag.append(payload)  # first or middle fragment
        elif opcode == OP_CONT and self._frag:
            whole = b"".join([*self._frag, payload])
            self._frag.clear()
            if whole.startswith(MESSAGE_PREFIX):
                self.sink.on_message(self, whole, now)
            else:
                self._on_reply(whole)
        elif opcode == OP_TEXT:  # FIN + text with reserved bits set: treat as text
            self._on_reply(payload)

    # -- sending -----------------------------------------------------------------------------

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def send(self, frame: dict[str, Any]) -> None:
        self._write(client_frame(orjson.dumps(frame)))

    def call(self, frame: dict[str, Any], callback: ReplyCallback) -> int:
        """Send ``frame`` with a fresh integer ``id``; ``callback`` gets the reply carrying it
        (or ``{"type": "error", "code": "closed"}`` if the connection drops first)."""
        self._next_id += 1
        rid = self._next_id
        frame["id"] = rid
        self.pending[rid] = callback
        self.send(frame)
        return rid

    async def request(self, frame: dict[str, Any], timeout: float = 10.0) -> Reply:
        """Send ``frame`` and wait for its reply; a timeout answers ``{"code": "timeout"}``."""
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def done(reply: Reply) -> None:
            if not fut.done():
                fut.set_result(reply)

        rid = self.call(frame, done)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.pending.pop(rid, None)
            return {"type": "error", "code": "timeout"}

    def close(self) -> None:
        """Drop the connection at once (no closing handshake: the bench is done with it). The
        socket itself is closed on a later loop iteration: :func:`close_all` waits for that."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


async def close_all(conns: Iterable[WSConnection], timeout: float = 10.0) -> None:
    """Close ``conns`` and wait (at most ``timeout`` s) until their sockets really are closed,
    so that nothing is left for a loop that is about to end."""
    pending = list(conns)
    for conn in pending:
        conn.close()
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        pending = [c for c in pending if not c.lost and c.transport is not None]


async def connect(
    target: str,
    sink: Sink,
    path: str = "/ws",
    timeout: float = 10.0,
    rcvbuf: int | None = None,
) -> WSConnection:
    """Open a WebSocket to ``target`` (``host:port``) and complete the upgrade handshake.
    ``rcvbuf`` sets the socket's receive buffer (``SO_RCVBUF``) before connecting: a small one
    makes a client that stops reading back up the server quickly."""
    host, _, port_s = target.rpartition(":")
    port = int(port_s)
    loop = asyncio.get_running_loop()

    def factory() -> WSConnection:
        return WSConnection(host, port, path, sink)

    if rcvbuf is None:
        opening = loop.create_connection(factory, host, port)
    else:
        opening = _connect_with_rcvbuf(loop, factory, host, port, rcvbuf)
    transport, conn = await asyncio.wait_for(opening, timeout)
    try:
        await asyncio.wait_for(asyncio.shield(conn.opened), timeout)
    except BaseException:
        transport.abort()
        raise
    return conn


async def _connect_with_rcvbuf(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], WSConnection],
    host: str,
    port: int,
    rcvbuf: int,
) -> tuple[asyncio.Transport, WSConnection]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await loop.sock_connect(sock, (host, port))
        return await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
