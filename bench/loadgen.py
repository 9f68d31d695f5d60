"""The load generator: one asyncio process, run by ``python -m bench`` as a separate process so
its CPU is not the server's. Prints exactly one JSON line on stdout; progress goes to stderr.

    python -m bench.loadgen --scenario fanout --mode fixed --subs 1000 --rate 5 --duration 12 \\
        --targets 127.0.0.1:8101 --server-pids 1234 [--redis-pid 99]

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
import os
import random
import string
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from .procs import raise_nofile_limit, rss_bytes
from .saturation import saturate
from .stats import Hist, Window, costs, r2, sample
from .traffic import LoopMonitor, Publisher, Recorder, log, publish_at
from .wsclient import WSConnection, connect


class Generator:
    """One run of one scenario: options in, one JSON result out."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.o = opts
        self.label: str = opts.label or opts.scenario
        self.targets: list[str] = [t for t in opts.targets.split(",") if t]
        self.server_pids = [int(p) for p in opts.server_pids.split(",") if p]
        self.redis_pid: int | None = opts.redis_pid or None
        self.run_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
        self.rec = Recorder()
        self.pad = "x" * opts.payload
        self.t_start = time.perf_counter()

    def log(self, text: str) -> None:
        log(self.label, text)

    def sample(self) -> Any:
        return sample(self.server_pids, self.redis_pid)

    def base(self) -> dict[str, Any]:
        return {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "peer": self.o.peer,
            "scenario": self.label,
            "kind": self.o.scenario,
            "proto": "raw",
            "generator": "python-asyncio",
            "targets": self.targets,
            "server_pids": self.server_pids,
            "run_id": self.run_id,
            "payload_pad": self.o.payload,
            "gen_rss_mb": r2(rss_bytes(os.getpid()) / 1048576),
            "gen_wall_s": r2(time.perf_counter() - self.t_start),
        }

    # -- connections -------------------------------------------------------------------------

    async def connect_many(
        self, n: int, channels_of: Callable[[int], Sequence[str]], node_of: Callable[[int], int]
    ) -> tuple[list[WSConnection], dict[str, Any]]:
        """Connect ``n`` subscribers, ``--concurrency`` at a time (3 tries each), and subscribe
        each to its channels; give up on whatever is not connected after 40 s."""
        t0 = time.perf_counter()
        deadline = t0 + 40.0
        conns: list[WSConnection | None] = [None] * n
        state = {"next": 0, "failed": 0, "sub_failed": 0, "retries": 0}

        async def worker() -> None:
            while state["next"] < n:
                i = state["next"]
                state["next"] += 1
                node = node_of(i)
                conn = None
                for attempt in range(3):
                    if time.perf_counter() > deadline:
                        break
                    try:
                        conn = await connect(self.targets[node], self.rec)
                        break
                    except (OSError, TimeoutError, ConnectionError) as exc:
                        state["retries"] += 1
                        if attempt == 2:
                            self.log(f"connect {i} failed: {exc!r}")
                        await asyncio.sleep(0.05 * (attempt + 1))
                if conn is None:
                    state["failed"] += 1
                    continue
                conn.node = node
                for channel in channels_of(i):
                    reply = await conn.request({"type": "subscribe", "channel": channel})
                    if reply.get("type") != "subscribed":
                        state["sub_failed"] += 1
                conns[i] = conn

        await asyncio.gather(*(worker() for _ in range(min(self.o.concurrency, n))))
        elapsed = time.perf_counter() - t0
        ok = [c for c in conns if c is not None]
        info = {
            "requested": n,
            "connected": len(ok),
            "failed": state["failed"],
            "sub_failed": state["sub_failed"],
            "retries": state["retries"],
            "ms": round(elapsed * 1000),
            "per_s": r2(len(ok) / elapsed) if elapsed > 0 else None,
        }
        self.log(f"connected {len(ok)}/{n} in {info['ms']} ms ({info})")
        return ok, info

    async def drain(
        self, window: Window, expected: int, idle: float = 2.0, most: float = 10.0
    ) -> float:
        """Wait until ``expected`` messages of ``window`` arrived, or none for ``idle`` s, or
        ``most`` s passed; return the seconds waited."""
        t0 = time.perf_counter()
        last_count, last_change = window.delivered, t0
        while window.delivered < expected:
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            if window.delivered != last_count:
                last_count, last_change = window.delivered, now
            if now - last_change > idle or now - t0 > most:
                break
        return time.perf_counter() - t0

    # -- scenarios ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        if self.o.scenario == "fanout":
            return await self.fanout()
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
            for conn in [*subs, pub.conn]:
                conn.close()

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
        expected = window.sent * n
        drain_s = await self.drain(window, expected)
        s1 = self.sample()
        loop = await monitor.stop()
        lost = sum(max(0, window.sent - c.got) for c in subs)
        extra = sum(max(0, c.got - window.sent) for c in subs)
        span = max(o.duration, (self.rec.last_recv_ns - window.start_ns) / 1e9)
        per_node: dict[str, Any] = {}
        if self.rec.per_node is not None:  # node 0 has the publisher: local; node 1: remote
            per_node["subs_per_node"] = [sum(c.node == i for c in subs) for i in range(nodes)]
            per_node["lat_ms_local"] = self.rec.per_node[0].summary()
            per_node["lat_ms_remote"] = self.rec.per_node[1].summary()
        return {
            "ok": True,
            "mode": "fixed",
            "subs": n,
            "rate": o.rate,
            "duration_s": o.duration,
            "warmup_s": o.warmup,
            "published": window.sent,
            "pub_acks": pub.acks,
            "pub_nacks": pub.nacks,
            "pub_nack_codes": pub.nack_codes,
            "pub_outstanding": pub.outstanding(),
            "expected": expected,
            "delivered": window.delivered,
            "lost": lost,
            "extra": extra,
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="fanout", choices=["fanout"])
    p.add_argument("--mode", default="fixed", choices=["fixed", "sat"])
    p.add_argument("--label", default="")
    p.add_argument("--peer", default="pully", help="what the server is, for the JSON line")
    p.add_argument("--targets", required=True, help="host:port[,host:port]")
    p.add_argument("--spread", action="store_true", help="spread subscribers over all targets")
    p.add_argument("--server-pids", default="", help="pid of each server (CPU, RSS)")
    p.add_argument("--redis-pid", type=int, default=0)
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=200, help="connections opened at a time")
    p.add_argument("--payload", type=int, default=64, help="padding chars in each message")
    p.add_argument("--rate", type=float, default=5.0, help="fixed: publishes/s")
    p.add_argument("--duration", type=float, default=12.0, help="fixed: measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="fixed: warm-up seconds")
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
        f"targets={opts.targets} server_pids={opts.server_pids} python={sys.version.split()[0]}"
    )
    try:
        async with asyncio.timeout(opts.max_time):
            result = await gen.run()
        code = 0
    except TimeoutError:
        result = {"ok": False, "error": f"generator hit --max-time {opts.max_time}s"}
        code = 3
    except Exception as exc:
        gen.log(f"ERROR {exc!r}")
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        code = 2
    sys.stdout.buffer.write(orjson.dumps({**gen.base(), **result}) + b"\n")
    sys.stdout.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    raise_nofile_limit()
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
