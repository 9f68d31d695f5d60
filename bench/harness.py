"""What every load-generator scenario runs on: the options, the recorder, samples of the
server's CPU and memory, connecting many subscribers, waiting for deliveries, and the result
fields all scenarios share. :class:`~bench.loadgen.Generator` adds the fan-out and channels
scenarios; :mod:`bench.saturation` and :mod:`bench.holding` take a :class:`Harness`."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import string
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from .procs import BenchError, ensure_nofile, raise_nofile_limit, rss_bytes
from .stats import Window, r2, sample
from .traffic import Publisher, Recorder, log
from .wsclient import WSConnection, connect


class Harness:
    """One run of one scenario: options in, shared machinery for its measurements."""

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
