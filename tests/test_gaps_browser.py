"""The browser client (``GET /pully.js``) in a real Chromium acts on a node's ``unsubscribed``:
with ``resubscribe: true`` (``insufficient_state``) it subscribes again since its position and
reports ``recovery_failed``; with another reason it drops the subscription and emits
``unsubscribed``. Against real ``pully serve`` processes (and a real redis-server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from .admin_http import http_publish
from .support import PullyProcess, RedisServer
from .test_auth import SECRET, token
from .test_browser import browser  # noqa: F401 (the module-scoped Chromium fixture)

Processes = Callable[..., PullyProcess]
pytestmark = pytest.mark.slow


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811
    page = browser.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert not errors, errors


SUBSCRIBE = """
async () => {
  const { Pully } = await import("/pully.js");
  const t = window.t = { seen: [], failed: [], frames: [] };
  const p = window.p = new Pully(undefined, { backoff: { base: 50, cap: 400 } });
  p.on("recovery_failed", (e) => t.failed.push({ channel: e.channel, previous: e.previous,
    position: e.position, same: e.subscription === window.sub }));
  p.on("frame", (e) => t.frames.push([e.direction, e.frame]));
  await p.connect();
  window.sub = await p.subscribe("ticker", (m) => t.seen.push([m.data, m.epoch, m.offset]));
  return window.sub.epoch;
}
"""


def test_told_insufficient_state_it_resubscribes_and_reports_recovery_failed(
    processes: Processes, cluster_redis: RedisServer, page: Page
) -> None:
    node = processes(redis_url=cluster_redis.url)
    page.goto(f"{node.url}/?connect=0")
    first = page.evaluate(SUBSCRIBE)
    for n in (1, 2):
        http_publish(node, "ticker", n)
    page.wait_for_function("() => window.t.seen.length === 2")
    cluster_redis.client().delete("pully:meta:{ticker}")  # the channel's sequence restarts
    new = http_publish(node, "ticker", 3)["epoch"]  # offset 1 of the new epoch: not passed on
    page.wait_for_function("() => window.t.failed.length === 1")
    http_publish(node, "ticker", 4)
    page.wait_for_function("() => window.t.seen.length === 3")

    t: dict[str, Any] = page.evaluate("() => window.t")
    assert t["seen"] == [[1, first, 1], [2, first, 2], [4, new, 2]]
    assert t["failed"] == [{"channel": "ticker", "previous": {"offset": 2, "epoch": first},
                            "position": {"offset": 1, "epoch": new}, "same": True}]  # fmt: skip
    frames = [(d, f) for d, f in t["frames"] if f.get("channel") == "ticker"]
    told = {"type": "unsubscribed", "channel": "ticker", "reason": "insufficient_state",
            "resubscribe": True}  # fmt: skip
    at = frames.index(("in", told))
    direction, again = frames[at + 1]
    assert direction == "out" and again["type"] == "subscribe"
    assert again["since"] == {"offset": 2, "epoch": first}
    assert page.evaluate("() => [window.sub.active, [...window.p.subscriptions.keys()]]") == [
        True, ["ticker"]
    ]  # fmt: skip


ENDED = """
async ([wide, narrow]) => {
  const { Pully } = await import("/pully.js");
  const p = new Pully(undefined, { token: wide });
  const ended = [];
  p.on("unsubscribed", (e) => ended.push(e));
  await p.connect();
  const chat = await p.subscribe("chat");
  const news = await p.subscribe("news");
  await p.refresh(narrow);
  for (let i = 0; i < 250 && !ended.length; i++) await new Promise((r) => setTimeout(r, 20));
  const out = {
    ended: ended.map((e) => [e.channel, e.reason, e.subscription === chat]),
    active: [chat.active, news.active],
    subscriptions: [...p.subscriptions.keys()],
    done: (await chat.next()).done,
  };
  await p.publish("news", "still here");
  out.news = (await news.get(5000)).data;
  await p.ping();
  out.later = ended.length;
  p.close();
  return out;
}
"""


def test_ended_for_another_reason_it_drops_the_subscription(
    processes: Processes, page: Page
) -> None:
    node = processes(env={"PULLY_JWT_SECRET": SECRET})
    page.goto(f"{node.url}/?connect=0")
    wide = token("ann", channels=["chat", "news"], publish=["*"])
    narrow = token("ann", channels=["news"], publish=["*"])
    out = page.evaluate(ENDED, [wide, narrow])
    assert out["ended"] == [["chat", "forbidden", True]]
    assert out["active"] == [False, True] and out["subscriptions"] == ["news"]
    assert out["done"] is True  # its iteration ends
    assert out["news"] == "still here" and out["later"] == 1
