"""Faults with real parts: Redis killed and restarted under traffic, Redis absent at start,
SIGTERM/SIGINT drains of real `pully serve` processes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import pytest

from pully_tornado.node import Node

from .conftest import LocalCluster
from .support import Closed, PullyProcess, RedisServer, WSClient, eventually

pytestmark = pytest.mark.slow


class SteadyPublisher:
    """Publishes to one channel every ``interval`` seconds and records each outcome."""

    def __init__(self, client: WSClient, channel: str, interval: float = 0.02) -> None:
        self.client, self.channel, self.interval = client, channel, interval
        self.acks: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.stopped = False
        self.seq = 0

    async def run(self) -> None:
        while not self.stopped:
            self.seq += 1
            reply = await self.client.publish(self.channel, {"seq": self.seq})
            (self.acks if reply["type"] == "ack" else self.errors).append(reply)
            await asyncio.sleep(self.interval)


@pytest.mark.gen_test(timeout=90)
async def test_redis_killed_and_restarted_mid_traffic(
    local_cluster: LocalCluster, fresh_redis: RedisServer
) -> None:
    node_a, url_a = await local_cluster.add(redis_url=fresh_redis.url)
    node_b, url_b = await local_cluster.add(redis_url=fresh_redis.url)
    sub = await WSClient.connect(url_b)
    first = await sub.subscribe("steady")
    received: list[dict[str, Any]] = []
    told: list[tuple[int, dict[str, Any]]] = []  # (messages received by then, frame)

    async def collect() -> None:
        while True:
            frame = await sub.recv(timeout=60)
            if frame["type"] == "message":
                received.append(frame)
                continue
            told.append((len(received), frame))
            if frame["type"] == "unsubscribed":  # as the clients do: again, since the last seen
                since = {"offset": received[-1]["offset"], "epoch": received[-1]["epoch"]}
                await sub.send({"type": "subscribe", "channel": "steady", "since": since, "id": 1})

    publisher = SteadyPublisher(await WSClient.connect(url_a), "steady")
    tasks = [asyncio.ensure_future(collect()), asyncio.ensure_future(publisher.run())]
    await eventually(lambda: len(publisher.acks) >= 20, 10, "acks before the outage")

    fresh_redis.kill()
    await eventually(lambda: len(publisher.errors) >= 10, 10, "publishes refused during the outage")
    acks_during = len(publisher.acks)
    assert not node_a.broker.connected and not node_b.broker.connected
    assert node_a.health()["status"] == "unavailable"
    assert {e["code"] for e in publisher.errors} == {"unavailable"}
    # a new subscription cannot be confirmed now: it is refused, the connection stays usable
    other = await WSClient.connect(url_b)
    refused = await other.request({"type": "subscribe", "channel": "during-outage"})
    assert (refused["type"], refused["code"]) == ("error", "unavailable")
    assert (await other.request({"type": "ping"}))["type"] == "pong"
    await asyncio.sleep(0.5)
    assert len(publisher.acks) == acks_during, "no ack while Redis is down"

    fresh_redis.start()
    await eventually(lambda: node_a.broker.connected and node_b.broker.connected, 10, "reconnect")
    both_up = len(publisher.acks)
    await eventually(lambda: len(publisher.acks) >= both_up + 20, 10, "acks after the restart")
    publisher.stopped = True
    await asyncio.sleep(0.5)
    tasks[1].cancel()

    seen = [(m["epoch"], m["offset"]) for m in received]
    assert len(seen) == len(set(seen)), "no duplicates"
    acked_before = {(first["epoch"], a["offset"]) for a in publisher.acks[:acks_during]}
    assert acked_before <= set(seen), "everything acked before the outage was delivered"
    # Redis lost everything: the sequence restarted from 1 under a new epoch. Node B cannot
    # vouch that it had the old sequence's end, so it does not switch its subscriber over: it
    # ends the subscription (insufficient_state), and the resubscribe learns recovered: false
    assert min(a["offset"] for a in publisher.acks[acks_during:]) == 1
    [(at, unsubscribed), (_, again)] = told
    assert unsubscribed == {"type": "unsubscribed", "channel": "steady",
                            "reason": "insufficient_state", "resubscribe": True}  # fmt: skip
    assert {m["epoch"] for m in received[:at]} == {first["epoch"]}, "no new epoch before it"
    assert (again["type"], again["id"], again["recovered"]) == ("subscribed", 1, False)
    new_epoch = again["epoch"]
    assert new_epoch != first["epoch"]
    after = [(m["epoch"], m["offset"]) for m in received[at:]]
    acked_after = [(new_epoch, a["offset"]) for a in publisher.acks[acks_during:]]
    assert after == [p for p in acked_after if p[1] > again["offset"]], "then every later one"
    (await other.subscribe("after-outage"))  # subscriptions work again
    tasks[0].cancel()
    for c in (sub, other, publisher.client):
        c.close()


@pytest.mark.gen_test(timeout=90)
async def test_subscriber_whose_node_is_killed_recovers_on_another_node(
    processes: Callable[..., PullyProcess], cluster_redis: RedisServer
) -> None:
    """Every acknowledged message is delivered exactly once, across a SIGKILL of the
    subscriber's node and a reconnect (with ``since``) to the surviving node."""
    a = processes(redis_url=cluster_redis.url)
    b = processes(redis_url=cluster_redis.url)
    sub = await WSClient.connect(b.ws_url)
    await sub.subscribe("sturdy")
    publisher = SteadyPublisher(await WSClient.connect(a.ws_url), "sturdy", interval=0.01)
    task = asyncio.ensure_future(publisher.run())
    received = await sub.messages(30)
    b.signal(signal.SIGKILL)
    b.wait(10)
    while True:  # drain what was already on its way
        try:
            received.append((await sub.messages(1, timeout=1))[0])
        except (TimeoutError, Closed):
            break
    await asyncio.sleep(0.3)  # messages keep being published while the subscriber is away
    last = received[-1]
    back = await WSClient.connect(a.ws_url)
    since = {"offset": last["offset"], "epoch": last["epoch"]}
    await back.send({"type": "subscribe", "channel": "sturdy", "since": since, "id": "re"})
    while True:
        frame = await back.recv()
        if frame["type"] == "subscribed":
            assert frame["recovered"] is True
            break
        received.append(frame)
    received += [m for m in back.inbox if m["type"] == "message"]
    back.inbox.clear()
    await asyncio.sleep(0.3)
    publisher.stopped = True
    await task
    acked = [a["offset"] for a in publisher.acks]
    while len(received) < len(acked):
        received += await back.messages(1, timeout=5)
    offsets = [m["offset"] for m in received]
    assert not publisher.errors
    assert offsets == sorted(set(offsets)), "in order, no duplicate"
    assert offsets == acked, "exactly the acknowledged messages"


