"""Protective limits, each with its wire error or close code: publish rate, subscriptions per
connection, connections per node, and slow consumers (bounded memory)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import tornado.httpclient
import tornado.websocket

from .rawws import CLOSE, TEXT, RawWebSocket, close_payload, frame
from .support import PullyProcess, WSClient, eventually

Connect = Callable[..., Awaitable[WSClient]]


@pytest.mark.usefixtures("app", "http_server")
class TestPublishRate:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"publish_rate": 5.0, "publish_burst": 3}

    @pytest.mark.gen_test
    async def test_bursts_pass_then_rate_limited_then_closed_on_abuse(
        self, connect: Connect
    ) -> None:
        c = await connect()
        for i in range(10):
            await c.send({"type": "publish", "channel": "flood", "data": i, "id": i})
        replies = [await c.recv() for _ in range(6)]
        assert [r["type"] for r in replies[:3]] == ["ack"] * 3
        assert [(r["type"], r["code"], r["id"]) for r in replies[3:]] == [
            ("error", "rate_limited", i) for i in (3, 4, 5)
        ]
        assert "PULLY_PUBLISH_RATE" in replies[3]["message"]
        closed = await c.closed()
        assert (closed.code, closed.reason) == (4029, "rate limit exceeded")

    @pytest.mark.gen_test(timeout=20)
    async def test_publishing_within_the_rate_is_never_limited(self, connect: Connect) -> None:
        c = await connect()
        for i in range(8):
            assert (await c.publish("steady", i))["type"] == "ack"
            await asyncio.sleep(0.25)  # 4/s under a 5/s limit


@pytest.mark.usefixtures("app", "http_server")
class TestSubscriptionLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"max_subscriptions": 3}

    @pytest.mark.gen_test
    async def test_subscriptions_per_connection_are_capped(self, connect: Connect) -> None:
        c = await connect()
        for name in ("a", "b", "c"):
            await c.subscribe(name)
        await c.subscribe("a")  # already subscribed: not a new one
        reply = await c.request({"type": "subscribe", "channel": "d"})
        assert (reply["type"], reply["code"]) == ("error", "rate_limited")
        assert "PULLY_MAX_SUBSCRIPTIONS" in reply["message"]
        await c.request({"type": "unsubscribe", "channel": "b"})
        assert (await c.subscribe("d"))["type"] == "subscribed"


@pytest.mark.usefixtures("app", "http_server")
class TestConnectionLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"max_connections": 2}

    @pytest.mark.gen_test
    async def test_a_full_node_refuses_the_handshake_with_503(
        self, connect: Connect, ws_url: str
    ) -> None:
        first, _ = await connect(), await connect()
        with pytest.raises(tornado.httpclient.HTTPClientError) as info:
            await tornado.websocket.websocket_connect(ws_url)
        assert info.value.code == 503
        assert info.value.response is not None
        body = orjson.loads(info.value.response.body)
        assert body["code"] == "unavailable" and "PULLY_MAX_CONNECTIONS" in body["message"]
        first.close()
        again = None
        for _ in range(50):  # the slot frees once the server has seen the close
            try:
                again = await connect()
                break
            except tornado.httpclient.HTTPClientError:
                await asyncio.sleep(0.05)
        assert again is not None


class RawSubscriber(RawWebSocket):
    """A WebSocket client on a plain socket that subscribes and then never reads again."""

    def __init__(self, port: int, channel: str) -> None:
        super().__init__(port, rcvbuf=4096)
        self.send_json({"type": "subscribe", "channel": channel})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.gen_test(timeout=120)
async def test_slow_consumer_is_dropped_and_memory_stays_bounded(
    processes: Callable[..., PullyProcess],
) -> None:
    node = processes(
        env={"PULLY_MAX_BUFFER_BYTES": str(1024 * 1024), "PULLY_PUBLISH_RATE": "0",
             "PULLY_PING_INTERVAL": "25", "PULLY_PING_TIMEOUT": "20"}
    )  # fmt: skip
    assert node.proc is not None
    healthy, publisher = await WSClient.connect(node.ws_url), await WSClient.connect(node.ws_url)
    await healthy.subscribe("firehose")
    slow = RawWebSocket(node.port, rcvbuf=4096)  # a small window: the node's output piles up
    slow.send_json({"type": "subscribe", "channel": "firehose"})  # and it stops reading here
    await eventually(lambda: (node.health() or {}).get("subscriptions") == 2, 5, "both subscribed")
    rss_before = rss_mb(node.proc.pid)
    chunk = "x" * 60_000
    count = 850  # ~51 MB through the node
    received = 0

    async def read_all() -> None:
        nonlocal received
        while received < count:
            received += len(await healthy.messages(1, timeout=30))

    reader = asyncio.ensure_future(read_all())
    peak = rss_before
    for i in range(count):
        ack = await publisher.publish("firehose", {"i": i, "pad": chunk})
        assert ack["type"] == "ack"
        if i % 50 == 0:
            peak = max(peak, rss_mb(node.proc.pid))
    try:
        await reader
        assert received == count, "the healthy subscriber got everything"
        assert "slow consumer" in node.log()
        assert peak - rss_before < 40, f"RSS grew {peak - rss_before:.1f} MB for 51 MB published"
        # it resumes reading only after Tornado's own close wait (5 s) would have given up
        await asyncio.sleep(7)
        closing, before = await asyncio.to_thread(slow.until_close)
        assert (closing.close_code, closing.payload[2:]) == (4008, b"slow consumer")
        texts = [f.json() for f in before if f.opcode == TEXT]  # each frame whole: it parses
        offsets = [t["offset"] for t in texts if t["type"] == "message"]
        assert [t["type"] for t in texts[:2]] == ["welcome", "subscribed"]
        assert offsets == list(range(1, len(offsets) + 1)), "in order, none torn"
        assert len(offsets) < count, "the output it had not read was dropped"
        slow.send(frame(CLOSE, close_payload(4008)))  # its answer ends the closing handshake
        await eventually(lambda: (node.health() or {}).get("connections") == 2, 10, "dropped")
    finally:
        slow.close()
