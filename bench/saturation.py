"""The saturation ramp (``sat-*`` scenarios): raise the publish rate step by step until delivery
lags, then report the peak delivered rate and what limited it. Same rule as the shared harness."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from .harness import Harness
from .stats import Window, costs, r2, r3
from .traffic import LoopMonitor, Publisher, publish_at
from .wsclient import WSConnection


@dataclass
class Step:
    """One saturation step: a window at a fixed publish rate."""

    window: Window
    refine: bool = False
    arrivals: int = 0
    outstanding: int = 0
    loop_p99_ms: float | None = None
    costs: dict[str, Any] = field(default_factory=dict)


async def saturate(
    gen: Harness,
    subs: list[WSConnection],
    pub: Publisher,
    channel: str,
    conn_info: dict[str, Any],
) -> dict[str, Any]:
    """Ramp the publish rate in steps until one lags: fewer than ``--min-ratio`` of its
    messages delivered ``--grace-ms`` after it ended, or their p99 above ``--lag-p99-ms``.
    The next rate aims at ~90 % CPU of the busier of server and generator (x1.15 to x2.5);
    after the first lagging step and a drained backlog, one refinement step runs at the
    geometric mean of the last good and the first lagging rate. Same rule as the shared
    harness's ``sat-*`` scenarios."""
    o = gen.o
    n = len(subs)
    pick = lambda i: channel  # noqa: E731
    grace = o.grace_ms / 1000

    def step_duration(rate: float) -> float:  # long enough for >= 6 publishes, 3-6 s
        return min(6.0, max(float(o.step), 6.0 / rate))

    gen.log(
        f"sat: {n} subs, CPU-guided ramp from {o.start_dps} deliveries/s, budget {o.sat_budget}s"
    )
    await publish_at(pub, o.start_dps / n, 1.0, pick)
    await asyncio.sleep(0.5)
    steps: list[Step] = []
    evals: list[dict[str, Any]] = []
    stop = False

    def evaluate(k: int) -> bool:
        st = steps[k]
        w = st.window
        expected = w.sent * n
        hs = w.hist.summary()
        e: dict[str, Any] = {
            "step": k,
            "refine": st.refine,
            "rate": r3(w.rate),
            "step_s": r2(w.duration_s),
            "offered_per_s": round(w.rate * n),
            "published": w.sent,
            "delivered_ratio": r3(w.delivered / expected) if expected else None,
            "arrived_per_s": round(st.arrivals / max(0.001, st.costs["window_s"])),
            "p50_ms": hs["p50"],
            "p99_ms": hs["p99"],
            "max_ms": hs["max"],
            "pub_outstanding_at_end": st.outstanding,
            "gen_loop_delay_p99_ms": st.loop_p99_ms,
            **st.costs,
        }
        e["ok"] = (
            expected > 0
            and w.delivered >= o.min_ratio * expected
            and hs["p99"] is not None
            and hs["p99"] <= o.lag_p99_ms
            and gen.rec.closed == 0
        )
        evals.append(e)
        gen.log(
            f"step {k}{' (refine)' if st.refine else ''}: rate {e['rate']}/s x {e['step_s']}s "
            f"offered {e['offered_per_s']}/s arrived {e['arrived_per_s']}/s ratio "
            f"{e['delivered_ratio']} p99 {e['p99_ms']}ms srv {e['server_cpu_pct']}% "
            f"gen {e['gen_cpu_pct']}% other {e['other_cpu_pct']}% {'ok' if e['ok'] else 'LAG'}"
        )
        return bool(e["ok"])

    async def run_step(k: int, judge_prev: bool) -> None:
        nonlocal stop
        st = steps[k]
        monitor = LoopMonitor()
        monitor.start()
        s0 = gen.sample()
        arrivals0 = gen.rec.arrivals
        st.window.start_ns = time.perf_counter_ns()
        gen.rec.windows.append(st.window)
        task = asyncio.create_task(
            publish_at(pub, st.window.rate, st.window.duration_s, pick, lambda: stop)
        )
        if judge_prev:
            await asyncio.sleep(min(grace, st.window.duration_s - 0.2))
            if not evaluate(k - 1):
                stop = True
        st.window.sent = await task
        s1 = gen.sample()
        st.loop_p99_ms = (await monitor.stop())["p99"]
        st.arrivals = gen.rec.arrivals - arrivals0
        st.costs = costs(s0, s1, st.arrivals)
        st.outstanding = pub.outstanding()

    def new_step(rate: float, refine: bool = False) -> Step:
        return Step(Window(0, rate=rate, duration_s=step_duration(rate)), refine=refine)

    pub.measuring = True
    t_ramp = time.perf_counter()
    rate = o.start_dps / n
    last_ok = True
    for k in range(o.max_steps):
        if time.perf_counter() - t_ramp + step_duration(rate) + grace > o.sat_budget:
            break
        steps.append(new_step(rate))
        await run_step(k, k > 0)
        if stop:
            last_ok = False
            break
        c = steps[k].costs
        busiest = max(c["gen_cpu_pct"] or 0, *(x or 0 for x in c["server_nodes_cpu_pct"]), 1)
        rate *= min(2.5, max(1.15, 90 / busiest))
    if last_ok and steps:
        await asyncio.sleep(min(grace, 5.0))
        evaluate(len(steps) - 1)
    refine_skipped = None
    good = [e for e in evals if e["ok"]]
    first_bad = next((e for e in evals if not e["ok"]), None)
    if first_bad is not None and good:
        t0 = time.perf_counter()
        drained = False
        while time.perf_counter() - t0 < 10.0:
            if sum(s.window.sent * n - s.window.delivered for s in steps) <= 0:
                drained = True
                break
            await asyncio.sleep(0.1)
        if drained:
            steps.append(new_step(math.sqrt(good[-1]["rate"] * first_bad["rate"]), refine=True))
            stop = False
            await run_step(len(steps) - 1, False)
            await asyncio.sleep(min(grace, 5.0))
            evaluate(len(steps) - 1)
        else:
            refine_skipped = "backlog did not drain within 10 s"
    pub.measuring = False
    good = [e for e in evals if e["ok"]]
    best = max(good, key=lambda e: e["rate"], default=None)
    failed = min((e for e in evals if not e["ok"]), key=lambda e: e["rate"], default=None)
    s_end = gen.sample()
    return {
        "ok": True,
        "mode": "sat",
        "subs": n,
        "start_dps": o.start_dps,
        "grace_ms": o.grace_ms,
        "lag_p99_ms": o.lag_p99_ms,
        "min_ratio": o.min_ratio,
        "sat_budget_s": o.sat_budget,
        "max_sustained_rate": best["rate"] if best else 0,
        "max_sustained_dps": best["offered_per_s"] if best else 0,
        "peak_arrived_per_s": max((e["arrived_per_s"] for e in evals), default=0),
        "bottleneck": classify(failed) if failed else "none-reached",
        "server_cpu_us_per_msg_at_best": best["server_cpu_us_per_msg"] if best else None,
        "cpu_capacity_per_core_est": (
            round(1e6 / best["server_cpu_us_per_msg"])
            if best and best["server_cpu_us_per_msg"]
            else None
        ),
        "refine_skipped": refine_skipped,
        "gen_cpu_pct_at_fail": failed["gen_cpu_pct"] if failed else None,
        "server_cpu_pct_at_fail": failed["server_cpu_pct"] if failed else None,
        "other_cpu_pct_at_fail": failed["other_cpu_pct"] if failed else None,
        "host_busy_pct_at_fail": failed["host_busy_pct"] if failed else None,
        "server_rss_mb": r2(s_end.server_rss / 1048576),
        "pub_nacks": pub.nacks,
        "pub_nack_codes": pub.nack_codes,
        "steps": evals,
        "closed": gen.rec.closed,
        "warm_msgs": gen.rec.warm,
        "foreign": gen.rec.foreign,
        "connect": conn_info,
    }


def classify(step: dict[str, Any]) -> str:
    """What limited a lagging step, from process CPU (% of one core); the harness's rule."""
    gen = step.get("gen_cpu_pct") or 0
    srv = max((x or 0 for x in step.get("server_nodes_cpu_pct") or [0]), default=0)
    if srv >= 85 and gen < 70:
        return "server"
    if gen >= 85 and srv < 70:
        return "generator"
    if srv >= 85 or gen >= 85:
        return "server+generator"
    if (step.get("host_busy_pct") or 0) >= 180:
        return "machine"
    return "latency"
