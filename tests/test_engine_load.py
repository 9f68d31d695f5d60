"""The fan-out engine's correctness under load, on both engines: 2,000 subscribers x 200
messages, and every subscriber gets every message exactly once, in order, intact.

The load is made to reach the paths a quiet test never takes:

* one publisher sends all 200 publishes back to back (``publish_rate`` 0), so several messages
  land in one loop tick and frames are coalesced per connection;
* every 20th message carries 4 KB, and 100 subscribers with a small receive buffer stop reading
  until half the publishes are acknowledged, then read again while the other half goes out;
  with the in-process node the server's side of their sockets also gets a small send buffer
  (loopback's own is megabytes), so its direct socket sends come up short, the rest of their
  frames waits in the stream's buffer, and new frames arrive while that buffer drains: they
  must still arrive in order;
* 100 more subscribers subscribe while the publishes are under way: each must get exactly the
  messages after the offset its ``subscribed`` reply reported, none twice, none missing.

Clients are the bench's raw asyncio WebSocket clients (:mod:`bench.wsclient`): 2,200 of them
in the test process cost far less than Tornado client objects. With the in-process node they
share the test's event loop, so nothing here blocks it. Timeouts bound every wait; nothing
asserts a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from bench.wsclient import WSConnection, close_all, connect
from pully_tornado.node import Node

from .support import PullyProcess, RedisServer, eventually

pytestmark = pytest.mark.slow

SUBSCRIBERS = 2000
MESSAGES = 200
SLOW = 100  # of the subscribers: stop reading until half the publishes are acknowledged
LATE = 100  # more subscribers, subscribing while the publishes are under way
BIG_EVERY = 20  # every 20th message carries BIG bytes of padding
BIG, SMALL = 4096, 32
SLOW_RCVBUF = 4096  # SO_RCVBUF of the slow subscribers: their backlog backs up into the server
SERVER_SNDBUF = 4096  # SO_SNDBUF of the server's side of their sockets (in-process node only)
CONCURRENCY = 100  # connections opened at a time
CHANNEL = "engine-load"


def padding(seq: int) -> int:
    return BIG if seq % BIG_EVERY == BIG_EVERY - 1 else SMALL


@dataclass(slots=True)
class Received:
    offsets: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    epochs: set[str] = field(default_factory=set)
    bad_padding: int = 0
    garbled: int = 0  # message frames that are not the JSON a publish makes


class Inbox:
    """The :class:`bench.wsclient.Sink` of every client: each ``message`` frame, decoded."""

    def __init__(self) -> None:
        self.by_conn: dict[int, Received] = {}
        self.total = 0
        self.closed = 0

    def of(self, conn: WSConnection) -> Received:
        return self.by_conn.setdefault(conn.idx, Received())

    def on_message(self, conn: WSConnection, payload: bytes, now_ns: int) -> None:
        got = self.of(conn)
        self.total += 1
        try:
            frame = orjson.loads(payload)
            data = frame["data"]
            offset, seq, epoch, pad = frame["offset"], data["s"], frame["epoch"], data["p"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            got.garbled += 1
            return
        got.offsets.append(offset)
        got.seqs.append(seq)
        got.epochs.add(epoch)
        if len(pad) != padding(seq):
            got.bad_padding += 1

    def on_closed(self, conn: WSConnection) -> None:
        self.closed += 1


async def bounded(jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    """Run ``jobs`` at most ``limit`` at a time; results in order."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


async def subscribe(conn: WSConnection) -> dict[str, Any]:
    reply = await conn.request({"type": "subscribe", "channel": CHANNEL}, timeout=30)
    assert reply.get("type") == "subscribed", reply
    return reply


def first_difference(got: list[int], want: list[int]) -> int:
    pairs = zip(got, want, strict=False)
    same = min(len(got), len(want))
    return next((i for i, (a, b) in enumerate(pairs) if a != b), same)


