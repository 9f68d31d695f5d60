"""Webhooks against a real HTTP receiver (tests/hook_backend.py): signed batches of connect,
subscribe, unsubscribe and disconnect events, retries after 500s, a receiver that hangs never
holding up clients (the bounded queue overflows and counts instead), and channel_occupied /
channel_vacated once across two real ``pully serve`` processes on a real Redis, a crashed node's
channels vacating after its presence TTL."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import tornado.httpclient
import tornado.ioloop

from pully_tornado.node import Node

from .hook_backend import HANG, Backend, Request, signed_by
from .support import PullyProcess, RedisServer, WSClient, eventually, free_port, wait_for
from .test_auth import refused as refused_handshake
from .test_doc_examples import examples

SECRET = "webhook-secret-for-tests"


@pytest.fixture
def engine() -> str:
    return "memory"


@pytest.fixture
def hook_settings() -> dict[str, Any]:
    """Parametrize a test with it to change the webhook settings."""
    return {}


@pytest.fixture
def settings_overrides(backend: Backend, hook_settings: dict[str, Any]) -> dict[str, Any]:
    return {"webhook_url": backend.url("/events"), "webhook_secret": SECRET, **hook_settings}


def events(backend: Backend, kind: str | None = None) -> list[dict[str, Any]]:
    found = [e for r in backend.requests["/events"] for e in r.json()["events"]]
    return [e for e in found if kind is None or e["type"] == kind]


def delivered(backend: Backend) -> list[Request]:
    """Requests the receiver answered 2xx (it answers in turn: see Backend.answer)."""
    return backend.requests["/events"]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.usefixtures("app", "http_server")
async def test_client_events_arrive_signed_in_batches(
    ws_url: str, backend: Backend, node: Node
) -> None:
    backend.answer("/events", (200, {}))
    client = await WSClient.connect(ws_url)
    await client.subscribe("room")
    await client.request({"type": "unsubscribe", "channel": "room"})
    await client.aclose()
    await eventually(lambda: events(backend, "disconnect"), 10, "the disconnect event")
    assert all(signed_by(SECRET, r) for r in backend.requests["/events"])
    assert not signed_by("another-secret-entirely", backend.requests["/events"][0])
    got = [(e["type"], e.get("channel"), e.get("reason")) for e in events(backend)]
    assert got == [
        ("connect", None, None),
        ("subscribe", "room", None),
        ("channel_occupied", "room", None),
        ("unsubscribe", "room", "client"),
        ("channel_vacated", "room", None),
        ("disconnect", None, got[-1][2]),
    ]
    client_id = client.welcome["client"]
    for event in events(backend):
        assert event["node"] == "test-node" and isinstance(event["time"], float)
        if event["type"] in ("connect", "subscribe", "unsubscribe", "disconnect"):
            assert event["client"] == client_id and "user" not in event  # anonymous
    assert len(backend.requests["/events"]) < len(got)  # batched, not one post per event


@pytest.mark.gen_test(timeout=30)
@pytest.mark.usefixtures("app", "http_server")
@pytest.mark.parametrize("hook_settings", [{"webhook_events": frozenset({"connect"})}])
async def test_a_failing_receiver_gets_the_same_signed_batch_again(
    ws_url: str, backend: Backend, node: Node
) -> None:
    backend.answer("/events", (500, {}), (503, {}), (200, {}))
    client = await WSClient.connect(ws_url)
    await eventually(lambda: len(backend.requests["/events"]) == 3, 15, "two retries")
    bodies = {r.body for r in backend.requests["/events"]}
    assert len(bodies) == 1 and all(signed_by(SECRET, r) for r in backend.requests["/events"])
    [event] = events(backend)[:1]
    assert (event["type"], event["client"]) == ("connect", client.welcome["client"])
    assert node.hooks.webhooks is not None
    await eventually(lambda: node.hooks.webhooks.counts["sent"] == 1, 5, "counted as sent")


@pytest.mark.gen_test(timeout=30)
@pytest.mark.usefixtures("app", "http_server")
@pytest.mark.parametrize(
    "hook_settings",
    [
        {"webhook_events": frozenset({"connect", "subscribe"}), "webhook_queue": 5},
        {  # a receiver that is down: nothing listens there
            "webhook_events": frozenset({"connect", "subscribe"}), "webhook_queue": 5,
            "webhook_url": f"http://127.0.0.1:{free_port()}/events",
        },
    ],
    ids=["hung", "down"],
)  # fmt: skip
async def test_a_hung_or_down_receiver_never_holds_up_clients(
    ws_url: str, base: str, backend: Backend, node: Node
) -> None:
    backend.answer("/events", HANG)
    clients = [await WSClient.connect(ws_url) for _ in range(20)]
    for client in clients:  # every client is served while the receiver hangs
        await client.subscribe("busy")
    ack = await clients[0].publish("busy", "still flowing")
    assert ack["type"] == "ack"
    assert len(await clients[-1].messages(1)) == 1
    response = await tornado.httpclient.AsyncHTTPClient().fetch(base + "/metrics")
    text = response.body.decode()
    counts = {
        result: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pully_webhook_events_total{")
        for result in [line.split('"')[1]]
    }
    assert counts["queued"] + counts["overflow"] == 40  # 20 connects + 20 subscribes
    assert counts["overflow"] >= 30  # the queue holds 5; one batch of at most 5 is in flight
    assert counts["sent"] == 0


# -- cluster-wide occupancy: real processes on a real Redis -------------------------------------


def occupancy(backend: Backend) -> list[tuple[str, str, str]]:
    return [(e["type"], e["channel"], e["node"]) for e in events(backend)]


async def settle(backend: Backend, marks: list[tuple[WSClient, str]]) -> None:
    """Every node's earlier events have arrived: each node's own marker channel (subscribed
    after the events under test) has been reported occupied. A node reports in order."""
    for client, channel in marks:
        await client.subscribe(channel)
    names = {channel for _, channel in marks}
    await eventually(
        lambda: names <= {c for t, c, _ in occupancy(backend) if t == "channel_occupied"},
        15, f"markers {names}",
    )  # fmt: skip


@pytest.mark.gen_test(timeout=90)
async def test_occupied_and_vacated_once_across_nodes_and_after_a_crash(
    processes: Callable[..., PullyProcess], cluster_redis: RedisServer, backend: Backend
) -> None:
    backend.answer("/events", (200, {}))
    env = {
        "PULLY_WEBHOOK_URL": backend.url("/events"), "PULLY_WEBHOOK_SECRET": SECRET,
        "PULLY_WEBHOOK_EVENTS": "channel_occupied,channel_vacated", "PULLY_PRESENCE_TTL": "1",
    }  # fmt: skip
    nodes = [processes(redis_url=cluster_redis.url, env=env) for _ in range(2)]
    ids = [f"{n.name}-{n.port}" for n in nodes]
    clients = [await WSClient.connect(n.ws_url) for n in nodes for _ in range(2)]
    # four subscribers on two nodes, at once: the channel is occupied once
    await asyncio.gather(*(c.subscribe("lobby") for c in clients))
    for c in clients:
        await c.request({"type": "unsubscribe", "channel": "lobby"})
    await settle(backend, [(clients[0], "mark-a0"), (clients[2], "mark-a1")])
    lobby = [(t, n) for t, c, n in occupancy(backend) if c == "lobby"]
    assert [t for t, _ in lobby] == ["channel_occupied", "channel_vacated"]
    assert all(signed_by(SECRET, r) for r in backend.requests["/events"])

    # node0 dies holding "doomed" (node1 has it too, then leaves): node1 vacates it after the TTL
    await clients[0].subscribe("doomed")
    await clients[2].subscribe("doomed")
    await eventually(  # events still queued on a node that is killed are lost with it
        lambda: "doomed" in {c for _, c, _ in occupancy(backend)}, 10, "doomed occupied"
    )
    await clients[2].request({"type": "unsubscribe", "channel": "doomed"})
    nodes[0].signal(signal.SIGKILL)
    nodes[0].wait(10)
    await eventually(
        lambda: ("channel_vacated", "doomed", ids[1]) in occupancy(backend), 20, "doomed vacated"
    )
    await settle(backend, [(clients[3], "mark-b1")])
    doomed = [t for t, c, _ in occupancy(backend) if c == "doomed"]
    assert doomed == ["channel_occupied", "channel_vacated"]
    # node0's markers vacated with it, once each, by node1
    for mark in ("mark-a0",):
        assert [(t, n) for t, c, n in occupancy(backend) if c == mark] == [
            ("channel_occupied", ids[0]), ("channel_vacated", ids[1])
        ]  # fmt: skip

    # a node frozen past its TTL is taken for dead; revived, it states its channels again
    frozen = processes(redis_url=cluster_redis.url, env=env)
    frozen_id = f"{frozen.name}-{frozen.port}"
    watcher = await WSClient.connect(frozen.ws_url)
    await watcher.subscribe("frozen")
    await eventually(lambda: ("channel_occupied", "frozen", frozen_id) in occupancy(backend), 10)
    frozen.signal(signal.SIGSTOP)
    try:
        await eventually(
            lambda: ("channel_vacated", "frozen", ids[1]) in occupancy(backend), 20, "swept"
        )
    finally:
        frozen.signal(signal.SIGCONT)
    await eventually(
        lambda: [t for t, c, _ in occupancy(backend) if c == "frozen"][-1:] == ["channel_occupied"],
        20, "restated",
    )  # fmt: skip
    assert [t for t, c, _ in occupancy(backend) if c == "frozen"] == [
        "channel_occupied", "channel_vacated", "channel_occupied",
    ]  # fmt: skip
    # stopped (SIGTERM) while this loop runs, the nodes vacate what they hold as they go
    for client in [*clients, watcher]:
        client.close()
    await asyncio.gather(*(asyncio.to_thread(n.stop) for n in (nodes[1], frozen)))
    assert ("channel_vacated", "mark-b1", ids[1]) in occupancy(backend)
    assert ("channel_vacated", "frozen", frozen_id) in occupancy(backend)


# -- the receiver in docs/hooks.md, run as written ----------------------------------------------


@pytest.fixture
def doc_receiver(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    lang, code = examples("hooks.md")["receiver"]
    assert lang == "python"
    script = tmp_path / "receiver.py"
    script.write_text(code)
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PULLY_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: _listening(port), 10, what="the doc's receiver")
        yield f"http://127.0.0.1:{port}/pully", proc
    finally:
        proc.kill()
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.gen_test(timeout=60)
async def test_the_receiver_in_the_docs_serves_all_three_hooks(
    processes: Callable[..., PullyProcess], doc_receiver: tuple[str, subprocess.Popen[str]]
) -> None:
    url, receiver = doc_receiver
    node = processes(env={
        "PULLY_CONNECT_PROXY_URL": f"{url}/connect",
        "PULLY_SUBSCRIBE_PROXY_URL": f"{url}/subscribe",
        "PULLY_SUBSCRIBE_PROXY_CHANNELS": "private:*",
        "PULLY_WEBHOOK_URL": f"{url}/events",
        "PULLY_WEBHOOK_SECRET": SECRET,
        "PULLY_WEBHOOK_EVENTS": "connect,subscribe",
    })  # fmt: skip
    request = tornado.httpclient.HTTPRequest(node.ws_url, headers={"Cookie": "session=alice"})
    client = await WSClient.connect(request)  # type: ignore[arg-type]
    assert client.welcome["user"] == "alice"
    await client.subscribe("private:alice")
    refused = await client.request({"type": "subscribe", "channel": "private:bob"})
    assert refused["code"] == "forbidden"
    status, _ = await refused_handshake(node.ws_url)
    assert status == 403  # no session cookie
    out = receiver.stdout
    assert out is not None
    lines = await asyncio.wait_for(
        asyncio.to_thread(lambda: [out.readline() for _ in range(2)]), 15
    )
    printed = [orjson.loads(line) for line in lines]
    assert [(e["type"], e["user"], e.get("channel")) for e in printed] == [
        ("connect", "alice", None), ("subscribe", "alice", "private:alice"),
    ]  # fmt: skip
    client.close()
    await asyncio.to_thread(node.stop)  # while this loop runs: a quick drain
