"""The browser client (``GET /pully.js``) and the playground page (``GET /``) in a real Chromium
(Debian's, headless, driven by Playwright) against real ``pully serve`` processes.

``PULLY_UPDATE_SCREENSHOT=1`` makes :func:`test_playground_screenshot` write
``docs/playground.png``; otherwise the screenshot goes to the test's temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .admin_http import http_publish
from .support import ROOT, PullyProcess

Processes = Callable[..., PullyProcess]
pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError("chromium is not installed: run ./scripts/test, which installs it")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Playground:
    """One playground tab; every request it makes is recorded, page errors fail the test."""

    def __init__(self, browser: Browser, node: PullyProcess, query: str = "") -> None:
        self.page: Page = browser.new_page(viewport={"width": 1280, "height": 860})
        self.page.set_default_timeout(15_000)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{node.url}/{query}")

    def connected(self) -> None:
        expect(self.page.locator("#status")).to_have_attribute("data-state", "connected")

    def subscribe(self, channel: str) -> None:
        self.page.fill("#channel", channel)
        self.page.click("#subscribe")
        expect(self.page.locator(f'#subs li[data-channel="{channel}"]')).to_be_visible()

    def publish(self, channel: str, data: str) -> None:
        self.page.fill("#pub-channel", channel)
        self.page.fill("#pub-data", data)
        self.page.click("#publish")

    def messages(self, channel: str) -> Any:
        return self.page.locator(f'#messages li[data-channel="{channel}"]')

    def close(self) -> None:
        self.page.close()
        assert not self.errors, self.errors


@pytest.fixture
def tabs(browser: Browser) -> Iterator[Callable[..., Playground]]:
    opened: list[Playground] = []

    def open_tab(node: PullyProcess, query: str = "") -> Playground:
        opened.append(Playground(browser, node, query))
        return opened[-1]

    yield open_tab
    for tab in opened:
        tab.close()


def test_page_and_client_are_served_with_their_types(processes: Processes) -> None:
    node = processes()
    with urllib.request.urlopen(f"{node.url}/pully.js", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "text/javascript"
        # the browser build of clients/js (pully-client): one ES module exporting Pully
        assert re.search(rb"\nexport \{[^}]*\bPully,", resp.read())
    with urllib.request.urlopen(f"{node.url}/", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert b'from "./pully.js"' in resp.read()


def test_two_pages_one_publishes_the_other_shows_it(
    processes: Processes, tabs: Callable[..., Playground]
) -> None:
    node = processes()
    alice, bob = tabs(node), tabs(node)
    for tab in (alice, bob):
        tab.connected()
        expect(tab.page.locator("#node")).to_have_text(f"node0-{node.port}")
        expect(tab.page.locator("#relationships")).not_to_be_empty()
        tab.subscribe("room")
    alice.publish("room", '{"text": "hi from alice"}')
    expect(alice.page.locator("#pub-result")).to_have_text("acknowledged: room #1")
    expect(bob.messages("room")).to_have_count(1)
    expect(bob.messages("room")).to_contain_text('{"text":"hi from alice"}')
    expect(alice.messages("room")).to_have_count(1)  # a publisher receives its own message
    expect(alice.page.locator("#log")).to_contain_text('"type":"ack"')

    alice.publish("room", "{not json")
    expect(alice.page.locator("#pub-result")).to_contain_text("Invalid JSON")
    expect(alice.page.locator("#pub-result")).to_have_class("result error")
    alice.publish("bad channel", "1")
    expect(alice.page.locator("#pub-result")).to_contain_text("invalid_channel")
    expect(bob.messages("room")).to_have_count(1)
    # nothing but the node itself: no CDN, no external resource
    assert all(url.startswith(node.url) for url in alice.requests + bob.requests), alice.requests


def test_page_survives_a_node_restart(
    processes: Processes, tabs: Callable[..., Playground]
) -> None:
    node = processes()
    tab = tabs(node)
    tab.connected()
    tab.subscribe("news")
    http_publish(node, "news", "before")
    expect(tab.messages("news")).to_have_count(1)

    node.signal(signal.SIGKILL)
    node.wait(10)
    expect(tab.page.locator("#status")).to_have_attribute("data-state", "reconnecting")
    node.start()  # same port; embedded mode, so a new epoch
    tab.connected()
    expect(tab.page.locator("#log")).to_contain_text("recovery failed on news")
    http_publish(node, "news", "after restart")
    expect(tab.messages("news")).to_have_count(2)
    expect(tab.messages("news").nth(1)).to_contain_text('"after restart"')
    tab.publish("news", '{"from": "page"}')
    expect(tab.page.locator("#pub-result")).to_have_text("acknowledged: news #2")
    expect(tab.messages("news")).to_have_count(3)


JS_API_CHECK = """
async () => {
  const m = await import("/pully.js");
  const out = {};
  const p = new m.Pully(undefined, { backoff: { base: 50, cap: 400 } });
  const events = [];
  p.on("connected", (e) => events.push(["connected", e.node]));
  await p.connect();
  const sub = await p.subscribe("js");
  const seen = [];
  const handled = await p.subscribe("js-handled", (msg) => { seen.push(msg.data); });
  out.offsets = [await p.publish("js", { n: 1 }), await p.publish("js", null)];
  out.got = [await sub.get(5000), await sub.get(5000)].map((x) => [x.data, x.offset]);
  await p.publish("js-handled", "h");
  out.history = (await p.history("js", 1)).messages.map((x) => x.offset);
  await p.subscribe("presence:js");
  out.presence = (await p.presence("presence:js")).map((c) => c.client === p.clientId);
  for (const [what, call] of [["channel", () => p.publish("a b", 1)],
                              ["noPresence", () => p.presence("js")]]) {
    try { await call(); out[what] = "no error"; } catch (e) {
      out[what] = [e.name, e.code, e instanceof m.ServerError, e instanceof m.PullyError];
    }
  }
  try { await p.subscribe("js"); } catch (e) { out.twice = e.name; }
  await sub.unsubscribe();
  out.ended = await sub.next();
  out.handled = seen;
  out.backoff = [...Array(40).keys()].every(
    (n) => m.backoffDelay(n, 500, 20000, () => 0.999999) <= Math.min(20000, 500 * 2 ** n));
  out.ceilings = [0, 1, 2, 6, 7, 50].map((n) => m.backoffCeiling(n));
  const offline = new m.Pully(undefined, { offline: "fail" });
  try { await offline.publish("js", 1); } catch (e) { out.notConnected = e.name; }
  out.events = events;
  p.close();
  try { await p.publish("js", 1); } catch (e) { out.closed = e.name; }
  return out;
}
"""


def test_js_client_api_in_the_browser(
    processes: Processes, tabs: Callable[..., Playground]
) -> None:
    node = processes()
    tab = tabs(node, "?connect=0")
    out = tab.page.evaluate(JS_API_CHECK)
    assert out["offsets"] == [1, 2]
    assert out["got"] == [[{"n": 1}, 1], [None, 2]]
    assert out["history"] == [2]
    assert out["presence"] == [True]
    assert out["channel"] == ["InvalidChannel", "invalid_channel", True, True]
    assert out["noPresence"] == ["BadRequest", "bad_request", True, True]
    assert out["twice"] == "AlreadySubscribed"
    assert out["ended"]["done"] is True
    assert out["handled"] == ["h"]
    assert out["backoff"] is True
    assert out["ceilings"] == [500, 1000, 2000, 20000, 20000, 20000]
    assert out["notConnected"] == "NotConnected" and out["closed"] == "ClientClosed"
    assert out["events"] == [["connected", f"node0-{node.port}"]]


def test_playground_screenshot(
    processes: Processes, tabs: Callable[..., Playground], tmp_path: Path
) -> None:
    """A realistic state for docs/playground.png: two channels, messages, the frame log."""
    node = processes(args=("--node-id", "web-1"))
    tab = tabs(node)
    tab.connected()
    tab.subscribe("chat")
    tab.subscribe("presence:lobby")
    tab.publish("chat", '{"text": "hello from the playground"}')
    expect(tab.messages("chat")).to_have_count(1)
    http_publish(node, "chat", {"text": "hi from curl", "user": "ops"})
    tab.publish("chat", '{"text": "order shipped", "order": 1042}')
    expect(tab.messages("chat")).to_have_count(3)
    expect(tab.page.locator("#pub-result")).to_have_text("acknowledged: chat #3")
    target = tmp_path / "playground.png"
    if os.environ.get("PULLY_UPDATE_SCREENSHOT") == "1":
        target = ROOT / "docs" / "playground.png"
    # what the screenshot shows, as a reader of the docs sees it
    expect(tab.page.locator("#status")).to_have_text("connected")
    expect(tab.page.locator("#node")).to_have_text("web-1")
    expect(tab.page.locator("#subs li .name")).to_have_text(["chat", "presence:lobby"])
    expect(tab.messages("chat")).to_contain_text(
        ["hello from the playground", "hi from curl", "order shipped"]
    )
    expect(tab.page.locator("#log li").first).to_be_visible()
    tab.page.screenshot(path=str(target))


def test_docs_console_example_runs(processes: Processes, tabs: Callable[..., Playground]) -> None:
    """The developer-console example of docs/clients.md, as written, in the playground page."""
    node = processes()
    tab = tabs(node, "?connect=0")
    doc = (ROOT / "docs" / "clients.md").read_text()
    [example] = re.findall(r"```js\n(.*?)```", doc, re.S)
    lines: list[str] = []

    def on_console(message: Any) -> None:
        lines.append(message.text)
        if message.text.startswith("["):  # the history line: the live loop comes next
            http_publish(node, "chat", "live one")

    tab.page.on("console", on_console)
    tab.page.evaluate(f"async () => {{ {example} }}")
    assert lines[0] == "1 1 {text: hello from the console}"
    assert lines[1].startswith("true invalid_channel channel name 'no spaces' is invalid")
    assert lines[-1] == "live: live one"


def test_a_token_function_renews_the_token_before_it_expires(
    processes: Processes, tabs: Callable[..., Playground]
) -> None:
    """Tokens that live 3 s from a token function: the browser client renews each one on the
    open connection ahead of its ``exp``, so the node never closes it (4001)."""
    secret = "browser-tests-secret-long-enough-for-hs256!!"
    node = processes(env={"PULLY_JWT_SECRET": secret})
    tab = tabs(node, "?connect=0")
    issued: list[int] = []

    def mint() -> str:
        exp = int(time.time()) + 3
        issued.append(exp)
        claims = {"sub": "dee", "channels": ["*"], "publish": ["*"], "exp": exp}
        return jwt.encode(claims, secret, algorithm="HS256")

    tab.page.expose_function("mintToken", mint)
    result = tab.page.evaluate(
        """async () => {
            const { Pully } = await import("/pully.js");
            const p = new Pully(null, { token: () => window.mintToken() });
            const seen = [];
            for (const name of ["connected", "disconnected", "error"]) {
                p.on(name, (e) => seen.push(name + (e.error ? ": " + e.error.message : "")));
            }
            const refreshed = [];
            p.on("frame", (e) => { if (e.frame.type === "refreshed") refreshed.push(e.frame); });
            await p.connect();
            const sub = await p.subscribe("ticks");
            const client = p.clientId;
            await new Promise((resolve) => setTimeout(resolve, 7500));
            const offset = await p.publish("ticks", "still here");
            const message = await sub.get(5000);
            await p.close();
            return { seen, refreshed, sameClient: p.clientId === client, offset,
                     got: message.offset };
        }"""
    )
    assert len(issued) >= 3, issued
    expires = [frame["expires"] for frame in result["refreshed"]]
    # every token after the first came back as a renewal (the last may have been on its way)
    assert len(expires) >= 2 and expires == issued[1 : len(expires) + 1]
    assert len(issued) - 2 <= len(expires) <= len(issued) - 1
    assert result["seen"][:1] == ["connected"] and "disconnected" not in result["seen"][:-1]
    assert not [s for s in result["seen"] if s.startswith("error")], result["seen"]
    assert result["sameClient"] and result["got"] == result["offset"]
