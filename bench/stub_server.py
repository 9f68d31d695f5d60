"""A stub server for measuring the load generator itself: ``python -m bench.stub_server PORT``.

It speaks just enough of protocol v1 for the fan-out scenarios (``subscribe`` -> ``subscribed``,
``publish`` -> the ``message`` frame built once and written to every subscriber of the channel,
then ``ack``) and answers ``GET /healthz``. No broker, no offsets worth the name, no validation:
it does strictly less than any real server, so a saturation run against it shows where the
*generator* tops out on this machine (scenario ``gen-sat-1k``).
"""

from __future__ import annotations

import asyncio
import signal
import struct
import sys
from collections import defaultdict
from typing import Any

import orjson

from .wsclient import accept_key, mask

subscribers: dict[str, set[asyncio.Transport]] = defaultdict(set)


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class StubConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.channels: set[str] = set()
        self.offset = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for channel in self.channels:
            if self.transport is not None:
                subscribers[channel].discard(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buf[:end].split(b"\r\n")
            self.buf = self.buf[end + 4 :]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            key = headers.get(b"sec-websocket-key")
            if key is None:  # plain HTTP: /healthz
                body = b'{"status":"ok","node":"stub"}'
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                self.transport.close()
                return
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
            )
            self.upgraded = True
        while len(self.buf) >= 6:
            b0, b1 = self.buf[0], self.buf[1]
            length, start = b1 & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(self.buf[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(self.buf[2:10], "big"), 10
            end = start + 4 + length
            if len(self.buf) < end:
                return
            payload = mask(self.buf[start + 4 : end], self.buf[start : start + 4])
            self.buf = self.buf[end:]
            opcode = b0 & 0x0F
            if opcode == 0x8:
                self.transport.close()
                return
            if opcode == 0x1:
                self.handle(orjson.loads(payload))

    def handle(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        kind, channel, rid = frame.get("type"), str(frame.get("channel")), frame.get("id")
        if kind == "subscribe":
            subscribers[channel].add(self.transport)
            self.channels.add(channel)
            reply: dict[str, Any] = {"type": "subscribed", "channel": channel, "offset": 0}
        elif kind == "publish":
            self.offset += 1
            message = {"type": "message", "channel": channel, "data": frame.get("data")}
            message |= {"offset": self.offset, "epoch": "stub"}
            out = text_frame(orjson.dumps(message))
            for transport in subscribers[channel]:
                transport.write(out)
            reply = {"type": "ack", "channel": channel, "offset": self.offset}
        else:
            reply = {"type": "error", "code": "unknown_type", "message": "stub"}
        if rid is not None:
            reply["id"] = rid
        self.transport.write(text_frame(orjson.dumps(reply)))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubConnection, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
