"""Protocol v1 conformance on a live node, on both engines (memory and a real redis-server)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket

from pully_tornado.node import Node

from .support import WSClient

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"publish_rate": 0.0}  # rate limits have their own tests (test_limits.py)


@pytest.mark.gen_test
async def test_welcome_names_client_node_and_protocol(connect: Connect, node: Node) -> None:
    a, b = await connect(), await connect()
    assert a.welcome["node"] == node.id == "test-node"
    assert a.welcome["protocol"] == 1
    assert isinstance(a.welcome["client"], str) and len(a.welcome["client"]) >= 16
    assert a.welcome["client"] != b.welcome["client"]


@pytest.mark.gen_test
async def test_subscribe_publish_message_ack(connect: Connect) -> None:
    sub, pub = await connect(), await connect()
    reply = await sub.request({"type": "subscribe", "channel": "chat", "id": 1})
    assert reply == {
        "type": "subscribed",
        "id": 1,
        "channel": "chat",
        "offset": 0,
        "epoch": reply["epoch"],
    }
    ack = await pub.request(
        {"type": "publish", "channel": "chat", "data": {"text": "hi"}, "id": "p1"}
    )
    assert ack == {"type": "ack", "id": "p1", "channel": "chat", "offset": 1}
    [msg] = await sub.messages(1)
    assert msg == {
        "type": "message",
        "channel": "chat",
        "data": {"text": "hi"},
        "offset": 1,
        "epoch": reply["epoch"],
    }


@pytest.mark.gen_test
async def test_subscribed_reports_the_latest_offset(connect: Connect) -> None:
    pub = await connect()
    for i in range(3):
        assert (await pub.publish("counted", i))["offset"] == i + 1
    late = await connect()
    reply = await late.subscribe("counted")
    assert reply["offset"] == 3
    await pub.publish("counted", "next")
    [msg] = await late.messages(1)
    assert (msg["offset"], msg["data"], msg["epoch"]) == (4, "next", reply["epoch"])


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "data", [None, 0, -1.5, "", "ünïcødé ✓", [], {}, True, {"nested": {"deep": [1, {"x": None}]}}]
)
async def test_any_json_value_is_delivered_intact(connect: Connect, data: Any) -> None:
    client = await connect()
    await client.subscribe("values")
    ack = await client.publish("values", data)
    assert ack["type"] == "ack"
    [msg] = await client.messages(1)
    assert msg["data"] == data


@pytest.mark.gen_test
async def test_publisher_subscribed_to_the_channel_gets_its_own_message(connect: Connect) -> None:
    me = await connect()
    await me.subscribe("echo")
    ack = await me.publish("echo", "mine")
    [msg] = await me.messages(1)
    assert msg["data"] == "mine" and msg["offset"] == ack["offset"]


@pytest.mark.gen_test
async def test_unsubscribe_stops_delivery(connect: Connect) -> None:
    sub, pub = await connect(), await connect()
    await sub.subscribe("room")
    await pub.publish("room", 1)
    await sub.messages(1)
    reply = await sub.request({"type": "unsubscribe", "channel": "room", "id": 9})
    assert reply == {"type": "unsubscribed", "id": 9, "channel": "room"}
    await pub.publish("room", 2)
    await sub.no_message()


@pytest.mark.gen_test
async def test_subscribe_twice_delivers_once_and_unsubscribe_unknown_is_fine(
    connect: Connect,
) -> None:
    c = await connect()
    first = await c.subscribe("twice")
    second = await c.subscribe("twice")
    assert second["offset"] == first["offset"] and second["epoch"] == first["epoch"]
    await c.publish("twice", "x")
    await c.messages(1)
    await c.no_message()
    reply = await c.request({"type": "unsubscribe", "channel": "never-subscribed"})
    assert reply["type"] == "unsubscribed"


@pytest.mark.gen_test
async def test_ping_pong_with_and_without_id(connect: Connect) -> None:
    c = await connect()
    await c.send({"type": "ping"})
    assert await c.recv() == {"type": "pong"}
    assert await c.request({"type": "ping", "id": 0}) == {"type": "pong", "id": 0}
    assert await c.request({"type": "ping", "id": "zz"}) == {"type": "pong", "id": "zz"}


BAD_FRAMES = [
    ("{not json", "bad_request", None),
    ("[]", "bad_request", None),
    ('{"id": 1}', "bad_request", 1),
    ('{"type": "ping", "id": [1]}', "bad_request", None),
    ('{"type": "explode", "id": 2}', "unknown_type", 2),
    ('{"type": "subscribe", "id": 3}', "bad_request", 3),
    ('{"type": "subscribe", "channel": "no spaces", "id": 4}', "invalid_channel", 4),
    ('{"type": "subscribe", "channel": "' + "x" * 201 + '", "id": 5}', "invalid_channel", 5),
    ('{"type": "publish", "channel": "c", "id": 6}', "bad_request", 6),
    (
        '{"type": "publish", "channel": "c", "data": 1, "id": 7, "pad": "' + "p" * 70_000 + '"}',
        "too_large",
        7,
    ),
    (
        '{"type": "subscribe", "channel": "c", "since": {"offset": "x", "epoch": "e"}, "id": 8}',
        "bad_request",
        8,
    ),
]


@pytest.mark.gen_test
async def test_every_bad_frame_gets_its_error_and_the_connection_survives(connect: Connect) -> None:
    c = await connect()
    await c.subscribe("survivor")
    for frame, code, request_id in BAD_FRAMES:
        await c.send(frame)
        err = await c.recv()
        assert err["type"] == "error", (frame[:60], err)
        assert err["code"] == code, (frame[:60], err)
        assert err.get("id") == request_id, (frame[:60], err)
        assert err["message"]
    # still open, still subscribed
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    await c.publish("survivor", "alive")
    assert (await c.messages(1))[0]["data"] == "alive"


@pytest.mark.gen_test
async def test_binary_frames_carrying_json_are_accepted(connect: Connect) -> None:
    c = await connect()
    await c.send(b'{"type":"ping","id":"bin"}')
    assert await c.recv() == {"type": "pong", "id": "bin"}


@pytest.mark.gen_test
async def test_frame_past_the_hard_cap_closes_with_1009(connect: Connect) -> None:
    c = await connect()
    await c.send('{"type":"publish","channel":"c","data":"' + "z" * (1024 * 1024 + 10) + '"}')
    closed = await c.closed()
    assert closed.code == 1009


@pytest.mark.gen_test
async def test_large_messages_use_long_frame_encodings(connect: Connect) -> None:
    c = await connect()
    await c.subscribe("big")
    for size in (200, 60_000):  # 16-bit length; the 64-bit one is tested in test_protocol
        await c.publish("big", "b" * size)
        [msg] = await c.messages(1)
        assert msg["data"] == "b" * size


@pytest.mark.gen_test(timeout=60)
async def test_a_thousand_rapid_publishes_arrive_in_order(connect: Connect) -> None:
    sub, pub = await connect(), await connect()
    await sub.subscribe("rapid")
    for i in range(1000):  # fire without waiting for acks
        await pub.send({"type": "publish", "channel": "rapid", "data": i, "id": i})
    msgs = await sub.messages(1000, timeout=30)
    assert [m["data"] for m in msgs] == list(range(1000))
    assert [m["offset"] for m in msgs] == list(range(1, 1001))
    acks = [await pub.recv() for _ in range(1000)]
    assert [(a["id"], a["offset"]) for a in acks] == [(i, i + 1) for i in range(1000)]


@pytest.mark.gen_test(timeout=60)
async def test_two_hundred_fifty_subscribers_all_receive_everything(
    connect: Connect, node: Node
) -> None:
    subs = await asyncio.gather(*(connect() for _ in range(250)))
    await asyncio.gather(*(s.subscribe("crowd") for s in subs))
    assert node.hub.subscriptions == 250
    pub = await connect()
    for i in range(5):
        await pub.publish("crowd", i)
    received = await asyncio.gather(*(s.messages(5) for s in subs))
    for msgs in received:
        assert [m["data"] for m in msgs] == [0, 1, 2, 3, 4]


@pytest.mark.gen_test
async def test_closing_a_connection_forgets_its_subscriptions(connect: Connect, node: Node) -> None:
    c = await connect()
    await c.subscribe("gone:1")
    await c.subscribe("gone:2")
    assert "gone:1" in node.hub and len(node.connections) == 1
    c.close()
    from .support import eventually

    await eventually(lambda: not node.connections and "gone:1" not in node.hub, 5)
    assert node.hub.subscriptions == 0


@pytest.mark.gen_test
async def test_cross_origin_browsers_are_refused_unless_allowed(
    ws_url: str, connect: Connect
) -> None:
    # same-origin and origin-less clients pass; a foreign page is refused at the handshake
    await connect(ws_url)
    request = tornado.httpclient.HTTPRequest(ws_url, headers={"Origin": "https://evil.example"})
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await tornado.websocket.websocket_connect(request)
    assert info.value.code == 403
