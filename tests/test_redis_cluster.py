"""The Redis Cluster engine on a real 3-master/3-replica Redis Cluster (tests/cluster_support.py):
sharded pub/sub on the shard that owns each channel, two nodes sharing it, the server API and
relationships across them, and the faults: a master killed (its replica promoted: a new epoch,
never a reused position), a manual failover, a slot moved to another master."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pully_tornado.errors import Unavailable
from pully_tornado.node import Node
from pully_tornado.relationships import Relationships, load

from .cluster_support import RedisCluster, publish_when_up, redis_cluster, resubscribe_when_up
from .conftest import LocalCluster, make_settings
from .support import WSClient, eventually

CHANNELS = [f"room{n}" for n in range(12)]  # spread over the three shards


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of this test's own, to break."""
    with redis_cluster(tmp_path / "cluster") as started:
        yield started


async def two_nodes(local: LocalCluster, cluster: RedisCluster) -> list[tuple[Node, str]]:
    nodes = [await local.add(redis_url=cluster.url, store="redis") for _ in range(2)]
    for node, _ in nodes:
        await eventually(lambda n=node: n.health()["status"] == "ok", 20, "the node up")
    return nodes


def sharded_channels(cluster: RedisCluster) -> set[str]:
    found: set[str] = set()
    for master in cluster.masters():
        names = master.client().execute_command("PUBSUB", "SHARDCHANNELS")
        found |= {n.decode() for n in names}
    return found


@pytest.mark.gen_test(timeout=60)
async def test_publications_travel_in_their_shard_to_every_node(
    cluster: RedisCluster, local_cluster: LocalCluster
) -> None:
    (a, url_a), (_b, url_b) = await two_nodes(local_cluster, cluster)
    assert len(a.broker.describe()["shards"]) == 3
    reader = await WSClient.connect(url_a)
    for channel in CHANNELS:
        await reader.subscribe(channel)
    assert {f"pully:ch:{{{c}}}" for c in CHANNELS} <= sharded_channels(cluster)
    assert not cluster.client().pubsub_channels("pully:ch:*")  # no classic pub/sub for them
    writer = await WSClient.connect(url_b)
    for round_ in range(3):
        for channel in CHANNELS:
            ack = await writer.publish(channel, {"round": round_})
            assert ack.get("offset") == round_ + 1, ack
    got = await reader.messages(36)
    for channel in CHANNELS:
        mine = [m for m in got if m["channel"] == channel]
        assert [(m["offset"], m["data"]["round"]) for m in mine] == [(1, 0), (2, 1), (3, 2)]
    # history and recovery, read from each channel's shard
    reply = await writer.request({"type": "history", "channel": "room5", "limit": 2})
    assert [m["offset"] for m in reply["messages"]] == [2, 3]
    late = await WSClient.connect(url_b)
    room0 = [m for m in got if m["channel"] == "room0"]
    since = {"offset": 1, "epoch": room0[0]["epoch"]}
    answer = await late.subscribe("room0", since=since)
    assert answer["recovered"] is True
    # unsubscribing ends the sharded subscription in its shard
    reader.close()
    await eventually(lambda: "pully:ch:{room3}" not in sharded_channels(cluster), 10, "sunsub")


@pytest.mark.gen_test(timeout=60)
async def test_the_server_api_and_relationships_reach_every_node(
    cluster: RedisCluster, local_cluster: LocalCluster
) -> None:
    (a, url_a), (b, _) = await two_nodes(local_cluster, cluster)
    await eventually(lambda: a.api.survey.peers() == [b.id], 10, "a hears b's hello")
    info = await a.api.call("info", {})
    assert sorted(n["node"] for n in info["nodes"]) == sorted([a.id, b.id])
    version = await a.save_relationships(_document({"hot": {"history_size": 2}}))
    await eventually(lambda: b.relationships.version == version, 15, "node b reloads")
    assert b.health()["relationships"]["store"]["kind"] == "redis"
    client = await WSClient.connect(url_a)
    for n in range(4):
        await client.publish("hot", n)
    reply = await client.request({"type": "history", "channel": "hot"})
    assert [m["data"] for m in reply["messages"]] == [2, 3]


