"""The server API across real `pully serve` processes on a real Redis: a call on one node acts
on every node's connections and sums their answers; a frozen node (SIGSTOP) is named in
``missing_nodes`` and the call still returns in bounded time."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import tornado.httpclient

from .support import PullyProcess, RedisServer, WSClient
from .test_auth import SECRET, token

Start = Callable[..., PullyProcess]


async def api(node: PullyProcess, method: str, body: Any = None) -> Any:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        f"{node.url}/api/{method}", method="POST", body=orjson.dumps(body or {}),
        headers={"Content-Type": "application/json"}, request_timeout=30,
    )  # fmt: skip
    return orjson.loads(response.body)["result"]


def nodes(processes: Start, redis: RedisServer, count: int, **env: str) -> list[PullyProcess]:
    environment = {"PULLY_JWT_SECRET": SECRET, "PULLY_API_TIMEOUT": "1.5", **env}
    return [processes(redis_url=redis.url, env=environment) for _ in range(count)]


async def know_each_other(cluster: list[PullyProcess]) -> None:
    async def full() -> bool:
        return len((await api(cluster[0], "info"))["nodes"]) == len(cluster)

    deadline = time.monotonic() + 15
    while not await full():
        assert time.monotonic() < deadline, "the nodes never heard of each other"
        await asyncio.sleep(0.2)


async def as_user(node: PullyProcess, name: str) -> WSClient:
    return await WSClient.connect(f"{node.ws_url}?token={token(name, channels=['*'])}")


@pytest.mark.gen_test(timeout=90)
async def test_a_call_on_one_node_acts_on_every_node(
    processes: Start, cluster_redis: RedisServer
) -> None:
    cluster = nodes(processes, cluster_redis, 3)
    await know_each_other(cluster)
    ann = [await as_user(node, "ann") for node in cluster[:2]]  # on two nodes
    bob = await as_user(cluster[2], "bob")
    for client in (*ann, bob):
        await client.subscribe("room")
    info = await api(cluster[2], "info")
    assert sorted(n["connections"] for n in info["nodes"]) == [1, 1, 1]
    assert info["missing_nodes"] == []
    channels = await api(cluster[1], "channels", {"pattern": "room"})
    assert channels["channels"] == {"room": {"subscribers": 3}}
    presence = await api(cluster[0], "presence", {"channel": "room"})
    assert sorted((c["user"], c["node"]) for c in presence["clients"]) == sorted(
        [("ann", f"{n.name}-{n.port}") for n in cluster[:2]]
        + [("bob", f"{cluster[2].name}-{cluster[2].port}")]
    )
    stats = await api(cluster[2], "presence_stats", {"channel": "room"})
    assert (stats["clients"], stats["users"]) == (3, 2)
    # subscribe ann everywhere from the third node, publish, unsubscribe
    assert (await api(cluster[2], "subscribe", {"user": "ann", "channel": "news"}))["clients"] == 2
    for client in ann:
        frame = await client.recv()
        assert (frame["type"], frame["channel"], frame["server"]) == ("subscribed", "news", True)
    await api(cluster[2], "publish", {"channel": "news", "data": "flash"})
    for client in ann:
        [message] = await client.messages(1)
        assert message["data"] == "flash"
    assert (await api(cluster[0], "unsubscribe", {"user": "ann", "channel": "news"}))[
        "clients"] == 2  # fmt: skip
    for client in ann:
        assert await client.recv() == {"type": "unsubscribed", "channel": "news", "server": True}
    # a logout: every connection of ann, on both nodes, closed from the third
    done = await api(cluster[2], "disconnect", {"user": "ann", "reason": "logged out"})
    assert (done["clients"], done["missing_nodes"]) == (2, [])
    for client in ann:
        closed = await client.closed()
        assert (closed.code, closed.reason) == (4003, "logged out")
    await bob.no_message()
    after = await api(cluster[0], "channels", {})
    assert after["channels"] == {"room": {"subscribers": 1}}


@pytest.mark.gen_test(timeout=90)
async def test_a_frozen_node_is_named_and_the_call_returns(
    processes: Start, cluster_redis: RedisServer
) -> None:
    cluster = nodes(processes, cluster_redis, 3)
    await know_each_other(cluster)
    for node in cluster:
        await (await as_user(node, "u")).subscribe("c")
    frozen = cluster[1]
    frozen.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = await api(cluster[0], "channels", {})
        waited = time.monotonic() - started
        assert answer["missing_nodes"] == [f"{frozen.name}-{frozen.port}"]
        assert answer["channels"] == {"c": {"subscribers": 2}}
        assert waited >= 1.5  # it waited PULLY_API_TIMEOUT for the frozen one, no less
    finally:
        frozen.signal(signal.SIGCONT)
    # thawed, it answers again
    answer = await api(cluster[0], "channels", {})
    assert answer == {"channels": {"c": {"subscribers": 3}}, "truncated": False,
                      "missing_nodes": []}  # fmt: skip


@pytest.mark.gen_test(timeout=90)
async def test_a_node_that_left_is_not_waited_for(
    processes: Start, cluster_redis: RedisServer
) -> None:
    cluster = nodes(processes, cluster_redis, 2, PULLY_API_TIMEOUT="60")
    await know_each_other(cluster)
    cluster[1].stop()  # drained and gone: it said bye
    started = time.monotonic()
    info = await api(cluster[0], "info")
    assert [n["node"] for n in info["nodes"]] == [f"{cluster[0].name}-{cluster[0].port}"]
    assert info["missing_nodes"] == []
    assert time.monotonic() - started < 60  # it did not wait PULLY_API_TIMEOUT for the gone
