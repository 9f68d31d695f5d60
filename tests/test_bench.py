"""The benchmark harness end to end, in its smallest form: ``python -m bench fanout-1k --quick
--subs 50`` starts its own redis-server and ``pully serve``, runs the generator process and
stops everything. Only what a user sees is checked (the JSON line and the table), never a
timing figure: benchmarks print numbers, tests do not assert them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.procs import BenchError, ServerProcess, ensure_nofile, nofile_probe
from bench.report import render, table_of
from bench.scenarios import SCENARIOS, Overrides

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


def _run_bench(
    tmp_path: Path, *args: str, timeout: float = 150
) -> tuple[list[dict[str, Any]], str]:
    results = tmp_path / "pully.jsonl"
    cmd = [sys.executable, "-m", "bench", *args, "--quick"]
    cmd += ["--results", str(results), "--tmp-dir", str(tmp_path / "tmp")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    records = [orjson.loads(line) for line in results.read_bytes().splitlines()]
    assert records, proc.stderr[-3000:]
    for record in records:
        assert record.get("ok") is True, (record.get("error"), proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return records, proc.stdout


def test_quick_channels_idle_mem_and_conns_run_embedded(tmp_path: Path) -> None:
    """The many-channel and connection scenarios, shrunk to 60 clients, on the in-process
    broker: each writes its figures under the shared harness's field names."""
    records, table = _run_bench(
        tmp_path, "channels", "idle-mem", "conns-20k", "--embedded", "--subs", "60"
    )
    channels, idle, conns = records
    assert [r["scenario"] for r in records] == ["channels", "idle-mem", "conns-20k"]
    assert all(r["server_mode"] == "embedded" for r in records)

    assert channels["kind"] == "channels" and channels["subs"] == 60
    assert channels["subscriptions"] == 120
    assert channels["published_shared"] >= 1  # --quick keeps 5 s: one shared publish at 0.2/s
    assert channels["published"] > channels["published_shared"]
    # every private publish reaches one client, every shared one all 60
    private = channels["published"] - channels["published_shared"]
    assert channels["expected"] == private + 60 * channels["published_shared"]
    assert channels["delivered"] == channels["expected"] and channels["lost"] == 0
    assert channels["lat_ms_shared"]["n"] == 60 * channels["published_shared"]
    assert channels["lat_ms_own"]["n"] == private
    assert channels["server_cpu_us_per_publish"] is not None
    assert channels["server_cpu_us_per_msg"] is not None

    assert idle["kind"] == "idle" and idle["subs"] == idle["requested"] == 60
    assert idle["server_connections"] == 60 and idle["server_subscriptions"] == 60
    assert idle["server_rss_mb_n"] >= idle["server_rss_mb_0"] > 0
    assert isinstance(idle["bytes_per_conn"], int)
    assert idle["connect"]["per_s"] > 0

    assert conns["kind"] == "conns" and conns["subs"] == conns["requested"] == 60
    assert conns["server_connections"] == 60
    assert conns["published"] == 1 and conns["delivered"] == 60 and conns["lost"] == 0
    assert conns["broadcast_ms"]["n"] == 60
    assert conns["server_nofile_wanted"] == 65536
    if conns.get("nofile_refused"):  # no CAP_SYS_RESOURCE here: said so, ran at the old limit
        assert "could not be raised to 65536" in conns["nofile_refused"]
        assert conns["gen_nofile_refused"]
    else:
        assert conns["server_nofile"] == [65536] and conns["gen_nofile"] >= 65536
        assert conns["server_launch"] in ("prlimit", "bash")

    for row in ("channels (embedded, quick)", "idle-mem (embedded, quick)", "conns-20k"):
        assert row in table
    assert "60 of 60" in table  # connected column


@pytest.mark.slow
def test_quick_cluster_run_reports_local_and_remote_latency(tmp_path: Path) -> None:
    [record], table = _run_bench(tmp_path, "cluster", "--subs", "40")
    assert record["subs_per_node"] == [20, 20]
    assert record["lost"] == 0
    assert record["delivered_local"] + record["delivered_remote"] == record["delivered"]
    assert record["delivered_local"] == record["delivered_remote"] == record["published"] * 20
    for key in ("lat_ms_local", "lat_ms_remote"):
        assert {"p50", "p99", "max"} <= record[key].keys()
    assert len(record["server_pids"]) == 2 and len(record["server_nodes_cpu_pct"]) == 2
    assert "p99 ms local / remote node" in table


