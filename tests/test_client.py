"""The Python client (``pully_tornado.client``) against real ``pully serve`` processes: the basic
flow, typed errors, reconnect after SIGKILL and after a drain, failover to another node of a
cluster with recovery, offline publishes, and the backoff bounds."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from pully_tornado import errors as server_errors
from pully_tornado.client import (
    Backoff,
    BadRequest,
    Connected,
    Disconnected,
    ErrorEvent,
    Forbidden,
    HandshakeRefused,
    InvalidChannel,
    Message,
    NotConnected,
    PresenceEvent,
    Pully,
    PullyClientError,
    RateLimited,
    Reconnecting,
    RecoveryFailed,
    RequestTimeout,
    ServerError,
    TooLarge,
)
from pully_tornado.client.errors import SERVER_ERRORS
from pully_tornado.client.tokens import refresh_delay, token_expiry

from .support import ROOT, PullyProcess, RedisServer, eventually
from .test_docs import WIRE_CODES

Processes = Callable[..., PullyProcess]
FAST = Backoff(base=0.05, cap=0.5)  # reconnect quickly: tests wait for it
SECRET = "client-tests-secret-long-enough-for-hs256-keys!!"


class Events:
    """Every event a client emits, in order, by name."""

    NAMES = ("connected", "disconnected", "reconnecting", "error", "recovery_failed", "presence")

    def __init__(self, client: Pully) -> None:
        self.all: list[tuple[str, Any]] = []
        for name in self.NAMES:
            client.on(name, lambda event, name=name: self.all.append((name, event)))

    def of(self, name: str) -> list[Any]:
        return [event for kind, event in self.all if kind == name]


async def start(proc: PullyProcess) -> None:
    """(Re)start ``proc`` without blocking the event loop, so clients keep retrying meanwhile."""
    await asyncio.to_thread(proc.start)


# -- contract --------------------------------------------------------------------------------------


def test_one_exception_class_per_wire_error_code_under_one_base() -> None:
    assert sorted(SERVER_ERRORS) == sorted(WIRE_CODES)
    classes = [c for c in vars(server_errors).values() if isinstance(c, type)]
    server_codes = {
        c.code
        for c in classes
        if issubclass(c, server_errors.PullyError) and c not in server_errors.HTTP_ONLY
    }
    assert server_codes == set(WIRE_CODES)
    for code, cls in SERVER_ERRORS.items():
        assert issubclass(cls, ServerError) and issubclass(cls, PullyClientError)
        assert cls("x").code == code
    assert ServerError("from a newer server", "brand_new").code == "brand_new"


def test_client_imports_neither_tornado_nor_the_server() -> None:
    code = (
        "import sys, pully_tornado.client\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'tornado'"
        " or m in ('pully_tornado.node', 'pully_tornado.errors'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_backoff_delays_stay_within_full_jitter_bounds() -> None:
    ceilings = [Backoff().ceiling(n) for n in range(9)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0, 20.0]
    for rng in (lambda: 0.0, lambda: 0.999999, __import__("random").Random(7).random):
        backoff = Backoff(base=0.5, cap=20.0, rng=rng)
        for attempt in range(40):
            assert 0.0 <= backoff.delay(attempt) <= min(20.0, 0.5 * 2**attempt)
    assert Backoff(rng=lambda: 1.0).delay(10_000) == 20.0  # no overflow far out
    assert Backoff(base=0.2, cap=3.0, rng=lambda: 1.0).delay(3) == 1.6
    with pytest.raises(ValueError):
        Backoff(base=2.0, cap=1.0)


@pytest.mark.gen_test(timeout=30)
async def test_reconnect_attempts_follow_the_backoff_and_connect_gives_up() -> None:
    """Timing-free: the delays the client reports, with jitter pinned to its maximum."""
    from .support import free_port

    client = Pully(
        f"ws://127.0.0.1:{free_port()}/ws",  # nobody listens there
        backoff=Backoff(base=0.01, cap=0.08, rng=lambda: 1.0),
        connect_timeout=1.0,
    )
    events = Events(client)
    with pytest.raises(NotConnected, match="could not connect"):
        await client.connect()
    attempts = events.of("reconnecting")
    assert len(attempts) >= 5
    assert [a.attempt for a in attempts] == list(range(len(attempts)))
    assert [a.delay for a in attempts[:5]] == [0.01, 0.02, 0.04, 0.08, 0.08]
    assert all(isinstance(a.error, OSError) for a in attempts)
    assert client.closed
    with pytest.raises(NotConnected):
        await client.publish("chat", 1)


def test_docs_python_examples_run_as_written(processes: Processes) -> None:
    """Every Python example of docs/clients.md and the README, against a node in place of
    localhost:8080."""
    node = processes()
    text = (ROOT / "docs" / "clients.md").read_text() + (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    for code in blocks:
        code = code.replace("localhost:8080", f"127.0.0.1:{node.port}")
        run = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert run.returncode == 0, f"{code}\n{run.stdout}\n{run.stderr}"
        assert "Traceback" not in run.stderr


# -- against a live node -------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_subscribe_publish_iterate_handler_unsubscribe(processes: Processes) -> None:
    node = processes()
    async with Pully(node.ws_url) as p, Pully(node.url) as other:  # http:// URLs work too
        assert p.connected and p.node == f"node0-{node.port}" and p.client_id
        sub = await p.subscribe("chat")
        handled: list[Message] = []

        async def handler(message: Message) -> None:
            handled.append(message)

        await other.subscribe("chat", handler)
        offsets = [await p.publish("chat", {"n": i}) for i in range(3)]
        assert offsets == [1, 2, 3]
        received = [await sub.get(5) for _ in range(3)]
        assert [(m.channel, m.data, m.offset) for m in received] == [
            ("chat", {"n": 0}, 1), ("chat", {"n": 1}, 2), ("chat", {"n": 2}, 3),
        ]  # fmt: skip
        assert len({m.epoch for m in received}) == 1
        assert sub.position == received[-1].position
        await eventually(lambda: len(handled) == 3, 5, "the handler's messages")
        assert handled == received
        assert await other.publish("chat", None) == 4  # null is a valid payload
        assert (await sub.get(5)).data is None

        history = await p.history("chat", limit=2)
        assert [m.offset for m in history.messages] == [3, 4]
        assert (history.offset, history.epoch) == (4, received[0].epoch)

        await sub.unsubscribe()
        assert not sub.active and "chat" not in p.subscriptions
        await other.publish("chat", "after")
        assert [m async for m in sub] == []  # iteration has ended; nothing after unsubscribe
        with pytest.raises(RequestTimeout):
            await (await p.subscribe("quiet")).get(0.05)

        events, survived = Events(p), []

        def fragile(message: Message) -> None:
            if message.data == "boom":
                raise RuntimeError("handler bug")
            survived.append(message.data)

        await p.subscribe("fragile", fragile)
        await p.publish("fragile", "boom")
        await p.publish("fragile", "fine")
        await eventually(lambda: survived == ["fine"], 5, "the handler going on")
        [failed] = events.of("error")
        assert (failed.channel, str(failed.error)) == ("fragile", "handler bug")


@pytest.mark.gen_test(timeout=30)
async def test_presence_and_join_leave_events(processes: Processes) -> None:
    node = processes()
    async with Pully(node.ws_url) as a, Pully(node.ws_url) as b:
        events = Events(a)
        await a.subscribe("presence:room")
        await b.subscribe("presence:room")
        members = await a.presence("presence:room")
        assert {m.client for m in members} == {a.client_id, b.client_id}
        assert {m.user for m in members} == {None}
        await eventually(lambda: len(events.of("presence")) >= 2, 5, "join events")
        joins: list[PresenceEvent] = events.of("presence")
        assert [(j.kind, j.client) for j in joins[:2]] == [
            ("join", a.client_id),
            ("join", b.client_id),
        ]
        await b.close()
        await eventually(lambda: any(e.kind == "leave" for e in events.of("presence")), 5, "leave")


@pytest.mark.gen_test(timeout=30)
async def test_refusals_raise_typed_errors_and_the_connection_stays_usable(
    processes: Processes,
) -> None:
    node = processes(args=("--max-message-bytes", "1024", "--publish-rate", "1",
                           "--publish-burst", "3"))  # fmt: skip
    async with Pully(node.ws_url) as p:
        with pytest.raises(InvalidChannel) as info:
            await p.subscribe("no spaces")
        assert info.value.code == "invalid_channel" and "invalid" in info.value.message
        assert "no spaces" not in p.subscriptions
        with pytest.raises(InvalidChannel):
            await p.publish("", 1)
        with pytest.raises(TooLarge):
            await p.publish("big", "x" * 2000)
        with pytest.raises(BadRequest):
            await p.presence("not-a-presence-channel")
        with pytest.raises(RateLimited):
            for i in range(10):
                await p.publish("fast", i)
        with pytest.raises(TypeError):
            await p.publish("chat", object())  # not JSON: refused before sending
        await p.ping()
        assert p.connected


@pytest.mark.gen_test(timeout=30)
async def test_jwt_capabilities_forbidden_and_bad_token_refused(processes: Processes) -> None:
    node = processes(env={"PULLY_JWT_SECRET": SECRET})
    reader = jwt.encode({"sub": "ann", "channels": ["news:*"]}, SECRET, algorithm="HS256")
    async with Pully(node.ws_url, token=reader) as p:
        assert p.user == "ann"
        await p.subscribe("news:today")
        with pytest.raises(Forbidden) as info:
            await p.publish("news:today", "no publish claim")
        assert isinstance(info.value, ServerError) and info.value.code == "forbidden"
        with pytest.raises(Forbidden):
            await p.subscribe("sports")
        assert await p.publish("user:ann", "own channel") == 1  # always allowed

    async def fresh_token() -> str:  # a provider: called before every connection attempt
        return jwt.encode({"sub": "bob", "publish": ["news:*"]}, SECRET, algorithm="HS256")

    async with Pully(node.ws_url, token=fresh_token) as p:
        assert await p.publish("news:today", "from bob") == 1

    bad = Pully(node.ws_url, token="not-a-jwt", backoff=FAST)
    events = Events(bad)
    with pytest.raises(HandshakeRefused) as refused:
        await bad.connect()
    assert refused.value.status == 401 and "invalid token" in refused.value.message
    assert events.of("reconnecting") == [], "a rejected token is not retried"
    assert isinstance(events.of("error")[0], ErrorEvent)
    await bad.close()


def test_token_expiry_is_read_and_renewal_comes_ahead_of_it() -> None:
    assert token_expiry(jwt.encode({"sub": "a", "exp": 2_000_000_000}, SECRET)) == 2e9
    for no_exp in (None, "", "not-a-jwt", "a.b!.c", jwt.encode({"sub": "a"}, SECRET),
                   jwt.encode({"sub": "a", "exp": "soon"}, SECRET)):  # fmt: skip
        assert token_expiry(no_exp) is None
    assert refresh_delay(1000.0, 0.0) == 1000.0 - 60.0  # at most 60 s ahead
    assert refresh_delay(1010.0, 1000.0) == 8.0  # 20 % of what is left ...
    assert refresh_delay(1003.0, 1000.0) == 2.0  # ... but at least 1 s
    assert refresh_delay(1000.0, 1001.0) == 0.0  # already late: now


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_a_token_provider_renews_the_token_before_it_expires(processes: Processes) -> None:
    """Tokens that live 3 s: the client renews each one on the open connection ahead of its
    ``exp`` (the node would close the connection at ``exp`` with 4001 otherwise)."""
    node = processes(env={"PULLY_JWT_SECRET": SECRET})
    issued: list[int] = []

    def short_token() -> str:
        exp = int(time.time()) + 3
        issued.append(exp)
        return jwt.encode({"sub": "cat", "channels": ["*"], "publish": ["*"], "exp": exp}, SECRET)

    async with Pully(node.ws_url, token=short_token, backoff=FAST) as p:
        events = Events(p)
        frames: list[dict[str, Any]] = []
        p.on("frame", lambda event: frames.append(event.frame))
        sub = await p.subscribe("ticks")
        first_client = p.client_id
        await asyncio.sleep(7.5)  # past two expiries of the first token's lifetime
        assert len(issued) >= 3, issued  # the connection's token, then renewals

        def refreshes() -> list[dict[str, Any]]:
            return [f for f in frames if f.get("type") == "refreshed"]

        # (a renewal may be on its way right now: its reply follows within milliseconds)
        await eventually(lambda: len(refreshes()) == len(issued) - 1, 2, "every renewal answered")
        assert [f["expires"] for f in refreshes()] == issued[1:]
        assert events.of("disconnected") == [] and events.of("error") == []
        assert p.client_id == first_client
        offset = await p.publish("ticks", "still here")
        assert (await sub.get(5)).offset == offset
        before = len(issued)
        await p.refresh()  # by hand: one more from the provider
        assert len(issued) > before
        other = jwt.encode({"sub": "dog", "exp": int(time.time()) + 60}, SECRET)
        with pytest.raises(Forbidden, match="same user"):
            await p.refresh(other)
        assert p.connected

    # a provider that fails at renewal: an error event, the node closes at exp, and the client
    # reconnects with a token the provider gives again
    calls = 0

    def flaky_token() -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("identity provider down")
        return short_token()

    p = Pully(node.ws_url, token=flaky_token, backoff=FAST)
    events = Events(p)
    async with p:
        # (the reconnect may follow the disconnect within milliseconds: wait for the latter)
        await eventually(lambda: events.of("disconnected"), 15, "the close at exp")
        [error] = events.of("error")
        assert "identity provider down" in str(error.error)
        assert events.of("disconnected")[0].code == 4001
        await eventually(lambda: len(events.of("connected")) == 2, 10)
        assert events.of("connected")[1].reconnect
        await p.ping()


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_node_killed_and_restarted_reconnects_and_reports_lost_recovery(
    processes: Processes,
) -> None:
    """Embedded mode: a restart is a new epoch, so the resubscribe answers recovered=false."""
    node = processes()
    async with (
        Pully(node.ws_url, backoff=FAST) as p,
        Pully(node.ws_url, backoff=FAST, offline="fail") as failing,
    ):
        events = Events(p)
        sub = await p.subscribe("restart")
        await p.publish("restart", "before")
        before = await sub.get(5)

        node.signal(signal.SIGKILL)
        node.wait(10)
        await eventually(lambda: events.of("disconnected"), 10, "disconnected event")
        assert events.of("disconnected")[0].reconnecting is True
        assert not p.connected
        with pytest.raises(NotConnected):  # offline="fail": at once
            await failing.publish("restart", "fails fast")
        with pytest.raises(RequestTimeout):  # offline="wait": bounded
            await p.publish("restart", "times out", timeout=0.2)
        waiting = asyncio.ensure_future(p.publish("restart", "waited"))

        await start(node)  # same port, new process: new epoch
        assert await waiting == 1
        after = await sub.get(5)
        assert (after.data, after.offset) == ("waited", 1) and after.epoch != before.epoch
        [connected] = [e for e in events.of("connected") if e.reconnect]
        assert isinstance(connected, Connected)
        assert all(isinstance(e, Reconnecting) for e in events.of("reconnecting"))
        [lost] = events.of("recovery_failed")
        assert isinstance(lost, RecoveryFailed) and lost.subscription is sub
        assert lost.previous == before.position and lost.position.epoch == after.epoch
        await eventually(lambda: failing.connected, 10, "the fail-fast client back")
        assert await failing.publish("restart", "fine again") == 2


class SteadyPublisher:
    """Publishes ``{"seq": n}`` every ``interval`` seconds, recording acked offsets."""

    def __init__(self, client: Pully, channel: str, interval: float = 0.01) -> None:
        self.client, self.channel, self.interval = client, channel, interval
        self.acked: list[int] = []
        self.stopped = False

    async def run(self) -> None:
        seq = 0
        while not self.stopped:
            seq += 1
            offset = await self.client.publish(self.channel, {"seq": seq})
            assert offset is not None
            self.acked.append(offset)
            await asyncio.sleep(self.interval)


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_cluster_node_killed_client_fails_over_and_recovers_exactly_once(
    processes: Processes, cluster_redis: RedisServer
) -> None:
    a = processes(redis_url=cluster_redis.url)
    b = processes(redis_url=cluster_redis.url)
    received: list[Message] = []
    async with (
        Pully([b.ws_url, a.ws_url], backoff=FAST) as sub_client,
        Pully(a.ws_url) as pub_client,
    ):
        events = Events(sub_client)
        assert sub_client.node == f"node1-{b.port}"
        await sub_client.subscribe("failover", received.append)
        publisher = SteadyPublisher(pub_client, "failover")
        task = asyncio.ensure_future(publisher.run())
        await eventually(lambda: len(received) >= 20, 10, "messages before the kill")

        b.signal(signal.SIGKILL)
        b.wait(10)
        await eventually(lambda: sub_client.node == f"node0-{a.port}", 10, "failover to a")
        settled = len(publisher.acked)
        await eventually(lambda: len(publisher.acked) >= settled + 20, 10, "acks after failover")
        publisher.stopped = True
        await task
        await eventually(lambda: len(received) >= len(publisher.acked), 10, "every acked message")

    assert [m.offset for m in received] == publisher.acked, "each acked message exactly once"
    assert [m.data["seq"] for m in received] == list(range(1, len(received) + 1))
    assert events.of("recovery_failed") == [], "the other node recovered the gap"
    [drop, closed] = events.of("disconnected")
    assert isinstance(drop, Disconnected) and drop.reconnecting and drop.code == 1006
    assert (closed.reconnecting, closed.reason) == (False, "client closed")


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_drain_sends_the_client_to_another_node(
    processes: Processes, cluster_redis: RedisServer
) -> None:
    a = processes(redis_url=cluster_redis.url)
    b = processes(redis_url=cluster_redis.url)
    async with Pully([a.ws_url, b.ws_url], backoff=FAST) as p, Pully(b.ws_url) as pub:
        events = Events(p)
        sub = await p.subscribe("drain")
        await pub.publish("drain", "before")
        assert (await sub.get(5)).offset == 1
        a.signal(signal.SIGTERM)
        await eventually(lambda: p.node == f"node1-{b.port}", 10, "reconnected to b")
        assert a.wait(15) == 0
        [drop] = events.of("disconnected")
        assert (drop.code, drop.reason) == (1012, "draining")
        assert await pub.publish("drain", "after") == 2
        assert (await sub.get(5)).data == "after"
        assert await p.publish("drain", "mine") == 3
        assert (await sub.get(5)).offset == 3
        assert events.of("recovery_failed") == []
