"""A token's rights are the connection's rights, all the time: a refresh that narrows them ends
the subscriptions it no longer allows, and ``user:<sub>`` reads one way only."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from pully_tornado.node import Node

from .support import WSClient
from .test_auth import SECRET, refused, token

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"jwt_secret": SECRET, "publish_rate": 0.0}


@pytest.mark.gen_test
async def test_refresh_that_narrows_channels_unsubscribes_what_is_no_longer_allowed(
    ws_url: str, connect: Connect, node: Node
) -> None:
    wide = token(channels=["news:*", "chat"], publish=["*"], exp=int(time.time()) + 60)
    client = await connect(f"{ws_url}?token={wide}")
    for channel in ("news:eu", "news:us", "chat", "user:alice"):
        assert (await client.subscribe(channel))["type"] == "subscribed"
    publisher = await connect(f"{ws_url}?token={token('bob', publish=['*'])}")

    narrow = token(channels=["news:eu"], exp=int(time.time()) + 60)
    reply = await client.request({"type": "refresh", "token": narrow, "id": "r"})
    assert (reply["type"], reply["id"]) == ("refreshed", "r")
    revoked = [await client.recv(), await client.recv()]
    assert revoked == [
        {"type": "unsubscribed", "channel": "chat", "reason": "forbidden"},
        {"type": "unsubscribed", "channel": "news:us", "reason": "forbidden"},
    ]
    assert node.hub.is_live("news:eu", client_conn(node)) is True
    assert "news:us" not in node.hub and "chat" not in node.hub

    for channel in ("news:us", "chat", "news:eu"):
        await publisher.publish(channel, channel)
    [got] = await client.messages(1)
    assert got["channel"] == "news:eu"
    await client.send({"type": "publish", "channel": "user:alice", "data": "mine"})
    frames = {f["type"]: f for f in [await client.recv(), await client.recv()]}
    own = frames["message"]  # the personal channel needs no listing: still there
    assert (own["channel"], own["data"], frames["ack"]["offset"]) == ("user:alice", "mine", 1)
    await client.no_message()
    again = await client.request({"type": "subscribe", "channel": "chat"})
    assert again["code"] == "forbidden"


@pytest.mark.gen_test
async def test_refresh_keeping_the_rights_keeps_every_subscription(
    ws_url: str, connect: Connect
) -> None:
    client = await connect(f"{ws_url}?token={token(channels=['a', 'b'])}")
    await client.subscribe("a")
    await client.subscribe("b")
    reply = await client.request({"type": "refresh", "token": token(channels=["*"])})
    assert reply["type"] == "refreshed"
    await client.no_message()  # no unsubscribed frame


@pytest.mark.gen_test
async def test_a_sub_with_a_colon_is_refused_so_user_channels_read_one_way(
    ws_url: str, connect: Connect
) -> None:
    """``sub: "bob:inbox"`` would otherwise own ``user:bob:inbox``, Bob's own sub-channel."""
    status, body = await refused(f"{ws_url}?token={token('bob:inbox')}")
    assert status == 401
    assert "must not contain ':'" in orjson.loads(body)["message"]

    bob = await connect(f"{ws_url}?token={token('bob')}")
    assert (await bob.subscribe("user:bob:inbox"))["type"] == "subscribed"
    alice = await connect(f"{ws_url}?token={token('alice')}")
    refused_sub = await alice.request({"type": "subscribe", "channel": "user:bob:inbox"})
    assert refused_sub["code"] == "forbidden"
    # and a refresh cannot bring such a token in either
    bad = await alice.request({"type": "refresh", "token": token("alice:x")})
    assert bad["code"] == "forbidden" and "':'" in bad["message"]


def client_conn(node: Node) -> Any:
    """The one connection of user alice on ``node``."""
    [conn] = [c for c, identity in node.connections.items() if identity.user == "alice"]
    return conn