def check(
    inbox: Inbox, conns: Sequence[WSConnection], first: Sequence[int], last: int, base: int
) -> list[str]:
    """What is wrong with what each of ``conns`` received: it should be the offsets after
    ``first[i]`` up to ``last``, each once, in order, in one epoch, carrying publish number
    offset - base - 1 with its padding intact. Returns one line per bad subscriber."""
    problems = []
    for conn, after in zip(conns, first, strict=True):
        got = inbox.of(conn)
        want = list(range(after + 1, last + 1))
        if got.offsets != want:
            dupes = len(got.offsets) - len(set(got.offsets))
            problems.append(
                f"subscriber {conn.idx}: {len(got.offsets)} messages, want {len(want)} "
                f"(offsets {after + 1}..{last}); {dupes} duplicates, {got.garbled} garbled; "
                f"first offsets {got.offsets[:5]}, first wrong one at index "
                f"{first_difference(got.offsets, want)}"
            )
        elif got.seqs != [o - base - 1 for o in want]:
            problems.append(f"subscriber {conn.idx}: payloads out of step with offsets")
        elif len(got.epochs) > 1 or got.bad_padding or got.garbled:
            problems.append(
                f"subscriber {conn.idx}: epochs {got.epochs}, {got.bad_padding} bad payloads, "
                f"{got.garbled} garbled frames"
            )
    return problems


def shrink_server_sndbuf(node: Node, client_ports: set[int]) -> int:
    """Give the server's side of the connections from ``client_ports`` a small send buffer;
    return how many it found."""
    found = 0
    for conn in list(node.connections):
        stream = getattr(getattr(conn, "ws_connection", None), "stream", None)
        sock = getattr(stream, "socket", None)
        if isinstance(sock, socket.socket) and sock.getpeername()[1] in client_ports:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SERVER_SNDBUF)
            found += 1
    return found


