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
import os
import random
import string
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from .procs import BenchError, ensure_nofile, open_fds, raise_nofile_limit, rss_bytes
from .saturation import saturate
from .stats import Hist, Sample, Window, costs, r2, r3, sample
from .traffic import LoopMonitor, Publisher, Recorder, log, publish_at
from .wsclient import WSConnection, close_all, connect


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
        self.nofile_refused: str | None = None
        self.nofile = raise_nofile_limit()  # the soft limit up to the hard one
        if opts.nofile:  # and past it when asked (needs CAP_SYS_RESOURCE: root, normally)
            try:
                self.nofile = ensure_nofile(opts.nofile)
            except BenchError as exc:
                self.nofile_refused = str(exc)

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
            "gen_nofile": self.nofile,
            "gen_nofile_refused": self.nofile_refused,
            "gen_wall_s": r2(time.perf_counter() - self.t_start),
        }

    # -- connections -------------------------------------------------------------------------

    async def connect_many(
        self, n: int, channels_of: Callable[[int], Sequence[str]], node_of: Callable[[int], int]
    ) -> tuple[list[WSConnection], dict[str, Any]]:
        """Connect ``n`` subscribers, ``--concurrency`` at a time (3 tries each), and subscribe
        each to its channels; give up on whatever is not connected after
        ``--connect-deadline`` seconds (40 by default)."""
        t0 = time.perf_counter()
        deadline = t0 + self.o.connect_deadline
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
                conn.idx = i
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
        if self.o.scenario == "channels":
            return await self.channels()
        if self.o.scenario == "idle":
            return await self.idle()
        if self.o.scenario == "conns":
            return await self.conns()
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

    @staticmethod
    def delivery(
        pub: Publisher, window: Window, expected_of: list[int], subs: list[WSConnection]
    ) -> dict[str, Any]:
        """The publisher's outcome and what reached the subscribers, against ``expected_of``
        (messages each subscriber should have got): lost and duplicated deliveries."""
        pairs = list(zip(expected_of, subs, strict=True))
        return {
            "pub_acks": pub.acks,
            "pub_nacks": pub.nacks,
            "pub_nack_codes": pub.nack_codes,
            "pub_outstanding": pub.outstanding(),
            "expected": sum(expected_of),
            "delivered": window.delivered,
            "lost": sum(max(0, e - c.got) for e, c in pairs),
            "extra": sum(max(0, c.got - e) for e, c in pairs),
        }

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

    def rss_figures(self, s0: Sample, s1: Sample, n: int, gen_rss0: int) -> dict[str, Any]:
        """RSS before (``s0``) and with ``n`` connections (``s1``): server, Redis, generator."""
        gen_rss1 = rss_bytes(os.getpid())
        out: dict[str, Any] = {
            "server_rss_mb_0": r2(s0.server_rss / 1048576),
            "server_rss_mb_n": r2(s1.server_rss / 1048576),
            "bytes_per_conn": round((s1.server_rss - s0.server_rss) / n) if n else None,
            "gen_bytes_per_conn": round((gen_rss1 - gen_rss0) / n) if n else None,
        }
        if s0.redis_rss and s1.redis_rss:
            out["redis_rss_mb_0"] = r2(s0.redis_rss / 1048576)
            out["redis_rss_mb_n"] = r2(s1.redis_rss / 1048576)
            out["redis_bytes_per_conn"] = round((s1.redis_rss - s0.redis_rss) / n) if n else None
        return out

    async def idle(self) -> dict[str, Any]:
        """RSS of the server with no connection, then ``--settle`` s after ``--subs``
        connections each subscribed to its own channel got their last subscribe ack; then 1 s
        of idle CPU (the harness's ``idle-mem``)."""
        o = self.o
        await asyncio.sleep(1.0)
        s0 = self.sample()
        gen_rss0 = rss_bytes(os.getpid())
        subs, conn_info = await self.connect_many(
            o.subs, lambda i: (f"idle-{self.run_id}-{i}",), lambda i: 0
        )
        try:
            self.log(f"idle: {len(subs)} connections; settling {o.settle}s")
            await asyncio.sleep(o.settle)
            s1 = self.sample()
            await asyncio.sleep(1.0)
            s2 = self.sample()
            server = await self.server_health()
            n = len(subs)
            srv_us = s1.server_cpu_us - s0.server_cpu_us
            result: dict[str, Any] = {
                "ok": n == o.subs and self.rec.closed == 0,
                "mode": "idle",
                "subs": n,
                "requested": o.subs,
                **self.rss_figures(s0, s1, n, gen_rss0),
                "settle_s": o.settle,
                "server_cpu_s_connect": r3(srv_us / 1e6),
                "server_cpu_us_per_connect": r2(srv_us / n) if n else None,
                "idle_server_cpu_pct": r2(
                    100 * (s2.server_cpu_us - s1.server_cpu_us) / ((s2.t_ns - s1.t_ns) / 1000)
                ),
                "server_connections": server.get("connections"),
                "server_subscriptions": server.get("subscriptions"),
                "closed": self.rec.closed,
                "errors": self.errors(subs),
                "connect": conn_info,
            }
        finally:
            await close_all(subs)
        if not result["ok"]:
            result["error"] = self.short_of(n, o.subs, conn_info)
        return result

    async def conns(self) -> dict[str, Any]:
        """``--subs`` concurrent connections on one server, each subscribed to one of
        ``--groups`` shared channels (default 1); ``--settle`` s after the last ack the RSS is
        read, then one publish per group (so: one publish) must reach every connection."""
        o = self.o
        groups = max(1, o.groups)
        names = [f"c20k-{self.run_id}-{g}" for g in range(groups)]
        # as many as both sides have file descriptors for (publisher and health check aside)
        gen_room = self.nofile - open_fds() - 32
        room = max(0, gen_room)
        if o.server_fd_room:
            room = min(room, o.server_fd_room)
        tried = min(o.subs, room)
        capped = None
        if tried < o.subs:
            capped = (
                f"tried {tried:,} of {o.subs:,} connections: that is all the open-files limits "
                f"leave room for (server: {o.server_fd_room or 'not given'}, generator: "
                f"{gen_room:,})"
            )
            self.log(capped)
        await asyncio.sleep(1.0)
        s0 = self.sample()
        gen_rss0 = rss_bytes(os.getpid())
        subs, conn_info = await self.connect_many(
            tried, lambda i: (names[i % groups],), lambda i: 0
        )
        gc.collect()
        gc.freeze()
        pub: Publisher | None = None
        try:
            n = len(subs)
            self.log(f"conns: {n} connections held; settling {o.settle}s")
            await asyncio.sleep(o.settle)
            s1 = self.sample()
            server = await self.server_health()
            pub = Publisher(await connect(self.targets[0], self.rec), self.pad)
            await asyncio.sleep(0.2)
            sb = self.sample()
            window = Window(start_ns=time.perf_counter_ns(), rate=0.0, duration_s=0.0)
            self.rec.windows.append(window)
            pub.measuring = True
            for name in names:
                pub.send(name)
            pub.measuring = False
            window.sent = groups
            drain_s = await self.drain(window, n, idle=5.0, most=30.0)
            await asyncio.sleep(0.2)  # anything extra would arrive now
            s2 = self.sample()
            lost = sum(max(0, 1 - c.got) for c in subs)
            extra = sum(max(0, c.got - 1) for c in subs)
            still_open = sum(c.is_open for c in subs)
            result: dict[str, Any] = {
                "ok": n == o.subs and conn_info["sub_failed"] == 0 and lost == 0,
                "mode": "conns",
                "subs": n,
                "requested": o.subs,
                "tried": tried,
                "capped": capped,
                "groups": groups,
                **self.rss_figures(s0, s1, n, gen_rss0),
                "settle_s": o.settle,
                "connect_s": r2(conn_info["ms"] / 1000),
                "server_cpu_us_per_connect": (
                    r2((s1.server_cpu_us - s0.server_cpu_us) / n) if n else None
                ),
                "server_connections": server.get("connections"),
                "server_subscriptions": server.get("subscriptions"),
                "published": window.sent,
                "pub_acks": pub.acks,
                "pub_nacks": pub.nacks,
                "pub_nack_codes": pub.nack_codes,
                "expected": n,
                "delivered": window.delivered,
                "lost": lost,
                "extra": extra,
                "drain_ms": round(drain_s * 1000),
                "broadcast_ms": window.hist.summary(),
                "broadcast_server_cpu_ms": r2((s2.server_cpu_us - sb.server_cpu_us) / 1000),
                "broadcast_server_cpu_us_per_msg": (
                    r3((s2.server_cpu_us - sb.server_cpu_us) / window.delivered)
                    if window.delivered
                    else None
                ),
                "still_open": still_open,
                "closed": self.rec.closed,
                "errors": self.errors([*subs, pub.conn]),
                "connect": conn_info,
            }
        finally:
            await close_all([*subs, *([pub.conn] if pub else [])])
        if not result["ok"]:
            result["error"] = "; ".join(
                filter(None, [capped, self.short_of(n, tried, conn_info, lost, capped is None)])
            )
        return result

    @staticmethod
    def errors(conns: Sequence[WSConnection]) -> int:
        """``error`` frames the server sent that answered no request of ours."""
        return sum(f.get("type") == "error" for c in conns for f in c.others)

    @staticmethod
    def short_of(
        n: int, want: int, info: dict[str, Any], lost: int = 0, say_closed: bool = True
    ) -> str:
        parts = []
        if n < want:
            parts.append(f"{n:,} of {want:,} connected ({info['failed']} failed)")
        if info.get("sub_failed"):
            parts.append(f"{info['sub_failed']} subscribes failed")
        if lost:
            parts.append(f"{lost:,} lost")
        return "; ".join(parts) or ("connections closed by the server" if say_closed else "")

    async def server_health(self) -> dict[str, Any]:
        """``GET /healthz`` of the first target (the server's own connection count), or {}."""
        host, _, port = self.targets[0].rpartition(":")
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection(host, int(port))
                try:
                    writer.write(
                        f"GET /healthz HTTP/1.1\r\nHost: {self.targets[0]}\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    raw = await reader.read()
                finally:
                    writer.close()
                    await writer.wait_closed()
            body = orjson.loads(raw.partition(b"\r\n\r\n")[2])
        except (OSError, TimeoutError, orjson.JSONDecodeError):
            return {}
        return body if isinstance(body, dict) else {}


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
