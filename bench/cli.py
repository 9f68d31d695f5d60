"""``python -m bench``: Pully's own benchmark.

For each scenario it starts a fresh ``pully serve`` (cluster mode on a redis-server it starts
itself, or ``--embedded``), runs the load generator (:mod:`bench.loadgen`) as a separate
process, stops what it started, prints a table and appends one JSON line per scenario to
``bench/results/pully.jsonl``. ``--shared`` runs the side-by-side harness in ``shared/bench``
instead (see :mod:`bench.shared`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

from .procs import (
    BenchError,
    RedisProcess,
    ServerProcess,
    nofile_probe,
    raise_nofile_limit,
    wait_quiet,
)
from .report import append_jsonl, latest, read_jsonl, render, update_section
from .scenarios import DEFAULT, SCENARIOS, Overrides, Scenario

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "pully.jsonl"
TMP = ROOT / "bench" / "results" / "tmp"
DOCS = ROOT / "docs" / "performance.md"
QUIET_MAX_PCT = 25.0
QUIET_WAIT_S = 10.0


def _epilog() -> str:
    width = max(len(n) for n in SCENARIOS)
    lines = ["scenarios:"]
    for s in SCENARIOS.values():
        body = textwrap.wrap(s.summary, 96 - width - 4) or [""]
        lines.append(f"  {s.name.ljust(width)}  {body[0]}")
        lines += [" " * (width + 4) + more for more in body[1:]]
    lines.append("  (default: " + " ".join(DEFAULT) + "; 'all' runs every scenario above)")
    lines.append("  every scenario but cluster also runs --embedded (no Redis)")
    lines += [
        "",
        "examples:",
        "  python -m bench                            # fanout-1k and sat-1k, cluster mode",
        "  python -m bench fanout-1k --embedded       # in-process broker, no Redis",
        "  python -m bench channels idle-mem conns-20k  # the many-channel and connection ones",
        "  python -m bench fanout-1k --quick --subs 50  # seconds: tests the harness, not Pully",
        "  python -m bench sat-1k --server-arg=--uvloop  # pass a flag to every pully serve",
        "  python -m bench --shared                   # shared/bench side by side with the peers",
        "  python -m bench --report                   # latest results as markdown",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Pully's benchmark: fresh server per scenario, separate load-generator "
        "process, everything on 127.0.0.1, every run bounded in time.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenarios to run")
    p.add_argument("--quick", action="store_true", help="short runs: tests the harness only")
    p.add_argument("--embedded", action="store_true", help="no Redis: in-process broker")
    p.add_argument("--subs", type=int, help="subscribers (overrides the scenario's count)")
    p.add_argument("--rate", type=float, help="fixed-rate scenarios: publishes/s")
    p.add_argument("--duration", type=float, help="fixed-rate scenarios: measured seconds")
    p.add_argument("--sat-budget", type=float, help="saturation scenarios: seconds of ramp")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every 'pully serve' started (repeat it; use the = form for "
        "flags: --server-arg=--uvloop)",
    )
    p.add_argument(
        "--results", type=Path, default=RESULTS, help="JSON lines file to append to (%(default)s)"
    )
    p.add_argument("--tmp-dir", type=Path, default=TMP, help="logs and scratch (%(default)s)")
    p.add_argument(
        "--no-quiet-wait",
        action="store_true",
        help=f"do not wait (up to {QUIET_WAIT_S:g} s) for the host to be under "
        f"{QUIET_MAX_PCT:g} %% busy before each scenario",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="put this run's table (with --report: the latest results) into the results "
        "section of docs/performance.md",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="run nothing: print the latest result of each scenario from --results (markdown)",
    )
    shared = p.add_argument_group("side-by-side harness (shared/bench)")
    shared.add_argument(
        "--shared",
        nargs="?",
        const="pully",
        metavar="PEERS",
        help="run the shared harness's run.sh for PEERS (default: pully; comma-separated, or "
        "'all') on a copy of the harness, then write the side-by-side table into "
        "docs/performance.md; SCENARIO arguments pick its scenarios (default: all)",
    )
    shared.add_argument(
        "--shared-dir",
        type=Path,
        default=ROOT.parent / "shared" / "bench",
        help="the shared harness (%(default)s)",
    )
    return p.parse_args(argv)


# -- metadata ------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _run_text(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=10, cwd=ROOT, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1048576, 1)
    except OSError:
        pass
    return None


def suite_meta(suite: str, opts: argparse.Namespace) -> dict[str, Any]:
    """What every JSON line of this run carries: when, where, with which versions."""
    redis_v = _run_text(["redis-server", "--version"]) if shutil.which("redis-server") else None
    commit = _run_text(["git", "rev-parse", "--short", "HEAD"])
    dirty = _run_text(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "suite": suite,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "host_cores": os.cpu_count(),
        "host_cpu": _cpu_model(),
        "host_mem_gb": _mem_gb(),
        "python": platform.python_version(),
        "pully": _version("pully-tornado"),
        "tornado": _version("tornado"),
        "redis_py": _version("redis"),
        "orjson": _version("orjson"),
        "redis_server": (
            redis_v.split(" v=")[1].split()[0] if redis_v and " v=" in redis_v else None
        ),
        "git": (commit + ("+dirty" if dirty else "")) if commit else None,
        "server_mode": "embedded" if opts.embedded else "cluster",
        "quick": bool(opts.quick),
    }


# -- running -------------------------------------------------------------------------------------


def run_scenario(
    sc: Scenario,
    ov: Overrides,
    workdir: Path,
    redis: RedisProcess | None,
    quiet_wait: bool,
    server_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Fresh server(s), one generator run, everything stopped; the generator's result plus
    ``host_busy_before_pct``. Failures come back as ``{"ok": False, "error": ...}``.

    A scenario with ``nofile`` starts its server(s) with that open-files limit (``prlimit``)
    and has the generator raise its own (``--nofile``). If this machine refuses (no
    CAP_SYS_RESOURCE), the scenario still runs, with as many connections as the limits in force
    leave room for, and its result says so (``nofile_refused``, and an error: the target was not
    reached)."""
    busy = wait_quiet(QUIET_MAX_PCT, QUIET_WAIT_S) if quiet_wait else None
    redis_url = redis.url if redis and sc.server == "pully" else None
    extra = tuple(server_args) if sc.server == "pully" else ()
    nofile, refused = sc.nofile, None
    if nofile:
        why = nofile_probe(nofile)
        if why:
            refused = f"the open-files limit could not be raised to {nofile}: {why}"
            print(
                f"[bench] {sc.name}: {refused}; going on with the limit in force", file=sys.stderr
            )
            nofile = 0
    servers = [
        ServerProcess(workdir, redis_url, name, sc.server, nofile=nofile, extra_args=extra)
        for name in "ab"[: sc.nodes]
    ]
    result: dict[str, Any]
    try:
        for server in servers:
            server.start()
        max_time = sc.max_time(ov)
        cmd = [sys.executable, "-m", "bench.loadgen", "--label", sc.name, "--peer", sc.server]
        cmd += ["--targets", ",".join(s.target for s in servers)]
        cmd += ["--server-pids", ",".join(str(s.pid) for s in servers)]
        cmd += ["--redis-pid", str(redis.pid if redis_url and redis else 0)]
        cmd += ["--max-time", str(max_time)]
        cmd += sc.gen_args(ov)
        if sc.nofile:
            cmd += ["--server-fd-room", str(min(s.fd_room() for s in servers))]
        print(f"[bench] {sc.name}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, cwd=ROOT, timeout=max_time + 30)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        if not lines:
            raise BenchError(f"generator exited with {proc.returncode} and no result")
        result = orjson.loads(lines[-1])
    except (BenchError, subprocess.TimeoutExpired, orjson.JSONDecodeError) as exc:
        print(f"[bench] {sc.name}: {exc}", file=sys.stderr, flush=True)
        result = {"ok": False, "scenario": sc.name, "error": str(exc)}
    finally:
        for server in servers:
            server.stop()
    result["host_busy_before_pct"] = busy
    if sc.server != "pully":
        result["server_mode"] = sc.server
    result["server_cmd"] = " ".join(servers[0].server_command()[1:]) if servers else None
    if sc.nofile:
        result["server_nofile_wanted"] = sc.nofile
        result["server_launch"] = (
            Path(servers[0].command()[0]).name if servers and nofile else None
        )  # prlimit (or bash: ulimit) when the limit was raised
    result["server_nofile"] = [s.nofile for s in servers]
    if refused:
        result["nofile_refused"] = refused
        if not result.get("ok"):
            result["error"] = f"{result.get('error')} ({refused})"
    return result


def pick_scenarios(names: Sequence[str]) -> list[Scenario]:
    if not names:
        names = DEFAULT
    if list(names) == ["all"]:
        return list(SCENARIOS.values())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"python -m bench: unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    return [SCENARIOS[n] for n in names]


def run_suite(opts: argparse.Namespace) -> list[dict[str, Any]]:
    scenarios = pick_scenarios(opts.scenarios)
    if opts.embedded:
        skipped = [s.name for s in scenarios if s.needs_redis]
        if skipped:
            print(
                f"[bench] --embedded: skipping {', '.join(skipped)} (needs Redis)", file=sys.stderr
            )
        scenarios = [s for s in scenarios if not s.needs_redis]
    ov = Overrides(opts.quick, opts.subs, opts.rate, opts.duration, opts.sat_budget)
    suite = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
    workdir = opts.tmp_dir / suite
    meta = suite_meta(suite, opts)
    raise_nofile_limit()  # servers inherit it
    records: list[dict[str, Any]] = []
    redis = None
    try:
        if not opts.embedded:
            redis = RedisProcess(workdir).start()
            print(f"[bench] redis-server on {redis.url} (pid {redis.pid})", file=sys.stderr)
        for sc in scenarios:
            t0 = time.monotonic()
            quiet = not (opts.quick or opts.no_quiet_wait)
            result = run_scenario(sc, ov, workdir, redis, quiet, opts.server_arg)
            record = {**meta, **result, "wall_s": round(time.monotonic() - t0, 1)}
            append_jsonl(opts.results, record)
            records.append(record)
            print(render([record]) + "\n", flush=True)
    finally:
        if redis is not None:
            redis.stop()
    print(f"suite {suite}: {len(records)} scenario(s); results appended to {opts.results}")
    if len(records) > 1:
        print("\n" + render(records))
    if opts.write_docs:
        write_docs_section(records)
    return records


def docs_body(records: list[dict[str, Any]]) -> str:
    """The own-results section of docs/performance.md: where and how, then the tables."""
    suites = sorted({str(r.get("suite")) for r in records})
    m = records[-1]
    quick = " **QUICK run: tests the harness, not for numbers.**" if m.get("quick") else ""
    return (
        f"Suite {', '.join(suites)} ({m.get('date')}), git {m.get('git')}: "
        f"{m.get('host_cores')} cores ({m.get('host_cpu')}), Python {m.get('python')}, "
        f"Tornado {m.get('tornado')}, redis-py {m.get('redis_py')}, orjson {m.get('orjson')}, "
        f"redis-server {m.get('redis_server')}.{quick}\n\n" + render(records, markdown=True)
    )


def write_docs_section(records: list[dict[str, Any]]) -> None:
    if records:
        update_section(DOCS, "results", docs_body(records))
        print(f"updated the results section of {DOCS}")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.report:
        records = latest(read_jsonl(opts.results))
        print(render(records, markdown=True))
        if opts.write_docs:
            write_docs_section(records)
        return 0
    if opts.shared is not None:
        from .shared import run_shared

        return run_shared(opts, ROOT, DOCS)
    records = run_suite(opts)
    return 0 if records and all(r.get("ok") for r in records) else 1