def test_conns_tries_only_as_many_connections_as_the_server_has_files_for(
    tmp_path: Path,
) -> None:
    """When the open-files limit could not be raised, conns-20k opens what fits and fails
    with the reason, rather than running into EMFILE (``--server-fd-room``, from the runner)."""
    server = ServerProcess(tmp_path, None, kind="stub").start()
    try:
        cmd = [sys.executable, "-m", "bench.loadgen", "--scenario", "conns", "--subs", "50"]
        cmd += ["--targets", server.target, "--server-pids", str(server.pid)]
        cmd += ["--server-fd-room", "30", "--settle", "0", "--max-time", "60"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
    finally:
        server.stop()
    record = orjson.loads(proc.stdout.splitlines()[-1])
    assert record["ok"] is False, record
    assert (record["requested"], record["tried"], record["subs"]) == (50, 30, 30)
    assert record["lost"] == 0 and record["delivered"] == 30
    assert "tried 30 of 50 connections" in record["error"]


def test_nofile_refusals_say_why() -> None:
    too_many = 1 << 40  # past any kernel's nr_open, whoever asks
    why = nofile_probe(too_many)
    assert why and "hard limit" in why
    with pytest.raises(BenchError, match="could not raise the open-files limit"):
        ensure_nofile(too_many)


def test_every_scenario_of_the_shared_harness_is_known_and_the_rest_run_embedded() -> None:
    harness = {"fanout-1k", "fanout-5k", "sat-1k", "sat-5k", "channels", "cluster", "idle-mem"}
    assert harness | {"conns-20k"} <= SCENARIOS.keys()
    assert [s.name for s in SCENARIOS.values() if s.needs_redis] == ["cluster"]
    args = SCENARIOS["channels"].gen_args(Overrides())
    for flag, value in [("--subs", "5000"), ("--rate-private", "100.0"),
                        ("--rate-shared", "0.2"), ("--duration", "12.0")]:  # fmt: skip
        assert args[args.index(flag) + 1] == value
    idle = SCENARIOS["idle-mem"].gen_args(Overrides())
    assert idle[idle.index("--subs") + 1] == "10000" and "--settle" in idle
    conns = SCENARIOS["conns-20k"].gen_args(Overrides())
    assert conns[conns.index("--nofile") + 1] == "65536"


def test_report_puts_each_kind_of_result_in_its_own_table() -> None:
    records: list[dict[str, Any]] = [
        {"ok": True, "scenario": "fanout-1k", "kind": "fanout", "mode": "fixed", "lost": 0},
        {"ok": True, "scenario": "cluster", "kind": "fanout", "mode": "fixed",
         "lat_ms_local": {"p99": 1.5}, "lat_ms_remote": {"p99": 2.5}},
        {"ok": True, "scenario": "channels", "kind": "channels", "mode": "fixed",
         "server_cpu_us_per_publish": 1234.5, "lat_ms_own": {"p99": 3.0},
         "lat_ms_shared": {"p99": 40.0}},
        {"ok": True, "scenario": "idle-mem", "kind": "idle", "mode": "idle", "subs": 10000,
         "requested": 10000, "bytes_per_conn": 11011, "connect": {"ms": 13900, "per_s": 719.0}},
        {"ok": False, "scenario": "conns-20k", "error": "pully server exited with 1"},
    ]  # fmt: skip
    assert [table_of(r) for r in records] == ["fixed", "cluster", "channels", "conns", "conns"]
    text = render(records)
    assert "1.5 / 2.5" in text  # p99 local / remote
    assert "1,234" in text and "3.0 / 40.0" in text  # µs per publish, p99 own / shared
    assert "11,011" in text and "13.9 (719)" in text
    assert "ERROR: pully server exited with 1" in text


@pytest.mark.slow
def test_a_small_reconnect_storm_brings_every_client_back_with_every_message() -> None:
    """bench.storm at 300 clients: its exit status says every client came back, recovered,
    with no message lost or repeated; the figures are printed, not checked."""
    run = subprocess.run(
        [sys.executable, "-m", "bench.storm", "--clients", "300", "--channels", "30",
         "--rate", "50"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    result = orjson.loads(run.stdout.splitlines()[0])
    assert (result["back"], result["recovered"], result["gaps"], result["repeats"]) == (
        300,
        300,
        0,
        0,
    )
    assert result["messages"] > 0  # messages did flow across the switch


@pytest.mark.slow
def test_a_small_messenger_load_run_loses_nothing() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.messenger_load", "--nodes", "1", "--users", "10",
         "--rate", "20", "--seconds", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    result = orjson.loads(run.stdout.splitlines()[0])
    assert result["sent"] > 0 and result["lost"] == 0 and result["failed"] == 0, result