@pytest.mark.gen_test(timeout=60)
async def test_node_started_before_redis_serves_once_redis_appears(
    local_cluster: LocalCluster, fresh_redis: RedisServer
) -> None:
    fresh_redis.kill()
    node, url = await _add_unconnected(local_cluster, fresh_redis.url)
    assert node.health()["status"] == "unavailable"
    client = await WSClient.connect(url)
    reply = await client.publish("early", 1)
    assert (reply["type"], reply["code"]) == ("error", "unavailable")
    fresh_redis.start()
    await eventually(lambda: node.broker.connected, 10, "broker connected")
    await client.subscribe("early")
    assert (await client.publish("early", 2))["offset"] == 1
    assert (await client.messages(1))[0]["data"] == 2
    client.close()


async def _add_unconnected(cluster: LocalCluster, redis_url: str) -> tuple[Node, str]:
    """Like LocalCluster.add, without waiting for the broker (Redis is down)."""
    import tornado.netutil

    from pully_tornado.app import make_server

    from .conftest import make_settings

    node = Node(
        make_settings(
            node_id="early", redis_url=redis_url, store=f"file://{cluster.workdir}/early.json"
        )
    )
    await node.start()
    server = make_server(node)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets([sock])
    cluster.nodes.append((node, server, sock.getsockname()[1]))
    return node, f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_clients_with_reconnect_and_1012_then_exits_zero(
    processes: Callable[..., PullyProcess], sig: int
) -> None:
    node = processes(args=("--drain-timeout", "5"))
    clients = [await WSClient.connect(node.ws_url) for _ in range(3)]
    await clients[0].subscribe("drain")
    node.signal(sig)
    for c in clients:
        closed = await c.closed(timeout=10)
        assert closed.code == 1012
        assert closed.reason == "draining"
        assert {"type": "reconnect", "reason": "draining"} in c.inbox
    assert node.wait(timeout=15) == 0
    log = node.log()
    assert "draining 3 connections" in log
    assert "stopped" in log
