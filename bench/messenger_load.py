"""``python -m bench.messenger_load``: the messenger example (examples/messenger) under load, end
to end: simulated users send messages through the app (HTTP ``POST``: the message row and its
outbox rows in one transaction), Pully's outbox consumer publishes them, and the users'
WebSocket connections receive them.

Set-up (the test suite's own fixtures, tests/messenger_support.py): a throwaway PostgreSQL,
the Alembic migrations, ``--nodes`` Pully nodes (two or more on one redis-server, every node
consuming the outbox), the app under one uvicorn. ``--users`` users register; each befriends the
next (a ring) and every five form a group chat; each opens one WebSocket, to the nodes in turn,
with the JWT the app mints, subscribed to its ``user:<id>`` and its chats. Then for
``--seconds`` they send ``--rate`` messages per second in total (70 % private, 30 % to their
group) from 32 concurrent HTTP clients.

Figures: messages the app accepted per second, deliveries per second, and the time from the
send request leaving the user to the message arriving on each recipient's WebSocket ("send" to
"shown"; the sender's own copy is not counted), p50/p99/max; lost = recipients that never got a
message within 10 s of the end. ``--write-docs`` puts the table into docs/performance.md
(``messenger`` block).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from .report import update_section
from .wsclient import WSConnection, connect

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class User:
    id: int
    name: str
    http: httpx.AsyncClient
    friends: list[int] = field(default_factory=list)
    chat: tuple[int, list[int]] | None = None  # (chat id, members)
    ws: WSConnection | None = None


class Arrivals:
    """Sink of every user's WebSocket: when each message id reached each user."""

    def __init__(self) -> None:
        self.at: dict[int, dict[int, float]] = {}

    def on_message(self, conn: WSConnection, payload: bytes, now_ns: int) -> None:
        data = orjson.loads(payload)["data"]
        if isinstance(data, dict) and data.get("kind") == "message":
            self.at.setdefault(data["id"], {}).setdefault(conn.idx, now_ns / 1e9)

    def on_closed(self, conn: WSConnection) -> None:
        pass


@contextmanager
def running_app(workdir: Path, nodes: int) -> Iterator[Any]:
    sys.path.insert(0, str(ROOT))
    from tests.messenger_support import messenger
    from tests.support import RedisServer

    redis = RedisServer(workdir).start() if nodes > 1 else None
    try:
        with messenger(workdir, redis.url if redis else None, nodes=nodes) as app:
            yield app
    finally:
        if redis is not None:
            redis.kill()


async def set_up(app: Any, n: int, sink: Arrivals) -> list[User]:
    # idle connections dropped before uvicorn's keep-alive (5 s) would close them under a request
    limits = httpx.Limits(max_connections=4, keepalive_expiry=2)
    users: list[User] = []
    for i in range(n):
        http = httpx.AsyncClient(base_url=app.url, timeout=30, limits=limits)
        reply = await http.post("/register", json={"name": f"u{i}", "password": "load-test"})
        body = reply.json()
        http.headers["Authorization"] = f"Bearer {body['token']}"
        users.append(User(body["id"], f"u{i}", http))
    for i, user in enumerate(users):  # each befriends the next four (a group of five's owner
        for other in users[i + 1 : i + 5]:  # is every member's friend)
            request = await user.http.post("/friends/requests", json={"name": other.name})
            await other.http.post(f"/friends/requests/{request.json()['id']}/accept")
            user.friends.append(other.id)
            other.friends.append(user.id)
    for start in range(0, n - 4, 5):
        owner, *members = users[start : start + 5]
        made = await owner.http.post(
            "/chats", json={"name": f"g{start}", "members": [u.id for u in members]}
        )
        chat = made.json()
        assert made.status_code == 201, chat
        for u in (owner, *members):
            u.chat = (chat["id"], chat["members"])
    for i, user in enumerate(users):
        grant = (await user.http.get("/pully-token")).json()
        url = grant["urls"][i % len(grant["urls"])]
        target = url.removeprefix("ws://").split("/", 1)[0]
        user.ws = await connect(target, sink, path=f"/ws?token={grant['token']}")
        user.ws.idx = user.id
        for channel in [f"user:{user.id}"] + ([f"chat:{user.chat[0]}"] if user.chat else []):
            subscribed = await user.ws.request({"type": "subscribe", "channel": channel})
            assert subscribed.get("type") == "subscribed", subscribed
    return users


