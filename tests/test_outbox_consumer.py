"""The PostgreSQL outbox consumer on a real, throwaway PostgreSQL cluster (tests/pg_support.py):
rows delivered once and in order, LISTEN wakes it, the poll is the fallback, a bad row is
dead-lettered while the rows behind it go out, a crashed database comes back with nothing lost,
and two real `pully serve` nodes on a real Redis share the partitions."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import tornado.httpclient

from pully_tornado.consumers.outbox_schema import init, init_sql
from pully_tornado.errors import ConfigError
from pully_tornado.node import Node
from pully_tornado.settings import Settings

from .conftest import make_settings
from .pg_support import PostgresCluster, postgres_cluster
from .support import PullyProcess, RedisServer, WSClient, eventually

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        asyncio.run(init(cluster.dsn))
        yield cluster


@pytest.fixture
def extra() -> dict[str, Any]:
    """Parametrize a test with it to change the node's settings."""
    return {}


@pytest.fixture
def settings(pg: PostgresCluster, extra: dict[str, Any], tmp_path: Path) -> Settings:
    return make_settings(
        store=f"file://{tmp_path}/relationships.json",
        functions_dir=str(tmp_path / "functions"),
        **{"outbox_dsn": pg.dsn, "outbox_poll_interval": 0.2, **extra},
    )


@asynccontextmanager
async def database(pg: PostgresCluster) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(pg.dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


async def insert(
    pg: PostgresCluster, rows: list[tuple[str, Any]], table: str = "pully_outbox"
) -> None:
    """``rows`` of (channel, data) in ONE transaction, as an app writes them."""
    async with database(pg) as conn, conn.transaction():
        await conn.executemany(
            f"INSERT INTO {table} (channel, data) VALUES ($1, $2::jsonb)",
            [(channel, json.dumps(data)) for channel, data in rows],
        )


async def count(pg: PostgresCluster, table: str) -> int:
    """Rows left in ``table`` once the consumer's transaction in hand committed (messages go out
    before their rows' DELETE commits): polls up to 10 s for 0."""
    async with database(pg) as conn:
        for _ in range(100):
            left = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            if left == 0:
                break
            await asyncio.sleep(0.1)
        return left


async def subscriber(connect: Connect, channel: str) -> WSClient:
    client = await connect()
    await client.subscribe(channel)
    return client


async def health(base: str) -> dict[str, Any]:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        base + "/healthz", raise_error=False
    )
    return dict(orjson.loads(response.body))


@pytest.mark.gen_test(timeout=60)
async def test_one_transaction_of_rows_is_delivered_once_in_order(
    pg: PostgresCluster, connect: Connect, base: str, node: Node
) -> None:
    orders, audit = await connect(), await connect()
    await orders.subscribe("orders")
    await audit.subscribe("audit")
    await insert(pg, [("orders" if n % 2 else "audit", {"n": n}) for n in range(200)])
    got_orders = await orders.messages(100)
    got_audit = await audit.messages(100)
    assert [m["data"]["n"] for m in got_orders] == list(range(1, 200, 2))
    assert [m["data"]["n"] for m in got_audit] == list(range(0, 200, 2))
    await orders.no_message()
    await audit.no_message()
    assert await count(pg, "pully_outbox") == 0
    consumer = (await health(base))["consumers"]["outbox"]
    assert consumer["state"] == "connected"
    assert (consumer["consumed"], consumer["dead_lettered"]) == (200, 0)
    metrics = (await tornado.httpclient.AsyncHTTPClient().fetch(base + "/metrics")).body.decode()
    assert 'pully_consumer_messages_total{consumer="outbox",result="consumed"} 200.0' in metrics
    assert 'pully_consumer_connected{consumer="outbox"} 1.0' in metrics
    assert 'pully_consumer_lag_seconds{consumer="outbox"}' in metrics


@pytest.mark.parametrize("extra", [{"outbox_poll_interval": 60.0}])
@pytest.mark.gen_test(timeout=30)
async def test_notify_wakes_the_consumer_long_before_its_poll(
    pg: PostgresCluster, connect: Connect, node: Node
) -> None:
    client = await subscriber(connect, "wake")
    await eventually(lambda: node.consumers[0].state == "connected", 10, "outbox connected")
    await asyncio.sleep(0.3)  # its first round found nothing: now it waits up to 60 s
    await insert(pg, [("wake", {"hello": 1})])
    [message] = await client.messages(1, timeout=10)
    assert message["data"] == {"hello": 1}


@pytest.mark.parametrize("extra", [{"outbox_table": "quiet_outbox"}])
@pytest.mark.gen_test(timeout=30)
async def test_without_notify_the_poll_delivers(pg: PostgresCluster, connect: Connect) -> None:
    async with database(pg) as conn:
        await conn.execute(init_sql("quiet_outbox"))
        await conn.execute("DROP TRIGGER quiet_outbox_notify ON quiet_outbox")
    client = await subscriber(connect, "polled")
    await insert(pg, [("polled", {"n": n}) for n in range(3)], table="quiet_outbox")
    assert [m["data"]["n"] for m in await client.messages(3)] == [0, 1, 2]


