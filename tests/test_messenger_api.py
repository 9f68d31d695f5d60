"""The messenger example's API on a real PostgreSQL with a real `pully serve` consuming its
outbox: accounts, friends, chats, messages delivered by Pully once committed, a removed member
cut off at once, logout disconnecting, every bad input refused clearly, migrations up and down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .messenger_support import APP, Messenger, alembic, create_database, messenger
from .pg_support import postgres_cluster
from .support import WSClient, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Messenger]:
    with messenger(tmp_path_factory.mktemp("messenger")) as running:
        yield running


def befriend(a: httpx.Client, b: httpx.Client, b_name: str) -> None:
    request = a.post("/friends/requests", json={"name": b_name})
    assert request.status_code == 201, request.text
    accepted = b.post(f"/friends/requests/{request.json()['id']}/accept")
    assert accepted.json()["status"] == "accepted"


async def connect_as(app: Messenger, client: httpx.Client) -> WSClient:
    # blocking HTTP is fine here: the app is another process (so are all the calls below)
    grant = client.get("/pully-token").json()  # noqa: ASYNC212
    assert grant["urls"] == [app.pully.ws_url]
    return await WSClient.connect(f"{grant['urls'][0]}?token={grant['token']}")


def test_accounts_and_bad_input(app: Messenger) -> None:
    anon = app.client()
    user_id, ann = app.register("ann")
    assert ann.get("/me").json() == {"id": user_id, "name": "ann"}
    assert anon.post("/register", json={"name": "ann", "password": "whatever1"}).status_code == 409
    bad = anon.post("/register", json={"name": "a b", "password": "short"})
    assert bad.status_code == 400
    assert len(bad.json()["problems"]) == 2
    assert all(p.startswith(("body.name", "body.password")) for p in bad.json()["problems"])
    assert anon.post("/login", json={"name": "ann", "password": "wrong pass"}).status_code == 401
    login = anon.post("/login", json={"name": "ann", "password": "correct horse"})
    assert login.status_code == 200 and login.json()["id"] == user_id
    assert anon.get("/me").status_code == 401
    assert app.client("forged.token.here").get("/me").status_code == 401


def test_friends_requests_and_their_rules(app: Messenger) -> None:
    _, bo = app.register("bo")
    _, cy = app.register("cy")
    assert bo.post("/friends/requests", json={"name": "nobody"}).status_code == 404
    assert bo.post("/friends/requests", json={"name": "bo"}).status_code == 400
    request = bo.post("/friends/requests", json={"name": "cy"}).json()
    assert bo.post("/friends/requests", json={"name": "cy"}).status_code == 409
    assert bo.post(f"/friends/requests/{request['id']}/accept").status_code == 403  # not asked
    assert cy.get("/friends").json()["incoming"][0]["name"] == "bo"
    assert cy.post(f"/friends/requests/{request['id']}/decline").json()["status"] == "declined"
    assert cy.get("/friends").json() == {"friends": [], "incoming": [], "outgoing": []}


@pytest.mark.gen_test(timeout=60)
async def test_messages_reach_members_through_the_outbox(app: Messenger) -> None:
    dee_id, dee = app.register("dee")
    eve_id, eve = app.register("eve")
    fay_id, fay = app.register("fay")
    befriend(dee, eve, "eve")
    befriend(dee, fay, "fay")
    # private: both users' own channels
    eve_ws = await connect_as(app, eve)
    await eve_ws.subscribe(f"user:{eve_id}")
    sent = dee.post(f"/friends/{eve_id}/messages", json={"body": "hi eve"})
    assert sent.status_code == 201
    [private] = await eve_ws.messages(1)
    assert private["channel"] == f"user:{eve_id}"
    assert private["data"] == {"kind": "message", **sent.json()}
    assert fay.post(f"/friends/{eve_id}/messages", json={"body": "x"}).status_code == 403
    # online friends: eve's page is subscribed to her own channel
    online = {f["name"]: f["online"] for f in dee.get("/friends").json()["friends"]}
    assert online == {"eve": True, "fay": False}
    # a group of three
    chat = dee.post("/chats", json={"name": "trio", "members": [eve_id, fay_id]}).json()
    assert chat["members"] == sorted([dee_id, eve_id, fay_id])
    # eve's open connection was subscribed by the app (server-side, /api/subscribe)
    joined = await eve_ws.recv()
    assert (joined["type"], joined["server"]) == ("subscribed", True)
    assert joined["channel"] == chat["channel"]
    fay_ws = await connect_as(app, fay)  # a new token includes the chat: she subscribes
    await fay_ws.subscribe(chat["channel"])
    for n in range(3):
        assert dee.post(f"/chats/{chat['id']}/messages", json={"body": f"m{n}"}).status_code == 201
    for ws in (eve_ws, fay_ws):
        assert [m["data"]["body"] for m in await ws.messages(3)] == ["m0", "m1", "m2"]
    # typing is live only: delivered, never stored (the example's relationships.json)
    typing = f"typing:{chat['channel']}"
    fay_tab = await connect_as(app, fay)  # eve's token predates the chat: fay's second tab
    await fay_tab.subscribe(typing)
    await fay_ws.publish(typing, {"user": "fay"})
    [typed] = await fay_tab.messages(1)
    assert typed["data"] == {"user": "fay"}
    fay_tab.close()
    stored = {ch: app.client().post(app.pully.url + "/api/history", json={"channel": ch}).json()
              for ch in (typing, chat["channel"])}  # fmt: skip
    assert stored[typing]["result"]["messages"] == []
    assert len(stored[chat["channel"]]["result"]["messages"]) == 3
    # fay removed: her open connection is cut off from the chat at once
    assert dee.delete(f"/chats/{chat['id']}/members/{fay_id}").status_code == 204
    assert await fay_ws.recv() == {"type": "unsubscribed", "channel": chat["channel"],
                                   "server": True}  # fmt: skip
    dee.post(f"/chats/{chat['id']}/messages", json={"body": "without fay"})
    [last] = await eve_ws.messages(1)
    assert last["data"]["body"] == "without fay"
    await fay_ws.no_message(0.5)
    assert fay.get(f"/chats/{chat['id']}/messages").status_code == 403
    # history from the app's database, newest first, with a cursor
    page = eve.get(f"/chats/{chat['id']}/messages", params={"limit": 2}).json()
    assert [m["body"] for m in page["messages"]] == ["without fay", "m2"]
    older = eve.get(f"/chats/{chat['id']}/messages", params={"before": page["next"], "limit": 2})
    assert [m["body"] for m in older.json()["messages"]] == ["m1", "m0"]
    assert eve.get(f"/chats/{chat['id']}/messages", params={"limit": 0}).status_code == 400
    # logout: every connection of eve closed by Pully
    assert eve.post("/logout").status_code == 204
    closed = await eve_ws.closed()
    assert (closed.code, closed.reason) == (4003, "logged out")


def test_chat_rules(app: Messenger) -> None:
    gus_id, gus = app.register("gus")
    hal_id, hal = app.register("hal")
    assert gus.post("/chats", json={"name": "x", "members": [hal_id]}).status_code == 403
    chat = gus.post("/chats", json={"name": "solo"}).json()
    assert hal.post(f"/chats/{chat['id']}/messages", json={"body": "x"}).status_code == 403
    assert hal.post(f"/chats/{chat['id']}/members", json={"user_id": hal_id}).status_code == 403
    assert gus.post("/chats/999999/messages", json={"body": "x"}).status_code == 404
    assert gus.post(f"/chats/{chat['id']}/messages", json={"body": ""}).status_code == 400
    befriend(gus, hal, "hal")
    added = gus.post(f"/chats/{chat['id']}/members", json={"user_id": hal_id})
    assert added.json()["members"] == sorted([gus_id, hal_id])
    assert hal.delete(f"/chats/{chat['id']}/members/{gus_id}").status_code == 403
    assert hal.delete(f"/chats/{chat['id']}/members/{hal_id}").status_code == 204  # leaves


def test_the_migration_holds_pullys_current_outbox_sql() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "pully_tornado", "outbox", "init", "--print"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    migration = (APP / "alembic" / "versions" / "0001_initial.py").read_text()
    assert printed.strip() in migration
    # the app's image installs requirements.txt alone: nothing of it imports Pully's package
    for path in (APP / "messenger").rglob("*.py"):
        assert "pully_tornado" not in path.read_text(), path
    assert "pully_tornado" not in migration


def test_migrations_go_up_and_down() -> None:
    with postgres_cluster() as cluster:
        dsn = create_database(cluster, "migrations")
        for step in (("upgrade", "head"), ("downgrade", "base"), ("upgrade", "head")):
            done = alembic(dsn, *step)
            assert done.returncode == 0, done.stderr
        current = alembic(dsn, "current")
        assert "0001 (head)" in current.stdout


def test_the_migration_creates_pullys_outbox(app: Messenger, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(app.dsn) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}  # fmt: skip
    assert {"pully_outbox", "pully_outbox_failed", "messages", "chat_members"} <= tables


def test_the_run_command_starts_and_stops_everything(tmp_path: Path) -> None:
    app_port, pully_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    proc = subprocess.Popen(
        [str(APP / "run"), "--port", str(app_port), "--pully-port", str(pully_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = b""
        while b"messenger ready" not in line:
            line = proc.stdout.readline()
            assert line, "run exited before it was ready"
        assert f"http://127.0.0.1:{app_port}".encode() in line
        with httpx.Client(base_url=f"http://127.0.0.1:{app_port}") as client:
            assert client.get("/health").json() == {"status": "ok"}
            created = client.post("/register", json={"name": "runner", "password": "12345678"})
            assert created.status_code == 201
        with httpx.Client() as client:
            health = client.get(f"http://127.0.0.1:{pully_port}/healthz").json()
            assert health["consumers"]["outbox"]["state"] == "connected"
            document = client.get(f"http://127.0.0.1:{pully_port}/relationships").json()
            assert document["relationships"]["options"] == {"typing:*": {"history_size": 0}}
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.stdout is not None
        rest = proc.stdout.read()  # to its end: the pipe never fills while it stops
        proc.stdout.close()
        assert proc.wait(40) == 0, rest.decode(errors="replace")[-2000:]
    for port in (app_port, pully_port):
        with socket.socket() as probe:  # nothing listens any more
            assert probe.connect_ex(("127.0.0.1", port)) != 0
