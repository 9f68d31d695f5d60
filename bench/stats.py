"""Latency histograms and CPU accounting for the load generator.

Samples are taken the way the shared harness takes them (``/work/shared/bench``), so the JSON
lines use the same field names: server CPU is ``utime + stime`` of each server's process tree,
the generator's own CPU is its process time, host figures come from ``/proc/stat``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

from .procs import CoreTimes, host_cores, tree_usage

# Two-tier buckets: 10 µs wide up to 100 ms, 1 ms wide up to 10 s, then one overflow count.
_FINE_NS: Final = 10_000
_FINE_END: Final = 100_000_000
_COARSE_NS: Final = 1_000_000
_END: Final = 10_000_000_000
_FINE_N: Final = _FINE_END // _FINE_NS
_N: Final = _FINE_N + (_END - _FINE_END) // _COARSE_NS


def r2(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class Hist:
    """Latencies in nanoseconds; percentiles are reported in ms (upper edge of the bucket)."""

    __slots__ = ("counts", "max_ns", "n", "over", "total_ns")

    def __init__(self) -> None:
        self.counts = [0] * _N
        self.n = 0
        self.over = 0
        self.total_ns = 0
        self.max_ns = 0

    def record(self, ns: int) -> None:
        if ns < _FINE_END:
            self.counts[ns // _FINE_NS if ns > 0 else 0] += 1
        elif ns < _END:
            self.counts[_FINE_N + (ns - _FINE_END) // _COARSE_NS] += 1
        else:
            self.over += 1
        self.n += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns

    def percentile(self, p: float) -> float | None:
        """The latency (ms) at or below which ``p`` % of the samples fall."""
        if self.n == 0:
            return None
        target = max(1, -(-self.n * p // 100))
        seen = 0
        for i, c in enumerate(self.counts):
            if c:
                seen += c
                if seen >= target:
                    upper = (
                        (i + 1) * _FINE_NS
                        if i < _FINE_N
                        else _FINE_END + (i - _FINE_N + 1) * _COARSE_NS
                    )
                    return min(upper, self.max_ns) / 1e6
        return self.max_ns / 1e6

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "p50": r2(self.percentile(50)),
            "p90": r2(self.percentile(90)),
            "p99": r2(self.percentile(99)),
            "p999": r2(self.percentile(99.9)),
            "max": r2(self.max_ns / 1e6) if self.n else None,
            "mean": r2(self.total_ns / self.n / 1e6) if self.n else None,
        }


@dataclass(slots=True)
class Window:
    """Messages sent from ``start_ns`` on (until the next window starts) and how they arrived."""

    start_ns: int
    rate: float = 0.0  # publishes/s
    duration_s: float = 0.0
    sent: int = 0
    delivered: int = 0
    hist: Hist = field(default_factory=Hist)


@dataclass(frozen=True, slots=True)
class Sample:
    t_ns: int
    nodes_cpu_us: tuple[float, ...]
    server_rss: int
    redis_cpu_us: float | None
    redis_rss: int | None
    gen_cpu_us: float
    host: tuple[CoreTimes, ...]

    @property
    def server_cpu_us(self) -> float:
        return sum(self.nodes_cpu_us)


def sample(server_pids: list[int], redis_pid: int | None) -> Sample:
    nodes = [tree_usage(pid) for pid in server_pids]
    redis = tree_usage(redis_pid) if redis_pid else None
    return Sample(
        t_ns=time.perf_counter_ns(),
        nodes_cpu_us=tuple(n.cpu_us for n in nodes),
        server_rss=sum(n.rss for n in nodes),
        redis_cpu_us=redis.cpu_us if redis else None,
        redis_rss=redis.rss if redis else None,
        gen_cpu_us=time.process_time_ns() / 1000,
        host=tuple(host_cores()),
    )


def costs(s0: Sample, s1: Sample, delivered: int) -> dict[str, Any]:
    """CPU between two samples: server (% of one core, µs per delivered message), generator,
    Redis, whole host, and ``other_cpu_pct`` = host busy time that is none of those."""
    wall_us = max(1.0, (s1.t_ns - s0.t_ns) / 1000)
    srv = s1.server_cpu_us - s0.server_cpu_us
    gen = s1.gen_cpu_us - s0.gen_cpu_us
    out: dict[str, Any] = {
        "window_s": r2(wall_us / 1e6),
        "server_cpu_s": r3(srv / 1e6),
        "server_cpu_pct": r2(100 * srv / wall_us),
        "server_cpu_us_per_msg": r3(srv / delivered) if delivered > 0 else None,
        "server_nodes_cpu_pct": [
            r2(100 * (b - a) / wall_us)
            for a, b in zip(s0.nodes_cpu_us, s1.nodes_cpu_us, strict=True)
        ],
        "gen_cpu_pct": r2(100 * gen / wall_us),
        "gen_cpu_us_per_msg": r3(gen / delivered) if delivered > 0 else None,
    }
    pairs = list(zip(s0.host, s1.host, strict=True))
    out["core_busy_pct"] = [
        r2(100 * ((b.total - a.total) - (b.idle - a.idle)) / max(1, b.total - a.total))
        for a, b in pairs
    ]
    out["core_softirq_pct"] = [
        r2(100 * (b.softirq - a.softirq) / max(1, b.total - a.total)) for a, b in pairs
    ]
    busy = sum((b.total - a.total) - (b.idle - a.idle) for a, b in pairs)
    total = sum(b.total - a.total for a, b in pairs)
    host_busy = 100 * len(pairs) * busy / max(1, total)
    out["host_busy_pct"] = r2(host_busy)
    ours = srv + gen
    if s0.redis_cpu_us is not None and s1.redis_cpu_us is not None:
        rc = s1.redis_cpu_us - s0.redis_cpu_us
        ours += rc
        out["redis_cpu_pct"] = r2(100 * rc / wall_us)
        out["redis_cpu_us_per_msg"] = r3(rc / delivered) if delivered > 0 else None
    out["other_cpu_pct"] = r2(host_busy - 100 * ours / wall_us)
    return out
