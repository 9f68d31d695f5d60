"""The frame reader's gain, measured alone (docs/performance.md, "Reading client frames").

``python -m bench.frame_reader`` runs two measurements on the same 20,000 masked text frames
of about 60 bytes (a ``publish`` command each):

``consume``
    The parser's hot path: ``ChunkedProtocol._consume`` over the whole buffer, with a handler
    that does nothing; best time per frame over 60 runs. No socket, no event loop turns.

``socket``
    Tornado's stock reader (``WebSocketProtocol13``) against ``wsframes.ChunkedProtocol`` over a
    real loopback socket, in one process: a Tornado app with two trivial ``WebSocketHandler``
    routes that differ only in ``get_websocket_protocol`` (stock, or
    ``chunked_protocol(stock)`` as ``handlers/websocket.py`` does) and count the messages they
    receive. A raw client (a plain blocking socket in a worker thread, handshake done before
    the clock starts) sends all the frames with one ``sendall``. Timed from just before the
    first byte is sent until the handler has seen the last message: wall time, and the CPU
    time of the event loop's thread (the server: socket reads, frame parsing, unmasking,
    UTF-8 decoding, the handler call; not the client thread's sending). Runs alternate between
    the two readers on two connections opened once; best of ``--runs`` each.

Both print microseconds per frame. The app, the loop and the handler's work are the same for
both readers; only the reading differs. Every run takes well under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.util import _websocket_mask
from tornado.websocket import WebSocketHandler, _WebSocketParams

from pully_tornado.wsframes import ChunkedProtocol, chunked_protocol

from .wsclient import accept_key

FRAMES = 20_000
CONSUME_RUNS = 60
SOCKET_RUNS = 15
TIMEOUT_S = 30.0  # one socket run; a reader that loses frames fails instead of hanging


class NoOpHandler:
    client_id = "bench"

    def on_message(self, message: Any) -> None:
        pass

    def on_ping(self, data: bytes) -> None:
        pass

    def on_pong(self, data: bytes) -> None:
        pass

    def log_exception(self, *args: Any) -> None:
        raise SystemExit(f"the handler failed: {args}")

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        raise SystemExit(f"closed with {code} {reason}")

    def on_ws_connection_close(self, code: int | None = None, reason: str | None = None) -> None:
        pass


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + _websocket_mask(mask, payload)


def frames(count: int) -> bytes:
    return b"".join(
        masked_text_frame(b'{"type":"publish","channel":"chat","data":{"n":%d}}' % i)
        for i in range(count)
    )


async def bench_consume(data: bytes, count: int, runs: int) -> float:
    """Best seconds per frame of ``ChunkedProtocol._consume`` over ``data``."""
    protocol = ChunkedProtocol(NoOpHandler(), False, _WebSocketParams(max_message_size=1 << 20))
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        protocol._consume(data)
        best = min(best, time.perf_counter() - start)
    return best / count


# -- stock reader against ChunkedProtocol, over a socket ----------------------------------------


@dataclass
class Counter:
    """What one route's handler has seen in the current run."""

    want: int = 0
    seen: int = 0
    done: asyncio.Future[None] | None = None

    def expect(self, count: int) -> asyncio.Future[None]:
        self.want, self.seen = count, 0
        self.done = asyncio.get_running_loop().create_future()
        return self.done


class CountingHandler(WebSocketHandler):
    """The same work for both readers: count, and say when the last message came."""

    client_id = "bench"

    def initialize(self, counter: Counter) -> None:
        self.counter = counter

    def check_origin(self, origin: str) -> bool:
        return True

    def on_message(self, message: str | bytes) -> None:
        counter = self.counter
        counter.seen += 1
        if counter.seen == counter.want:
            assert counter.done is not None
            counter.done.set_result(None)


class StockHandler(CountingHandler):
    pass


class ChunkedHandler(CountingHandler):
    def get_websocket_protocol(self) -> Any:
        return chunked_protocol(super().get_websocket_protocol())


def handshake(port: int, path: str) -> socket.socket:
    """A blocking client socket upgraded to a WebSocket on ``path``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), port, key)
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit(f"{path}: the server closed during the handshake")
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101") or accept_key(key) not in head or rest:
        raise SystemExit(f"{path}: no WebSocket upgrade: {head!r}")
    return sock


@dataclass
class Best:
    wall: float = float("inf")
    cpu: float = float("inf")


async def timed_run(sock: socket.socket, counter: Counter, data: bytes, count: int) -> Best:
    """Seconds of wall and loop-thread CPU from the first byte sent to the last message seen."""
    done = counter.expect(count)
    wall, cpu = time.perf_counter(), time.thread_time()
    sending = asyncio.create_task(asyncio.to_thread(sock.sendall, data))
    await asyncio.wait_for(done, TIMEOUT_S)
    run = Best(time.perf_counter() - wall, time.thread_time() - cpu)
    await sending
    return run


async def bench_socket(data: bytes, count: int, runs: int) -> dict[str, Best]:
    counters = {"stock": Counter(), "chunked": Counter()}
    app = tornado.web.Application(
        [
            ("/stock", StockHandler, {"counter": counters["stock"]}),
            ("/chunked", ChunkedHandler, {"counter": counters["chunked"]}),
        ],
        websocket_max_message_size=1 << 20,
    )
    server = HTTPServer(app)
    listening = bind_sockets(0, "127.0.0.1")
    server.add_sockets(listening)
    port = listening[0].getsockname()[1]
    socks = {
        name: await asyncio.to_thread(handshake, port, f"/{name}") for name in ("stock", "chunked")
    }
    best = {name: Best() for name in socks}
    try:
        await timed_run(socks["stock"], counters["stock"], data, count)  # warm-up, both
        await timed_run(socks["chunked"], counters["chunked"], data, count)
        for _ in range(runs):
            for name, sock in socks.items():
                run = await timed_run(sock, counters[name], data, count)
                best[name].wall = min(best[name].wall, run.wall)
                best[name].cpu = min(best[name].cpu, run.cpu)
    finally:
        for sock in socks.values():
            sock.close()
        server.stop()
        await server.close_all_connections()
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.frame_reader", description=__doc__)
    parser.add_argument("--only", choices=("consume", "socket"), help="run one measurement")
    parser.add_argument("--frames", type=int, default=FRAMES, help="frames per run")
    parser.add_argument("--runs", type=int, help="runs per reader (best is kept)")
    args = parser.parse_args()
    count = args.frames
    data = frames(count)
    print(f"{count} masked text frames of {len(data) // count} bytes on average")
    if args.only in (None, "consume"):
        runs = args.runs or CONSUME_RUNS
        per_frame = await bench_consume(data, count, runs)
        print(f"consume: ChunkedProtocol._consume {per_frame * 1e6:.2f} µs/frame (best of {runs})")
    if args.only in (None, "socket"):
        runs = args.runs or SOCKET_RUNS
        best = await bench_socket(data, count, runs)
        print(f"socket, best of {runs} runs each, µs per frame (wall; server loop thread CPU):")
        labels = {"stock": "Tornado WebSocketProtocol13", "chunked": "ChunkedProtocol"}
        for name, label in labels.items():
            b = best[name]
            print(f"  {label:28} {b.wall / count * 1e6:6.2f} wall; {b.cpu / count * 1e6:6.2f} CPU")
        stock, chunked = best["stock"], best["chunked"]
        print(
            f"  stock / chunked: {stock.wall / chunked.wall:.2f}x wall, "
            f"{stock.cpu / chunked.cpu:.2f}x CPU"
        )


if __name__ == "__main__":
    asyncio.run(main())
