"""Fixtures: real redis-server processes, real nodes on free ports, WebSocket test clients.

``engine`` parametrizes a test over both brokers: ``memory`` (embedded) and ``redis`` (a real
redis-server started for the session). pytest-tornado's ``http_server`` serves the ``app`` fixture
on ``http_port``; every WebSocket test requests it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

from pully_tornado.app import make_app, make_server
from pully_tornado.node import Node
from pully_tornado.settings import Settings

from .hook_backend import Backend
from .support import PullyProcess, RedisServer, WSClient


@pytest.fixture(scope="session")
def _session_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(autouse=True)
def _current_loop(_session_loop: asyncio.AbstractEventLoop) -> None:
    """Tornado's IOLoop() (pytest-tornado's io_loop) asks asyncio for the current loop to
    restore later; with none set, asyncio makes one that nobody closes. Give it ours."""
    asyncio.set_event_loop(_session_loop)


@pytest.fixture(autouse=True)
def _close_test_clients(request: pytest.FixtureRequest, _current_loop: None) -> Iterator[None]:
    if "io_loop" in request.fixturenames:
        request.getfixturevalue("io_loop")  # so clients close before the loop does
    yield
    while WSClient.opened:
        WSClient.opened.pop().close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session (tests use their own channel names)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill and restart."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture(params=["memory", "redis"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "node_id": "test-node",
        "ping_interval": 0.0,
        "ping_timeout": 0.0,
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the node's settings."""
    return {}


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, engine: str, settings_overrides: dict[str, Any], tmp_path: Path
) -> Settings:
    redis_url = None
    if engine == "redis":
        server = request.getfixturevalue("redis_server")
        server.client().flushall()  # offsets start from scratch in every test
        redis_url = server.url
    overrides = {"store": f"file://{tmp_path}/relationships.json",
                 "functions_dir": str(tmp_path / "functions"), **settings_overrides}  # fmt: skip
    return make_settings(redis_url=redis_url, **overrides)


@pytest.fixture
def node(io_loop: tornado.ioloop.IOLoop, settings: Settings) -> Iterator[Node]:
    n = Node(settings)
    io_loop.run_sync(n.start)
    if settings.redis_url:
        io_loop.run_sync(lambda: _until_connected(n))
    yield n
    io_loop.run_sync(n.close)


async def _until_connected(node: Node) -> None:
    from .support import eventually

    await eventually(lambda: node.broker.connected, 10, "broker connection")


@pytest.fixture
def app(node: Node) -> tornado.web.Application:
    return make_app(node)


@pytest.fixture
def ws_url(http_port: int) -> str:
    return f"ws://127.0.0.1:{http_port}/ws"


@pytest.fixture
def base(http_port: int) -> str:
    return f"http://127.0.0.1:{http_port}"


@pytest.fixture
def connect(
    io_loop: tornado.ioloop.IOLoop, ws_url: str
) -> Iterator[Callable[..., Awaitable[WSClient]]]:
    """``await connect()`` opens a client on the test node (or ``connect(url)`` elsewhere)."""

    async def open_client(url: str | None = None, **kwargs: Any) -> WSClient:
        return await WSClient.connect(url or ws_url, **kwargs)

    yield open_client


class LocalCluster:
    """Several in-process nodes, each with its own HTTP server, sharing one event loop. By
    default each has its own relationships file and functions folder under ``workdir``."""

    def __init__(self, io_loop: tornado.ioloop.IOLoop, workdir: Path) -> None:
        self.io_loop = io_loop
        self.workdir = workdir
        self.nodes: list[tuple[Node, tornado.httpserver.HTTPServer, int]] = []

    async def add(self, **overrides: Any) -> tuple[Node, str]:
        name = f"node{len(self.nodes)}"
        overrides.setdefault("store", f"file://{self.workdir}/{name}/relationships.json")
        overrides.setdefault("functions_dir", str(self.workdir / "functions"))
        node = Node(make_settings(node_id=name, **overrides))
        await node.start()
        if node.settings.redis_url:
            await _until_connected(node)
        server = make_server(node)
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets([sock])
        port = sock.getsockname()[1]
        self.nodes.append((node, server, port))
        return node, f"ws://127.0.0.1:{port}/ws"

    async def close(self) -> None:
        for node, server, _ in self.nodes:
            server.stop()
            with contextlib.suppress(Exception):
                await server.close_all_connections()
            await node.close()


@pytest.fixture
def cluster_redis(redis_server: RedisServer) -> RedisServer:
    """The session redis-server, emptied for this test."""
    redis_server.client().flushall()
    return redis_server


@pytest.fixture
def local_cluster(io_loop: tornado.ioloop.IOLoop, tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(io_loop, tmp_path)
    yield cluster
    io_loop.run_sync(cluster.close)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., PullyProcess]]:
    """``processes(redis_url=..., env=..., args=...)`` starts a real ``pully serve``."""
    started: list[PullyProcess] = []

    def start(**kwargs: Any) -> PullyProcess:
        kwargs.setdefault("name", f"node{len(started)}")
        proc = PullyProcess(tmp_path, **kwargs).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def backend(io_loop: tornado.ioloop.IOLoop) -> Iterator[Backend]:
    """An app backend the hooks call (tests/hook_backend.py)."""
    server = Backend()
    yield server
    io_loop.run_sync(server.close)