@pytest.mark.parametrize("extra", [{"max_message_bytes": 1000}])
@pytest.mark.gen_test(timeout=30)
async def test_bad_rows_are_dead_lettered_and_the_rows_behind_them_delivered(
    pg: PostgresCluster, connect: Connect, base: str
) -> None:
    client = await subscriber(connect, "shop")
    rows = [("shop", {"n": 1}), ("no spaces allowed", {"n": 2}), ("shop", {"big": "x" * 2000}),
            ("shop", {"n": 3})]  # fmt: skip
    await insert(pg, rows)
    assert [m["data"]["n"] for m in await client.messages(2)] == [1, 3]
    await client.no_message()
    assert await count(pg, "pully_outbox") == 0  # the batch committed
    async with database(pg) as conn:
        failed = await conn.fetch("SELECT channel, error FROM pully_outbox_failed ORDER BY id")
        await conn.execute("DELETE FROM pully_outbox_failed")
    assert [r["channel"] for r in failed] == ["no spaces allowed", "shop"]
    assert failed[0]["error"].startswith("invalid_channel: channel name 'no spaces allowed'")
    assert failed[1]["error"].startswith("too_large: data is 2")
    consumer = (await health(base))["consumers"]["outbox"]
    assert (consumer["consumed"], consumer["dead_lettered"]) == (2, 2)


@pytest.mark.gen_test(timeout=30)
async def test_a_replayed_row_with_its_idempotency_key_is_published_once(
    pg: PostgresCluster, connect: Connect, base: str
) -> None:
    """What a crash between the publish and the commit leaves: the same row (key) again."""
    client = await subscriber(connect, "replay")
    async with database(pg) as conn:
        await conn.executemany(
            "INSERT INTO pully_outbox (channel, data, idempotency_key) VALUES ($1, $2, $3)",
            [("replay", json.dumps(n), key) for n, key in ((1, "a"), (2, "b"), (1, "a"),
                                                             (3, "k" * 65))],
        )  # fmt: skip
    assert [m["data"] for m in await client.messages(2)] == [1, 2]
    await client.no_message()
    assert await count(pg, "pully_outbox") == 0
    async with database(pg) as conn:
        [failed] = await conn.fetch("SELECT error FROM pully_outbox_failed")
        await conn.execute("DELETE FROM pully_outbox_failed")
    assert failed["error"].startswith("bad_request: field 'idempotency_key'")
    consumer = (await health(base))["consumers"]["outbox"]
    assert (consumer["consumed"], consumer["dead_lettered"]) == (3, 1)


@pytest.mark.gen_test(timeout=120)
async def test_a_crashed_database_comes_back_and_nothing_is_lost(
    pg: PostgresCluster, connect: Connect, base: str, node: Node
) -> None:
    client = await subscriber(connect, "crash")
    await eventually(lambda: node.consumers[0].state == "connected", 10, "outbox connected")
    holder = await asyncpg.connect(pg.dsn, timeout=10)
    # the test holds partition 0's lock: the rows stay pending until the crash releases it
    await holder.execute("SELECT pg_advisory_lock(hashtext('pully_outbox'), 0)")
    await insert(pg, [("crash", {"n": n}) for n in range(50)])
    await client.no_message(0.5)
    await asyncio.to_thread(pg.stop, "immediate")
    holder.terminate()
    try:
        down = await eventually(
            lambda: node.consumers[0].state == "reconnecting", 15, "the consumer notices"
        )
        assert down
        seen = (await health(base))["consumers"]["outbox"]
        assert seen["state"] == "reconnecting" and seen["last_error"]
        assert (await health(base))["status"] == "ok"  # the node still serves its clients
    finally:
        await asyncio.to_thread(pg.start)
    got = await client.messages(50, timeout=60)
    assert sorted(m["data"]["n"] for m in got) == list(range(50))
    assert [m["data"]["n"] for m in got] == list(range(50))
    after = (await health(base))["consumers"]["outbox"]
    assert after["state"] == "connected" and after["reconnects"] >= 1
    assert await count(pg, "pully_outbox") == 0


