"""GET /admin in headless Chromium (tests/test_browser.py's) against real `pully serve` nodes on
the session Redis: the page lists every node and the channels with their subscribers, shows a
channel's presence across nodes (user names as text, never markup) and history, publishes,
disconnects a user on the other node, removes history after a confirm(), watches a channel live
through pully-client (unavailable without a client JWT on a node that requires one), redraws
only what changed, pauses, lists every problem of a refused call and says when the admin token
is wrong. Users connect with tests/support.py's WSClient, on a loop in a thread of its own:
Playwright's sync API keeps its own loop marked running in the test's thread.

``PULLY_UPDATE_SCREENSHOT=1`` writes docs/admin.png (as tests/test_browser.py does)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from .support import ROOT, PullyProcess, RedisServer, WSClient
from .test_auth import SECRET, token
from .test_browser import browser  # noqa: F401 - the module's Chromium

Processes = Callable[..., PullyProcess]
T = TypeVar("T")
pytestmark = pytest.mark.slow
EVIL = '<b>bob</b><img src=x onerror="window.pwned=1">'  # a JWT sub: no ':' allowed
ADMIN_TOKEN = "s3cret-admin-token-0123456789"


class Users:
    """WSClients (tests/support.py) driven on an event loop in a thread of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: list[WSClient] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self, node: PullyProcess, user: str | None, *channels: str) -> WSClient:
        query = f"?token={token(user, channels=['*'])}" if user else ""

        async def connect() -> WSClient:
            client = await WSClient.connect(node.ws_url + query)
            for channel in channels:
                await client.subscribe(channel)
            return client

        client = self.run(connect())
        self.clients.append(client)
        return client

    def message(self, client: WSClient) -> dict[str, Any]:
        [frame] = self.run(client.messages(1))
        return frame

    def close(self) -> None:
        async def close_all() -> None:
            for client in self.clients:
                WSClient.opened.remove(client)  # not the autouse fixture's: not its loop
                await client.aclose()

        self.run(close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def users() -> Iterator[Users]:
    users = Users()
    yield users
    users.close()


def node_id(node: PullyProcess) -> str:
    return f"{node.name}-{node.port}"


def api(node: PullyProcess, method: str, params: dict[str, Any]) -> Any:
    """The server API as a script would call it (a loopback caller, no admin token)."""
    request = urllib.request.Request(
        f"{node.url}/api/{method}", data=json.dumps(params).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["result"]


def open_admin(chromium: Browser, node: PullyProcess) -> tuple[Page, list[str]]:
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{node.url}/admin")
    return page, errors


def answer_confirm(page: Page, accept: bool) -> None:
    def answer(dialog: Dialog) -> None:
        assert dialog.type == "confirm" and "Remove the history of lobby?" in dialog.message
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", answer)


def test_the_page_shows_the_cluster_and_acts_on_it(
    browser: Browser,  # noqa: F811
    processes: Processes,
    cluster_redis: RedisServer,
    users: Users,
    tmp_path: Path,
) -> None:
    env = {"PULLY_JWT_SECRET": SECRET}
    first, second = [processes(redis_url=cluster_redis.url, env=env) for _ in range(2)]
    carol = users.connect(first, "carol", "lobby")
    bob = users.connect(second, "bob", "lobby")
    users.connect(second, EVIL, "lobby", "news:=/@.")
    page, errors = open_admin(browser, first)
    for node in (first, second):  # both nodes, asked through the first one
        expect(page.locator(f'#nodes tr[data-node="{node_id(node)}"]')).to_contain_text("connected")
    lobby = page.locator('#channels tr[data-channel="lobby"]')
    expect(lobby).to_contain_text("3")  # summed over both nodes
    expect(page.locator('#channels tr[data-channel="news:=/@."]')).to_contain_text("1")
    lobby.locator("button").click()
    expect(page.locator("#selected")).to_have_text("lobby")
    expect(lobby).to_have_class("picked")
    presence = page.locator("#presence")
    expect(presence.locator("tr", has_text="carol")).to_contain_text(node_id(first))
    expect(presence.locator("tr", has_text="bob").first).to_contain_text(node_id(second))
    expect(presence).to_contain_text(EVIL)  # as text: neither <b> nor <img> was made
    assert presence.locator("b, img").count() == 0
    # publish from the page: users on both nodes receive it; the history shows it, as text
    page.fill("#pub-data", '{"text": "<i>hello</i> from admin"}')
    page.click("#publish")
    expect(page.locator("#pub-result")).to_have_text("published at offset 1")
    for user in (carol, bob):
        frame = users.message(user)
        assert (frame["channel"], frame["data"]) == ("lobby", {"text": "<i>hello</i> from admin"})
    expect(page.locator("#history")).to_have_text('#1 {"text":"<i>hello</i> from admin"}')
    assert page.locator("#history i").count() == 0
    # this cluster requires a JWT for /ws: without one watching is unavailable; with one it works
    page.click("#watch")
    unavailable = "watching is unavailable: this node accepts no connection without a client token"
    expect(page.locator("#watch-state")).to_contain_text(unavailable, timeout=15_000)
    expect(page.locator("#watch")).to_have_text("Watch live")
    page.fill("#watch-token", token("admin-watcher", channels=["*"]))
    page.click("#watch")
    expect(page.locator("#watch-state")).to_have_text("watching lobby live")
    api(second, "publish", {"channel": "lobby", "data": "from a script on node 2"})
    expect(page.locator("#live")).to_have_text('#2 "from a script on node 2"')
    # disconnect bob from the page on node 1: his socket on node 2 closes with 4003
    page.fill("#disc-user", "bob")
    page.click("#disconnect")
    expect(page.locator("#disc-result")).to_have_text("1 connection(s) of bob closed")
    assert users.run(bob.closed()).code == 4003
    expect(lobby).to_contain_text("3")  # live refresh: carol, the other user and the watcher
    expect(presence.locator("tr", has_text="admin-watcher")).to_contain_text(node_id(first))
    expect(presence.locator("tr")).to_have_count(3)
    shot = (
        ROOT / "docs" / "admin.png"
        if os.environ.get("PULLY_UPDATE_SCREENSHOT")
        else tmp_path / "admin.png"
    )
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # remove the history: nothing happens when the confirm() is dismissed
    answer_confirm(page, accept=False)
    page.click("#history-remove")
    expect(page.locator("#history li")).to_have_count(2)
    answer_confirm(page, accept=True)
    page.click("#history-remove")
    expect(page.locator("#remove-result")).to_have_text("history of lobby removed")
    expect(page.locator("#history")).to_have_text("no message retained")
    assert api(second, "history", {"channel": "lobby"})["messages"] == []
    assert page.evaluate("window.pwned") is None
    assert errors == []
    page.close()


def test_watching_refreshing_pausing_and_refused_calls(
    browser: Browser,  # noqa: F811
    processes: Processes,
    users: Users,
) -> None:
    node = processes()  # embedded, no JWT needed for /ws
    reader = users.connect(node, None, "news")  # keeps the channel listed
    page, errors = open_admin(browser, node)
    news = page.locator('#channels tr[data-channel="news"]')
    news.locator("button").click()
    page.click("#watch")
    expect(page.locator("#watch-state")).to_have_text("watching news live")
    page.fill("#pub-data", '"breaking"')
    page.click("#publish")
    expect(page.locator("#live")).to_have_text('#1 "breaking"')
    assert users.message(reader)["data"] == "breaking"
    # a refresh redraws nothing that did not change: the row is the same element
    expect(news).to_contain_text("2")  # the reader and the page's own watching connection
    row = news.element_handle()
    stamp = page.locator("#stamp").inner_text()
    expect(page.locator("#stamp")).not_to_have_text(stamp, timeout=5_000)
    assert row.evaluate("row => row.isConnected")
    # the filter box
    page.fill("#pattern", "sp*")
    expect(page.locator("#channels")).to_have_text("no channel matches")
    page.fill("#pattern", "")
    # paused: a new channel is not listed until Resume
    page.click("#pause")
    expect(page.locator("#stamp")).to_have_text("paused")
    users.connect(node, None, "sports")
    page.wait_for_timeout(2_500)
    expect(page.locator('#channels tr[data-channel="sports"]')).to_have_count(0)
    page.click("#pause")
    expect(page.locator('#channels tr[data-channel="sports"]')).to_contain_text("1")
    # refused calls: every problem the node named is listed
    page.fill("#pub-data", "{not json")
    page.click("#publish")
    expect(page.locator("#pub-result")).to_contain_text("data is not JSON")
    page.fill("#pub-channel", "no spaces")
    page.fill("#pub-data", "1")
    page.click("#publish")
    expect(page.locator("#pub-result")).to_contain_text("400 bad_request: ")
    expect(page.locator("#pub-result")).to_contain_text("- params.channel: not a valid channel")
    page.fill("#disc-user", "")
    page.click("#disconnect")
    expect(page.locator("#disc-result")).to_contain_text("400 bad_request")
    expect(page.locator("#disc-result")).to_contain_text("- params")
    assert errors == []
    page.close()


def test_a_wrong_admin_token_is_shown(
    browser: Browser,  # noqa: F811
    processes: Processes,
) -> None:
    node = processes(env={"PULLY_ADMIN_TOKEN": ADMIN_TOKEN})
    page, errors = open_admin(browser, node)
    expect(page.locator("#error")).to_contain_text("401 unauthorized")
    page.fill("#token", "wrong")
    page.click("#sign-in")
    expect(page.locator("#error")).to_have_text("403 forbidden: admin token rejected")
    expect(page.locator("#nodes tr")).to_have_count(0)
    page.fill("#token", ADMIN_TOKEN)
    page.press("#token", "Enter")
    expect(page.locator("#error")).to_have_text("")
    expect(page.locator(f'#nodes tr[data-node="{node_id(node)}"]')).to_be_visible()
    expect(page.locator("#rel-version")).to_contain_text("version")
    page.reload()  # the token stays in the tab's sessionStorage
    expect(page.locator(f'#nodes tr[data-node="{node_id(node)}"]')).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('pully-admin-token')") == ADMIN_TOKEN
    assert errors == []
    page.close()