def _document(options: dict[str, object]) -> Relationships:
    return load({"channels": {}, "options": options})


@pytest.mark.gen_test(timeout=120)
async def test_a_killed_master_is_replaced_and_no_position_is_reused(
    fresh_cluster: RedisCluster, local_cluster: LocalCluster
) -> None:
    (a, url_a), (b, url_b) = await two_nodes(local_cluster, fresh_cluster)
    reader, writer = await WSClient.connect(url_a), await WSClient.connect(url_b)
    before = await reader.subscribe("room1")
    first = await writer.publish("room1", "before")
    [message] = await reader.messages(1)
    assert (message["offset"], message["epoch"]) == (first["offset"], before["epoch"])
    master = fresh_cluster.master_of("pully:meta:{room1}")
    replica = fresh_cluster.replica_of(master)
    master.kill()
    await eventually(lambda: replica.role() == "master", 30, "the replica promoted")
    await eventually(lambda: a.broker.connected and b.broker.connected, 30, "engines back")
    # the promoted replica has another replication id: the channel starts a new epoch, and
    # the subscriber, which cannot be told what it missed, is asked to resubscribe
    ack = await publish_when_up(writer, "room1", "after")
    ended = await reader.recv(10)
    assert (ended["type"], ended.get("reason")) == ("unsubscribed", "insufficient_state"), ended
    again = await reader.subscribe("room1", since={"offset": 1, "epoch": before["epoch"]})
    assert again["recovered"] is False and again["epoch"] != before["epoch"]
    assert again["offset"] == ack["offset"]
    later = await writer.publish("room1", "later")
    [message] = await reader.messages(1)
    assert (message["data"], message["offset"], message["epoch"]) == (
        "later", later["offset"], again["epoch"])  # fmt: skip


@pytest.mark.gen_test(timeout=120)
async def test_a_moved_slot_and_a_manual_failover_keep_subscribers_served(
    fresh_cluster: RedisCluster, local_cluster: LocalCluster
) -> None:
    (_a, url_a), (_b, url_b) = await two_nodes(local_cluster, fresh_cluster)
    reader, writer = await WSClient.connect(url_a), await WSClient.connect(url_b)
    first = await reader.subscribe("room2")
    await writer.publish("room2", 1)
    await reader.messages(1)
    # a slot moves to another master (with its keys): Redis ends the sharded subscription, the
    # engine re-reads the map and follows it. The new master cannot vouch for the sequence
    # (another replication id): a new epoch, and the subscriber is told so, never skipped.
    owner = fresh_cluster.master_of("pully:meta:{room2}")
    target = next(m for m in fresh_cluster.masters() if m is not owner)
    fresh_cluster.move_slot("pully:meta:{room2}", target)
    await _told_to_resubscribe(reader)
    since = {"offset": 1, "epoch": first["epoch"]}
    moved = await resubscribe_when_up(reader, "room2", since)
    assert moved["recovered"] is False and moved["epoch"] != first["epoch"]
    assert "pully:ch:{room2}" in _channels_of(target.client())  # on the new owner only
    assert "pully:ch:{room2}" not in _channels_of(owner.client())
    ack = await publish_when_up(writer, "room2", 2)
    [message] = await reader.messages(1)
    assert (message["data"], message["offset"]) == (2, ack["offset"])
    # a manual failover of that master: the same, on the promoted replica
    fresh_cluster.failover(fresh_cluster.replica_of(target))
    await _told_to_resubscribe(reader)
    again = await resubscribe_when_up(reader, "room2", {"offset": ack["offset"],
                                                         "epoch": moved["epoch"]})  # fmt: skip
    assert again["epoch"] != moved["epoch"]
    later = await publish_when_up(writer, "room2", 3)
    [message] = await reader.messages(1)
    assert (message["data"], message["offset"], message["epoch"]) == (
        3, later["offset"], again["epoch"])  # fmt: skip


