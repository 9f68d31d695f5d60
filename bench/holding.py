"""The scenarios that hold connections (``idle`` and ``conns``): how much memory and CPU a
server spends per connection, and whether one publish reaches every one of many thousands."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any

from .harness import Harness
from .procs import open_fds, rss_bytes
from .stats import Sample, Window, r2, r3
from .traffic import Publisher
from .wsclient import close_all, connect


def rss_figures(s0: Sample, s1: Sample, n: int, gen_rss0: int) -> dict[str, Any]:
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


async def idle(h: Harness) -> dict[str, Any]:
    """RSS of the server with no connection, then ``--settle`` s after ``--subs``
    connections each subscribed to its own channel got their last subscribe ack; then 1 s
    of idle CPU (the harness's ``idle-mem``)."""
    o = h.o
    await asyncio.sleep(1.0)
    s0 = h.sample()
    gen_rss0 = rss_bytes(os.getpid())
    subs, conn_info = await h.connect_many(o.subs, lambda i: (f"idle-{h.run_id}-{i}",), lambda i: 0)
    try:
        h.log(f"idle: {len(subs)} connections; settling {o.settle}s")
        await asyncio.sleep(o.settle)
        s1 = h.sample()
        await asyncio.sleep(1.0)
        s2 = h.sample()
        server = await h.server_health()
        n = len(subs)
        srv_us = s1.server_cpu_us - s0.server_cpu_us
        result: dict[str, Any] = {
            "ok": n == o.subs and h.rec.closed == 0,
            "mode": "idle",
            "subs": n,
            "requested": o.subs,
            **rss_figures(s0, s1, n, gen_rss0),
            "settle_s": o.settle,
            "server_cpu_s_connect": r3(srv_us / 1e6),
            "server_cpu_us_per_connect": r2(srv_us / n) if n else None,
            "idle_server_cpu_pct": r2(
                100 * (s2.server_cpu_us - s1.server_cpu_us) / ((s2.t_ns - s1.t_ns) / 1000)
            ),
            "server_connections": server.get("connections"),
            "server_subscriptions": server.get("subscriptions"),
            "closed": h.rec.closed,
            "errors": h.errors(subs),
            "connect": conn_info,
        }
    finally:
        await close_all(subs)
    if not result["ok"]:
        result["error"] = h.short_of(n, o.subs, conn_info)
    return result


async def conns(h: Harness) -> dict[str, Any]:
    """``--subs`` concurrent connections on one server, each subscribed to one of
    ``--groups`` shared channels (default 1); ``--settle`` s after the last ack the RSS is
    read, then one publish per group (so: one publish) must reach every connection."""
    o = h.o
    groups = max(1, o.groups)
    names = [f"c20k-{h.run_id}-{g}" for g in range(groups)]
    # as many as both sides have file descriptors for (publisher and health check aside)
    gen_room = h.nofile - open_fds() - 32
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
        h.log(capped)
    await asyncio.sleep(1.0)
    s0 = h.sample()
    gen_rss0 = rss_bytes(os.getpid())
    subs, conn_info = await h.connect_many(tried, lambda i: (names[i % groups],), lambda i: 0)
    gc.collect()
    gc.freeze()
    pub: Publisher | None = None
    try:
        n = len(subs)
        h.log(f"conns: {n} connections held; settling {o.settle}s")
        await asyncio.sleep(o.settle)
        s1 = h.sample()
        server = await h.server_health()
        pub = Publisher(await connect(h.targets[0], h.rec), h.pad)
        await asyncio.sleep(0.2)
        sb = h.sample()
        window = Window(start_ns=time.perf_counter_ns(), rate=0.0, duration_s=0.0)
        h.rec.windows.append(window)
        pub.measuring = True
        for name in names:
            pub.send(name)
        pub.measuring = False
        window.sent = groups
        drain_s = await h.drain(window, n, idle=5.0, most=30.0)
        await asyncio.sleep(0.2)  # anything extra would arrive now
        s2 = h.sample()
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
            **rss_figures(s0, s1, n, gen_rss0),
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
            "closed": h.rec.closed,
            "errors": h.errors([*subs, pub.conn]),
            "connect": conn_info,
        }
    finally:
        await close_all([*subs, *([pub.conn] if pub else [])])
    if not result["ok"]:
        result["error"] = "; ".join(
            filter(None, [capped, h.short_of(n, tried, conn_info, lost, capped is None)])
        )
    return result
