"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` in a temp dir, on a free
port, with its unix socket in the temp dir; run as ``nobody`` when the tests run as root."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .support import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found: apt-get install postgresql (scripts/test does)")
    return found[-1]


@dataclass
class PostgresCluster:
    directory: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "nobody", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        data, log = str(self.directory / "data"), str(self.directory / "log")
        self._run(_bin("pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``immediate`` is a crash (no shutdown checkpoint)."""
        data = str(self.directory / "data")
        self._run(_bin("pg_ctl"), "-D", data, "-m", mode, "-w", "-t", "30", "stop")


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Create, start and finally stop and remove a cluster in a fresh temp dir (not under
    pytest's root-only tmp dir: the server runs as ``nobody``)."""
    directory = Path(tempfile.mkdtemp(prefix="pully-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "nobody")
    cluster = PostgresCluster(directory, free_port())
    try:
        cluster._run(
            _bin("initdb"), "-D", str(directory / "data"), "-U", "postgres", "-A", "trust", "-N"
        )
        cluster.start()
        yield cluster
    finally:
        if (directory / "data" / "postmaster.pid").exists():
            cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
