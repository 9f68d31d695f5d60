"""Presence: who is on a channel, join/leave frames, across nodes, and after a node is killed."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from .conftest import LocalCluster
from .support import PullyProcess, RedisServer, WSClient

Connect = Callable[..., Awaitable[WSClient]]


async def members(client: WSClient, channel: str) -> set[str]:
    reply = await client.request({"type": "presence", "channel": channel})
    assert reply["type"] == "presence", reply
    return {c["client"] for c in reply["clients"]}


async def next_event(client: WSClient, kind: str) -> dict[str, Any]:
    while True:
        frame = await client.recv()
        if frame["type"] == kind:
            return frame


@pytest.mark.usefixtures("app", "http_server")
class TestOneNode:
    @pytest.mark.gen_test
    async def test_join_leave_and_listing(self, connect: Connect) -> None:
        a, b = await connect(), await connect()
        await a.subscribe("presence:room")
        assert await next_event(a, "join") == {
            "type": "join", "channel": "presence:room", "client": a.welcome["client"], "user": None,
        }  # fmt: skip
        assert await members(a, "presence:room") == {a.welcome["client"]}
        await b.subscribe("presence:room")
        joined = await next_event(a, "join")
        assert joined["client"] == b.welcome["client"]
        assert await members(b, "presence:room") == {a.welcome["client"], b.welcome["client"]}
        await b.request({"type": "unsubscribe", "channel": "presence:room"})
        left = await next_event(a, "leave")
        assert (left["client"], left["channel"]) == (b.welcome["client"], "presence:room")
        assert await members(a, "presence:room") == {a.welcome["client"]}
        b2 = await connect()
        await b2.subscribe("presence:room")
        await next_event(a, "join")
        b2.close()  # a closed connection leaves too
        assert (await next_event(a, "leave"))["client"] == b2.welcome["client"]

    @pytest.mark.gen_test
    async def test_channels_without_presence_say_so_and_send_no_joins(
        self, connect: Connect
    ) -> None:
        a, b = await connect(), await connect()
        await a.subscribe("plain")
        await b.subscribe("plain")
        await a.no_message(0.2)
        reply = await a.request({"type": "presence", "channel": "plain", "id": 4})
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", 4)
        assert "PULLY_PRESENCE_CHANNELS" in reply["message"]


@pytest.mark.gen_test(timeout=30)
async def test_presence_spans_nodes(
    local_cluster: LocalCluster, cluster_redis: RedisServer
) -> None:
    (_, url_a), (_, url_b) = [await local_cluster.add(redis_url=cluster_redis.url) for _ in "ab"]
    a, b = await WSClient.connect(url_a), await WSClient.connect(url_b)
    await a.subscribe("presence:lobby")
    await next_event(a, "join")
    await b.subscribe("presence:lobby")
    assert (await next_event(a, "join"))["client"] == b.welcome["client"]
    assert await members(a, "presence:lobby") == {a.welcome["client"], b.welcome["client"]}
    b.close()
    assert (await next_event(a, "leave"))["client"] == b.welcome["client"]
    assert await members(a, "presence:lobby") == {a.welcome["client"]}


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_clients_of_a_killed_node_drop_out_of_presence_within_the_ttl(
    processes: Callable[..., PullyProcess], cluster_redis: RedisServer
) -> None:
    env = {"PULLY_PRESENCE_TTL": "3"}
    survivor = processes(redis_url=cluster_redis.url, env=env)
    doomed = processes(redis_url=cluster_redis.url, env=env)
    watcher = await WSClient.connect(survivor.ws_url)
    await watcher.subscribe("presence:crash")
    victims = [await WSClient.connect(doomed.ws_url) for _ in range(3)]
    for v in victims:
        await v.subscribe("presence:crash")
    everyone = {watcher.welcome["client"], *(v.welcome["client"] for v in victims)}
    assert await members(watcher, "presence:crash") == everyone
    await asyncio.sleep(3.5)  # entries outlive one TTL while their node refreshes them
    assert await members(watcher, "presence:crash") == everyone
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    # they go once their entries' TTL passes unrefreshed; the wait is bounded, its length is
    # not the point (speed is measured in bench/)
    only_me = {watcher.welcome["client"]}
    deadline = asyncio.get_running_loop().time() + 30
    while (present := await members(watcher, "presence:crash")) != only_me:
        assert asyncio.get_running_loop().time() < deadline, f"still present: {present}"
        await asyncio.sleep(0.2)
