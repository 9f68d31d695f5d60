"""The server API on one node of either engine (tests/test_server_api_cluster.py asks several):
every method's answer, every bad call refused with each problem listed, the admin guard."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import tornado.httpclient

from pully_tornado.node import Node

from .support import WSClient
from .test_auth import SECRET, token

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")
BAD_CHANNEL = "not a valid channel name (1-200 chars of A-Z a-z 0-9 _ - : . @ / =)"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"jwt_secret": SECRET, "publish_rate": 0.0}


async def api(base: str, method: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    raw = b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        f"{base}/api/{method}", method="POST", body=raw, raise_error=False,
        headers={"Content-Type": "application/json", **headers},
    )  # fmt: skip
    return response.code, orjson.loads(response.body)


async def result(base: str, method: str, body: Any = None) -> Any:
    status, reply = await api(base, method, body)
    assert status == 200, reply
    return reply["result"]


async def user(connect: Connect, ws_url: str, name: str) -> WSClient:
    return await connect(f"{ws_url}?token={token(name, channels=['*'])}")


@pytest.mark.gen_test(timeout=20)
async def test_publish_broadcast_and_history(engine: str, base: str, connect: Connect) -> None:
    reader = await user(connect, ws_url=base.replace("http", "ws") + "/ws", name="r")
    for channel in ("a", "b"):
        await reader.subscribe(channel)
    first = await result(base, "publish", {"channel": "a", "data": {"n": 1}})
    assert first == {"offset": 1, "epoch": first["epoch"]}
    broadcast = await result(base, "broadcast", {"channels": ["a", "b"], "data": [2],
                                                 "idempotency_key": "b1"})  # fmt: skip
    assert broadcast == {"responses": [
        {"channel": "a", "offset": 2, "epoch": first["epoch"]},
        {"channel": "b", "offset": 1, "epoch": broadcast["responses"][1]["epoch"]},
    ]}  # fmt: skip
    again = await result(base, "broadcast", {"channels": ["a", "b"], "data": [3],
                                             "idempotency_key": "b1"})  # fmt: skip
    assert again == broadcast  # the same key: nothing published again
    got = await reader.messages(3)
    assert [(m["channel"], m["data"]) for m in got] == [("a", {"n": 1}), ("a", [2]), ("b", [2])]
    await reader.no_message()
    history = await result(base, "history", {"channel": "a", "limit": 1})
    assert history == {
        "epoch": first["epoch"],
        "offset": 2,
        "messages": [
            {"type": "message", "channel": "a", "data": [2], "offset": 2, "epoch": first["epoch"]}
        ],
    }
    since = await result(
        base, "history", {"channel": "a", "since": {"offset": 1, "epoch": first["epoch"]}}
    )
    assert [m["offset"] for m in since["messages"]] == [2]


@pytest.mark.gen_test(timeout=20)
async def test_history_remove_starts_a_new_epoch_and_tells_subscribers(
    engine: str, base: str, connect: Connect, ws_url: str
) -> None:
    reader = await user(connect, ws_url, "r")
    await reader.subscribe("gone")
    old = await result(base, "publish", {"channel": "gone", "data": 1})
    await reader.messages(1)
    assert await result(base, "history_remove", {"channel": "gone"}) == {}
    empty = await result(base, "history", {"channel": "gone"})
    assert empty["messages"] == [] and empty["epoch"] != old["epoch"]
    new = await result(base, "publish", {"channel": "gone", "data": 2})
    assert new["offset"] == 1 and new["epoch"] != old["epoch"]
    ended = await reader.recv()  # the node cannot vouch for the jump: insufficient_state
    assert (ended["type"], ended["reason"]) == ("unsubscribed", "insufficient_state")


@pytest.mark.gen_test(timeout=20)
async def test_one_node_answers_the_cluster_methods_alone(
    engine: str, base: str, connect: Connect, ws_url: str, node: Node
) -> None:
    ann, bob = await user(connect, ws_url, "ann"), await user(connect, ws_url, "bob")
    await ann.subscribe("room")
    await bob.subscribe("room")
    await bob.subscribe("other")
    channels = await result(base, "channels", {})
    assert channels == {"channels": {"other": {"subscribers": 1}, "room": {"subscribers": 2}},
                        "truncated": False, "missing_nodes": []}  # fmt: skip
    assert (await result(base, "channels", {"pattern": "ro*"}))["channels"] == {
        "room": {"subscribers": 2}
    }
    presence = await result(base, "presence", {"channel": "room"})
    assert sorted((c["user"], c["node"]) for c in presence["clients"]) == [
        ("ann", node.id),
        ("bob", node.id),
    ]
    stats = await result(base, "presence_stats", {"channel": "room"})
    assert stats == {"clients": 2, "users": 2, "missing_nodes": []}
    [info] = (await result(base, "info"))["nodes"]
    assert (info["node"], info["connections"], info["subscriptions"]) == (node.id, 2, 3)
    # subscribe and unsubscribe a user: server-side frames
    assert (await result(base, "subscribe", {"user": "ann", "channel": "news"}))["clients"] == 1
    frame = await ann.recv()
    assert (frame["type"], frame["channel"], frame["server"]) == ("subscribed", "news", True)
    assert await result(base, "unsubscribe", {"client": ann.welcome["client"],
                                              "channel": "news"}) == {
        "clients": 1, "missing_nodes": []}  # fmt: skip
    assert await ann.recv() == {"type": "unsubscribed", "channel": "news", "server": True}
    # disconnect with a code and reason
    done = await result(base, "disconnect", {"user": "bob", "code": 4100, "reason": "bye"})
    assert done == {"clients": 1, "missing_nodes": []}
    closed = await bob.closed()
    assert (closed.code, closed.reason) == (4100, "bye")
    assert (await result(base, "disconnect", {"user": "nobody"}))["clients"] == 0


@pytest.mark.gen_test(timeout=20)
async def test_batch_runs_in_order_and_reports_each_reply(base: str) -> None:
    replies = await result(base, "batch", {"commands": [
        {"method": "publish", "params": {"channel": "x", "data": 1}},
        {"method": "publish", "params": {"channel": "no spaces", "data": 1}},
        {"method": "nope"},
        {"method": "batch", "params": {"commands": []}},
        {"method": "history", "params": {"channel": "x"}},
    ]})  # fmt: skip
    first, bad, unknown, nested, history = replies["replies"]
    assert first["result"]["offset"] == 1
    assert bad["error"]["code"] == "bad_request"
    assert bad["error"]["problems"] == ["params.channel: " + BAD_CHANNEL]
    assert unknown["error"]["code"] == "not_found"
    assert nested["error"] == {"code": "bad_request", "message": "a batch cannot contain a batch"}
    assert history["result"]["offset"] == 1


@pytest.mark.parametrize(
    ("method", "body", "problems"),
    [
        (
            "publish",
            {},
            [
                "params.channel: Missing data for required field.",
                "params.data: Missing data for required field.",
            ],
        ),
        (
            "publish",
            {"channel": "c", "data": 1, "idempotency_key": "", "extra": 1},
            [
                "params.extra: Unknown field.",
                "params.idempotency_key: Length must be between 1 and 64.",
            ],
        ),
        (
            "broadcast",
            {"channels": [], "data": 1},
            ["params.channels: Length must be between 1 and 1000."],
        ),
        (
            "broadcast",
            {"channels": ["ok", "not ok", 3], "data": 1},
            [
                "params.channels.1: " + BAD_CHANNEL,
                "params.channels.2: Not a valid string.",
            ],
        ),
        ("subscribe", {"channel": "c"}, ["params: give exactly one of user and client"]),
        (
            "subscribe",
            {"channel": "c", "user": "u", "client": "c", "since": {"offset": "1"}},
            [
                "params.since.epoch: Missing data for required field.",
                "params.since.offset: Not a valid integer.",
                "params: give exactly one of user and client",
            ],
        ),
        (
            "disconnect",
            {"user": "u", "code": 1000},
            ["params.code: Must be greater than or equal to 4000 and less than or equal to 4999."],
        ),
        (
            "history",
            {"channel": "c", "limit": -1},
            ["params.limit: Must be greater than or equal to 0 and less than or equal to 10000."],
        ),
        ("channels", {"pattern": 5}, ["params.pattern: Not a valid string."]),
        ("info", {"x": 1}, ["params.x: Unknown field."]),
        (
            "batch",
            {"commands": [{"params": {}}]},
            ["params.commands.0.method: Missing data for required field."],
        ),
    ],
)
@pytest.mark.gen_test(timeout=20)
async def test_bad_params_are_refused_with_every_problem_listed(
    base: str, method: str, body: Any, problems: list[str]
) -> None:
    status, reply = await api(base, method, body)
    assert status == 400, reply
    assert reply["error"]["code"] == "bad_request"
    assert reply["error"]["problems"] == problems


@pytest.mark.gen_test(timeout=20)
async def test_what_is_not_a_call_gets_a_clear_error(base: str) -> None:
    status, reply = await api(base, "nope", {})
    assert status == 404 and reply["error"]["code"] == "not_found"
    assert "publish, broadcast" in reply["error"]["message"]
    status, reply = await api(base, "presence", [])
    assert status == 400 and reply["error"]["message"] == "body must be a JSON object"
    status, reply = await api(base, "publish", b"{not json")
    assert status == 400 and "not valid JSON" in reply["error"]["message"]
    status, reply = await api(base, "publish", b'{"channel": "c", "data": 123456789012345678901}')
    assert status == 400 and "beyond 64 bits" in reply["error"]["message"]
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        base + "/api/info", raise_error=False
    )
    assert response.code == 405 and response.headers["Allow"] == "POST"
    assert orjson.loads(response.body)["error"]["code"] == "method_not_allowed"
    status, reply = await api(base, "info", {}, Origin="https://evil.example")
    assert status == 403 and reply["error"]["code"] == "forbidden"
    status, reply = await api(base, "info", {}, **{"Content-Type": "text/plain"})
    assert status == 415, reply


@pytest.mark.gen_test
async def test_an_empty_body_is_no_params_but_blanks_are_not_json(base: str) -> None:
    status, reply = await api(base, "info", b"")
    assert status == 200, reply
    status, reply = await api(base, "channels", b" \n")
    assert status == 400 and reply["error"]["code"] == "bad_request", reply
