"""Channel options in the relationships document: validated with the rest of it, and in force
on a live node of either engine: the history window per channel (changed at runtime without a
restart), presence, and publishing reserved to the server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pully_tornado.relationships import InvalidRelationships, load

from .admin_http import call
from .support import WSClient

Connect = Callable[..., Awaitable[WSClient]]


async def save(base: str, doc: dict[str, Any]) -> int:
    status, reply = await call(base + "/relationships", "POST", doc)
    assert status == 200, reply
    return int(reply["version"])


async def history(client: WSClient, channel: str) -> list[int]:
    reply = await client.request({"type": "history", "channel": channel})
    assert reply["type"] == "history", reply
    return [m["offset"] for m in reply["messages"]]


async def publish_many(client: WSClient, channel: str, count: int) -> None:
    for i in range(count):
        await client.send({"type": "publish", "channel": channel, "data": i, "id": i})
    for _ in range(count):
        assert (await client.recv())["type"] == "ack"


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problems"),
    [
        ({"c": {"history_size": -1, "history_ttl": 0, "presence": "yes", "publish": "anyone",
                "idempotency_ttl": "300", "extra": 1}},
         ["options.c.extra: Unknown field.",
          "options.c.history_size: Must be greater than or equal to 0",
          "options.c.history_ttl: Must be greater than 0",
          "options.c.idempotency_ttl: Not a valid number.",
          "options.c.presence: Not a valid boolean.",
          "options.c.publish: Must be one of: clients, server."]),
        ({"c": {"history_size": 2.5, "presence": 1}, "d:*": {"history_size": True}},
         ["options.c.history_size: Not a valid integer.",
          "options.c.presence: Not a valid boolean.",
          "options.d:*.history_size: Not a valid integer."]),
        ({"c": {"history_size": 100_001, "history_ttl": 2_592_001, "idempotency_ttl": -1}},
         ["options.c.history_size: Must be greater than or equal to 0 and less than or equal to "
          "100000", "options.c.history_ttl: Must be greater than 0 and less than or equal to",
          "options.c.idempotency_ttl: Must be greater than 0"]),
        ({"orders:[abc": {}, "[]": {"presence": True}, "ok": []},
         ["options.[]: not a channel name or glob: '[]' is empty",
          "options.ok: must be an object",
          "options.orders:[abc: not a channel name or glob: '[' at position 8 is never closed"]),
        ([], ["options: Not a valid mapping type."]),
    ],
)  # fmt: skip
def test_options_are_validated_with_every_problem_listed(options: Any, problems: list[str]) -> None:
    with pytest.raises(InvalidRelationships) as info:
        load({"channels": {"x": ["Bad"]}, "options": options})
    got = info.value.problems
    assert got[0].startswith("channels.x[0]: not a function name"), got  # listed with the rest
    assert len(got) == len(problems) + 1, got
    for line, want in zip(got[1:], problems, strict=True):
        assert line.startswith(want), (line, want)


def test_options_resolve_exact_name_first_then_the_longest_glob() -> None:
    doc = {"channels": {}, "options": {
        "live:*": {"history_size": 10, "presence": True},
        "live:scores:*": {"history_size": 1000},
        "live:scores:final": {"publish": "server"},
    }}  # fmt: skip
    rel = load(doc)
    assert rel.options_for("live:chat").to_json() == {"history_size": 10, "presence": True}
    assert rel.options_for("live:scores:1").to_json() == {"history_size": 1000}  # one rule whole
    assert rel.options_for("live:scores:final").to_json() == {"publish": "server"}
    assert rel.options_for("other").to_json() == {}
    assert load(rel.to_json()) == rel  # saved and reloaded as written


# -- in force on a live node ---------------------------------------------------------------------


@pytest.mark.usefixtures("app", "http_server")
class TestOnANode:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"history_size": 10, "publish_rate": 0.0}

    @pytest.mark.gen_test(timeout=30)
    async def test_history_size_per_channel(self, base: str, connect: Connect) -> None:
        await save(base, {"channels": {}, "options": {"small:*": {"history_size": 5},
                                                      "none": {"history_size": 0}}})  # fmt: skip
        c = await connect()
        for channel in ("small:1", "big", "none"):
            await publish_many(c, channel, 20)
        assert await history(c, "small:1") == list(range(16, 21))
        assert await history(c, "big") == list(range(11, 21))  # PULLY_HISTORY_SIZE
        assert await history(c, "none") == []
        epoch = (await c.request({"type": "history", "channel": "small:1", "limit": 0}))["epoch"]
        gone = {"type": "subscribe", "channel": "small:1", "since": {"offset": 14, "epoch": epoch}}
        assert (await c.request(gone))["recovered"] is False  # 15 is gone: the window is 5
        kept = await connect()
        since = {"offset": 15, "epoch": epoch}
        await kept.send({"type": "subscribe", "channel": "small:1", "since": since, "id": "k"})
        assert [(await kept.recv())["offset"] for _ in range(5)] == list(range(16, 21))
        assert (await kept.recv())["recovered"] is True

    @pytest.mark.gen_test(timeout=30)
    async def test_a_hot_channels_window_changes_without_a_restart(
        self, base: str, connect: Connect
    ) -> None:
        c = await connect()
        await publish_many(c, "hot", 12)
        assert await history(c, "hot") == list(range(3, 13))
        await save(base, {"channels": {}, "options": {"hot": {"history_size": 3}}})
        await publish_many(c, "hot", 1)
        assert await history(c, "hot") == [11, 12, 13]
        await save(base, {"channels": {}, "options": {"hot": {"history_size": 50}}})
        await publish_many(c, "hot", 5)
        assert await history(c, "hot") == list(range(11, 19))
        await save(base, {"channels": {}})  # back to PULLY_HISTORY_SIZE
        await publish_many(c, "hot", 1)
        assert await history(c, "hot") == list(range(11, 20))

    @pytest.mark.gen_test(timeout=30)
    async def test_history_ttl_per_channel(self, base: str, connect: Connect) -> None:
        await save(base, {"channels": {}, "options": {"brief": {"history_ttl": 1}}})
        c = await connect()
        await publish_many(c, "brief", 3)
        await publish_many(c, "lasting", 3)
        assert await history(c, "brief") == [1, 2, 3]
        await asyncio.sleep(2.2)
        assert await history(c, "brief") == []
        assert await history(c, "lasting") == [1, 2, 3]  # PULLY_HISTORY_TTL: 300 s

    @pytest.mark.gen_test(timeout=30)
    async def test_presence_option_wins_over_the_setting(self, base: str, connect: Connect) -> None:
        # PULLY_PRESENCE_CHANNELS is presence:* (the default)
        await save(
            base,
            {
                "channels": {},
                "options": {"room:*": {"presence": True}, "presence:quiet": {"presence": False}},
            },
        )
        a = await connect()
        await a.subscribe("room:1")
        join = await a.recv()
        assert (join["type"], join["client"]) == ("join", a.welcome["client"])
        listed = await a.request({"type": "presence", "channel": "room:1"})
        assert [m["client"] for m in listed["clients"]] == [a.welcome["client"]]
        await a.subscribe("presence:quiet")
        refused = await a.request({"type": "presence", "channel": "presence:quiet"})
        assert (refused["type"], refused["code"]) == ("error", "bad_request")
        await a.subscribe("presence:loud")  # the setting still applies where no option is set
        assert (await a.recv())["type"] == "join"
        await a.no_message(0.3)  # and presence:quiet sent no join

    @pytest.mark.gen_test(timeout=30)
    async def test_publish_server_refuses_clients_but_not_the_http_api(
        self, base: str, connect: Connect
    ) -> None:
        await save(base, {"channels": {}, "options": {"news:*": {"publish": "server"}}})
        c = await connect()
        await c.subscribe("news:1")
        refused = await c.publish("news:1", "from a client")
        assert (refused["type"], refused["code"]) == ("error", "forbidden")
        assert "server" in refused["message"]
        status, body = await call(base + "/publish", "POST", {"channel": "news:1", "data": "ok"})
        assert (status, body["offset"]) == (200, 1)
        [message] = await c.messages(1)
        assert message["data"] == "ok"
        assert (await c.publish("chat", "elsewhere"))["type"] == "ack"
