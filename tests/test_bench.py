"""The benchmark harness end to end, in its smallest form: ``python -m bench fanout-1k --quick
--subs 50`` starts its own redis-server and ``pully serve``, runs the generator process and
stops everything. Only what a user sees is checked (the JSON line and the table), never a
timing figure: benchmarks print numbers, tests do not assert them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from .support import ROOT

FIELDS = {
    "suite", "date", "scenario", "mode", "server_mode", "quick", "host_cores", "python",
    "tornado", "redis_py", "subs", "published", "expected", "delivered", "lost",
    "delivered_per_s", "lat_ms", "server_cpu_us_per_msg", "server_cpu_pct", "server_rss_mb",
    "gen_cpu_pct", "other_cpu_pct", "server_pids", "connect",
}  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_quick_fanout_run_delivers_everything_and_records_one_json_line(tmp_path: Path) -> None:
    results = tmp_path / "pully.jsonl"
    cmd = [sys.executable, "-m", "bench", "fanout-1k", "--quick", "--subs", "50"]
    cmd += ["--results", str(results), "--tmp-dir", str(tmp_path / "tmp")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]

    lines = results.read_bytes().splitlines()
    assert len(lines) == 1
    record = orjson.loads(lines[0])
    assert record.keys() >= FIELDS, FIELDS - record.keys()
    assert record["ok"] is True
    assert record["scenario"] == "fanout-1k"
    assert record["server_mode"] == "cluster"
    assert record["quick"] is True
    assert record["subs"] == 50 and record["connect"]["connected"] == 50
    assert record["published"] > 0
    assert record["expected"] == record["published"] * 50
    assert record["delivered"] == record["expected"]
    assert record["lost"] == 0
    assert {"p50", "p99", "max"} <= record["lat_ms"].keys()

    assert "fanout-1k (cluster, quick)" in proc.stdout  # the table row
    assert "0 of " in proc.stdout  # lost column
    assert not any(_alive(pid) for pid in record["server_pids"])  # the server was stopped
