"""``python -m bench.compression``: permessage-deflate, Pully against socket.io, in the shared
harness (a copy, as ``python -m bench --shared`` runs it).

The harness's ``fanout-1k`` (1,000 subscribers, 5 msg/s, 12 s) with ``--payload`` bytes of
padding in every message (1 KB by default), four ways: each peer with compression off, and on
(Pully: ``PULLY_COMPRESSION=on``; socket.io: its ``perMessageDeflate`` option, ``SIO_DEFLATE=1``;
the generator's clients offer permessage-deflate, ``--deflate 1``), ``--rounds`` times in
alternation. Figures per delivered message: bytes the clients' sockets read, the server's CPU,
latency p50/p99, and losses; the table goes into docs/performance.md (``compression`` block).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .report import update_section
from .shared import harness_env, prepare_copy

ROOT = Path(__file__).resolve().parent.parent
# label, harness peer, extra environment, whether the clients offer permessage-deflate
CONFIGS: tuple[tuple[str, str, dict[str, str], bool], ...] = (
    ("Pully, compression off", "pully", {}, False),
    ("Pully, PULLY_COMPRESSION=on", "pully", {"PULLY_COMPRESSION": "on"}, True),
    ("socket.io, perMessageDeflate off", "socketio-redis", {}, False),
    ("socket.io, perMessageDeflate on", "socketio-redis", {"SIO_DEFLATE": "1"}, True),
)


def run_one(work: Path, peer: str, env_extra: dict[str, str], deflate: bool, payload: int) -> Any:
    env = harness_env(quick=False)
    env.update(env_extra)
    env["GEN_ARGS"] = f"--payload {payload}" + (" --deflate 1" if deflate else "")
    results = work / "results" / f"{peer}.jsonl"
    before = results.read_text().count("\n") if results.exists() else 0
    subprocess.run(["bash", str(work / "run.sh"), peer, "fanout-1k"], cwd=work, env=env,
                   timeout=300, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    lines = results.read_text().splitlines()
    if len(lines) <= before:
        raise SystemExit(f"bench.compression: {peer} wrote no result (see {work}/results/tmp)")
    return json.loads(lines[-1])


def row(label: str, runs: list[Any]) -> str:
    def med(key: Any) -> float:
        return float(statistics.median(key(r) for r in runs))

    each = " / ".join(f"{r['server_cpu_us_per_msg']:.1f}" for r in runs)
    return (
        f"| {label} | {med(lambda r: r['wire_bytes_read'] / r['delivered']):,.0f} "
        f"| {med(lambda r: r['server_cpu_us_per_msg']):.1f} "
        f"| {med(lambda r: r['lat_ms']['p50']):.1f} / {med(lambda r: r['lat_ms']['p99']):.1f} "
        f"| {sum(r['lost'] for r in runs)} "
        f"| {each} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compression", description=__doc__)
    p.add_argument("--rounds", type=int, default=2, help="runs of each configuration")
    p.add_argument("--payload", type=int, default=1024, help="padding bytes per message")
    p.add_argument("--shared-dir", type=Path, default=ROOT.parent / "shared" / "bench")
    p.add_argument("--no-docs", action="store_true", help="print only")
    opts = p.parse_args(argv)
    work = prepare_copy(opts.shared_dir.resolve(), ROOT / "bench/results/tmp/shared-harness",
                        ["pully", "socketio-redis"])  # fmt: skip
    runs: dict[str, list[Any]] = {label: [] for label, *_ in CONFIGS}
    for n in range(opts.rounds):
        for label, peer, env, deflate in CONFIGS:
            print(f"[compression] round {n + 1}: {label}", file=sys.stderr, flush=True)
            runs[label].append(run_one(work, peer, env, deflate, opts.payload))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join([
        f"Generated {when} by `python -m bench.compression --rounds {opts.rounds} --payload "
        f"{opts.payload}`: the harness's fanout-1k (1,000 subscribers, 5 msg/s, 12 s) with "
        f"{opts.payload} bytes of padding per message; medians of {opts.rounds} runs each, "
        "alternating.",
        "",
        "| configuration | bytes read per delivery | server CPU µs / delivery | latency p50 / p99 "
        "ms | lost | CPU µs of each run |",
        "|---|---|---|---|---|---|",
        *(row(label, runs[label]) for label, *_ in CONFIGS),
    ])  # fmt: skip
    print(table)
    if not opts.no_docs:
        update_section(ROOT / "docs" / "performance.md", "compression", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