async def run_load(
    sub_targets: Sequence[str],
    late_target: str,
    pub_target: str,
    slow_ports_hook: Callable[[set[int]], None] | None = None,
) -> None:
    """Subscribers spread over ``sub_targets``, late subscribers on ``late_target``, the
    publisher on ``pub_target``; then every check. ``slow_ports_hook`` gets the local ports of
    the slow subscribers before publishing starts. Every socket is closed at the end."""
    inbox = Inbox()
    opened: list[WSConnection] = []

    async def open_one(idx: int, target: str, rcvbuf: int | None = None) -> WSConnection:
        conn = await connect(target, inbox, timeout=30, rcvbuf=rcvbuf)
        conn.idx = idx
        opened.append(conn)
        return conn

    try:
        n = len(sub_targets)
        subs: list[WSConnection] = await bounded(
            [
                lambda i=i: open_one(i, sub_targets[i % n], SLOW_RCVBUF if i < SLOW else None)
                for i in range(SUBSCRIBERS)
            ],
            CONCURRENCY,
        )
        late: list[WSConnection] = await bounded(
            [lambda i=i: open_one(SUBSCRIBERS + i, late_target) for i in range(LATE)],
            CONCURRENCY,
        )
        pub = await open_one(-1, pub_target)
        replies = await bounded([lambda c=c: subscribe(c) for c in subs], CONCURRENCY)
        positions = {(r["epoch"], r["offset"]) for r in replies}
        assert len(positions) == 1, f"subscribers were told different positions: {positions}"
        [(epoch, base)] = positions

        for conn in subs[:SLOW]:
            assert conn.transport is not None
            conn.transport.pause_reading()
        if slow_ports_hook is not None:
            slow_ports_hook(
                {c.transport.get_extra_info("sockname")[1] for c in subs[:SLOW] if c.transport}
            )

        acks: dict[int, dict[str, Any]] = {}

        def publish(seq: int) -> None:
            data = {"s": seq, "p": "x" * padding(seq)}
            frame = {"type": "publish", "channel": CHANNEL, "data": data}
            pub.call(frame, lambda reply: acks.__setitem__(seq, reply))

        # The first half of the publishes, with the late subscribes after its first quarter;
        # once that half is acknowledged (the slow subscribers' backlog now sits in the
        # server), the slow subscribers read again while the second half goes out: their
        # sockets drain while the server still has frames queued for them and new ones come.
        # Nothing in a half is awaited before the next request is sent.
        quarter = MESSAGES // 4
        for seq in range(quarter):
            publish(seq)
        late_replies = asyncio.gather(*(subscribe(c) for c in late))
        for seq in range(quarter, 2 * quarter):
            publish(seq)
        await eventually(lambda: len(acks) == 2 * quarter, 60, "the first half acknowledged")
        await asyncio.sleep(0.1)
        for conn in subs[:SLOW]:
            assert conn.transport is not None
            conn.transport.resume_reading()
        for seq in range(2 * quarter, MESSAGES):
            publish(seq)
        late_positions = await late_replies
        await eventually(lambda: len(acks) == MESSAGES, 60, "every publish acknowledged")

        assert all(a.get("type") == "ack" for a in acks.values()), [
            a for a in acks.values() if a.get("type") != "ack"
        ][:3]
        assert [acks[s]["offset"] for s in range(MESSAGES)] == list(
            range(base + 1, base + MESSAGES + 1)
        ), "one publisher's messages get consecutive offsets in the order sent"
        last = base + MESSAGES
        assert {p["epoch"] for p in late_positions} == {epoch}
        late_first = [int(p["offset"]) for p in late_positions]
        assert all(base <= f <= last for f in late_first), late_first

        everyone = [*subs, *late]
        wanted = [MESSAGES] * SUBSCRIBERS + [last - f for f in late_first]

        def delivered() -> bool:
            return all(len(inbox.of(c).offsets) >= w for c, w in zip(everyone, wanted, strict=True))

        with contextlib.suppress(AssertionError):  # if not, the checks below say what is wrong
            await eventually(delivered, 60, "every message delivered")
        await asyncio.sleep(0.3)  # anything extra (a duplicate) would arrive now

        problems = check(inbox, subs, [base] * SUBSCRIBERS, last, base)
        problems += check(inbox, late, late_first, last, base)
        assert not problems, (
            f"{len(problems)} subscribers got it wrong ({inbox.closed} connections closed by "
            "the server):\n" + "\n".join(problems[:10])
        )
        assert inbox.closed == 0, f"the server closed {inbox.closed} subscriber connections"
        assert inbox.total == sum(wanted)
        assert not inbox.of(pub).offsets, "the publisher is not subscribed"
    finally:
        await close_all(opened)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"publish_rate": 0.0}  # one connection publishes 200 messages back to back


@pytest.mark.usefixtures("app", "http_server")
@pytest.mark.gen_test(timeout=180)
async def test_every_subscriber_gets_every_message_once_in_order(
    http_port: int, node: Node, engine: str
) -> None:
    def slow_server_side(ports: set[int]) -> None:
        found = shrink_server_sndbuf(node, ports)
        assert found == SLOW, f"found the server side of {found} of {SLOW} slow subscribers"

    target = f"127.0.0.1:{http_port}"
    await run_load([target], target, target, slow_server_side)


@pytest.fixture
def two_nodes(
    processes: Callable[..., PullyProcess], cluster_redis: RedisServer
) -> list[PullyProcess]:
    args = ("--publish-rate", "0")
    return [processes(redis_url=cluster_redis.url, args=args) for _ in range(2)]


@pytest.mark.gen_test(timeout=180)
async def test_every_subscriber_on_two_nodes_gets_every_message_once_in_order(
    two_nodes: list[PullyProcess],
) -> None:
    """The same through two real ``pully serve`` processes on one Redis: subscribers split over
    both, the publisher on the first, the late subscribers on the second."""
    a, b = (f"127.0.0.1:{node.port}" for node in two_nodes)
    await run_load([a, b], b, a)
