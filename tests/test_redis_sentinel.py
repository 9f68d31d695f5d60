"""The Sentinel engine on a real Sentinel set (tests/sentinel_support.py): it serves from the
master the sentinels name, and follows a failover: the master SIGKILLed, the replica promoted,
publishes back, the subscriber told its sequence changed (a new epoch), never a reused position."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster_support import publish_when_up
from .conftest import LocalCluster
from .sentinel_support import SentinelSet, sentinel_set
from .support import WSClient, eventually


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    with sentinel_set(tmp_path / "sentinel") as started:
        yield started


@pytest.mark.gen_test(timeout=120)
async def test_the_node_follows_a_failover(
    sentinels: SentinelSet, local_cluster: LocalCluster
) -> None:
    nodes = [await local_cluster.add(redis_url=sentinels.url, store="redis") for _ in range(2)]
    for node, _ in nodes:
        await eventually(lambda n=node: n.health()["status"] == "ok", 20, "the node up")
    (a, url_a), (_, url_b) = nodes
    assert a.health()["broker"]["master"] == f"127.0.0.1:{sentinels.master.port}"
    reader, writer = await WSClient.connect(url_a), await WSClient.connect(url_b)
    first = await reader.subscribe("feed")
    for n in range(3):
        await writer.publish("feed", n)
    assert [m["offset"] for m in await reader.messages(3)] == [1, 2, 3]
    await asyncio.to_thread(sentinels.kill_master)
    promoted = f"127.0.0.1:{sentinels.replica.port}"
    await eventually(lambda: a.health()["broker"].get("master") == promoted, 30, "followed")
    ack = await publish_when_up(writer, "feed", "after")
    frame = await reader.recv(30)
    assert (frame["type"], frame.get("reason")) == ("unsubscribed", "insufficient_state"), frame
    again = await reader.subscribe("feed", since={"offset": 3, "epoch": first["epoch"]})
    assert again["recovered"] is False and again["epoch"] != first["epoch"]
    assert again["offset"] == ack["offset"]
    later = await writer.publish("feed", "later")
    [message] = await reader.messages(1)
    assert (message["data"], message["offset"], message["epoch"]) == (
        "later", later["offset"], again["epoch"])  # fmt: skip
