"""Server-side subscriptions, on both engines: the token's ``subscribe`` claim, the node's
``server_subscribe``/``server_unsubscribe`` (what ``/api/subscribe`` calls), their frames, the
client not being allowed to end them, recovery through the handshake's ``recover`` parameter,
and the Python client surfacing and recovering them."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from pully_tornado.broker import Position
from pully_tornado.client import Forbidden, Pully
from pully_tornado.hub import Conn
from pully_tornado.node import Node

from .support import WSClient, eventually
from .test_auth import SECRET, refused, token

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"jwt_secret": SECRET, "publish_rate": 0.0}


def conn_of(node: Node, client: WSClient) -> Conn:
    [conn] = [c for c in node.connections if c.client_id == client.welcome["client"]]
    return conn


async def publish(node: Node, channel: str, *data: Any) -> None:
    for item in data:
        await node.publisher.publish(channel, orjson.dumps(item))


@pytest.mark.gen_test
async def test_token_subscribe_claim_subscribes_at_connect_in_order(
    ws_url: str, connect: Connect, node: Node
) -> None:
    # neither channel is readable by the token's rights: the issuer decided
    claims = {"channels": [], "subscribe": ["feed:alice", "user:alice", "feed:alice"]}
    client = await connect(f"{ws_url}?token={token(**claims)}")
    first, second = await client.recv(), await client.recv()
    assert first == {"type": "subscribed", "channel": "feed:alice", "server": True,
                     "offset": 0, "epoch": first["epoch"]}  # fmt: skip
    assert (second["channel"], second["server"]) == ("user:alice", True)
    await publish(node, "feed:alice", "hello")
    [message] = await client.messages(1)
    assert (message["channel"], message["data"], message["offset"]) == ("feed:alice", "hello", 1)
    await client.no_message(0.1)  # the duplicate was listed once


@pytest.mark.gen_test
async def test_the_client_cannot_end_a_server_side_subscription(
    ws_url: str, connect: Connect, node: Node
) -> None:
    client = await connect(f"{ws_url}?token={token(subscribe=['feed:alice'])}")
    await client.recv()
    reply = await client.request({"type": "unsubscribe", "channel": "feed:alice"})
    assert reply["code"] == "forbidden" and "server-side" in reply["message"]
    assert node.hub.is_live("feed:alice", conn_of(node, client))


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("claim", "says"),
    [
        ("feed", "must be a list"),
        ([1], "must be a list"),
        (["bad channel!"], "invalid channel names"),
        ([f"c{i}" for i in range(101)], "at most 100"),
    ],
)
async def test_a_bad_subscribe_claim_is_refused_at_the_handshake(
    ws_url: str, claim: Any, says: str
) -> None:
    status, body = await refused(f"{ws_url}?token={token(subscribe=claim)}")
    assert status == 401 and says in orjson.loads(body)["message"]


@pytest.mark.gen_test
async def test_server_subscribe_and_unsubscribe_send_server_frames(
    ws_url: str, connect: Connect, node: Node
) -> None:
    await publish(node, "room", "old-1", "old-2")
    client = await connect(f"{ws_url}?token={token()}")
    conn = conn_of(node, client)
    epoch = (await node.broker.position("room")).epoch
    sub = await node.subscriptions.server_subscribe(conn, "room", Position(1, epoch))
    assert sub.recovered is True
    replayed = await client.recv()
    assert (replayed["type"], replayed["data"]) == ("message", "old-2")
    assert await client.recv() == {"type": "subscribed", "channel": "room", "server": True,
                                   "offset": 2, "epoch": epoch, "recovered": True}  # fmt: skip
    await publish(node, "room", "live")
    assert (await client.messages(1))[0]["data"] == "live"

    assert node.subscriptions.server_unsubscribe(conn, "room") is True
    assert await client.recv() == {"type": "unsubscribed", "channel": "room", "server": True}
    assert node.subscriptions.server_unsubscribe(conn, "room") is False
    await publish(node, "room", "after")
    await client.no_message(0.2)


@pytest.mark.gen_test
async def test_a_client_subscription_made_server_side_is_no_longer_the_clients_to_end(
    ws_url: str, connect: Connect, node: Node
) -> None:
    client = await connect(f"{ws_url}?token={token(channels=['room'])}")
    await client.subscribe("room")
    await node.subscriptions.server_subscribe(conn_of(node, client), "room")
    told = await client.recv()
    assert (told["type"], told["server"]) == ("subscribed", True)
    reply = await client.request({"type": "unsubscribe", "channel": "room"})
    assert reply["code"] == "forbidden"


@pytest.mark.gen_test
async def test_recover_replays_what_a_reconnecting_client_missed(
    ws_url: str, connect: Connect, node: Node
) -> None:
    jwt = token(subscribe=["feed:alice"])
    first = await connect(f"{ws_url}?token={jwt}")
    subscribed = await first.recv()
    await publish(node, "feed:alice", "seen")
    [seen] = await first.messages(1)
    first.close()
    await eventually(lambda: not node.connections, 5, "the first connection gone")
    await publish(node, "feed:alice", "missed-1", "missed-2")

    recover = {"feed:alice": {"offset": seen["offset"], "epoch": subscribed["epoch"]},
               "gone:api-made": {"offset": 0, "epoch": "x"}}  # fmt: skip
    query = urllib.parse.urlencode({"token": jwt, "recover": orjson.dumps(recover).decode()})
    second = await connect(f"{ws_url}?{query}")
    frames = [await second.recv() for _ in range(4)]
    assert frames[0] == {"type": "unsubscribed", "channel": "gone:api-made", "server": True,
                         "reason": "not_renewed"}  # fmt: skip
    assert [f["data"] for f in frames[1:3]] == ["missed-1", "missed-2"]
    assert (frames[3]["type"], frames[3]["recovered"], frames[3]["offset"]) == (
        "subscribed", True, 3,
    )  # fmt: skip


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("recover", "says"),
    [("{", "not JSON"), ("[]", "must be an object"), ('{"c": {"offset": -1, "epoch": "e"}}',
                                                       "non-negative")],
)  # fmt: skip
async def test_a_bad_recover_parameter_is_refused(ws_url: str, recover: str, says: str) -> None:
    query = urllib.parse.urlencode({"token": token(), "recover": recover})
    status, body = await refused(f"{ws_url}?{query}")
    assert status == 400 and says in orjson.loads(body)["message"]


@pytest.mark.gen_test(timeout=30)
async def test_python_client_surfaces_and_recovers_server_side_subscriptions(
    ws_url: str, node: Node
) -> None:
    jwt = token(subscribe=["feed:alice"])
    events: list[Any] = []
    ended: list[Any] = []
    client = Pully(ws_url, token=jwt, backoff=None, timeout=5)
    client.on("server_subscribed", events.append)
    client.on("unsubscribed", ended.append)
    dropped: list[Any] = []
    client.on("disconnected", dropped.append)
    async with client:
        await eventually(lambda: len(events) == 1, 5, "the token's server subscription")
        sub = client.subscriptions["feed:alice"]
        assert sub.server is True and events[0].recovered is None
        await publish(node, "feed:alice", "one")
        assert (await sub.get(5)).data == "one"
        [conn] = node.connections  # what /api/subscribe does: it ends with the connection
        await node.subscriptions.server_subscribe(conn, "dyn")
        await eventually(lambda: len(events) == 2, 5, "the API-made server subscription")
        assert client.subscriptions["dyn"].server is True

        conn.close(1011, "test")  # the node drops the connection
        await eventually(lambda: dropped, 5, "client disconnected")  # it may be back already
        await publish(node, "feed:alice", "two", "three")
        await eventually(lambda: len(events) == 3, 10, "renewed after reconnecting")
        assert (events[2].channel, events[2].recovered) == ("feed:alice", True)
        assert [(await sub.get(5)).data for _ in range(2)] == ["two", "three"]
        await eventually(lambda: ended, 5, "dyn ended")
        assert [(e.channel, e.reason) for e in ended] == [("dyn", "not_renewed")]
        assert set(client.subscriptions) == {"feed:alice"}
        with pytest.raises(Forbidden, match="server-side"):
            await asyncio.wait_for(sub.unsubscribe(), 5)
        assert sub.active


@pytest.mark.gen_test
async def test_a_narrowing_refresh_keeps_server_side_subscriptions(
    ws_url: str, connect: Connect, node: Node
) -> None:
    exp = int(time.time()) + 60
    client = await connect(
        f"{ws_url}?token={token(channels=['feed'], subscribe=['feed'], exp=exp)}"
    )
    assert (await client.recv())["server"] is True
    narrow = token(channels=[], exp=exp + 1)
    reply = await client.request({"type": "refresh", "token": narrow})
    assert reply["type"] == "refreshed"
    await client.no_message(0.2)  # no unsubscribed: the server made it
    assert node.hub.is_live("feed", conn_of(node, client))
