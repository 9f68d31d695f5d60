"""History and recovery on a live node, on both engines: replay after an absence, the seam under
live traffic, and a truthful ``recovered`` flag when history cannot cover the gap."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from .support import WSClient

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"history_size": 2000, "publish_rate": 0.0}


async def away_and_back(connect: Connect, missed: int) -> None:
    sub, pub = await connect(), await connect()
    first = await sub.subscribe("away")
    await pub.publish("away", "before")
    [seen] = await sub.messages(1)
    sub.close()
    for i in range(missed):
        await pub.send({"type": "publish", "channel": "away", "data": i, "id": i})
    for _ in range(missed):
        assert (await pub.recv())["type"] == "ack"
    back = await connect()
    since = {"offset": seen["offset"], "epoch": seen["epoch"]}
    await back.send({"type": "subscribe", "channel": "away", "id": "re", "since": since})
    replayed = [await back.recv() for _ in range(missed)]
    reply = await back.recv()
    assert reply == {"type": "subscribed", "id": "re", "channel": "away", "offset": missed + 1,
                     "epoch": first["epoch"], "recovered": True}  # fmt: skip
    assert [m["data"] for m in replayed] == list(range(missed))
    assert [m["offset"] for m in replayed] == list(range(2, missed + 2))
    await pub.publish("away", "live")
    [live] = await back.messages(1)
    assert (live["data"], live["offset"]) == ("live", missed + 2)
    await back.no_message(0.2)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("missed", [10, 1000])
async def test_subscriber_away_recovers_everything_in_order(connect: Connect, missed: int) -> None:
    await away_and_back(connect, missed)


@pytest.mark.gen_test(timeout=60)
async def test_recovery_seam_under_live_traffic_has_no_gap_and_no_duplicate(
    connect: Connect,
) -> None:
    """Resubscribe with ``since`` again and again while a publisher never stops."""
    pub = await connect()
    stop = asyncio.Event()

    async def publish_forever() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            await pub.publish("seam", i)

    task = asyncio.ensure_future(publish_forever())
    try:
        sub = await connect()
        await sub.subscribe("seam")
        received: list[dict[str, Any]] = []
        for _ in range(8):
            received += await sub.messages(15)
            last = received[-1]
            sub.close()
            await asyncio.sleep(0.05)  # messages keep flowing while nobody listens
            sub = await connect()
            since = {"offset": last["offset"], "epoch": last["epoch"]}
            reply = await sub.request({"type": "subscribe", "channel": "seam", "since": since})
            assert reply["recovered"] is True
            received += [m for m in sub.inbox if m["type"] == "message"]
            sub.inbox.clear()
        received += await sub.messages(15)
    finally:
        stop.set()
        await task
    offsets = [m["offset"] for m in received]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "gap-free, no duplicate"
    assert [m["data"] for m in received] == offsets


@pytest.mark.gen_test
async def test_unknown_epoch_is_not_recovered(connect: Connect) -> None:
    c = await connect()
    await c.publish("epochs", 1)
    reply = await c.request(
        {"type": "subscribe", "channel": "epochs", "since": {"offset": 0, "epoch": "nope"}}
    )
    assert reply["recovered"] is False and reply["offset"] == 1 and reply["epoch"] != "nope"
    await c.no_message(0.2)  # nothing replayed when not recovered
    await c.publish("epochs", 2)
    assert (await c.messages(1))[0]["offset"] == 2  # but the subscription is live


@pytest.mark.gen_test
async def test_offset_from_the_future_is_not_recovered(connect: Connect) -> None:
    c = await connect()
    await c.publish("future", 1)
    epoch = (await c.subscribe("future"))["epoch"]
    other = await connect()
    reply = await other.request(
        {"type": "subscribe", "channel": "future", "since": {"offset": 50, "epoch": epoch}}
    )
    assert reply["recovered"] is False


@pytest.mark.gen_test
async def test_nothing_missed_is_recovered_with_no_replay(connect: Connect) -> None:
    c = await connect()
    sub = await c.subscribe("quiet")
    other = await connect()
    since = {"offset": sub["offset"], "epoch": sub["epoch"]}
    reply = await other.request({"type": "subscribe", "channel": "quiet", "since": since})
    assert reply["recovered"] is True and reply["offset"] == sub["offset"]
    await other.no_message(0.2)


@pytest.mark.gen_test
async def test_history_command_returns_newest_last_with_limit(connect: Connect) -> None:
    c = await connect()
    for i in range(5):
        await c.publish("hist", i)
    full = await c.request({"type": "history", "channel": "hist", "id": 1})
    assert (full["type"], full["id"], full["offset"]) == ("history", 1, 5)
    assert [m["data"] for m in full["messages"]] == [0, 1, 2, 3, 4]
    assert all(m["type"] == "message" and m["epoch"] == full["epoch"] for m in full["messages"])
    last2 = await c.request({"type": "history", "channel": "hist", "limit": 2})
    assert [m["offset"] for m in last2["messages"]] == [4, 5]
    none = await c.request({"type": "history", "channel": "hist", "limit": 0})
    assert none["messages"] == [] and none["offset"] == 5
    empty = await c.request({"type": "history", "channel": "never-used"})
    assert empty["messages"] == [] and empty["offset"] == 0
    bad = await c.request({"type": "history", "channel": "hist", "limit": -1})
    assert bad["code"] == "bad_request"


class TestTrimmedHistory:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"history_size": 5, "publish_rate": 0.0}

    @pytest.mark.gen_test
    async def test_history_trimmed_past_since_is_not_recovered(self, connect: Connect) -> None:
        c = await connect()
        first = await c.subscribe("trim")
        c.close()
        pub = await connect()
        for i in range(8):
            await pub.publish("trim", i)
        history = await pub.request({"type": "history", "channel": "trim"})
        assert [m["offset"] for m in history["messages"]] == [4, 5, 6, 7, 8]
        back = await connect()
        since = {"offset": first["offset"], "epoch": first["epoch"]}
        reply = await back.request({"type": "subscribe", "channel": "trim", "since": since})
        assert (reply["recovered"], reply["offset"]) == (False, 8)
        # ... but from within the retained window it is
        again = await connect()
        since = {"offset": 3, "epoch": first["epoch"]}
        await again.send({"type": "subscribe", "channel": "trim", "since": since, "id": "x"})
        replay = [await again.recv() for _ in range(5)]
        assert [m["offset"] for m in replay] == [4, 5, 6, 7, 8]
        assert (await again.recv())["recovered"] is True


class TestHistoryTtl:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"history_ttl": 1.0, "meta_ttl": 0.0}

    @pytest.mark.gen_test
    async def test_history_expires_after_ttl_but_offsets_go_on(self, connect: Connect) -> None:
        c = await connect()
        await c.publish("ttl", 1)
        assert len((await c.request({"type": "history", "channel": "ttl"}))["messages"]) == 1
        await asyncio.sleep(2.2)
        expired = await c.request({"type": "history", "channel": "ttl"})
        assert (expired["messages"], expired["offset"]) == ([], 1)
        assert (await c.publish("ttl", 2))["offset"] == 2
