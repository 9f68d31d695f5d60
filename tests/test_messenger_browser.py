"""The messenger's page end to end, in headless Chromium: three users in three pages sign up,
befriend each other, chat privately and in a group, see who is online; a member removed from
the group stops receiving; a page whose Pully node is SIGKILLed moves to the other node and shows
every message once. Messages go app -> PostgreSQL outbox -> Pully -> the pages."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from .messenger_support import Messenger, messenger
from .support import RedisServer
from .test_browser import browser  # noqa: F401 - the module's Chromium

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Messenger]:
    with messenger(tmp_path_factory.mktemp("messenger-browser")) as running:
        yield running


class User:
    def __init__(self, chromium: Browser, app: Messenger, name: str) -> None:
        self.name = name
        self.page: Page = chromium.new_context().new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(app.url + "/")
        self.page.fill("#name", name)
        self.page.fill("#password", "correct horse")
        self.page.click("#register")
        expect(self.page.locator("#status")).to_have_text("live", timeout=20_000)

    def befriend(self, other: User) -> None:
        self.page.fill("#friend-name", other.name)
        self.page.click("#add-friend")
        other.page.locator(f'#incoming li[data-request="{self.name}"] button').click()
        expect(self.page.locator(f'#friends li[data-friend="{other.name}"]')).to_be_visible()

    def open_friend(self, name: str) -> None:
        self.page.locator(f'#friends li[data-friend="{name}"] button').click()
        expect(self.page.locator("#title")).to_have_text(name)

    def open_chat(self, name: str) -> None:
        self.page.locator(f'#chats li[data-chat="{name}"] button').click()
        expect(self.page.locator("#title")).to_have_text(name)

    def send(self, text: str) -> None:
        self.page.fill("#body", text)
        self.page.click("#send")

    def sees(self, text: str) -> None:
        expect(self.page.locator("#messages li", has_text=text)).to_have_count(1)


def test_three_users_chat_privately_and_in_a_group(
    browser: Browser,  # noqa: F811
    app: Messenger,
) -> None:
    ann, bob, cy = (User(browser, app, name) for name in ("ann", "bob", "cy"))
    ann.befriend(bob)
    ann.befriend(cy)
    # online friends come from Pully's presence
    expect(ann.page.locator('#friends li[data-friend="bob"]')).to_have_class("online")
    # private, live: bob has the conversation open when ann writes
    bob.open_friend("ann")
    ann.open_friend("bob")
    ann.send("hi bob <b>not bold</b>")
    bob.sees("hi bob <b>not bold</b>")  # as text
    assert bob.page.locator("#messages b", has_text="not bold").count() == 0
    ann.sees("hi bob")  # once, though it came back on ann's own channel too
    # a group of three: the members' open pages join it at once (server-side subscription)
    ann.page.locator('#friends li[data-friend="bob"] input').check()
    ann.page.locator('#friends li[data-friend="cy"] input').check()
    ann.page.fill("#chat-name", "trio")
    ann.page.click("#create-chat")
    for user in (ann, bob, cy):
        user.open_chat("trio")
    ann.send("hello trio")
    for user in (bob, cy):
        user.sees("hello trio")
    # cy removed: she stops receiving at once
    ann.page.locator("#members li", has_text="cy").locator("button").click()
    expect(ann.page.locator("#members li")).to_have_count(1)
    ann.send("without cy")
    bob.sees("without cy")
    cy.page.wait_for_timeout(1000)
    expect(cy.page.locator("#messages li", has_text="without cy")).to_have_count(0)
    for user in (ann, bob, cy):
        assert user.errors == []
        user.page.close()


def node_of(node_url: str, user_id: int) -> str:
    """Which node holds the user's connection, by the server API's presence."""
    reply = httpx.post(node_url + "/api/presence", json={"channel": f"user:{user_id}"}, timeout=5)
    [entry] = reply.json()["result"]["clients"]
    return str(entry["node"])


def test_a_page_whose_node_is_killed_moves_to_the_other_and_misses_nothing(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    redis = RedisServer(tmp_path).start()
    try:
        with messenger(tmp_path, redis.url, nodes=2) as app:
            first, second = app.nodes
            ann, bob = User(browser, app, "ann"), User(browser, app, "bob")
            ann.befriend(bob)
            bob.open_friend("ann")
            ann.open_friend("bob")
            bob_id = int(bob.page.evaluate("JSON.parse(sessionStorage.messenger).id"))
            assert node_of(second.url, bob_id) == f"pully0-{first.port}"
            for n in range(3):
                ann.send(f"before {n}")
                bob.sees(f"before {n}")
            first.signal(signal.SIGKILL)  # bob's node, and ann's
            first.wait(10)
            # while bob's page reconnects; delivered by the other node's outbox consumer
            for n in range(5):
                ann.send(f"during {n}")
                ann.sees(f"during {n}")
            expect(bob.page.locator("#status")).to_have_text("live", timeout=30_000)
            for n in range(5):
                bob.sees(f"during {n}")
            ann.send("after")
            bob.sees("after")
            expect(bob.page.locator("#messages li")).to_have_count(9)
            assert node_of(second.url, bob_id) == f"pully1-{second.port}"
            trace = bob.page.evaluate("window.messengerTrace")
            # every message came from Pully exactly once: recovered from history, not reloaded
            assert sorted(trace["delivered"].values()) == [1] * 9, trace
            assert [e["name"] for e in trace["events"]].count("recovery_failed") == 0, trace
            last = {"name": "connected", "url": second.ws_url, "channel": None}
            assert trace["events"][-1] == last
            for user in (ann, bob):
                assert user.errors == []
                user.page.close()
    finally:
        redis.kill()
