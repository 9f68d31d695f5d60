"""Never a silent gap: a node that cannot vouch that its subscribers got every message of a
channel ends their subscriptions with ``unsubscribed`` (``reason: insufficient_state``,
``resubscribe: true``), the clients resubscribe with ``since`` at once and learn the truth
(``recovered: false`` when history does not cover it). Tested with a real redis-server and real
``pully serve`` processes, the Python client and raw WebSocket subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from pully_tornado import protocol
from pully_tornado.broker.base import History
from pully_tornado.client import (
    Backoff,
    Message,
    Pully,
    RecoveryFailed,
    Unavailable,
    Unsubscribed,
)
from pully_tornado.node import Node

from .support import PullyProcess, RedisServer, WSClient, eventually
from .test_auth import SECRET, token

Processes = Callable[..., PullyProcess]
Pos = tuple[str, int]  # (epoch, offset)

CHANNEL = "ticker"
HISTORY = 5  # PULLY_HISTORY_SIZE: far fewer than the late node misses
RAW, PYTHON = 20, 5  # subscribers on the late node
FAST = Backoff(base=0.05, cap=0.5)
INSUFFICIENT = {"type": "unsubscribed", "channel": CHANNEL, "reason": "insufficient_state",
                "resubscribe": True}  # fmt: skip


@pytest.fixture
def engine() -> str:
    return "redis"  # the in-process node of the tests below runs on the session redis-server


# -- what a subscriber saw, and the rule it must satisfy ------------------------------------------


def follows(last: Pos, pos: Pos) -> bool:
    return pos[0] == last[0] and pos[1] == last[1] + 1


def skipped(pos: Pos, since: Pos, to: Pos) -> bool:
    """Whether ``pos`` lies in what a ``recovered: false`` from ``since`` to ``to`` skipped."""
    if since[0] == to[0]:
        return pos[0] == since[0] and since[1] < pos[1] <= to[1]
    return (pos[0] == since[0] and pos[1] > since[1]) or (pos[0] == to[0] and pos[1] <= to[1])


def assert_no_silent_gap(
    who: str, start: Pos, seen: list[Pos], notices: list[tuple[Pos, Pos]], acked: list[Pos]
) -> None:
    """From ``start``, each message follows the one before, except right after a
    ``recovered: false`` (``notices``: from the last position seen to the one reported), where
    it follows the reported one; every acknowledged message was received or so skipped."""
    jumps = dict(notices)
    last = start
    for pos in seen:
        if not follows(last, pos):
            assert last in jumps and follows(jumps[last], pos), f"{who}: silent {last} -> {pos}"
        last = pos
    assert len(set(seen)) == len(seen), f"{who}: duplicates"
    lost = [p for p in acked if p not in set(seen) and not any(skipped(p, *n) for n in notices)]
    assert not lost, f"{who}: acknowledged, never received, never told: {lost}"


class RawSubscriber:
    """A plain WebSocket subscriber doing what the protocol asks of a client: on
    ``unsubscribed`` with ``resubscribe: true``, subscribe again since the last message seen."""

    def __init__(self, ws: WSClient) -> None:
        self.ws = ws
        self.seen: list[Pos] = []
        self.told: list[dict[str, Any]] = []  # unsubscribed frames
        self.notices: list[tuple[Pos, Pos]] = []  # recovered: false, (since, reported)
        self.start: Pos = ("", 0)
        self._since: dict[int, Pos] = {}

    async def subscribe(self) -> None:
        reply = await self.ws.subscribe(CHANNEL)
        self.start = (reply["epoch"], reply["offset"])
        self._reader = asyncio.ensure_future(self._read())

    def stop(self) -> None:
        self._reader.cancel()
        self.ws.close()

    async def _read(self) -> None:
        while True:
            frame = await self.ws.recv(timeout=60)
            if frame["type"] == "message":
                self.seen.append((frame["epoch"], frame["offset"]))
            elif frame["type"] == "unsubscribed":
                self.told.append(frame)
                since = self.seen[-1] if self.seen else self.start
                self._since[len(self.told)] = since
                await self.ws.send({"type": "subscribe", "channel": CHANNEL, "id": len(self.told),
                                    "since": {"epoch": since[0], "offset": since[1]}})  # fmt: skip
            elif frame["type"] == "subscribed" and frame["recovered"] is False:
                self.notices.append((self._since[frame["id"]], (frame["epoch"], frame["offset"])))


class ClientSubscriber:
    """A :class:`Pully` client subscribed with a handler; ``recovery_failed`` events kept."""

    def __init__(self, client: Pully) -> None:
        self.client = client
        self.seen: list[Pos] = []
        self.notices: list[tuple[Pos, Pos]] = []
        self.start: Pos = ("", 0)
        client.on("recovery_failed", self._on_recovery_failed)

    def _on_recovery_failed(self, event: RecoveryFailed) -> None:
        assert event.previous is not None and event.channel == CHANNEL
        since, now = event.previous, event.position
        self.notices.append(((since.epoch, since.offset), (now.epoch, now.offset)))

    def _on_message(self, message: Message) -> None:
        self.seen.append((message.epoch, message.offset))

    async def subscribe(self) -> None:
        sub = await self.client.subscribe(CHANNEL, self._on_message)
        assert sub.epoch is not None and sub.offset is not None
        self.start = (sub.epoch, sub.offset)

    def stop(self) -> None:
        pass  # the client is closed on its own


class Publisher:
    """Publishes through one node every 20 ms while entered; keeps the acknowledged offsets."""

    def __init__(self, client: Pully) -> None:
        self.client = client
        self.acked: list[int] = []
        self.refused = 0
        self.stopped = False
        self._task: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Publisher:
        self._task = asyncio.ensure_future(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self.stopped = True
        if self._task is not None:
            await self._task

    async def run(self) -> None:
        while not self.stopped:
            try:
                offset = await self.client.publish(CHANNEL, {"at": time.time()})
                assert offset is not None
                self.acked.append(offset)
            except Unavailable:
                self.refused += 1
            await asyncio.sleep(0.02)

    def epochs(self) -> tuple[list[int], list[int]]:
        """The acknowledged offsets before and after Redis restarted (offsets start again)."""
        for i in range(1, len(self.acked)):
            if self.acked[i] <= self.acked[i - 1]:
                return self.acked[:i], self.acked[i:]
        return self.acked, []


# -- the late node ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_late_node_that_cannot_fill_its_gap_tells_every_subscriber(
    processes: Processes, fresh_redis: RedisServer
) -> None:
    """Redis restarts (losing everything); node B stays away from it longer than node A (it is
    SIGSTOPped around the restart), and meanwhile A acknowledges three history windows of the new
    sequence. No subscriber on B sees a jump: each is told and learns ``recovered: false``."""
    env = {"PULLY_HISTORY_SIZE": str(HISTORY)}
    a = processes(redis_url=fresh_redis.url, env=env)
    b = processes(redis_url=fresh_redis.url, env=env)  # the late node
    async with contextlib.AsyncExitStack() as stack:
        raws = [RawSubscriber(await WSClient.connect(b.ws_url)) for _ in range(RAW)]
        clients = [ClientSubscriber(Pully(b.ws_url, backoff=FAST)) for _ in range(PYTHON)]
        publisher = Publisher(Pully(a.ws_url))
        for p in [publisher.client, *(c.client for c in clients)]:
            await stack.enter_async_context(p)
        everyone: list[RawSubscriber | ClientSubscriber] = [*raws, *clients]
        for s in everyone:
            await s.subscribe()
            stack.callback(s.stop)
        await stack.enter_async_context(publisher)
        await eventually(lambda: all(len(s.seen) >= 10 for s in everyone), 15, "first messages")

        b.signal(signal.SIGSTOP)
        try:
            fresh_redis.restart()
            await eventually(lambda: len(publisher.epochs()[1]) >= 3 * HISTORY, 15, "new acks")
        finally:
            b.signal(signal.SIGCONT)

        def in_the_new_sequence() -> bool:
            return all(s.seen[-1][0] != s.start[0] for s in everyone)

        await eventually(in_the_new_sequence, 15, "every subscriber receiving again")
        resumed = len(publisher.acked)
        await eventually(lambda: len(publisher.acked) >= resumed + 10, 10, "acks after that")
        await publisher.stop()
        before, after = publisher.epochs()
        [old_epoch] = {s.start[0] for s in everyone}
        [new_epoch] = {s.seen[-1][0] for s in everyone}
        assert new_epoch != old_epoch and after[0] == 1
        acked = [(old_epoch, o) for o in before] + [(new_epoch, o) for o in after]
        await eventually(lambda: all(s.seen[-1] == acked[-1] for s in everyone), 10, "last ack")

    for i, s in enumerate(everyone):
        who = f"{type(s).__name__} {i}"
        assert_no_silent_gap(who, s.start, s.seen, s.notices, acked)
        [(since, now)] = s.notices  # told once; the answer was truthful
        assert since[0] == old_epoch and now[0] == new_epoch, who
    for raw in raws:
        assert raw.told == [INSUFFICIENT]
    metrics = await asyncio.to_thread(_get, b.url + "/metrics")
    assert f"pully_insufficient_state_total {float(RAW + PYTHON)}" in metrics
    assert "(insufficient_state)" in b.log() and "insufficient_state" not in a.log()


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


# -- the same rule on one node: an epoch change, a hole while subscribing -----------------------


@pytest.mark.gen_test
async def test_epoch_change_under_live_subscribers_is_told_not_passed_on(
    node: Node, http_server: Any, ws_url: str, redis_server: RedisServer
) -> None:
    """The channel's sequence restarts (its meta is gone from Redis) under live subscribers:
    they are not switched to the new epoch silently."""
    raw = await WSClient.connect(ws_url)
    first = await raw.subscribe(CHANNEL)
    async with Pully(ws_url) as client:
        failed: list[RecoveryFailed] = []
        client.on("recovery_failed", failed.append)
        sub = await client.subscribe(CHANNEL)
        for n in (1, 2):
            await node.publisher.publish(CHANNEL, b"%d" % n)
        assert [m["offset"] for m in await raw.messages(2)] == [1, 2]
        assert [(await sub.get(5)).offset for _ in (1, 2)] == [1, 2]

        redis_server.client().delete(f"pully:meta:{{{CHANNEL}}}")
        await node.publisher.publish(CHANNEL, b"3")  # offset 1 of a new epoch
        assert await raw.recv() == INSUFFICIENT
        since = {"offset": 2, "epoch": first["epoch"]}
        again = await raw.request({"type": "subscribe", "channel": CHANNEL, "since": since})
        assert (again["recovered"], again["offset"]) == (False, 1)
        await eventually(lambda: failed, 5, "recovery_failed")
        [event] = failed
        assert event.previous is not None and event.subscription is sub
        assert (event.previous.epoch, event.previous.offset) == (first["epoch"], 2)
        assert (event.position.epoch, event.position.offset) == (again["epoch"], 1)
        await node.publisher.publish(CHANNEL, b"4")
        got = await sub.get(5)  # the client carries on in the new sequence
        assert (got.epoch, got.offset, got.data) == (again["epoch"], 2, 4)
        assert (await raw.messages(1))[0]["offset"] == 2
    assert node.subscriptions.insufficient_states == 2


@pytest.mark.gen_test
async def test_hole_while_a_subscription_is_set_up_is_told_not_passed_on(
    node: Node, http_server: Any, ws_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publication that does not follow the position a subscriber is told (this node missed
    one while the subscription was set up: its Redis link dropped and came back between the
    subscribe and the position read) is not sent after the reply: the subscriber is told to
    resubscribe. The race is made certain by delivering such a publication during the read."""
    client = await WSClient.connect(ws_url)
    await node.publisher.publish(CHANNEL, b"1")
    read = node.broker.history

    async def history_then_a_hole(channel: str, **kwargs: Any) -> History:
        history = await read(channel, **kwargs)
        at = history.position
        node.on_publication(channel, at.offset + 2, at.epoch,
                            protocol.message(channel, b"3", at.offset + 2, at.epoch))  # fmt: skip
        return history

    monkeypatch.setattr(node.broker, "history", history_then_a_hole)
    reply = await client.subscribe(CHANNEL)
    assert reply["offset"] == 1
    assert await client.recv() == INSUFFICIENT
    await client.no_message(0.2)
    assert CHANNEL not in node.hub and node.subscriptions.insufficient_states == 1