async def _told_to_resubscribe(client: WSClient) -> None:
    frame = await client.recv(30)
    assert (frame["type"], frame.get("reason")) == ("unsubscribed", "insufficient_state"), frame


def _channels_of(client: redis.Redis) -> set[str]:
    return {n.decode() for n in client.execute_command("PUBSUB", "SHARDCHANNELS")}


@pytest.mark.gen_test(timeout=90)
async def test_a_tls_cluster_with_its_ca(tmp_path: Path, local_cluster: LocalCluster) -> None:
    with redis_cluster(tmp_path / "tls-cluster", tls=True) as cluster:
        assert cluster.tls is not None and cluster.url.startswith("rediss+cluster://")
        ca = str(cluster.tls / "ca.crt")
        node, url = await local_cluster.add(redis_url=cluster.url, store="redis", redis_tls_ca=ca)
        await eventually(lambda: node.health()["status"] == "ok", 20, "the node up over TLS")
        reader = await WSClient.connect(url)
        for channel in CHANNELS:
            await reader.subscribe(channel)
            assert (await reader.publish(channel, channel))["offset"] == 1
        got = await reader.messages(len(CHANNELS))
        assert sorted(m["data"] for m in got) == sorted(CHANNELS)
        # without the CA the servers' certificates are refused: the node says so, and waits
        untrusting = Node(make_settings(redis_url=cluster.url, store="redis",
                                        functions_dir=str(tmp_path / "functions")))  # fmt: skip
        await untrusting.start()
        try:
            await asyncio.sleep(2)  # it keeps trying meanwhile
            assert not untrusting.broker.connected
            health = untrusting.health()
            assert health["status"] == "unavailable"
            assert "CERTIFICATE_VERIFY_FAILED" in health["broker"]["problem"]
        finally:
            await untrusting.close()


@pytest.mark.gen_test(timeout=60)
async def test_ack_replicas_waits_for_the_replica_or_says_unavailable(
    cluster: RedisCluster, local_cluster: LocalCluster
) -> None:
    one, url_one = await local_cluster.add(redis_url=cluster.url, store="redis",
                                           redis_ack_replicas=1)  # fmt: skip
    two, url_two = await local_cluster.add(redis_url=cluster.url, store="redis",
                                           redis_ack_replicas=2)  # fmt: skip
    for node in (one, two):
        await eventually(lambda n=node: n.health()["status"] == "ok", 20, "the node up")
    client = await WSClient.connect(url_one)
    ack = await client.publish("acked", "kept")
    assert ack["type"] == "ack"  # its shard's one replica has it
    client = await WSClient.connect(url_two)
    refused = await client.publish("acked", "maybe")
    assert refused["code"] == "unavailable"
    assert "only 1 of 2 redis replicas have the message" in refused["message"]
    assert "it may still be delivered" in refused["message"]


@pytest.mark.gen_test(timeout=30)
async def test_a_plain_url_to_a_cluster_node_says_which_url_to_use(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    port = cluster.nodes[0].port
    node = Node(make_settings(redis_url=f"redis://127.0.0.1:{port}/0", store="redis",
                              functions_dir=str(tmp_path / "functions")))  # fmt: skip
    await node.start()
    try:
        await eventually(lambda: "problem" in node.health()["broker"], 10, "the problem found")
        health = node.health()
        assert health["status"] == "unavailable"
        assert health["broker"]["problem"] == (
            f"the Redis server at 127.0.0.1:{port} is a Redis Cluster: set PULLY_REDIS_URL to "
            f"redis+cluster://127.0.0.1:{port} (rediss+cluster:// with TLS)"
        )
        with pytest.raises(Unavailable, match="is a Redis Cluster"):
            await node.broker.publish("x", b"1")
    finally:
        await node.close()
