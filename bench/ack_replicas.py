"""What ``PULLY_REDIS_ACK_REPLICAS`` costs a publisher: the time from a publish to its ack.

A throwaway master and replica (``redis-server --replicaof``) on free ports, and the Redis broker
in this process (no WebSocket, no node: the broker's own publish, which is where ``WAIT`` runs).
For ``ACK_REPLICAS`` 0 and 1, in alternating rounds: ``--count`` publishes one after another
(the latency a client waiting for each ack sees) and ``--count`` publishes 64 at a time (what a
busy node's pipelined link sees), each 100 bytes to one channel. Prints median and p99 per
publish and publishes/s, best round of each side. ``python -m bench.ack_replicas`` (about 15 s).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from pully_tornado.broker.redis import RedisBroker
from pully_tornado.settings import Settings

from .procs import free_port


def start_redis(directory: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on {port} did not start")


class Events:
    def on_publication(self, *args: object) -> None: ...
    def on_presence(self, *args: object) -> None: ...
    def on_control(self, *args: object) -> None: ...
    def on_broker_state(self, connected: bool) -> None: ...


async def rounds(port: int, count: int, repeat: int) -> dict[tuple[int, str], list[float]]:
    brokers = {}
    for acks in (0, 1):
        broker = RedisBroker(Settings(redis_url=f"redis://127.0.0.1:{port}/0",
                                      redis_ack_replicas=acks))  # fmt: skip
        await broker.start(Events())
        brokers[acks] = broker
    for broker in brokers.values():
        while not broker.connected:  # noqa: ASYNC110 - the broker reports through events
            await asyncio.sleep(0.05)
    data = b'{"text":"' + b"x" * 88 + b'"}'
    results: dict[tuple[int, str], list[float]] = {}
    for r in range(repeat):
        for acks in (0, 1) if r % 2 == 0 else (1, 0):
            broker = brokers[acks]
            latencies = []
            for _ in range(count):
                began = time.perf_counter()
                await broker.publish("bench", data)
                latencies.append(time.perf_counter() - began)
            results.setdefault((acks, "sequential"), []).append(statistics.median(latencies))
            results.setdefault((acks, "p99"), []).append(statistics.quantiles(latencies, n=100)[98])
            began = time.perf_counter()
            for _ in range(count // 64):
                await asyncio.gather(*(broker.publish("bench", data) for _ in range(64)))
            results.setdefault((acks, "pipelined"), []).append(
                (count // 64 * 64) / (time.perf_counter() - began)
            )
    for broker in brokers.values():
        await broker.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="pully-ack-"))
    (directory / "m").mkdir()
    (directory / "r").mkdir()
    master, port = start_redis(directory / "m")
    replica, replica_port = start_redis(directory / "r", "--replicaof", "127.0.0.1", str(port))
    try:
        while redis.Redis(port=replica_port).info("replication")["master_link_status"] != "up":
            time.sleep(0.05)
        results = asyncio.run(rounds(port, args.count, args.repeat))
    finally:
        for proc in (replica, master):
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
    print(
        "| PULLY_REDIS_ACK_REPLICAS | median µs/publish (one at a time) | p99 µs | "
        "publishes/s (64 in flight) |"
    )
    print("|---|---|---|---|")
    for acks in (0, 1):
        median = min(results[(acks, "sequential")]) * 1e6
        p99 = min(results[(acks, "p99")]) * 1e6
        rate = max(results[(acks, "pipelined")])
        print(f"| {acks} | {median:.0f} | {p99:.0f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
