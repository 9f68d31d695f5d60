"""``python -m bench --shared``: Pully in the side-by-side harness (``shared/bench``).

The harness is read-only for this project (its files and ``results/`` are mode ``r-x``) and
its ``run.sh`` writes into its own folder (``node_modules/``, ``.venv/``, ``results/``), so
it always runs on a copy in ``bench/results/tmp/shared-harness/``: the scripts are refreshed
from the shared folder on every run, ``node_modules/`` and ``.venv/`` are kept between runs,
and the peers' result files are copied in when missing or newer in the shared folder (the
copy's own runs are kept otherwise). ``run.sh`` then runs there with ``PULLY_CMD`` pointing at
this checkout, on free ports, and the harness's ``report.py`` turns ``results/*.jsonl`` into
the side-by-side markdown table written into ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from .procs import free_port
from .report import append_jsonl, read_jsonl, update_section

HARNESS_FILES = ("run.sh", "report.py", "package.json", "package-lock.json", "requirements.txt")
HARNESS_DIRS = ("gen", "peers")
COLUMNS = (
    "pully",
    "socketio-redis",
    "python-socketio",
    "floor-tornado",
    "floor-tornado-preframed",
    "floor-node",
)
# Peers that run on the harness's own Python environment (python-socketio, aiohttp).
PYTHON_PEERS = frozenset(
    {"python-socketio", "python-socketio-tornado", "floor-tornado", "floor-tornado-preframed"}
)
ALL_PEERS = ("socketio-redis", "python-socketio", "floor-tornado", "floor-tornado-preframed")
SCENARIO_SECONDS = 150  # bound per (peer, scenario): run.sh gives each generator run 100 s
BARE_VENV_MARK = ".bench-bare-venv"


def _writable_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    mode = src.stat().st_mode
    dst.chmod((mode | stat.S_IWUSR | stat.S_IRUSR) & 0o777)


def prepare_copy(shared: Path, work: Path, peers: list[str]) -> Path:
    """Refresh the harness copy in ``work`` from ``shared``; return ``work``."""
    if not (shared / "run.sh").is_file():
        raise SystemExit(f"python -m bench: no run.sh in {shared} (see --shared-dir)")
    work.mkdir(parents=True, exist_ok=True)
    for name in HARNESS_FILES:
        if (shared / name).is_file():
            _writable_copy(shared / name, work / name)
    for name in HARNESS_DIRS:
        shutil.rmtree(work / name, ignore_errors=True)
        for src in (shared / name).rglob("*"):
            dst = work / name / src.relative_to(shared / name)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            elif src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                _writable_copy(src, dst)
    results = work / "results"
    results.mkdir(exist_ok=True)
    for src in sorted((shared / "results").glob("*.jsonl")):
        dst = results / src.name
        if not dst.exists() or src.stat().st_mtime > dst.stat().st_mtime:
            _writable_copy(src, dst)
    venv = work / ".venv"
    if any(p in PYTHON_PEERS for p in peers):
        if (venv / BARE_VENV_MARK).exists():
            shutil.rmtree(venv)  # run.sh installs requirements.txt into a fresh one
    elif not (venv / "bin" / "python").exists():
        # Only report.py and a version print run on the harness's Python for these peers: an
        # empty venv satisfies run.sh without installing the Python peers' packages.
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        (venv / BARE_VENV_MARK).touch()
    return work


def harness_env(quick: bool) -> dict[str, str]:
    """This process's environment for ``run.sh``: ``PULLY_CMD`` running this checkout's Pully
    (the harness fills in ``{port}`` and ``{redis}``), free ports, ``QUICK``."""
    python = shlex.quote(sys.executable)
    env = dict(os.environ)
    env.update(
        PULLY_CMD=f"{python} -m pully_tornado serve --host 127.0.0.1 --publish-rate 0 "
        "--port {port} --redis-url {redis}",
        REDIS_PORT=str(free_port()),
        PORT_A=str(free_port()),
        PORT_B=str(free_port()),
        QUICK="1" if quick else "0",
    )
    return env


def run_shared(opts: argparse.Namespace, root: Path, docs: Path) -> int:
    """Run ``run.sh PEERS [SCENARIOS]`` on the harness copy and write the table into docs."""
    shared = opts.shared_dir.resolve()
    peers = [*ALL_PEERS, "floor-node"] if opts.shared == "all" else opts.shared.split(",")
    scenarios = ",".join(opts.scenarios) if opts.scenarios else "all"
    work = prepare_copy(shared, opts.tmp_dir / "shared-harness", peers)
    env = harness_env(opts.quick)
    pully_cmd = env["PULLY_CMD"]
    n_scen = 8 if scenarios == "all" else len(opts.scenarios)
    timeout = 120 + SCENARIO_SECONDS * n_scen * len(peers)
    pully_log = work / "results" / "pully.jsonl"
    before = len(read_jsonl(pully_log))
    cmd = ["bash", str(work / "run.sh"), ",".join(peers), scenarios]
    print(
        f"[bench] shared harness copy: {work}\n[bench] PULLY_CMD={pully_cmd}\n"
        f"[bench] {'QUICK=1 ' if opts.quick else ''}{' '.join(cmd)}  (bounded: {timeout}s)",
        file=sys.stderr,
        flush=True,
    )
    try:
        rc = subprocess.run(cmd, cwd=work, env=env, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"[bench] run.sh did not finish in {timeout}s", file=sys.stderr)
        rc = 124
    # keep Pully's lines of this run in the repository's results too
    new_lines = read_jsonl(pully_log)[before:]
    for line in new_lines:
        append_jsonl(root / "bench" / "results" / "shared-pully.jsonl", line)
    report = subprocess.run(
        [sys.executable, str(work / "report.py"), "--peers", ",".join(COLUMNS)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if report.returncode != 0:
        print(report.stderr, file=sys.stderr)
        return report.returncode or 1
    table = report.stdout.strip()
    print(table)
    update_section(docs, "shared", shared_body(table, new_lines, opts.quick, peers, scenarios))
    print(f"\nupdated the side-by-side section of {docs} (run.sh exit status {rc})")
    return rc


def shared_body(
    table: str, new_lines: list[dict[str, object]], quick: bool, peers: list[str], scenarios: str
) -> str:
    suites = sorted({str(d.get("suite")) for d in new_lines if d.get("suite")})
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    note = (
        "**QUICK=1 run: checks the wiring, not for numbers.** " if quick else ""
    ) + f"Generated {when} by `python -m bench --shared {','.join(peers)}` "
    note += f"(scenarios: {scenarios}; harness suite {', '.join(suites) or 'none'}). "
    note += (
        "Each column is the latest result of that peer per scenario in the harness's "
        "`results/*.jsonl` (the peers' columns are the harness's own runs unless re-run here); "
        "`\N{EN DASH}` = no result yet."
    )
    return note + "\n\n" + table
