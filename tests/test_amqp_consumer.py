"""The RabbitMQ consumer against a real, throwaway RabbitMQ node (tests/rabbit_support.py):
messages delivered in order and acked, invalid ones rejected to the dead-letter exchange and
counted, a publish failing as unavailable left unacked and redelivered, a broker restart
survived."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import orjson
import pytest
import tornado.httpclient

from pully_tornado.node import Node
from pully_tornado.settings import Settings

from .conftest import make_settings
from .rabbit_support import RabbitNode, rabbit_node
from .support import RedisServer, WSClient, eventually
from .test_outbox_consumer import subscriber

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")
T = TypeVar("T")
_names = itertools.count()


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitNode]:
    with rabbit_node() as node:
        yield node


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own (fixtures run before the test's loop does)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(60)


async def declare(url: str, queue: str) -> None:
    """The app's queue, durable, dead-lettering into ``<queue>.dead``."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(f"{queue}.dlx", aio_pika.ExchangeType.FANOUT, durable=True)
        dead = await channel.declare_queue(f"{queue}.dead", durable=True)
        await dead.bind(f"{queue}.dlx")
        await channel.declare_queue(
            queue, durable=True, arguments={"x-dead-letter-exchange": f"{queue}.dlx"}
        )


@pytest.fixture
def queue(rabbit: RabbitNode) -> str:
    name = f"events{next(_names)}"
    blocking(declare(rabbit.url, name))
    return name


@pytest.fixture
def redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer | None]:
    """The memory engine (None), or with ``indirect`` True a redis-server of the test's own."""
    if not getattr(request, "param", False):
        yield None
        return
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def settings(rabbit: RabbitNode, queue: str, redis: RedisServer | None, tmp_path: Path) -> Settings:
    return make_settings(
        store=f"file://{tmp_path}/relationships.json", functions_dir=str(tmp_path / "functions"),
        amqp_url=rabbit.url, amqp_queue=queue, amqp_prefetch=10,
        redis_url=None if redis is None else redis.url,
    )  # fmt: skip


async def send(url: str, queue: str, *bodies: bytes) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        for body in bodies:
            message = aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=time.time() - 5,  # "sent 5 s ago"
            )
            await channel.default_exchange.publish(message, routing_key=queue)


async def held(rabbit: RabbitNode, queue: str) -> int:
    """Messages in ``queue``, ready or delivered and not yet acknowledged."""
    listed = await asyncio.to_thread(rabbit.ctl, "list_queues", "name", "messages", "--quiet")
    counts = dict(line.split("\t") for line in listed.stdout.splitlines() if "\t" in line)
    return int(counts[queue])


async def depth(rabbit: RabbitNode, queue: str) -> tuple[int, list[bytes]]:
    """Messages left in ``queue`` once none is unacknowledged (bounded wait), and the bodies
    that reached ``<queue>.dead`` (taken)."""
    for _ in range(100):
        if (left := await held(rabbit, queue)) == 0:
            break
        await asyncio.sleep(0.1)
    connection = await aio_pika.connect(rabbit.url, timeout=10)
    async with connection:
        channel = await connection.channel()
        dead = await channel.get_queue(f"{queue}.dead")
        bodies = []
        while (message := await dead.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body)
        return left, bodies


async def consumer_health(base: str) -> dict[str, Any]:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        base + "/healthz", raise_error=False
    )
    return dict(orjson.loads(response.body)["consumers"]["amqp"])


def message(channel: str, data: Any, **extra: Any) -> bytes:
    return orjson.dumps({"channel": channel, "data": data, **extra})


@pytest.mark.gen_test(timeout=60)
async def test_messages_are_delivered_in_order_then_acked(
    rabbit: RabbitNode, queue: str, connect: Connect, base: str
) -> None:
    client = await subscriber(connect, "feed")
    await send(rabbit.url, queue, *(message("feed", {"n": n}) for n in range(30)))
    assert [m["data"]["n"] for m in await client.messages(30)] == list(range(30))
    await client.no_message()
    health = await consumer_health(base)
    assert health["state"] == "connected"
    assert (health["consumed"], health["dead_lettered"]) == (30, 0)
    metrics = (await tornado.httpclient.AsyncHTTPClient().fetch(base + "/metrics")).body.decode()
    assert 'pully_consumer_messages_total{consumer="amqp",result="consumed"} 30.0' in metrics
    lag = re.search(r'pully_consumer_lag_seconds\{consumer="amqp"\} (\S+)', metrics)
    assert lag is not None and 3.0 < float(lag[1]) < 600  # from their timestamp, 5 s back
    assert await depth(rabbit, queue) == (0, [])  # all acked, none dead


