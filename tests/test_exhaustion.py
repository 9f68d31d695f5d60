"""Resource exhaustion at the front door: a node out of file descriptors pauses accepting instead
of spinning, and connections that never finish their request are closed and counted toward
PULLY_MAX_CONNECTIONS; WebSockets and requests already open are served all along."""

from __future__ import annotations

import asyncio
import base64
import errno
import http.client
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import tornado.httpclient
import tornado.websocket

from pully_tornado.listener import ACCEPT_PAUSE, Listener
from pully_tornado.node import Node

from .conftest import LocalCluster
from .support import PullyProcess, WSClient, eventually, wait_for

# Runs the command after it with RLIMIT_NOFILE set to (argv[1], argv[2]): same pid, lower limit.
_NOFILE_SHIM = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


class LimitedProcess(PullyProcess):
    """``pully serve`` started with an open-files limit of ``nofile`` = (soft, hard)."""

    def __init__(self, workdir: Path, nofile: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.nofile = nofile

    def command(self) -> list[str]:
        soft, hard = self.nofile
        return [sys.executable, "-c", _NOFILE_SHIM, str(soft), str(hard), *super().command()]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process used so far (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_files_limit(self) -> tuple[int, int]:
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
        raise AssertionError("no 'Max open files' in /proc/PID/limits")


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Callable[..., LimitedProcess]]:
    """``limited(nofile=(soft, hard), env=...)`` starts a real ``pully serve`` with that limit."""
    started: list[LimitedProcess] = []

    def start(nofile: tuple[int, int], **kwargs: Any) -> LimitedProcess:
        proc = LimitedProcess(tmp_path, nofile, name=f"node{len(started)}", **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


needs_proc = pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs /proc")


def metric(text: str, name: str) -> float:
    """The value of one sample (``name`` with its labels) in Prometheus text, 0 when absent."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# -- out of descriptors ----------------------------------------------------------------------


@needs_proc
@pytest.mark.gen_test(timeout=90)
async def test_out_of_descriptors_the_node_pauses_accepting_and_keeps_serving(
    limited: Callable[..., LimitedProcess],
) -> None:
    # soft == hard: raising the soft limit at start cannot help
    node = limited(nofile=(64, 64), env={"PULLY_HANDSHAKE_TIMEOUT": "120"})
    ws = await WSClient.connect(node.ws_url)
    await ws.subscribe("room")
    admin = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)  # kept alive
    admin.request("GET", "/healthz")
    assert admin.getresponse().read()
    silent = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(100)]
    try:
        wait_for(lambda: "Too many open files" in node.log(), 15, what="the node to run out")
        cpu, start = node.cpu_seconds(), time.monotonic()
        await asyncio.sleep(2.0)
        cpu, wall = node.cpu_seconds() - cpu, time.monotonic() - start
        assert cpu < 0.5 * wall, f"the node spins: {cpu:.2f}s of CPU in {wall:.2f}s"

        assert (await ws.publish("room", {"n": 1}))["type"] == "ack"
        assert [m["data"] for m in await ws.messages(1)] == [{"n": 1}]
        admin.request("GET", "/metrics")
        metrics = admin.getresponse().read().decode()
        assert metric(metrics, 'pully_accept_pauses_total{error="EMFILE"}') > 0

        log = node.log()
        assert "Traceback" not in log
        out_of = [line for line in log.splitlines() if "Too many open files" in line]
        assert 1 <= len(out_of) <= 3, out_of
        assert "EMFILE, open files limit 64" in out_of[0]
    finally:
        for sock in silent:
            sock.close()
        admin.close()

    health = wait_for(node.health, 15, what="/healthz once descriptors are free")
    assert health["status"] == "ok"
    other = await WSClient.connect(node.ws_url)
    await other.subscribe("room")
    await ws.publish("room", {"n": 2})
    assert [m["data"] for m in await other.messages(1)] == [{"n": 2}]


@needs_proc
def test_the_soft_open_files_limit_is_raised_to_the_hard_limit(
    limited: Callable[..., LimitedProcess],
) -> None:
    node = limited(nofile=(256, 1024))
    assert node.open_files_limit() == (1024, 1024)
    assert "open files limit raised from 256 to 1024 (the hard limit)" in node.log()


class FailingSocket(socket.socket):
    """A listening socket whose ``accept()`` fails with ``error`` while it is set."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.error = errno.EMFILE
        self.accepts = 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.accepts += 1
        if self.error:
            raise OSError(self.error, os.strerror(self.error))
        return super().accept()


@pytest.mark.gen_test
async def test_the_listener_pauses_while_accept_fails_then_accepts_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "pully.listener")
    sock = FailingSocket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    served: list[Any] = []
    listener = Listener(handshake_timeout=30)
    listener.listen([sock], lambda stream, address: served.append(stream))
    client = socket.create_connection(sock.getsockname())  # the socket stays readable
    try:
        await asyncio.sleep(4 * ACCEPT_PAUSE)
        assert 1 <= sock.accepts <= 8, "one try per pause, not a busy loop"
        assert listener.accept_pauses == {"EMFILE": sock.accepts}
        lines = [r.getMessage() for r in caplog.records if r.name == "pully.listener"]
        assert len(lines) == 1 and "(EMFILE, open files limit" in lines[0], lines

        sock.error = 0
        await eventually(lambda: served, 5, "the queued connection accepted")
        assert listener.pending == 1
    finally:
        listener.close()
        client.close()
        for stream in served:
            listener.on_request_done(stream)
            stream.close()
    assert sock.fileno() == -1  # close() closed the listening socket


# -- connections that never finish their request ---------------------------------------------


async def start_node(cluster: LocalCluster, **overrides: Any) -> tuple[Node, int]:
    overrides.setdefault("handshake_timeout", 1.0)
    node, url = await cluster.add(**overrides)
    port = urlsplit(url).port
    assert port is not None
    return node, port


def handshake(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    """Everything the server sent until it closed the connection."""
    async with asyncio.timeout(timeout):
        return await reader.read()


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /healthz HT",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"channel":',
    ],
    ids=["silent", "partial request line", "partial headers", "partial body"],
)
@pytest.mark.gen_test(timeout=30)
async def test_an_unfinished_request_is_closed_after_the_handshake_timeout(
    local_cluster: LocalCluster, sent: bytes
) -> None:
    node, port = await start_node(local_cluster)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    await eventually(lambda: node.listener.pending == 1, 5, "the connection accepted")
    try:
        assert await closed_by_server(reader) == b""  # closed, without an answer
    finally:
        writer.close()
    assert node.listener.pending == 0
    assert metric(node.metrics.render().decode(), "pully_handshake_timeouts_total") == 1