# -- an unsubscribed without resubscribe ends the subscription ----------------------------------


@pytest.mark.gen_test
async def test_client_drops_a_subscription_the_node_ends(processes: Processes) -> None:
    """``unsubscribed`` with another reason (here ``forbidden``, after a refresh to a token
    without the channel) ends the subscription and emits ``unsubscribed``: no resubscribe."""
    node = processes(env={"PULLY_JWT_SECRET": SECRET})
    wide = token("ann", channels=["chat", "news"], publish=["*"])
    async with Pully(node.ws_url, token=wide) as p:
        ended: list[Unsubscribed] = []
        p.on("unsubscribed", ended.append)
        chat, news = await p.subscribe("chat"), await p.subscribe("news")
        await p.refresh(token("ann", channels=["news"], publish=["*"]))
        await eventually(lambda: ended, 5, "unsubscribed event")
        assert [(e.channel, e.subscription, e.reason) for e in ended] == [
            ("chat", chat, "forbidden")
        ]
        assert not chat.active and set(p.subscriptions) == {"news"}
        assert [m async for m in chat] == []  # its iteration ends
        await p.publish("news", "still here")
        assert (await news.get(5)).data == "still here"
        await p.ping()  # nothing resubscribed chat: the node would have refused it
        assert ended[1:] == [] and "chat" not in p.subscriptions