@pytest.mark.gen_test(timeout=60)
async def test_invalid_messages_are_rejected_to_the_dead_letter_exchange(
    rabbit: RabbitNode, queue: str, connect: Connect, base: str
) -> None:
    client = await subscriber(connect, "feed")
    bad = [b"not json", b"[1, 2]", orjson.dumps({"data": 1}), message("no spaces", 1),
           message("feed", 1, idempotency_key=7)]  # fmt: skip
    await send(rabbit.url, queue, *bad, message("feed", "after"))
    [delivered] = await client.messages(1)
    assert delivered["data"] == "after"
    assert await depth(rabbit, queue) == (0, bad)
    health = await consumer_health(base)
    assert (health["consumed"], health["dead_lettered"]) == (1, 5)
    metrics = (await tornado.httpclient.AsyncHTTPClient().fetch(base + "/metrics")).body.decode()
    assert 'pully_consumer_messages_total{consumer="amqp",result="dead_lettered"} 5.0' in metrics


@pytest.mark.gen_test(timeout=60)
async def test_a_redelivered_message_with_its_key_is_published_once(
    rabbit: RabbitNode, queue: str, connect: Connect, base: str
) -> None:
    client = await subscriber(connect, "feed")
    keyed = [message("feed", n, idempotency_key=f"m{n % 2}") for n in range(4)]
    await send(rabbit.url, queue, *keyed)
    assert [m["data"] for m in await client.messages(2)] == [0, 1]
    await client.no_message()
    assert await depth(rabbit, queue) == (0, [])  # the repeats were acked, not dead
    assert (await consumer_health(base))["consumed"] == 4


@pytest.mark.parametrize("redis", [True], indirect=True)
@pytest.mark.gen_test(timeout=90)
async def test_a_publish_failing_as_unavailable_is_redelivered_later(
    rabbit: RabbitNode, queue: str, redis: RedisServer, node: Node, base: str
) -> None:
    redis.kill()
    await eventually(lambda: not node.broker.connected, 15, "the node notices redis is gone")
    await send(rabbit.url, queue, message("later", {"kept": True}))
    await eventually(lambda: node.consumers[0].counts["failed"] >= 2, 30, "retries")
    assert node.consumers[0].counts["consumed"] == 0
    redis.start()
    await eventually(lambda: node.consumers[0].counts["consumed"] == 1, 60, "the redelivery")
    history = await node.broker.history("later", limit=10)
    assert [orjson.loads(m)["data"] for m in history.messages] == [{"kept": True}]
    assert await depth(rabbit, queue) == (0, [])
    assert (await consumer_health(base))["dead_lettered"] == 0


@pytest.mark.gen_test(timeout=180)
async def test_a_broker_restart_is_survived(
    rabbit: RabbitNode, queue: str, connect: Connect, base: str, node: Node
) -> None:
    client = await subscriber(connect, "feed")
    await eventually(lambda: node.consumers[0].state == "connected", 15, "connected")
    await asyncio.to_thread(rabbit.stop)
    try:
        await eventually(lambda: node.consumers[0].state == "reconnecting", 15, "noticed")
        down = await consumer_health(base)
        assert down["state"] == "reconnecting" and down["last_error"]
    finally:
        await asyncio.to_thread(rabbit.start)
    await eventually(lambda: node.consumers[0].state == "connected", 60, "reconnected")
    await send(rabbit.url, queue, message("feed", "back"))
    [delivered] = await client.messages(1, timeout=30)
    assert delivered["data"] == "back"
    assert (await consumer_health(base))["reconnects"] >= 1


@pytest.mark.gen_test(timeout=60)
async def test_the_docs_example_reaches_subscribers(
    rabbit: RabbitNode, queue: str, connect: Connect
) -> None:
    text = (Path(__file__).parent.parent / "docs" / "consumers.md").read_text()
    code = text.split("<!-- amqp-python -->\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # the page's code, as written
    client = await subscriber(connect, "orders")
    # the page declares the same queue, exchange and dead-letter queue as the fixture did
    await namespace["setup_and_send"](rabbit.url, queue)
    [got] = await client.messages(1)
    assert got["data"] == {"item": "tea"}
    assert await depth(rabbit, queue) == (0, [])
