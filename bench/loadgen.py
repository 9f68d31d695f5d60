"""The load generator: one asyncio process, run by ``python -m bench`` as a separate process so
its CPU is not the server's. Prints exactly one JSON line on stdout; progress goes to stderr.

    python -m bench.loadgen --scenario fanout --mode fixed --subs 1000 --rate 5 --duration 12 \\
        --targets 127.0.0.1:8101 --server-pids 1234 [--redis-pid 99]

Scenarios (``--scenario``): ``fanout`` (fixed rate or saturation, one channel, ``--spread``
over several targets for ``cluster``), ``channels`` (own channel + one shared channel per
client), ``idle`` (RSS before and after N idle subscribed connections) and ``conns`` (N
concurrent connections on one server, then one publish that must reach all of them;
``--nofile`` raises this process's open-files limit first).

Every message a publisher sends carries ``data = {"t": send time (perf_counter_ns), "s": seq,
"p": 64 x "x"}``; a subscriber's latency is its receive time minus ``t`` (one process, one
clock). Messages are attributed to the measured window (or saturation step) they were *sent*
in, by ``t``; anything sent before the first window is warm-up and only counted. Every phase is
bounded in time and the whole run by ``--max-time``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from . import holding
from .harness import Harness
from .procs import BenchError
from .saturation import saturate
from .stats import Hist, Window, costs, r2, r3
from .traffic import LoopMonitor, Publisher, publish_at
from .wsclient import WSConnection, close_all, connect


class Generator(Harness):
    """The fan-out and channels scenarios, and the dispatch to every scenario."""

    async def run(self) -> dict[str, Any]:
        if self.o.scenario == "fanout":
            return await self.fanout()
        if self.o.scenario == "channels":
            return await self.channels()
        if self.o.scenario == "idle":
            return await holding.idle(self)
        if self.o.scenario == "conns":
            return await holding.conns(self)
        raise ValueError(f"unknown --scenario {self.o.scenario}")

    async def fanout(self) -> dict[str, Any]:
        """N subscribers on one channel, one publisher connection on the first target."""
        o = self.o
        channel = f"fan-{self.run_id}"
        ntargets = len(self.targets)
        subs, conn_info = await self.connect_many(
            o.subs, lambda i: (channel,), (lambda i: i % ntargets) if o.spread else (lambda i: 0)
        )
        pub = Publisher(await connect(self.targets[0], self.rec), self.pad)
        gc.collect()
        gc.freeze()  # thousands of long-lived connection objects: keep them out of GC passes
        await asyncio.sleep(0.5)
        try:
            if o.mode == "sat":
                return await saturate(self, subs, pub, channel, conn_info)
            return await self.fixed(subs, pub, channel, conn_info)
        finally:
            await close_all([*subs, pub.conn])

    async def fixed(
        self, subs: list[WSConnection], pub: Publisher, channel: str, conn_info: dict[str, Any]
    ) -> dict[str, Any]:
        o = self.o
        n = len(subs)
        pick = lambda i: channel  # noqa: E731
        self.log(f"fixed: {n} subs, {o.rate} msg/s for {o.duration}s (+{o.warmup}s warm-up)")
        nodes = len(self.targets) if o.spread else 1
        if nodes > 1:
            self.rec.per_node = [Hist() for _ in range(nodes)]
        await publish_at(pub, o.rate, o.warmup, pick)
        await asyncio.sleep(0.3)
        monitor = LoopMonitor()
        monitor.start()
        s0 = self.sample()
        window = Window(start_ns=time.perf_counter_ns(), rate=o.rate, duration_s=o.duration)
        self.rec.windows.append(window)
        pub.measuring = True
        window.sent = await publish_at(pub, o.rate, o.duration, pick)
        pub.measuring = False
        drain_s = await self.drain(window, window.sent * n)
        s1 = self.sample()
        loop = await monitor.stop()
        span = max(o.duration, (self.rec.last_recv_ns - window.start_ns) / 1e9)
        per_node: dict[str, Any] = {}
        if self.rec.per_node is not None:  # node 0 has the publisher: local; node 1: remote
            hists = self.rec.per_node
            per_node["subs_per_node"] = [sum(c.node == i for c in subs) for i in range(nodes)]
            per_node["lat_ms_local"] = hists[0].summary()
            per_node["lat_ms_remote"] = hists[1].summary()
            per_node["delivered_local"] = hists[0].n
            per_node["delivered_remote"] = sum(h.n for h in hists[1:])
            per_node["lat_ms_per_node"] = [h.summary() for h in hists]
        return {
            "ok": True,
            "mode": "fixed",
            "subs": n,
            "rate": o.rate,
            "duration_s": o.duration,
            "warmup_s": o.warmup,
            "published": window.sent,
            **self.delivery(pub, window, [window.sent] * n, subs),
            "offered_per_s": r2(o.rate * n),
            "delivered_per_s": r2(window.delivered / span),
            "drain_ms": round(drain_s * 1000),
            "lat_ms": window.hist.summary(),
            "pub_ack_ms": pub.ack_hist.summary(),
            **costs(s0, s1, window.delivered),
            "server_rss_mb": r2(s1.server_rss / 1048576),
            "redis_rss_mb": r2(s1.redis_rss / 1048576) if s1.redis_rss else None,
            "gen_loop_delay_p99_ms": loop["p99"],
            "gen_loop_delay_max_ms": loop["max"],
            "closed": self.rec.closed,
            "warm_msgs": self.rec.warm,
            "foreign": self.rec.foreign,
            "connect": conn_info,
            **per_node,
        }

    async def channels(self) -> dict[str, Any]:
        """Every client on its own channel and one shared channel; one publisher connection
        publishes round-robin over the private channels at ``--rate-private`` and on the shared
        one at ``--rate-shared``, both at once (the harness's ``channels``)."""
        o = self.o
        shared = f"all-{self.run_id}"
        prefix = f"u-{self.run_id}-"
        subs, conn_info = await self.connect_many(
            o.subs, lambda i: (f"{prefix}{i}", shared), lambda i: 0
        )
        pub = Publisher(await connect(self.targets[0], self.rec), self.pad)
        gc.collect()
        gc.freeze()
        try:
            if not subs:
                raise BenchError("no client connected")
            return await self.channels_run(subs, pub, shared, prefix, conn_info)
        finally:
            await close_all([*subs, pub.conn])

    async def channels_run(
        self,
        subs: list[WSConnection],
        pub: Publisher,
        shared: str,
        prefix: str,
        conn_info: dict[str, Any],
    ) -> dict[str, Any]:
        o = self.o
        n = len(subs)
        own = [f"{prefix}{c.idx}" for c in subs]
        turn = itertools.count()  # round-robin over the private channels, warm-up included

        def pick_own(_: int) -> str:
            return own[next(turn) % n]

        def pick_shared(_: int) -> str:
            return shared

        async def publish(duration: float) -> tuple[int, int]:
            own_sent, shared_sent = await asyncio.gather(
                publish_at(pub, o.rate_private, duration, pick_own),
                publish_at(pub, o.rate_shared, duration, pick_shared),
            )
            return own_sent, shared_sent

        self.log(
            f"channels: {n} clients x (own + shared); private {o.rate_private}/s, shared "
            f"{o.rate_shared}/s for {o.duration}s (+{o.warmup}s warm-up)"
        )
        await asyncio.sleep(0.5)
        await publish(o.warmup)
        await asyncio.sleep(0.3)
        monitor = LoopMonitor()
        monitor.start()
        self.rec.split_shared(shared)
        s0 = self.sample()
        window = Window(
            start_ns=time.perf_counter_ns(),
            rate=o.rate_private + o.rate_shared,
            duration_s=o.duration,
        )
        self.rec.windows.append(window)
        pub.measuring = True
        own_sent, shared_sent = await publish(o.duration)
        pub.measuring = False
        window.sent = own_sent + shared_sent
        expected_of = [pub.count.get(ch, 0) + shared_sent for ch in own]
        drain_s = await self.drain(window, sum(expected_of))
        s1 = self.sample()
        loop = await monitor.stop()
        span = max(o.duration, (self.rec.last_recv_ns - window.start_ns) / 1e9)
        srv_us = s1.server_cpu_us - s0.server_cpu_us
        return {
            "ok": True,
            "mode": "fixed",
            "subs": n,
            "subscriptions": 2 * n,
            "rate_private": o.rate_private,
            "rate_shared": o.rate_shared,
            "duration_s": o.duration,
            "warmup_s": o.warmup,
            "published": window.sent,
            "published_shared": shared_sent,
            **self.delivery(pub, window, expected_of, subs),
            "offered_per_s": r2((own_sent + shared_sent * n) / o.duration),
            "delivered_per_s": r2(window.delivered / span),
            "drain_ms": round(drain_s * 1000),
            "lat_ms": window.hist.summary(),
            "lat_ms_own": self.rec.own_hist.summary(),
            "lat_ms_shared": self.rec.shared_hist.summary(),
            "pub_ack_ms": pub.ack_hist.summary(),
            **costs(s0, s1, window.delivered),
            "server_cpu_us_per_publish": r3(srv_us / window.sent) if window.sent else None,
            "server_rss_mb": r2(s1.server_rss / 1048576),
            "redis_rss_mb": r2(s1.redis_rss / 1048576) if s1.redis_rss else None,
            "gen_loop_delay_p99_ms": loop["p99"],
            "gen_loop_delay_max_ms": loop["max"],
            "closed": self.rec.closed,
            "errors": self.errors([*subs, pub.conn]),
            "warm_msgs": self.rec.warm,
            "foreign": self.rec.foreign,
            "connect": conn_info,
        }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="fanout", choices=["fanout", "channels", "idle", "conns"])
    p.add_argument("--mode", default="fixed", choices=["fixed", "sat"])
    p.add_argument("--label", default="")
    p.add_argument("--peer", default="pully", help="what the server is, for the JSON line")
    p.add_argument("--targets", required=True, help="host:port[,host:port]")
    p.add_argument("--spread", action="store_true", help="spread subscribers over all targets")
    p.add_argument("--server-pids", default="", help="pid of each server (CPU, RSS)")
    p.add_argument("--redis-pid", type=int, default=0)
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=200, help="connections opened at a time")
    p.add_argument(
        "--connect-deadline", type=float, default=40.0, help="seconds to connect everyone"
    )
    p.add_argument(
        "--nofile", type=int, default=0, help="raise this process's open-files limit to this"
    )
    p.add_argument(
        "--server-fd-room",
        type=int,
        default=0,
        help="conns: connections the server has file descriptors for (0: not limited)",
    )
    p.add_argument("--payload", type=int, default=64, help="padding chars in each message")
    p.add_argument("--rate", type=float, default=5.0, help="fixed: publishes/s")
    p.add_argument("--duration", type=float, default=12.0, help="fixed: measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="fixed: warm-up seconds")
    p.add_argument("--rate-private", type=float, default=100.0, help="channels: own publishes/s")
    p.add_argument("--rate-shared", type=float, default=0.2, help="channels: shared publishes/s")
    p.add_argument("--settle", type=float, default=5.0, help="idle/conns: seconds before RSS")
    p.add_argument("--groups", type=int, default=1, help="conns: shared channels")
    p.add_argument("--start-dps", type=float, default=2000.0, help="sat: first step deliveries/s")
    p.add_argument("--step", type=float, default=3.0, help="sat: shortest step, seconds")
    p.add_argument("--max-steps", type=int, default=14)
    p.add_argument("--lag-p99-ms", type=float, default=1000.0)
    p.add_argument("--grace-ms", type=float, default=1000.0)
    p.add_argument("--min-ratio", type=float, default=0.97)
    p.add_argument("--sat-budget", type=float, default=36.0, help="sat: seconds of ramp")
    p.add_argument("--max-time", type=float, default=90.0, help="hard limit for the whole run")
    return p.parse_args(argv)


async def amain(opts: argparse.Namespace) -> int:
    gen = Generator(opts)
    gen.log(
        f"targets={opts.targets} server_pids={opts.server_pids} python={sys.version.split()[0]} "
        f"open files {gen.nofile}"
    )
    if gen.nofile_refused:
        gen.log(gen.nofile_refused)
    try:
        async with asyncio.timeout(opts.max_time):
            result = await gen.run()
        code = 0
    except TimeoutError:
        result = {"ok": False, "error": f"generator hit --max-time {opts.max_time}s"}
        code = 3
    except BenchError as exc:
        gen.log(f"ERROR {exc}")
        result = {"ok": False, "error": str(exc)}
        code = 2
    except Exception as exc:
        gen.log(f"ERROR {exc!r}")
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        code = 2
    sys.stdout.buffer.write(orjson.dumps({**gen.base(), **result}) + b"\n")
    sys.stdout.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
