"""GET /admin in headless Chromium against two real `pully serve` nodes on one Redis: the page
lists both nodes and the channels with their subscribers, shows a channel's presence (user names
as text, never markup) and history, publishes, disconnects a user on the other node, watches a
channel live through pully-client, and says plainly when the admin token is wrong."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from websockets.sync.client import ClientConnection, connect

from .support import ROOT, PullyProcess, RedisServer, wait_for
from .test_auth import SECRET, token
from .test_browser import browser  # noqa: F401 - the module's Chromium

Processes = Callable[..., PullyProcess]
pytestmark = pytest.mark.slow
EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def sockets() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def user_socket(
    stack: contextlib.ExitStack, node: PullyProcess, name: str, *channels: str
) -> ClientConnection:
    url = f"{node.ws_url}?token={token(name, channels=['*'])}"
    ws = stack.enter_context(connect(url, open_timeout=10))
    assert json.loads(ws.recv(10))["type"] == "welcome"
    for channel in channels:
        ws.send(json.dumps({"type": "subscribe", "channel": channel, "id": channel}))
        assert json.loads(ws.recv(10))["type"] == "subscribed"
    return ws


def next_message(ws: ClientConnection) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(ws.recv(10))
        if frame["type"] == "message":
            return frame


@pytest.fixture
def nodes(processes: Processes, redis_server: RedisServer) -> Iterator[list[PullyProcess]]:
    redis_server.client().flushall()
    env = {"PULLY_JWT_SECRET": SECRET}
    yield [processes(redis_url=redis_server.url, env=env) for _ in range(2)]


def open_admin(chromium: Browser, node: PullyProcess) -> tuple[Page, list[str]]:
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{node.url}/admin")
    return page, errors


def test_the_page_shows_the_cluster_and_acts_on_it(
    browser: Browser,  # noqa: F811
    nodes: list[PullyProcess],
    sockets: contextlib.ExitStack,
    tmp_path: Path,
) -> None:
    first, second = nodes
    bob = user_socket(sockets, second, "bob", "lobby")
    evil = user_socket(sockets, second, EVIL, "lobby")
    page, errors = open_admin(browser, first)
    for node in nodes:  # both nodes, asked through the first one
        expect(page.locator(f'#nodes tr[data-node="{node.name}-{node.port}"]')).to_be_visible()
    lobby = page.locator('#channels tr[data-channel="lobby"]')
    expect(lobby).to_contain_text("2")
    lobby.locator("button").click()
    expect(page.locator("#selected")).to_have_text("lobby")
    expect(page.locator("#presence")).to_contain_text("bob")
    expect(page.locator("#presence")).to_contain_text(EVIL)  # as text: no <img> was made
    assert page.locator("#presence img").count() == 0
    # publish from the page: bob, on the other node, receives it; history shows it
    page.fill("#pub-data", '{"text": "hello from admin"}')
    page.click("#publish")
    expect(page.locator("#pub-result")).to_have_text("published at offset 1")
    assert next_message(bob)["data"] == {"text": "hello from admin"}
    expect(page.locator("#history")).to_contain_text('#1 {"text":"hello from admin"}')
    # watching live needs a token on this cluster (PULLY_JWT_SECRET): the page says so
    page.click("#watch")
    expect(page.locator("#watch-state")).to_contain_text("watching is unavailable", timeout=15_000)
    # disconnect bob from the page: his socket on the other node closes with 4003
    page.fill("#disc-user", "bob")
    page.click("#disconnect")
    expect(page.locator("#disc-result")).to_have_text("1 connection(s) of bob closed")
    with pytest.raises(Exception) as closed:
        next_message(bob)
    assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 4003
    expect(lobby).to_contain_text("1")  # live refresh: only the other user is left
    # PULLY_UPDATE_SCREENSHOT=1 writes docs/admin.png (as tests/test_browser.py does)
    shot = (
        ROOT / "docs" / "admin.png"
        if os.environ.get("PULLY_UPDATE_SCREENSHOT")
        else tmp_path / "admin.png"
    )
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    assert evil is not None
    assert errors == []
    page.close()


def test_watching_live_through_pully_client(
    browser: Browser,  # noqa: F811
    processes: Processes,
    sockets: contextlib.ExitStack,
) -> None:
    node = processes()  # embedded, no token needed for /ws
    reader = user_socket(sockets, node, "anyone", "news")  # keeps the channel listed
    page, errors = open_admin(browser, node)
    page.locator('#channels tr[data-channel="news"] button').click()
    page.click("#watch")
    expect(page.locator("#watch-state")).to_have_text("watching news live")
    page.fill("#pub-data", '"breaking"')
    page.click("#publish")
    expect(page.locator("#live li")).to_have_text('#1 "breaking"')
    assert next_message(reader)["data"] == "breaking"
    assert errors == []
    page.close()


def test_a_wrong_admin_token_is_shown(
    browser: Browser,  # noqa: F811
    processes: Processes,
) -> None:
    node = processes(env={"PULLY_ADMIN_TOKEN": "s3cret-admin-token-0123456789"})
    page, _ = open_admin(browser, node)
    expect(page.locator("#error")).to_contain_text("401 unauthorized")
    page.fill("#token", "wrong")
    page.click("#sign-in")
    expect(page.locator("#error")).to_contain_text("403 forbidden: admin token rejected")
    page.fill("#token", "s3cret-admin-token-0123456789")
    page.click("#sign-in")
    expect(page.locator("#error")).to_have_text("")
    wait_for(lambda: page.locator("#nodes tr").count() == 1, 10, what="the node listed")
    page.close()
