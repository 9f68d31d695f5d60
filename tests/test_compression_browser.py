"""PULLY_COMPRESSION=on with a real browser: headless Chromium negotiates permessage-deflate with
a real `pully serve` (its WebSocket reports the extension the node answered), compresses what it
sends with the window the node asked for and keeps its context between messages (as browsers
do), and inflates what the node sends: every message arrives exactly as published."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from .support import PullyProcess
from .test_browser import browser  # noqa: F401 - the module's Chromium

pytestmark = pytest.mark.slow

ROUND_TRIP = """async (url) => {
  const ws = new WebSocket(url);
  const frames = [];
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error("no ws")); });
  ws.onmessage = (e) => frames.push(JSON.parse(e.data));
  const next = async (pred) => {
    for (let i = 0; i < 400; i++) {
      const at = frames.findIndex(pred);
      if (at >= 0) return frames.splice(at, 1)[0];
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error("timed out; frames: " + JSON.stringify(frames).slice(0, 500));
  };
  ws.send(JSON.stringify({ type: "subscribe", channel: "zipped", id: "s" }));
  await next((f) => f.type === "subscribed");
  const sent = [];
  for (let n = 0; n < 4; n++) {
    // large and repetitive (compressed both ways), then one under the node's threshold
    const data = n < 3 ? { n, text: `message ${n}: ` + "é✓ compressible text ".repeat(60 + n) }
                       : { n, small: true };
    sent.push(data);
    ws.send(JSON.stringify({ type: "publish", channel: "zipped", data, id: `p${n}` }));
    await next((f) => f.type === "ack" && f.id === `p${n}`);
  }
  const got = [];
  for (let n = 0; n < 4; n++) got.push((await next((f) => f.type === "message")).data);
  ws.close();
  return { extensions: ws.extensions, sent, got };
}"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PullyProcess]:
    proc = PullyProcess(tmp_path_factory.mktemp("zipped"), env={"PULLY_COMPRESSION": "on"})
    yield proc.start()
    proc.stop()


def test_chromium_negotiates_and_every_message_arrives_intact(
    browser: Browser,  # noqa: F811
    node: PullyProcess,
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(node.url + "/")  # the node's own page: same origin
    result = page.evaluate(ROUND_TRIP, node.ws_url)
    assert result["extensions"].startswith("permessage-deflate"), result["extensions"]
    assert "server_no_context_takeover" in result["extensions"]
    assert "client_max_window_bits=10" in result["extensions"]
    assert result["got"] == result["sent"]
    assert errors == []
    assert "Traceback" not in node.log()
    page.close()
