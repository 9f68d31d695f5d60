"""A node's memory follows what is live: subscribe/unsubscribe churn through channel names
leaves nothing behind, and churn is rate-limited per connection like publishing."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import tornado.httpclient
import websockets

from pully_tornado.node import Node

from .support import PullyProcess, WSClient, eventually

Connect = Callable[..., Awaitable[WSClient]]


async def churn(ws_url: str, pairs: int, prefix: str) -> None:
    """``pairs`` subscribe/unsubscribe pairs on distinct channels over one connection, sent in
    windows of 500 frames so the replies flow back while more are sent."""
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.recv()  # welcome
        window = 500
        for start in range(0, pairs, window):
            batch = range(start, min(pairs, start + window))
            for i in batch:
                await ws.send(b'{"type":"subscribe","channel":"%s:%d"}' % (prefix.encode(), i))
                await ws.send(b'{"type":"unsubscribe","channel":"%s:%d"}' % (prefix.encode(), i))
            for _ in range(2 * len(batch)):
                reply = orjson.loads(await ws.recv())
                assert reply["type"] in ("subscribed", "unsubscribed"), reply


async def gauge(base: str, name: str) -> float:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(base + "/metrics")
    match = re.search(rf"^{name} (\S+)$", response.body.decode(), re.M)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


@pytest.mark.usefixtures("app", "http_server")
class TestChannelStateFollowsSubscriptions:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"subscribe_rate": 0.0, "publish_rate": 0.0, "history_ttl": 1.0, "meta_ttl": 1.0}

    @pytest.mark.gen_test(timeout=60)
    async def test_churn_leaves_no_channel_state(self, ws_url: str, base: str, node: Node) -> None:
        await churn(ws_url, 3000, "churn")
        await eventually(lambda: node.broker.channel_count == 0, 10, "channel state dropped")
        assert len(node.hub) == 0
        assert await gauge(base, "pully_broker_channels") == 0
        assert await gauge(base, "pully_channels") == 0

    @pytest.mark.gen_test(timeout=60)
    async def test_published_channels_nobody_uses_go_after_meta_ttl(
        self, connect: Connect, base: str, node: Node
    ) -> None:
        client = await connect()
        for i in range(50):
            await client.publish(f"unwatched:{i}", i)
        await client.subscribe("watched")
        await client.publish("watched", "kept")
        if node.broker.kind == "memory":  # offsets and history live in this process
            assert node.broker.channel_count == 51
        # history and meta TTLs are 1 s: the unwatched channels go; the subscribed one stays
        await eventually(lambda: node.broker.channel_count == 1, 10, "expired channels dropped")
        assert await gauge(base, "pully_broker_channels") == 1
        await client.publish("watched", "still in order")
        [first, second] = await client.messages(2)
        assert (first["offset"], second["offset"]) == (1, 2)
        assert first["epoch"] == second["epoch"]

    @pytest.mark.gen_test(timeout=60)
    async def test_a_forgotten_channel_never_repeats_a_position(
        self, connect: Connect, node: Node
    ) -> None:
        """Once a channel's state is dropped (idle past ``meta_ttl``) its offsets restart in a
        new epoch: a client recovering from the old sequence is told ``recovered: false``,
        never given another message under a position it already saw."""
        client = await connect()
        old = await client.subscribe("brief")
        await client.publish("brief", "one")
        [seen] = await client.messages(1)
        await client.request({"type": "unsubscribe", "channel": "brief"})
        if node.broker.kind == "memory":
            await eventually(lambda: node.broker.channel_count == 0, 10, "brief forgotten")
        else:  # Redis forgets the channel's meta (PULLY_META_TTL, 1 s here)
            assert node.settings.redis_url is not None
            meta = redis.Redis.from_url(node.settings.redis_url)
            await eventually(lambda: not meta.exists("pully:meta:{brief}"), 10, "meta gone")
            meta.close()
        await (await connect()).publish("brief", "another one")
        since = {"offset": seen["offset"], "epoch": old["epoch"]}
        again = await client.subscribe("brief", since=since)
        assert again["recovered"] is False
        assert again["epoch"] != old["epoch"]


@pytest.mark.usefixtures("app", "http_server")
class TestSubscribeRateLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"subscribe_rate": 1.0, "subscribe_burst": 3}

    @pytest.mark.gen_test
    async def test_subscribes_and_unsubscribes_share_a_bucket_then_abuse_closes(
        self, connect: Connect, node: Node
    ) -> None:
        client = await connect()
        assert (await client.subscribe("a"))["type"] == "subscribed"
        assert (await client.request({"type": "unsubscribe", "channel": "a"}))[
            "type"
        ] == "unsubscribed"
        assert (await client.subscribe("b"))["type"] == "subscribed"
        refused = await client.request({"type": "subscribe", "channel": "c", "id": 9})
        assert (refused["type"], refused["code"], refused["id"]) == ("error", "rate_limited", 9)
        assert "PULLY_SUBSCRIBE_RATE" in refused["message"]
        assert (await client.publish("b", "publishes have their own bucket"))["type"] == "ack"
        for i in range(3):
            await client.send({"type": "unsubscribe", "channel": f"x{i}"})
        closed = await client.closed()
        assert (closed.code, closed.reason) == (4029, "rate limit exceeded")
        await eventually(lambda: node.disconnects["rate_limited"] == 1, 5)


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match
    return int(match.group(1)) * 1024


@pytest.mark.slow
def test_node_memory_stays_flat_under_churn(
    processes: Callable[..., PullyProcess],
) -> None:
    """The issue's measurement, smaller: each round of 20,000 subscribe/unsubscribe pairs on new
    channel names grew a node by ~17 MB, never given back. Now a second round costs nothing
    the first did not (the allocator keeps what the first round touched)."""
    node = processes(env={"PULLY_SUBSCRIBE_RATE": "0"})
    asyncio.run(churn(node.ws_url, 20_000, "warm"))
    gc.collect()
    assert node.proc is not None
    after_first = rss_bytes(node.proc.pid)
    for round_ in range(2):
        asyncio.run(churn(node.ws_url, 20_000, f"round{round_}"))
    grown = rss_bytes(node.proc.pid) - after_first
    assert grown < 6 * 1024 * 1024, f"RSS grew {grown / 1e6:.1f} MB over 40,000 more pairs"
