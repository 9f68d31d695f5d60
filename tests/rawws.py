"""A WebSocket client on a plain blocking socket, for tests that break the protocol on purpose or
stop reading: it sends any bytes, in as many TCP writes as asked, and parses what the server
sends exactly as it comes off the wire."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame; ``length`` claims another payload length than ``payload``'s."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")  # fast for megabytes
    return head + mask + masked.to_bytes(len(payload), "big")


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    rsv1: bool = False  # a compressed message (permessage-deflate)

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    def json(self) -> dict[str, Any]:
        assert self.opcode == TEXT, self
        return dict(orjson.loads(self.payload))


class RawWebSocket:
    """One connection to ``/ws`` on ``port``, past the handshake (the welcome frame is left
    unread)."""

    def __init__(
        self,
        port: int,
        *,
        rcvbuf: int | None = None,
        timeout: float = 10.0,
        extensions: str | None = None,
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # set before connecting, so the window stays that small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{offer}"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            byte = self.sock.recv(1)  # byte by byte: leave the frames after it unread
            assert byte, f"connection closed during the handshake: {head!r}"
            head += byte
        assert head.startswith(b"HTTP/1.1 101"), head
        self.response_head = head.decode("latin-1")
        self._buffer = b""

    def send(self, data: bytes, *, chunk: int | None = None, pause: float = 0.0) -> None:
        """Send ``data``, in TCP writes of ``chunk`` bytes with ``pause`` seconds between."""
        if chunk is None:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), chunk):
            self.sock.sendall(data[i : i + chunk])
            if pause:
                time.sleep(pause)

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(frame(TEXT, orjson.dumps(message)))

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")  # what there is of a frame stays
            self._buffer += data
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def recv_frame(self) -> Frame:
        """The next frame from the server (which never masks); EOFError at the end."""
        first, second = self._read(2)
        assert not second & 0x80, "server frames are not masked"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return Frame(bool(first & 0x80), first & 0x0F, self._read(length), bool(first & 0x40))

    def recv_json(self) -> dict[str, Any]:
        """The next text frame, decoded (pings and pongs in between are skipped)."""
        while True:
            got = self.recv_frame()
            if got.opcode == TEXT:
                return got.json()
            assert got.opcode in (PING, PONG), got

    def until_close(self) -> tuple[Frame, list[Frame]]:
        """Read up to the server's close frame: (the close frame, the frames before it)."""
        before: list[Frame] = []
        while True:
            got = self.recv_frame()
            if got.opcode == CLOSE:
                return got, before
            before.append(got)

    def frames_to_end(self) -> list[Frame]:
        """Every frame up to the end of the connection, which must fall between two frames.
        (A reset also ends it: the peer closed while this side was still sending, and what was
        in flight is lost then.)"""
        got: list[Frame] = []
        try:
            while True:
                got.append(self.recv_frame())
        except EOFError:
            assert self._buffer == b"", f"the connection ended inside a frame: {self._buffer!r}"
        except ConnectionResetError:
            pass
        return got

    def rest(self) -> bytes:
        """Everything the server still sends, up to its end of the connection (a reset counts
        as an end); raises ``TimeoutError`` if the server keeps it open past the timeout."""
        data, self._buffer = self._buffer, b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data

    def close(self) -> None:
        self.sock.close()
