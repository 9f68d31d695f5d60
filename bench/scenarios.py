"""The scenarios ``python -m bench`` knows, named like those of the shared harness.

A scenario is data: how many server nodes it needs, whether it needs Redis, and the generator
arguments it runs with (normal and ``--quick``). Adding one is adding an entry to
:data:`SCENARIOS` (plus, for a new workload shape, a ``--scenario`` in :mod:`bench.loadgen`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line knobs that apply to every scenario that has the setting."""

    quick: bool = False
    subs: int | None = None
    rate: float | None = None
    duration: float | None = None
    sat_budget: float | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    mode: str  # fixed | sat (fan-out: loadgen --mode) | idle | conns (connection scenarios)
    subs: int
    kind: str = "fanout"  # loadgen --scenario: fanout | channels | idle | conns
    nodes: int = 1  # server processes (cluster scenarios: 2, subscribers spread over both)
    needs_redis: bool = False  # cannot run --embedded
    server: str = "pully"  # or "stub": bench.stub_server, to measure the generator itself
    rate: float = 5.0  # fixed: publishes/s (channels: on the private channels)
    rate_shared: float = 0.2  # channels: publishes/s on the shared channel
    duration: float = 12.0  # fixed: measured seconds
    quick_duration: float = 3.0
    warmup: float = 2.0
    sat: dict[str, float] = field(default_factory=dict)  # sat: start_dps, grace_ms, lag_p99_ms
    quick_subs: int | None = None  # idle / conns: connections with --quick
    settle: float = 5.0  # idle / conns: seconds between the last subscribe ack and the RSS read
    nofile: int = 0  # open files the server and the generator need (0: the default is enough)
    connect_deadline: float = 40.0  # seconds to connect and subscribe everyone
    time_limit: float = 90.0  # the generator's --max-time (--quick: 60)

    def n_subs(self, o: Overrides) -> int:
        if o.subs:
            return o.subs
        return self.quick_subs if o.quick and self.quick_subs else self.subs

    def gen_args(self, o: Overrides) -> list[str]:
        """The generator's arguments for this scenario under ``o``."""
        subs = self.n_subs(o)
        args = ["--scenario", self.kind, "--subs", str(subs)]
        if self.kind == "fanout":
            args += ["--mode", self.mode]
        if self.nodes > 1:
            args.append("--spread")
        args += ["--connect-deadline", str(self.connect_deadline)]
        if self.nofile:
            args += ["--nofile", str(self.nofile)]
        if self.mode in ("idle", "conns"):
            args += ["--settle", str(2.0 if o.quick else self.settle)]
        elif self.mode == "fixed":
            duration = o.duration or (self.quick_duration if o.quick else self.duration)
            warmup = 1.0 if o.quick else self.warmup
            rate = o.rate or self.rate
            if self.kind == "channels":
                args += ["--rate-private", str(rate), "--rate-shared", str(self.rate_shared)]
            else:
                args += ["--rate", str(rate)]
            args += ["--duration", str(duration), "--warmup", str(warmup)]
        else:
            budget = o.sat_budget or (10.0 if o.quick else 36.0)
            start = self.sat.get("start_dps", 2000.0)
            if o.subs:  # keep the first step's publish rate when --subs shrinks the fan-out
                start = start * subs / self.subs
            args += ["--start-dps", str(start), "--sat-budget", str(budget)]
            args += ["--grace-ms", str(self.sat.get("grace_ms", 1000.0))]
            args += ["--lag-p99-ms", str(self.sat.get("lag_p99_ms", 1000.0))]
        return args

    def max_time(self, o: Overrides) -> float:
        """Hard limit for the generator run (connect + warm-up + window + drain, with room)."""
        return 60.0 if o.quick else self.time_limit


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "fanout-1k",
            "1000 subscribers on one channel, publisher at 5 msg/s for 12 s after a 2 s "
            "warm-up (5,000 deliveries/s)",
            mode="fixed",
            subs=1000,
            rate=5.0,
        ),
        Scenario(
            "fanout-5k",
            "5000 subscribers on one channel, 1 msg/s for 12 s (5,000 deliveries/s)",
            mode="fixed",
            subs=5000,
            rate=1.0,
        ),
        Scenario(
            "sat-1k",
            "1000 subscribers; publish rate ramped in 3-6 s steps until delivery lags "
            "(<97 % delivered 1 s after a step, or p99 > 1 s): peak delivered msg/s and "
            "what limited it",
            mode="sat",
            subs=1000,
            sat={"start_dps": 2000.0, "grace_ms": 1000.0, "lag_p99_ms": 1000.0},
        ),
        Scenario(
            "sat-5k",
            "as sat-1k with 5000 subscribers (lag: <97 % after 2 s, or p99 > 2.5 s)",
            mode="sat",
            subs=5000,
            sat={"start_dps": 5000.0, "grace_ms": 2000.0, "lag_p99_ms": 2500.0},
        ),
        Scenario(
            "gen-sat-1k",
            "sat-1k against bench.stub_server (no Pully, no Redis: a fan-out loop that does "
            "less than any real server): where the generator itself tops out on this machine",
            mode="sat",
            subs=1000,
            server="stub",
            sat={"start_dps": 10000.0, "grace_ms": 1000.0, "lag_p99_ms": 1000.0},
        ),
        Scenario(
            "channels",
            "5000 clients, each subscribed to its own channel and to one shared channel; "
            "100 publishes/s round-robin over the private channels + 0.2/s on the shared one "
            "for 12 s (1,200 + 2 publishes, 10,000 deliveries): server CPU µs per publish and "
            "per delivered msg, p99 own-channel / shared-channel, lost",
            mode="fixed",
            kind="channels",
            subs=5000,
            rate=100.0,
            rate_shared=0.2,
            quick_duration=5.0,  # at least one shared publish (0.2/s)
        ),
        Scenario(
            "cluster",
            "2 nodes on one Redis, 1000 subscribers split 500/500, publisher on node A, 5 msg/s; "
            "latency for local (A) and remote (B) subscribers",
            mode="fixed",
            subs=1000,
            nodes=2,
            needs_redis=True,
        ),
        Scenario(
            "idle-mem",
            "RSS of the server's process tree with 0, then 10,000 connections each subscribed "
            "to its own channel, 5 s after the last subscribe ack: bytes per connection = "
            "ΔRSS / 10,000; connects/s",
            mode="idle",
            kind="idle",
            subs=10000,
            quick_subs=2000,
            connect_deadline=45.0,
        ),
        Scenario(
            "conns-20k",
            "20,000 concurrent connections on one server process, all subscribed to one shared "
            "channel; then one publish must reach every one of them: connected count, RSS, "
            "bytes/conn, time to connect all, lost (open-files limit raised to 65,536 on both "
            "sides)",
            mode="conns",
            kind="conns",
            subs=20000,
            quick_subs=2000,
            nofile=65536,
            settle=2.0,
            connect_deadline=120.0,
            time_limit=180.0,
        ),
    )
}

DEFAULT = ("fanout-1k", "sat-1k")
