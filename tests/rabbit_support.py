"""A throwaway RabbitMQ node for tests: its own node name, AMQP and distribution ports, data,
logs, config and Erlang cookie in a temp dir, so the machine's own RabbitMQ (5672) is never
touched. Runs the server scripts directly (the /usr/sbin wrapper would switch to the rabbitmq
user and its fixed directories)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .support import free_port


def _sbin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found: apt-get install rabbitmq-server (scripts/test does)")
    return found[-1]


class RabbitNode:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.name = f"pully-test-{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("home", "mnesia", "log"):
            (directory / sub).mkdir(exist_ok=True)
        (directory / "rabbitmq.conf").write_text("loopback_users = none\n")
        (directory / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(directory / "home"),  # the node's own .erlang.cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(directory / "pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_sbin("rabbitmqctl"), "-n", self.name, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def start(self) -> RabbitNode:
        with open(self.directory / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [_sbin("rabbitmq-server")], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while True:  # await_startup fails at once until the node has registered with epmd
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited: {self.log()}")
            if self.ctl("await_startup", "--timeout", "60", timeout=70).returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server did not start: {self.log()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ctl("stop", timeout=60)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the server and beam
            self.proc.wait(10)

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@contextmanager
def rabbit_node() -> Iterator[RabbitNode]:
    directory = Path(tempfile.mkdtemp(prefix="pully-rabbit-"))
    node = RabbitNode(directory)
    try:
        yield node.start()
    finally:
        node.stop()
        shutil.rmtree(directory, ignore_errors=True)
