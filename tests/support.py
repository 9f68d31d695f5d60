"""Real parts for tests: redis-server and `pully serve` processes, a WebSocket test client."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import redis
import tornado.websocket

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` (sync) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def eventually(predicate: Any, timeout: float = 10.0, what: str = "") -> Any:
    """Async twin of :func:`wait_for` that keeps the event loop running."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


class RedisServer:
    """A real redis-server on a free port, without persistence; can be killed and restarted."""

    def __init__(self, workdir: Path, port: int | None = None, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run ./scripts/test, which installs it"
            )
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5
        )

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--loglevel",
                "warning",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
                return False

        wait_for(answers, 10, what=f"redis-server on port {self.port}")
        return self

    def kill(self) -> None:
        """SIGKILL: everything in memory (offsets, epochs) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


class PullyProcess:
    """``python -m pully_tornado serve`` as a real subprocess on a free port."""

    def __init__(
        self,
        workdir: Path,
        redis_url: str | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
        name: str = "node",
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.redis_url = redis_url
        self.extra_env = env or {}
        self.args = args
        self.name = name
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "pully_tornado",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--node-id",
            f"{self.name}-{self.port}",
            # tests stop nodes while their clients cannot answer a close frame: do not wait long
            *([] if "--drain-timeout" in self.args else ["--drain-timeout", "1"]),
            *self.args,
        ]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        return cmd

    def start(self, wait: bool = True) -> PullyProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULLY_")}
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            wait_for(self._ready, 15, what=f"{self.name} on port {self.port}\n{self.log()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        return self.health() is not None

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                return dict(orjson.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            return dict(orjson.loads(exc.read()))
        except OSError:
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Closed(Exception):
    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


class WSClient:
    """A protocol v1 test client over Tornado's WebSocket client."""

    opened: list[WSClient] = []  # closed by the autouse fixture after every test

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        WSClient.opened.append(self)
        self.conn = conn
        self.inbox: collections.deque[dict[str, Any]] = collections.deque()
        self.welcome: dict[str, Any] = {}
        self._next_id = 0

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> WSClient:
        conn = await tornado.websocket.websocket_connect(url, **kwargs)
        client = cls(conn)
        client.welcome = await client.recv()
        assert client.welcome["type"] == "welcome", client.welcome
        return client

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = orjson.dumps(frame).decode()
        await self.conn.write_message(frame, binary=isinstance(frame, bytes))

    async def _read(self, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            raw = await self.conn.read_message()
        if raw is None:
            raise Closed(self.conn.close_code, self.conn.close_reason)
        return dict(orjson.loads(raw))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.inbox:
            return self.inbox.popleft()
        return await self._read(timeout)

    async def request(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send ``frame`` with a fresh id; return the reply with that id (other frames queue)."""
        self._next_id += 1
        rid = frame.setdefault("id", f"r{self._next_id}")
        await self.send(frame)
        deadline = time.monotonic() + timeout
        while True:
            msg = await self._read(max(0.01, deadline - time.monotonic()))
            if msg.get("id") == rid and msg["type"] != "message":
                return msg
            self.inbox.append(msg)

    async def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        reply = await self.request({"type": "subscribe", "channel": channel, **extra})
        assert reply["type"] == "subscribed", reply
        return reply

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        return await self.request({"type": "publish", "channel": channel, "data": data})

    async def messages(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The next ``count`` ``message`` frames (other frames are discarded)."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            if msg["type"] == "message":
                out.append(msg)
        return out

    async def no_message(self, wait: float = 0.3) -> None:
        """Assert nothing arrives within ``wait`` seconds."""
        with contextlib.suppress(TimeoutError):
            msg = await self.recv(wait)
            raise AssertionError(f"unexpected frame {msg}")

    async def closed(self, timeout: float = 10.0) -> Closed:
        """Wait for the server to close the connection; returns its code and reason."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.inbox.append(await self._read(max(0.01, deadline - time.monotonic())))
        except Closed as closed:
            return closed

    def close(self) -> None:
        self.conn.close()

    async def aclose(self, timeout: float = 2.0) -> None:
        """Close and wait until the socket is really closed (for loops about to end)."""
        protocol = self.conn.protocol
        stream = getattr(protocol, "stream", None)
        self.conn.close()
        if stream is None:
            return
        deadline = time.monotonic() + timeout
        while not stream.closed() and time.monotonic() < deadline:  # noqa: ASYNC110 - the
            # stream's close callback belongs to the websocket protocol: poll instead
            await asyncio.sleep(0.005)
        stream.close()
