"""Processes the bench starts (redis-server, ``pully serve``) and what it reads about them.

Everything started here listens on 127.0.0.1 only and is stopped by pid: SIGTERM to the process
and its descendants, SIGKILL to whatever is still alive 5 s later. CPU and memory figures come
from ``/proc`` (Linux), the same way the shared harness takes them.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 5.0


class BenchError(Exception):
    """Something the bench needs did not work (a process did not start, a port never opened)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one (thousands of sockets); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


def ensure_nofile(want: int) -> int:
    """Make this process's open-files limit (soft and, if need be, hard) at least ``want``;
    return the soft limit now in force. Raising the hard limit needs root (CAP_SYS_RESOURCE):
    if that is refused, :class:`BenchError` says so and what to do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return want if soft == resource.RLIM_INFINITY else soft
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= want else want
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, new_hard))
    except (ValueError, OSError) as exc:
        raise BenchError(
            f"could not raise the open-files limit (RLIMIT_NOFILE) to {want}: soft {soft}, "
            f"hard {hard}, setrlimit said {exc}; raising the hard limit needs root "
            f"(CAP_SYS_RESOURCE): run as root, or raise it first (ulimit -Hn {want}, "
            f"/etc/security/limits.conf, systemd LimitNOFILE=)"
        ) from exc
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _has_cap_sys_resource() -> bool | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 24))  # CAP_SYS_RESOURCE
    except (OSError, ValueError, IndexError):
        pass
    return None


def nofile_probe(nofile: int) -> str | None:
    """None if a child can be started with RLIMIT_NOFILE raised to ``nofile`` (the way
    :func:`with_nofile` starts the server), else why not."""
    try:
        proc = subprocess.run(
            with_nofile(["true"], nofile), capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    why = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hint = f"; the hard limit here is {hard} and raising it needs CAP_SYS_RESOURCE"
    if os.geteuid() == 0 and _has_cap_sys_resource() is False:
        hint += " (this process runs as root, but without that capability: a container?)"
    return why[0] + hint


def open_fds(pid: int | str = "self") -> int:
    """How many file descriptors ``pid`` has open."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def nofile_of(pid: int) -> int | None:
    """The soft open-files limit of process ``pid`` (from ``/proc/PID/limits``)."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return 1 << 62 if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return None


def with_nofile(cmd: list[str], nofile: int) -> list[str]:
    """``cmd`` run with RLIMIT_NOFILE raised to ``nofile`` (soft and hard), keeping its pid:
    ``prlimit --nofile=N:N CMD`` (util-linux execs CMD), or ``bash -c 'ulimit -n N && exec
    CMD'`` without prlimit. Either fails to start CMD if the limit cannot be raised."""
    prlimit = shutil.which("prlimit")
    if prlimit:
        return [prlimit, f"--nofile={nofile}:{nofile}", *cmd]
    script = f'ulimit -Hn {nofile} && ulimit -Sn {nofile} && exec "$@"'
    return ["bash", "-c", script, "bash", *cmd]


# -- /proc readers -------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 if it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (a server that forks workers is counted whole)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out = [root]
    for pid in out:
        out.extend(children.get(pid, ()))
    return out


@dataclass(frozen=True, slots=True)
class TreeUsage:
    cpu_us: float
    rss: int


def tree_usage(root: int) -> TreeUsage:
    """CPU time (µs, utime + stime) and RSS (bytes) summed over ``root``'s process tree."""
    ticks = 0
    rss = 0
    for pid in process_tree(root):
        ticks += cpu_ticks(pid)
        rss += rss_bytes(pid)
    return TreeUsage(ticks * 1e6 / CLK_TCK, rss)


@dataclass(frozen=True, slots=True)
class CoreTimes:
    total: int
    idle: int
    softirq: int


def host_cores() -> list[CoreTimes]:
    """Per-core jiffies from /proc/stat: busy time not charged to any process shows up here."""
    out: list[CoreTimes] = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:9]]
                out.append(CoreTimes(sum(v), v[3] + v[4], v[5] + v[6]))
    return out


