"""``python -m bench.storm``: a reconnect storm. ``--clients`` connections (10,000) on node A of
two ``pully serve`` nodes on one Redis, each subscribed to one of ``--channels`` channels, while
a publisher on node B publishes round robin at ``--rate`` msg/s. Node A is drained (SIGTERM:
every client is told to reconnect and closed with 1012); every client reconnects at once to
node B and subscribes with ``since`` its last position, as pully-client does.

Figures: the time from the drain to the last client resubscribed and recovered; reconnects/s
over the storm (first close to last ``subscribed``); node B's CPU per reconnect; how many came
back ``recovered: true``; and, per client, that every message published to its channel arrived
exactly once, in order, across the switch (offsets without gap or repeat). With ``--write-docs``
the table goes into docs/performance.md (``storm`` block). Bounded: 100 s of storm at most.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .procs import RedisProcess, ServerProcess, cpu_ticks, raise_nofile_limit
from .report import update_section
from .wsclient import WSConnection

ROOT = Path(__file__).resolve().parent.parent
TICKS = 100  # clock ticks per second of /proc/PID/stat (Linux)


class Client(WSConnection):
    """One subscriber: its channel, its position, every offset it received."""

    def __init__(self, port: int, storm: Storm, channel: str) -> None:
        super().__init__("127.0.0.1", port, "/ws", storm)
        self.storm = storm
        self.channel = channel
        self.position: tuple[int, str] | None = None
        self.offsets: list[int] = []
        self.start = 0  # the offset of the first subscribe: every later one must arrive
        self.recovered: bool | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.storm.on_lost(self)


class Storm:
    """The sink of every client, and the storm's clock."""

    def __init__(self) -> None:
        self.lost: asyncio.Queue[Client] = asyncio.Queue()
        self.first_lost: float | None = None
        self.draining = False

    def on_message(self, conn: WSConnection, payload: bytes, now_ns: int) -> None:
        assert isinstance(conn, Client)
        frame = orjson.loads(payload)
        conn.offsets.append(frame["offset"])
        conn.position = (frame["offset"], frame["epoch"])

    def on_closed(self, conn: WSConnection) -> None:
        pass  # connection_lost tells on_lost, whoever closed

    def on_lost(self, conn: Client) -> None:
        if self.draining:
            if self.first_lost is None:
                self.first_lost = time.monotonic()
            self.lost.put_nowait(conn)


async def open_client(port: int, storm: Storm, channel: str) -> Client:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Client(port, storm, channel), "127.0.0.1", port)
    await asyncio.wait_for(conn.opened, 20)
    return conn


async def subscribe(conn: Client, since: tuple[int, str] | None) -> None:
    frame: dict[str, Any] = {"type": "subscribe", "channel": conn.channel}
    if since is not None:
        frame["since"] = {"offset": since[0], "epoch": since[1]}
    reply = await conn.request(frame, timeout=60)
    if reply.get("type") != "subscribed":
        raise RuntimeError(f"subscribe refused: {reply}")
    conn.recovered = reply.get("recovered")
    if since is None:
        conn.position, conn.start = (reply["offset"], reply["epoch"]), reply["offset"]


async def publish_forever(port: int, channels: int, rate: float, acked: dict[str, int]) -> None:
    storm = Storm()
    pub = await open_client(port, storm, "")
    n = 0
    while True:
        channel = f"storm:{n % channels}"
        reply = await pub.request({"type": "publish", "channel": channel, "data": {"n": n}})
        if reply.get("type") == "ack":
            acked[channel] = max(acked.get(channel, 0), reply["offset"])
        n += 1
        await asyncio.sleep(1 / rate)


