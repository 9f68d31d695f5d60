"""The write path: every frame a connection is sent in one loop tick goes out in one write at
the end of that tick.

Each connection (``handlers/websocket.py``) has a :class:`FrameQueue`: its frames, replies and
messages alike, are queued there in order, and the queue registers with the node's one
:class:`Outbox` the first time in a tick; one callback per tick then lets each registered queue
write everything it holds. Fan-out of one publication to N subscribers is N list appends here
and N writes once the tick ends; several messages for one client in one tick cost one write
(see docs/performance.md). A client that does not read is a slow consumer: once its unread
output passes the stream's limit the queue hands what is left to the connection to close it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from tornado.concurrent import future_set_exception_unless_cancelled
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError


class Flushable(Protocol):
    def write_pending(self) -> None:
        """Write everything queued for this connection."""


class Outbox:
    """Connections with frames queued in this loop tick, written once at the end of the tick.

    A connection queues its frames (replies and messages alike, in order) and registers here
    once per tick; one callback per tick then lets each of them write all its frames at once.
    Several messages for one client in one tick cost one write."""

    __slots__ = ("_loop", "_pending", "_scheduled")

    def __init__(self) -> None:
        self._pending: list[Flushable] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, conn: Flushable) -> None:
        self._pending.append(conn)
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for conn in pending:
            conn.write_pending()


class FrameQueue:
    """One connection's frames queued in this loop tick, written at its end in one write:
    straight to the socket when Tornado has nothing pending for it, through the IOStream
    otherwise. ``on_full(rest)`` is called when the stream's write buffer is full (a slow
    consumer); ``rest`` is what remains of a frame the client has in part. The queue is
    detached then, as after :meth:`detach`."""

    __slots__ = ("_full", "_out", "_outbox", "_sock", "stream")

    def __init__(self, outbox: Outbox, on_full: Callable[[bytes | memoryview], None]) -> None:
        self._outbox = outbox
        self._full = on_full
        self._out: list[bytes] | None = None  # frames queued in this loop tick
        self.stream: IOStream | None = None  # set while the connection is open
        self._sock: Any = None  # the raw socket, for writes that skip IOStream

    def attach(self, stream: IOStream) -> None:
        self.stream = stream
        if type(stream) is IOStream:  # plain TCP (not TLS): raw sends are safe
            self._sock = stream.socket

    def detach(self) -> IOStream | None:
        """Stop writing: queued frames are dropped. Returns the stream it wrote to."""
        stream, self.stream, self._sock, self._out = self.stream, None, None, None
        return stream

    def write_frame(self, frame: bytes) -> None:
        """Queue a complete frame; it is written at the end of this loop tick, together with
        every other frame queued for this connection meanwhile, in order."""
        out = self._out
        if out is not None:
            out.append(frame)
        elif self.stream is not None:
            self._out = [frame]
            self._outbox.add(self)

    def write_pending(self) -> None:
        out, self._out = self._out, None
        stream = self.stream
        if not out or stream is None:
            return
        data: bytes | memoryview = out[0] if len(out) == 1 else b"".join(out)
        sent = 0
        if self._sock is not None and not stream.writing():
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                pass
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
            self.detach()
            self._full(data[: _rest_of_frame(out, sent)])


def _rest_of_frame(frames: list[bytes], sent: int) -> int:
    """How many bytes are left of the frame that the first ``sent`` bytes of ``frames`` end in
    (0 when they end where a frame ends)."""
    end = 0
    for frame in frames:
        if end >= sent:
            break
        end += len(frame)
    return end - sent


def drop_unsent(stream: IOStream) -> int:
    """Drop the output ``stream`` holds that the kernel has not taken, except the rest of the
    write the kernel took a part of: what the client receives stays whole frames. Writes whose
    data is dropped fail with ``StreamClosedError``. Returns the number of bytes dropped.

    Every write to a WebSocket's stream is whole frames (Tornado's frames, or the handler's
    frames minus what it sent to the socket itself), so each ends where a frame ends, and the
    stream keeps those ends, with the Future each resolves, in ``_write_futures``."""
    sent = stream._total_write_done_index
    futures = stream._write_futures
    cut = next((end for end, _ in futures if end > sent), sent)
    buffer = stream._write_buffer
    assert len(buffer) == stream._total_write_index - sent
    kept = bytearray()
    while len(kept) < cut - sent:
        with buffer.peek(cut - sent - len(kept)) as view:
            kept += view
            size = len(view)
        buffer.advance(size)
    dropped = len(buffer)
    if dropped:
        buffer.advance(dropped)
    buffer.append(kept)
    stream._total_write_index = cut
    while futures and futures[-1][0] > cut:
        _, future = futures.pop()
        future_set_exception_unless_cancelled(future, StreamClosedError())
    return dropped
