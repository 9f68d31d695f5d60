"""A real Redis Sentinel set for tests: one master, one replica, three sentinels (redis-server
processes on free ports in a temp dir), and the fault it exists for: the master killed, the
replica promoted by the sentinels."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from .support import free_port, wait_for

MASTER_NAME = "pully"


class Server:
    def __init__(self, directory: Path, args: list[str], sentinel: bool = False) -> None:
        self.port = free_port()
        self.directory = directory / str(self.port)
        self.directory.mkdir(parents=True)
        self.args = args
        self.sentinel = sentinel
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        common = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                  "--logfile", "redis.log", "--loglevel", "warning"]  # fmt: skip
        if self.sentinel:
            conf = self.directory / "sentinel.conf"  # sentinels rewrite their config: their own
            conf.write_text("\n".join(self.args) + "\n")
            cmd = ["redis-server", str(conf), "--sentinel", *common]
        else:
            cmd = ["redis-server", "--save", "", "--appendonly", "no", *common, *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, 10, what=f"redis {self.port}")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


class SentinelSet:
    def __init__(self, directory: Path) -> None:
        self.master = Server(directory, [])
        self.replica = Server(directory, ["--replicaof", "127.0.0.1", str(self.master.port)])
        monitor = [
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
            f"sentinel failover-timeout {MASTER_NAME} 5000",
        ]
        self.sentinels = [Server(directory, monitor, sentinel=True) for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica.start()
        wait_for(self._replicating, 20, 0.1, "the replica in sync")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_for(self._sentinels_agree, 30, 0.2, "sentinels that know each other")
        return self

    def _replicating(self) -> bool:
        return self.replica.client().info("replication").get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(MASTER_NAME)
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    def master_port(self) -> int:
        _, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def kill_master(self) -> None:
        """SIGKILL the master; returns once the sentinels name the replica instead."""
        self.master.kill()
        wait_for(lambda: self.master_port() == self.replica.port, 60, 0.2, "a failover")
        wait_for(lambda: self.replica.client().execute_command("ROLE")[0] == b"master", 30)

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.kill()


@contextmanager
def sentinel_set(directory: Path) -> Iterator[SentinelSet]:
    started = SentinelSet(directory)
    try:
        yield started.start()
    finally:
        started.stop()
        shutil.rmtree(directory, ignore_errors=True)
