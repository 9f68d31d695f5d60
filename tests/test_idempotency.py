"""Idempotent publish on both engines: a repeat of (channel, key) within the TTL publishes
nothing and gets the first ack, over WebSocket and HTTP; keys are per channel and expire; two
nodes racing with one key publish once; the clients reuse their key when they retry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import tornado.httpclient
import tornado.ioloop

import pully_tornado.broker.memory
from pully_tornado.client import Pully
from pully_tornado.node import Node

from .admin_http import call
from .conftest import LocalCluster
from .support import RedisServer, WSClient, eventually

Connect = Callable[..., Awaitable[WSClient]]
served = pytest.mark.usefixtures("app", "http_server")


async def publish(client: WSClient, channel: str, data: Any, key: Any) -> dict[str, Any]:
    frame = {"type": "publish", "channel": channel, "data": data, "idempotency_key": key}
    return await client.request(frame)


@served
@pytest.mark.gen_test(timeout=20)
async def test_a_repeat_publishes_nothing_and_gets_the_first_ack(
    engine: str, connect: Connect
) -> None:
    publisher, reader = await connect(), await connect()
    await reader.subscribe("orders")
    first = await publish(publisher, "orders", {"n": 1}, "order-1")
    assert first["type"] == "ack" and first["offset"] == 1
    again = await publish(publisher, "orders", {"n": "changed"}, "order-1")
    assert (again["type"], again["offset"]) == ("ack", 1)
    other = await publish(publisher, "orders", {"n": 2}, "order-2")
    assert other["offset"] == 2
    assert [m["data"] for m in await reader.messages(2)] == [{"n": 1}, {"n": 2}]
    await reader.no_message()
    # keys are per channel: the same key elsewhere publishes
    assert (await publish(publisher, "invoices", 1, "order-1"))["offset"] == 1
    # a publish without a key is never deduplicated
    assert (await publisher.publish("orders", {"n": 1}))["offset"] == 3


@served
@pytest.mark.gen_test(timeout=20)
async def test_http_publish_repeats_return_the_first_offset_and_epoch(
    engine: str, base: str, connect: Connect
) -> None:
    reader = await connect()
    await reader.subscribe("audit")
    body = {"channel": "audit", "data": "x", "idempotency_key": "k"}
    status, first = await call(base + "/publish", "POST", body)
    assert status == 200 and first["offset"] == 1, first
    status, again = await call(base + "/publish", "POST", {**body, "data": "y"})
    assert status == 200 and again == first
    [message] = await reader.messages(1)
    assert message["data"] == "x"
    await reader.no_message()


@served
@pytest.mark.parametrize(
    "key",
    ["", "k" * 65, 7, ["a"], {"k": 1}, True],
)
@pytest.mark.gen_test(timeout=20)
async def test_a_bad_key_is_refused_and_the_connection_survives(
    key: Any, connect: Connect, base: str
) -> None:
    client = await connect()
    reply = await publish(client, "c", 1, key)
    assert reply["type"] == "error" and reply["code"] == "bad_request", reply
    assert "idempotency_key" in reply["message"]
    status, answer = await call(base + "/publish", "POST", {"channel": "c", "data": 1,
                                                             "idempotency_key": key})  # fmt: skip
    assert status == 400 and "idempotency_key" in answer["message"], answer
    assert (await publish(client, "c", 1, "k" * 64))["offset"] == 1  # 64 is the limit


@served
@pytest.mark.parametrize("settings_overrides", [{"idempotency_ttl": 1.0}])
@pytest.mark.gen_test(timeout=20)
async def test_a_key_is_forgotten_after_its_ttl(engine: str, connect: Connect) -> None:
    client = await connect()
    assert (await publish(client, "t", 1, "once"))["offset"] == 1
    assert (await publish(client, "t", 1, "once"))["offset"] == 1
    await asyncio.sleep(2.1)  # Redis expires keys with 1 s resolution
    assert (await publish(client, "t", 1, "once"))["offset"] == 2


@served
@pytest.mark.gen_test(timeout=30)
async def test_the_channel_option_sets_the_ttl(engine: str, connect: Connect, base: str) -> None:
    doc = {"channels": {}, "options": {"brief:*": {"idempotency_ttl": 1}}}
    status, reply = await call(base + "/relationships", "POST", doc)
    assert status == 200, reply
    client = await connect()
    for channel in ("brief:a", "long"):
        assert (await publish(client, channel, 1, "k"))["offset"] == 1
    await asyncio.sleep(2.1)
    assert (await publish(client, "brief:a", 1, "k"))["offset"] == 2  # its option: 1 s
    assert (await publish(client, "long", 1, "k"))["offset"] == 1  # the default: 300 s


@served
@pytest.mark.parametrize("engine", ["redis"])
@pytest.mark.gen_test(timeout=20)
async def test_redis_keeps_the_key_beside_the_channel_for_its_ttl(
    engine: str, connect: Connect, redis_server: RedisServer
) -> None:
    client = await connect()
    ack = await publish(client, "room", 1, "abc")
    redis = redis_server.client()
    stored = redis.get("pully:idem:{room}:abc")
    assert stored is not None and stored.decode().startswith(f"{ack['offset']} ")
    assert 295 <= int(redis.ttl("pully:idem:{room}:abc")) <= 300
    # the meta and history of the channel are untouched by a repeat
    before = redis.hgetall("pully:meta:{room}")
    await publish(client, "room", 2, "abc")
    assert redis.hgetall("pully:meta:{room}") == before
    assert redis.xlen("pully:hist:{room}") == 1


@served
@pytest.mark.parametrize("engine", ["memory"])
@pytest.mark.gen_test(timeout=20)
async def test_the_memory_engine_bounds_its_keys_and_counts_what_it_forgets(
    engine: str, connect: Connect, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pully_tornado.broker.memory, "MAX_IDEMPOTENCY_KEYS", 3)
    client = await connect()
    for n in range(5):
        assert (await publish(client, "m", n, f"k{n}"))["offset"] == n + 1
    assert (await publish(client, "m", 0, "k4"))["offset"] == 5  # still remembered
    assert (await publish(client, "m", 0, "k0"))["offset"] == 6  # forgotten early
    response = await tornado.httpclient.AsyncHTTPClient().fetch(base + "/metrics")
    assert "pully_idempotency_keys_forgotten_total 3.0" in response.body.decode()


@pytest.mark.gen_test(timeout=30)
async def test_two_nodes_racing_with_one_key_publish_once(
    local_cluster: LocalCluster, cluster_redis: RedisServer
) -> None:
    urls = [(await local_cluster.add(redis_url=cluster_redis.url))[1] for _ in range(2)]
    reader = await WSClient.connect(urls[0])
    await reader.subscribe("race")
    clients = [await WSClient.connect(url) for url in urls for _ in range(3)]
    for round_ in range(20):
        acks = await asyncio.gather(
            *(publish(c, "race", {"round": round_, "by": i}, f"r{round_}")
              for i, c in enumerate(clients))
        )  # fmt: skip
        assert {a["offset"] for a in acks} == {round_ + 1}, acks
    got = await reader.messages(20)
    assert [m["data"]["round"] for m in got] == list(range(20))
    await reader.no_message()


@pytest.mark.gen_test(timeout=60)
async def test_the_python_client_retries_unavailable_with_the_same_key(
    io_loop: tornado.ioloop.IOLoop, fresh_redis: RedisServer, local_cluster: LocalCluster
) -> None:
    node, url = await local_cluster.add(redis_url=fresh_redis.url)
    async with Pully(url, timeout=30) as client:
        assert await client.publish("r", 0, idempotency_key="fixed") == 1
        assert await client.publish("r", "again", idempotency_key="fixed") == 1
        fresh_redis.kill()
        await eventually(lambda: not node.broker.connected, 10, "redis gone")
        sent = asyncio.ensure_future(client.publish("r", 1))
        await eventually(lambda: node.publisher.results["unavailable"] >= 2, 15, "refusals")
        assert not sent.done()
        fresh_redis.start()  # empty: the channel starts a new epoch at offset 1
        assert await sent == 1
        history = await client.history("r")
        assert [m.data for m in history.messages] == [1]


@served
@pytest.mark.gen_test(timeout=30)
async def test_a_client_resend_after_a_lost_ack_is_published_once(
    node: Node, connect: Connect, ws_url: str
) -> None:
    """What a client does when its connection drops between the publish and the ack: send the
    same frame again on a new connection. The node answers with the first offset."""
    reader = await connect()
    await reader.subscribe("lost")
    first = await connect()
    frame = {"type": "publish", "channel": "lost", "data": "once", "idempotency_key": "k1"}
    await first.send({**frame, "id": 1})
    first.close()  # gone before reading the ack
    await eventually(lambda: node.publisher.results["ok"] >= 1, 10, "the first publish")
    again = await connect()
    reply = await again.request(frame)
    assert (reply["type"], reply["offset"]) == ("ack", 1)
    [message] = await reader.messages(1)
    assert message["data"] == "once"
    await reader.no_message()