@pytest.mark.gen_test(timeout=120)
async def test_two_nodes_share_the_partitions_without_duplicates(
    pg: PostgresCluster, fresh_redis: RedisServer, processes: Callable[..., PullyProcess]
) -> None:
    table = "shared_outbox"
    async with database(pg) as conn:
        await conn.execute(init_sql(table))
    env = {"PULLY_OUTBOX_DSN": pg.dsn, "PULLY_OUTBOX_TABLE": table,
           "PULLY_OUTBOX_PARTITIONS": "4", "PULLY_OUTBOX_BATCH_SIZE": "10"}  # fmt: skip
    nodes = [processes(redis_url=fresh_redis.url, env=env) for _ in range(2)]
    client = await WSClient.connect(nodes[0].ws_url)
    channels = [f"room{i}" for i in range(8)]
    for channel in channels:
        await client.subscribe(channel)
    async with database(pg) as conn, conn.transaction():
        await conn.executemany(
            f"INSERT INTO {table} (channel, data, partition) VALUES ($1, $2::jsonb, $3)",
            [(channels[n % 8], json.dumps({"n": n}), n % 8 % 4) for n in range(400)],
        )
    got = await client.messages(400, timeout=60)
    await client.no_message(1.0)
    numbers = [m["data"]["n"] for m in got]
    assert sorted(numbers) == list(range(400))  # all delivered, none twice
    for channel in channels:
        mine = [m["data"]["n"] for m in got if m["channel"] == channel]
        assert mine == sorted(mine), f"{channel} out of order"
    assert await count(pg, table) == 0
    consumed = [n.health()["consumers"]["outbox"]["consumed"] for n in nodes]  # type: ignore[index]
    assert sum(consumed) == 400, consumed


def example(name: str) -> str:
    text = (Path(__file__).parent.parent / "docs" / "consumers.md").read_text()
    return text.split(f"<!-- {name} -->\n```", 1)[1].split("\n", 1)[1].split("```", 1)[0]


@pytest.mark.gen_test(timeout=30)
async def test_the_docs_examples_reach_subscribers(pg: PostgresCluster, connect: Connect) -> None:
    client = await subscriber(connect, "orders")
    namespace: dict[str, Any] = {}
    exec(example("outbox-python"), namespace)  # the page's code, as written
    async with database(pg) as conn:
        await conn.execute("DROP TABLE IF EXISTS orders")
        await conn.execute(example("outbox-sql"))
        order = await namespace["place_order"](conn, "cake")
    got = await client.messages(2)
    assert [m["data"] for m in got] == [
        {"item": "tea", "order": 1},
        {"item": "cake", "order": order},
    ]


VETO = """
def handler(event, context):
    if "veto" in event["data"]:
        raise ValueError("vetoed")
    return {"data": event["data"].upper()}
"""


@pytest.mark.gen_test(timeout=60)
async def test_functions_run_and_a_rejected_row_is_dead_lettered(
    pg: PostgresCluster, connect: Connect, base: str, node: Node
) -> None:
    from .test_functions import relate, write_function

    write_function(node, "veto", VETO)
    await relate(
        base, {"channels": {"fn": ["veto"]}, "functions": {"veto": {"on_error": "reject"}}}
    )
    client = await subscriber(connect, "fn")
    await insert(pg, [("fn", "hello"), ("fn", "veto this"), ("fn", "bye")])
    assert [m["data"] for m in await client.messages(2, timeout=20)] == ["HELLO", "BYE"]
    assert await count(pg, "pully_outbox") == 0  # the batch committed
    async with database(pg) as conn:
        [failed] = await conn.fetch("SELECT data, error FROM pully_outbox_failed")
        await conn.execute("DELETE FROM pully_outbox_failed")
    assert json.loads(failed["data"]) == "veto this"
    assert failed["error"].startswith("function_failed: function 'veto' failed")


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("PULLY_OUTBOX_DSN", "mysql://db/app", "must be a postgresql:// URL"),
        ("PULLY_OUTBOX_TABLE", "Bad;Name", "must be [schema.]name"),
        ("PULLY_OUTBOX_PARTITIONS", "0", "must be between 1 and 1024"),
        ("PULLY_OUTBOX_POLL_INTERVAL", "0", "must be a number >= 0.05"),
        ("PULLY_AMQP_URL", "http://rabbit", "must be an amqp:// or amqps:// URL"),
        ("PULLY_AMQP_PREFETCH", "0", "must be between 1 and 65535"),
    ],
)
def test_bad_consumer_settings_name_the_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load({variable: value})
    assert caught.value.source == variable
    assert problem in caught.value.problem


def test_the_client_libraries_load_only_when_configured() -> None:
    code = (
        "import sys, pully_tornado.app, pully_tornado.cli;"
        "print(sorted(m for m in ('asyncpg', 'aio_pika') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize(
    ("library", "variable", "value"),
    [("asyncpg", "PULLY_OUTBOX_DSN", "postgresql://db/app"),
     ("aio_pika", "PULLY_AMQP_URL", "amqp://rabbit/")],
)  # fmt: skip
def test_a_missing_library_is_a_config_error(
    library: str, variable: str, value: str, tmp_path: Path
) -> None:
    code = (  # the library made unimportable in that process only, as if not installed
        f"import sys; sys.modules[{library!r}] = None\nfrom pully_tornado.cli import main\nmain()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", "--port", "0", "--store", f"file://{tmp_path}/r.json"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, variable: value},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"invalid {variable}: needs {library}: pip install" in result.stderr