def host_busy_pct(interval: float = 1.0) -> float:
    """Busy % of the whole host (all cores) over ``interval`` seconds."""
    a = host_cores()
    time.sleep(interval)
    b = host_cores()
    total = sum(y.total - x.total for x, y in zip(a, b, strict=True))
    idle = sum(y.idle - x.idle for x, y in zip(a, b, strict=True))
    return round(100 * (total - idle) / total, 1) if total > 0 else 0.0


def wait_quiet(max_pct: float, max_wait: float) -> float:
    """Wait up to ``max_wait`` s for the host to be at most ``max_pct`` % busy; return the last
    reading (the run goes ahead either way and records it)."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = host_busy_pct()
        if busy <= max_pct or time.monotonic() >= deadline:
            return busy
        time.sleep(1.0)


# -- process control -----------------------------------------------------------------------------


def stop_tree(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM ``proc`` and its descendants, SIGKILL what is left after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    pids = process_tree(proc.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


class RedisProcess:
    """A redis-server on a free 127.0.0.1 port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
                *("--logfile", str(self.workdir / f"redis-{self.port}.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _redis_ping(self.port):
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class ServerProcess:
    """``python -m pully_tornado serve`` on a free 127.0.0.1 port, cwd and log in ``workdir``
    (``kind="stub"``: :mod:`bench.stub_server` instead, to measure the generator).

    ``nofile`` > 0 starts it with that open-files limit (:func:`with_nofile`) and checks, once
    it answers, that the limit took (:attr:`nofile`); ``extra_args`` go to ``pully serve``."""

    def __init__(
        self,
        workdir: Path,
        redis_url: str | None,
        name: str = "a",
        kind: str = "pully",
        nofile: int = 0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.name = name
        self.kind = kind
        self.want_nofile = nofile
        self.extra_args = extra_args
        self.nofile: int | None = None  # the server's soft limit, read once it is up
        self.port = free_port()
        self.log_path = workdir / f"{kind}-{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """What runs (with the open-files wrapper when ``nofile`` is set)."""
        cmd = self.server_command()
        return with_nofile(cmd, self.want_nofile) if self.want_nofile else cmd

    def server_command(self) -> list[str]:
        if self.kind == "stub":
            return [sys.executable, "-m", "bench.stub_server", str(self.port)]
        # no per-connection publish rate limit: one generator connection publishes for all,
        # and the peers it is compared with have no such limit
        cmd = [
            sys.executable,
            "-m",
            "pully_tornado",
            "serve",
            "--host",
            "127.0.0.1",
            "--publish-rate",
            "0",
        ]
        cmd += ["--port", str(self.port), "--node-id", f"bench-{self.name}-{self.port}"]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start and wait until ``GET /healthz`` answers 200."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULLY_")}
        package_root = str(Path(__file__).resolve().parent.parent)  # the stub is bench's own
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.kind} server exited with {self.proc.returncode}; see {self.log_path}"
                    + self._log_tail()
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(
                    f"{self.kind} server not healthy after {timeout}s; see {self.log_path}"
                )
            time.sleep(0.1)
        self.nofile = nofile_of(self.proc.pid)
        if self.want_nofile and (self.nofile or 0) < self.want_nofile:
            self.stop()
            raise BenchError(
                f"the {self.kind} server's open-files limit is {self.nofile}, not "
                f"{self.want_nofile}: {self.command()[0]} did not raise it (root needed?)"
            )
        return self

    def fd_room(self, headroom: int = 32) -> int:
        """Connections the server can still accept before its open-files limit (what it has
        open now and ``headroom`` for the publisher, health checks and the like aside)."""
        return max(0, (self.nofile or 0) - open_fds(self.pid) - headroom)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return (": " + " | ".join(tail)) if tail else ""

    def healthy(self) -> bool:
        url = f"http://{self.target}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body = orjson.loads(resp.read())
                return resp.status == 200 and isinstance(body, dict) and body.get("status") == "ok"
        except (OSError, urllib.error.HTTPError, orjson.JSONDecodeError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc)
