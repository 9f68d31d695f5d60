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
    mode: str  # loadgen --mode: fixed | sat
    subs: int
    kind: str = "fanout"  # loadgen --scenario
    nodes: int = 1  # server processes (cluster scenarios: 2, subscribers spread over both)
    needs_redis: bool = False  # cannot run --embedded
    server: str = "pully"  # or "stub": bench.stub_server, to measure the generator itself
    rate: float = 5.0  # fixed: publishes/s
    duration: float = 12.0  # fixed: measured seconds
    warmup: float = 2.0
    sat: dict[str, float] = field(default_factory=dict)  # sat: start_dps, grace_ms, lag_p99_ms

    def gen_args(self, o: Overrides) -> list[str]:
        """The generator's arguments for this scenario under ``o``."""
        subs = o.subs or self.subs
        args = ["--scenario", self.kind, "--mode", self.mode, "--subs", str(subs)]
        if self.nodes > 1:
            args.append("--spread")
        if self.mode == "fixed":
            duration = o.duration or (3.0 if o.quick else self.duration)
            warmup = 1.0 if o.quick else self.warmup
            rate = o.rate or self.rate
            args += ["--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup)]
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
        return 60.0 if o.quick else 90.0


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
            "cluster",
            "2 nodes on one Redis, 1000 subscribers split 500/500, publisher on node A, 5 msg/s",
            mode="fixed",
            subs=1000,
            nodes=2,
            needs_redis=True,
        ),
    )
}

# Named like the shared harness's, not built yet: listed by --help so the names stay reserved.
PLANNED: dict[str, str] = {
    "channels": "5000 clients, each on its own channel and one shared channel",
    "idle-mem": "RSS with 0, then 10,000 idle subscribed connections (bytes per connection)",
    "conns-20k": "20,000 connections opened and held (connect rate, RSS, failures)",
}

DEFAULT = ("fanout-1k", "sat-1k")
