"""Several nodes on one real redis-server: in-process nodes and separate `pully serve` processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis

from .conftest import LocalCluster
from .support import PullyProcess, RedisServer, WSClient, eventually


def redis_pubsub_channels(server: RedisServer) -> dict[str, int]:
    """Pully channel -> number of Redis subscribers (i.e. nodes) for it."""
    r = server.client()
    names = [c.decode() for c in r.pubsub_channels("pully:ch:*")]
    counts = dict(r.pubsub_numsub(*names)) if names else {}
    return {n.removeprefix("pully:ch:{").removesuffix("}"): int(counts[n.encode()]) for n in names}


@pytest.mark.gen_test(timeout=30)
async def test_message_published_on_one_node_reaches_subscribers_on_the_other(
    local_cluster: LocalCluster, cluster_redis: RedisServer
) -> None:
    (_, url_a), (_, url_b) = [await local_cluster.add(redis_url=cluster_redis.url) for _ in "ab"]
    sub_a, sub_b, pub = [await WSClient.connect(u) for u in (url_a, url_b, url_a)]
    assert sub_a.welcome["node"] != sub_b.welcome["node"]
    epochs = {(await s.subscribe("lobby"))["epoch"] for s in (sub_a, sub_b)}
    assert len(epochs) == 1, "one epoch per channel, whichever node is asked"
    ack = await pub.publish("lobby", {"from": "a"})
    for sub in (sub_a, sub_b):
        [msg] = await sub.messages(1)
        assert (msg["data"], msg["offset"], msg["epoch"]) == ({"from": "a"}, ack["offset"], *epochs)


@pytest.mark.gen_test(timeout=60)
async def test_offsets_are_global_and_ordered_across_three_nodes(
    local_cluster: LocalCluster, cluster_redis: RedisServer
) -> None:
    urls = [(await local_cluster.add(redis_url=cluster_redis.url))[1] for _ in range(3)]
    subs = [await WSClient.connect(u) for u in urls]
    pubs = [await WSClient.connect(u) for u in urls]
    for s in subs:
        await s.subscribe("global")
    per_node = 100
    for i in range(per_node):  # interleave publishes from all three nodes, no waiting
        for n, p in enumerate(pubs):
            await p.send({"type": "publish", "channel": "global", "data": [n, i], "id": i})
    acked: dict[int, list[int]] = {}
    for n, p in enumerate(pubs):
        for _ in range(per_node):
            ack = await p.recv()
            assert ack["type"] == "ack", ack
            acked[ack["offset"]] = [n, ack["id"]]
    total = 3 * per_node
    assert sorted(acked) == list(range(1, total + 1)), "offsets unique and gap-free"
    for s in subs:
        msgs = await s.messages(total, timeout=30)
        assert [m["offset"] for m in msgs] == list(range(1, total + 1)), "offset order"
        assert all(m["data"] == acked[m["offset"]] for m in msgs), (
            "each offset carries its ack's data"
        )
    for n in range(3):  # and each publisher's own messages kept their order
        own = [i for off, (node, i) in sorted(acked.items()) if node == n]
        assert own == list(range(per_node))


@pytest.mark.gen_test(timeout=30)
async def test_nodes_subscribe_in_redis_only_to_channels_with_local_subscribers(
    local_cluster: LocalCluster, cluster_redis: RedisServer
) -> None:
    (_, url_a), (_, url_b) = [await local_cluster.add(redis_url=cluster_redis.url) for _ in "ab"]
    a1, a2, b1 = (
        await WSClient.connect(url_a),
        await WSClient.connect(url_a),
        await WSClient.connect(url_b),
    )
    assert redis_pubsub_channels(cluster_redis) == {}
    await a1.publish("unwatched", 1)  # publishing does not subscribe
    await a1.subscribe("x")
    await a2.subscribe("x")  # a second local subscriber adds no Redis subscription
    assert redis_pubsub_channels(cluster_redis) == {"x": 1}
    await b1.subscribe("x")
    await b1.subscribe("y")
    assert redis_pubsub_channels(cluster_redis) == {"x": 2, "y": 1}
    await a1.request({"type": "unsubscribe", "channel": "x"})
    # a release goes to Redis from a background task, on the link a subscribe then takes: once
    # node a's next subscription is confirmed, an unsubscribe of x it sent would have landed
    await a1.subscribe("fence")
    assert redis_pubsub_channels(cluster_redis)["x"] == 2, "a2 still wants x on node a"
    await a1.request({"type": "unsubscribe", "channel": "fence"})
    await a2.request({"type": "unsubscribe", "channel": "x"})
    await eventually(lambda: redis_pubsub_channels(cluster_redis) == {"x": 1, "y": 1}, 5)
    b1.close()  # closing the connection releases its channels too
    await eventually(lambda: redis_pubsub_channels(cluster_redis) == {}, 5)
    for c in (a1, a2):
        c.close()


@pytest.mark.slow
@pytest.mark.gen_test(timeout=90)
async def test_three_pully_serve_processes_form_one_cluster(
    processes: Callable[..., PullyProcess], cluster_redis: RedisServer
) -> None:
    nodes = [processes(redis_url=cluster_redis.url) for _ in range(3)]
    for n in nodes:
        health = n.health()
        assert health is not None
        assert (health["mode"], health["broker"]["state"]) == ("cluster", "connected")
    subs = [await WSClient.connect(n.ws_url) for n in nodes]
    for s in subs:
        await s.subscribe("procs")
    pubs = [await WSClient.connect(n.ws_url) for n in nodes]
    sent: dict[int, Any] = {}
    for round_ in range(20):
        acks = await asyncio.gather(*(p.publish("procs", [i, round_]) for i, p in enumerate(pubs)))
        for i, ack in enumerate(acks):
            sent[ack["offset"]] = [i, round_]
    assert sorted(sent) == list(range(1, 61))
    for s in subs:
        msgs = await s.messages(60)
        assert [(m["offset"], m["data"]) for m in msgs] == sorted(sent.items())
    assert {s.welcome["node"] for s in subs} == {f"{n.name}-{n.port}" for n in nodes}
    for c in subs + pubs:
        c.close()


@pytest.mark.gen_test(timeout=30)
async def test_the_database_in_the_redis_url_is_the_one_used(
    local_cluster: LocalCluster, cluster_redis: RedisServer
) -> None:
    url = cluster_redis.url.removesuffix("/0") + "/3"
    _, ws_url = await local_cluster.add(redis_url=url)
    client = await WSClient.connect(ws_url)
    await client.subscribe("in-db-3")
    assert (await client.publish("in-db-3", 1))["offset"] == 1
    assert (await client.messages(1))[0]["data"] == 1
    db3 = redis.Redis(host="127.0.0.1", port=cluster_redis.port, db=3)
    assert db3.exists("pully:meta:{in-db-3}") and db3.exists("pully:hist:{in-db-3}")
    assert not cluster_redis.client().exists("pully:meta:{in-db-3}")  # nothing in db 0