@pytest.mark.gen_test(timeout=30)
async def test_a_websocket_idle_past_the_handshake_timeout_stays_open(
    local_cluster: LocalCluster,
) -> None:
    node, port = await start_node(local_cluster)
    ws = await WSClient.connect(f"ws://127.0.0.1:{port}/ws")
    await ws.subscribe("idle")
    assert node.listener.pending == 0
    await ws.no_message(3 * node.settings.handshake_timeout)
    assert (await ws.publish("idle", "still here"))["type"] == "ack"
    assert [m["data"] for m in await ws.messages(1)] == ["still here"]
    assert metric(node.metrics.render().decode(), "pully_handshake_timeouts_total") == 0


@pytest.mark.gen_test(timeout=30)
async def test_each_request_on_a_kept_alive_connection_has_its_own_deadline(
    local_cluster: LocalCluster,
) -> None:
    _, port = await start_node(local_cluster, handshake_timeout=2.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):  # 3 requests 1.2 s apart: past one timeout since the connect
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE)
            assert length is not None
            await reader.readexactly(int(length.group(1)))
            await asyncio.sleep(1.2)
        assert await closed_by_server(reader) == b""  # then idle: closed
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=30)
async def test_unfinished_requests_count_toward_max_connections(
    local_cluster: LocalCluster,
) -> None:
    node, port = await start_node(local_cluster, max_connections=3, handshake_timeout=3.0)
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await eventually(lambda: node.listener.pending == 3, 5, "3 connections accepted")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake(port))
    try:
        assert await closed_by_server(reader) == b""  # refused: no 101, no answer at all
    finally:
        writer.close()
    assert metric(node.metrics.render().decode(), "pully_connections_refused_total") == 1

    for r, _ in silent:
        assert await closed_by_server(r) == b""  # their handshake timeout
    for _, w in silent:
        w.close()
    ws = await WSClient.connect(f"ws://127.0.0.1:{port}/ws")
    assert ws.welcome["type"] == "welcome"


@pytest.mark.gen_test(timeout=30)
async def test_a_full_node_refuses_handshakes_with_503_and_still_answers_healthz(
    local_cluster: LocalCluster,
) -> None:
    node, port = await start_node(local_cluster, max_connections=2, handshake_timeout=30)
    await WSClient.connect(f"ws://127.0.0.1:{port}/ws")
    _, silent = await asyncio.open_connection("127.0.0.1", port)
    await eventually(lambda: node.listener.pending == 1, 5, "the silent connection accepted")
    try:
        # one WebSocket + one connection in its handshake = PULLY_MAX_CONNECTIONS
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
        assert refused.value.code == 503
        health = await tornado.httpclient.AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/healthz"
        )
        assert health.code == 200
    finally:
        silent.close()