async def run(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    raise_nofile_limit()
    redis = RedisProcess(work).start()
    extra = ("--subscribe-rate", "0", "--drain-timeout", "30")
    nofile = opts.clients + 1000
    a = ServerProcess(work, redis.url, "a", nofile=nofile, extra_args=extra)
    b = ServerProcess(work, redis.url, "b", nofile=nofile, extra_args=extra)
    try:
        a.start()
        b.start()
        storm, acked = Storm(), dict[str, int]()
        clients: list[Client] = []
        for start in range(0, opts.clients, 200):
            batch = [open_client(a.port, storm, f"storm:{i % opts.channels}")
                     for i in range(start, min(opts.clients, start + 200))]  # fmt: skip
            clients += await asyncio.gather(*batch)
        await asyncio.gather(*(subscribe(c, None) for c in clients))
        publisher = asyncio.ensure_future(publish_forever(b.port, opts.channels, opts.rate, acked))
        await asyncio.sleep(2)
        ticks_b = cpu_ticks(b.pid)
        storm.draining = True
        began = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        back: list[Client] = []
        reconnecting: set[asyncio.Future[None]] = set()
        gate = asyncio.Semaphore(opts.concurrency)

        async def come_back(old: Client) -> None:
            async with gate:
                new = await open_client(b.port, storm, old.channel)
                new.offsets, new.position, new.start = old.offsets, old.position, old.start
                await subscribe(new, old.position)
                back.append(new)

        deadline = began + 100
        while len(back) < len(clients) and time.monotonic() < deadline:
            try:
                old = await asyncio.wait_for(storm.lost.get(), 1)
            except TimeoutError:
                continue
            task = asyncio.ensure_future(come_back(old))
            reconnecting.add(task)
            task.add_done_callback(reconnecting.discard)
            if len(reconnecting) + len(back) >= len(clients):
                await asyncio.gather(*reconnecting)
        done = time.monotonic()
        ticks_b = cpu_ticks(b.pid) - ticks_b
        await asyncio.sleep(2)  # live messages after the switch
        publisher.cancel()
        await asyncio.sleep(2)  # the last ones arrive
        return result(opts, clients, back, acked, began, done, storm.first_lost, ticks_b)
    finally:
        for proc in (a, b, redis):
            proc.stop()


def result(
    opts: argparse.Namespace, clients: list[Client], back: list[Client], acked: dict[str, int],
    began: float, done: float, first_lost: float | None, ticks_b: int,
) -> dict[str, Any]:  # fmt: skip
    gaps = repeats = 0
    for conn in back:
        got = conn.offsets
        repeats += len(got) - len(set(got))
        gaps += len(set(range(conn.start + 1, acked.get(conn.channel, 0) + 1)) - set(got))
    storm_s = done - (first_lost or began)
    return {
        "clients": opts.clients, "channels": opts.channels, "rate": opts.rate,
        "back": len(back), "recovered": sum(1 for c in back if c.recovered),
        "drain_to_all_s": round(done - began, 2), "storm_s": round(storm_s, 2),
        "reconnects_per_s": round(len(back) / storm_s) if storm_s > 0 else None,
        "b_cpu_us_per_reconnect": round(ticks_b * 1e6 / TICKS / max(1, len(back))),
        "gaps": gaps, "repeats": repeats,
        "messages": sum(len(c.offsets) for c in back),
    }  # fmt: skip


def table(r: dict[str, Any]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"Generated {when} by `python -m bench.storm --clients {r['clients']} --channels "
        f"{r['channels']} --rate {r['rate']}` (generator: one Python process, bench/wsclient.py).",
        "",
        "| clients back on node B | recovered: true | drain → all resubscribed s | storm s "
        "| reconnects/s | node B CPU µs / reconnect | messages checked | gaps | repeats |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {r['back']:,} / {r['clients']:,} | {r['recovered']:,} | {r['drain_to_all_s']} "
        f"| {r['storm_s']} | {r['reconnects_per_s']:,} | {r['b_cpu_us_per_reconnect']} "
        f"| {r['messages']:,} | {r['gaps']} | {r['repeats']} |",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__)
    p.add_argument("--clients", type=int, default=10_000)
    p.add_argument("--channels", type=int, default=1_000)
    p.add_argument("--rate", type=float, default=100.0, help="publishes per second on node B")
    p.add_argument("--concurrency", type=int, default=1_000, help="reconnects in flight")
    p.add_argument("--write-docs", action="store_true")
    opts = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pully-storm-") as tmp:
        r = asyncio.run(run(opts, Path(tmp)))
    print(orjson.dumps(r).decode())
    print(table(r))
    if opts.write_docs:
        update_section(ROOT / "docs" / "performance.md", "storm", table(r))
    return 0 if r["back"] == r["clients"] and not r["gaps"] and not r["repeats"] else 1


if __name__ == "__main__":
    sys.exit(main())
