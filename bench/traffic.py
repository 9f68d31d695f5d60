"""What the load generator does on the wire: book arriving messages (:class:`Recorder`), publish
(:class:`Publisher`, :func:`publish_at`) and watch its own event loop (:class:`LoopMonitor`)."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable

from pully_tornado.tasks import stop

from .stats import Hist, Window, r2
from .wsclient import Reply, WSConnection

_DATA_T = b'"data":{"t":'
_SKIP = len(b'{"type":"message"')
_CHANNEL_AT = b'{"type":"message","channel":"'  # how Pully (and the stub) start a message frame


def log(label: str, text: str) -> None:
    print(f"[gen {label}] {text}", file=sys.stderr, flush=True)


class Recorder:
    """The :class:`~bench.wsclient.Sink` of every subscriber: reads ``data.t`` from each
    ``message`` frame without decoding the rest, and books the latency to the window the message
    was sent in."""

    def __init__(self) -> None:
        self.windows: list[Window] = []
        self.arrivals = 0  # measured messages received (any window), by arrival
        self.warm = 0
        self.foreign = 0  # message frames without our data.t
        self.closed = 0  # subscriber connections the server closed
        self.last_recv_ns = 0
        self.per_node: list[Hist] | None = None  # latency by the subscriber's node (cluster)
        # channels: latency of messages on the shared channel apart from those on own channels
        self.shared_prefix: bytes | None = None
        self.own_hist = Hist()
        self.shared_hist = Hist()

    def split_shared(self, channel: str) -> None:
        """Book measured messages on ``channel`` in :attr:`shared_hist`, others in
        :attr:`own_hist` (as well as in their window)."""
        self.shared_prefix = _CHANNEL_AT + channel.encode() + b'"'
        self.own_hist = Hist()
        self.shared_hist = Hist()

    def on_message(self, conn: WSConnection, payload: bytes, now_ns: int) -> None:
        i = payload.find(_DATA_T, _SKIP)
        if i < 0:
            self.foreign += 1
            return
        i += len(_DATA_T)
        try:
            t = int(payload[i : payload.find(b",", i)])
        except ValueError:
            self.foreign += 1
            return
        windows = self.windows
        if not windows or t < windows[0].start_ns:
            self.warm += 1
            return
        k = len(windows) - 1
        while t < windows[k].start_ns:
            k -= 1
        w = windows[k]
        w.delivered += 1
        w.hist.record(now_ns - t)
        if self.per_node is not None:
            self.per_node[conn.node].record(now_ns - t)
        if self.shared_prefix is not None:
            shared = payload.startswith(self.shared_prefix)
            (self.shared_hist if shared else self.own_hist).record(now_ns - t)
        conn.got += 1
        self.arrivals += 1
        self.last_recv_ns = now_ns

    def on_closed(self, conn: WSConnection) -> None:
        self.closed += 1


class Publisher:
    """One connection publishing ``{"t","s","p"}`` payloads; counts acks of measured sends."""

    def __init__(self, conn: WSConnection, pad: str) -> None:
        self.conn = conn
        self.pad = pad
        self.seq = 0
        self.measuring = False
        self.sent = 0  # measured publishes
        self.acks = 0
        self.nacks = 0
        self.ack_hist = Hist()
        self.nack_codes: dict[str, int] = {}
        self.count: dict[str, int] = {}  # measured publishes per channel

    def send(self, channel: str) -> None:
        self.seq += 1
        t = time.perf_counter_ns()
        data = {"t": t, "s": self.seq, "p": self.pad}
        frame = {"type": "publish", "channel": channel, "data": data}
        if not self.measuring:
            self.conn.call(frame, _ignore)
            return
        self.sent += 1
        self.count[channel] = self.count.get(channel, 0) + 1

        def on_reply(reply: Reply) -> None:
            if reply.get("type") == "ack":
                self.acks += 1
                self.ack_hist.record(time.perf_counter_ns() - t)
            else:
                self.nacks += 1
                code = str(reply.get("code"))
                self.nack_codes[code] = self.nack_codes.get(code, 0) + 1

        self.conn.call(frame, on_reply)

    def outstanding(self) -> int:
        return self.sent - self.acks - self.nacks


def _ignore(reply: Reply) -> None:
    pass


async def publish_at(
    pub: Publisher,
    rate: float,
    duration: float,
    pick: Callable[[int], str],
    stop_if: Callable[[], bool] | None = None,
) -> int:
    """Publish at ``rate``/s for ``duration`` s, each message when it is due (late wake-ups
    catch up at once); return how many were sent."""
    t0 = time.perf_counter()
    last = t0
    target = 0.0
    sent = 0
    while True:
        now = time.perf_counter()
        stop = now - t0 >= duration or (stop_if is not None and stop_if())
        until = min(now, t0 + duration)
        target += rate * (until - last)
        last = until
        while sent < math.floor(target + 1e-9):
            pub.send(pick(sent))
            sent += 1
        if stop:
            return sent
        # sleep until the next publish is due (at least 1 ms, at most 50 ms: stop_if is polled)
        due = t0 + (sent + 1) / rate if rate > 0 else now + 0.05
        await asyncio.sleep(min(0.05, max(0.001, due - time.perf_counter())))


class LoopMonitor:
    """Event-loop delay of the generator (how late a 5 ms sleep wakes up)."""

    def __init__(self) -> None:
        self.hist = Hist()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.hist = Hist()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.perf_counter_ns()
            await asyncio.sleep(0.005)
            self.hist.record(max(0, time.perf_counter_ns() - t - 5_000_000))

    async def stop(self) -> dict[str, float | None]:
        await stop(self._task)
        self._task = None
        return {
            "p99": r2(self.hist.percentile(99)),
            "max": r2(self.hist.max_ns / 1e6) if self.hist.n else None,
        }