async def load(
    users: list[User], rate: float, seconds: float
) -> tuple[list[tuple[int, float, set[int]]], int]:
    """Send for ``seconds``; returns (message id, send time, recipients) of each accepted, and
    how many sends failed."""
    sent: list[tuple[int, float, set[int]]] = []
    failed: list[str] = []
    queue: asyncio.Queue[User | None] = asyncio.Queue()
    rng = random.Random(7)

    async def sender() -> None:
        while (user := await queue.get()) is not None:
            group = user.chat is not None and rng.random() < 0.3
            if group:
                assert user.chat is not None
                path, to = f"/chats/{user.chat[0]}/messages", set(user.chat[1]) - {user.id}
            else:
                friend = rng.choice(user.friends)
                path, to = f"/friends/{friend}/messages", {friend}
            start = time.perf_counter_ns() / 1e9
            try:
                reply = await user.http.post(path, json={"body": f"hello at {start}"})
            except httpx.TransportError:
                failed.append(path)  # counted, never retried: a retry could send twice
                continue
            if reply.status_code == 201:
                sent.append((reply.json()["id"], start, to))
            else:
                failed.append(path)

    workers = [asyncio.ensure_future(sender()) for _ in range(32)]
    began = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate)
        for _ in range(due - n):
            queue.put_nowait(rng.choice(users))
        n = max(n, due)
        await asyncio.sleep(0.005)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return sent, len(failed)


async def measure(app: Any, opts: argparse.Namespace) -> dict[str, Any]:
    sink = Arrivals()
    users = await set_up(app, opts.users, sink)
    began = time.monotonic()
    sent, failed = await load(users, opts.rate_now, opts.seconds)
    sending_s = time.monotonic() - began
    expected = sum(len(to) for _, _, to in sent)
    for _ in range(50):  # 10 s at most for the last ones
        if sum(len(set(sink.at.get(mid, {})) & to) for mid, _, to in sent) >= expected:
            break
        await asyncio.sleep(0.2)
    latencies = sorted(
        1000 * (sink.at[mid][r] - start) for mid, start, to in sent for r in to
        if r in sink.at.get(mid, {})
    )  # fmt: skip
    for user in users:
        if user.ws is not None:
            user.ws.close()
        await user.http.aclose()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "nodes": opts.nodes_now, "users": opts.users, "rate": opts.rate_now,
        "sent_per_s": round(len(sent) / sending_s, 1),
        "deliveries_per_s": round(len(latencies) / sending_s, 1),
        "p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "lost": expected - len(latencies), "sent": len(sent), "failed": failed,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.messenger_load", description=__doc__)
    p.add_argument("--nodes", default="1,2", help="Pully node counts to run, in turn")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--rate", default="100", help="messages per second in total (a list: each)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--write-docs", action="store_true")
    opts = p.parse_args(argv)
    rows = []
    for rate in (float(r) for r in opts.rate.split(",")):
        for nodes in (int(n) for n in opts.nodes.split(",")):
            opts.nodes_now, opts.rate_now = nodes, rate
            with tempfile.TemporaryDirectory(prefix="pully-messenger-") as tmp, running_app(
                Path(tmp), nodes
            ) as app:  # fmt: skip
                result = asyncio.run(measure(app, opts))
            print(orjson.dumps(result).decode(), flush=True)
            rows.append(result)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join([
        f"Generated {when} by `python -m bench.messenger_load --users {opts.users} --rate "
        f"{opts.rate} --seconds {opts.seconds:g}`: one uvicorn, one PostgreSQL, the nodes on "
        "one Redis when there are two; everything on this 2-core machine.",
        "",
        "| offered msg/s | Pully nodes | messages accepted/s | sends failed | deliveries/s "
        "| send → shown p50 / p99 / max ms | lost |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['rate']:g} | {r['nodes']} | {r['sent_per_s']} | {r['failed']} "
          f"| {r['deliveries_per_s']} | {r['p50_ms']} / {r['p99_ms']} / {r['max_ms']} "
          f"| {r['lost']} |" for r in rows),
    ])  # fmt: skip
    print(table)
    if opts.write_docs:
        update_section(ROOT / "docs" / "performance.md", "messenger", table)
    return 0 if all(r["lost"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
