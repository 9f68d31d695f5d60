"""The browser client (``pully_tornado/static/pully.js``, the browser build of clients/js) imported
by Node, as docs/clients.md tells Node users to: without a global WebSocket and without the
``ws`` package it says so at once, on ``connect()`` (it once failed after 10 s with
"WebSocketImpl is not a constructor")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .support import ROOT

NODE = shutil.which("node")  # scripts/test installs nodejs; a missing node fails, never skips

SCRIPT = """
import { Pully } from "./pully.mjs";
delete globalThis.WebSocket;  // as in Node 18 and 20 (Node 22+ has one)
class Fake { constructor() { throw new Error("not used"); } }
for (const options of [{ connectTimeout: 60000 }, { WebSocket: Fake }]) {
  try {
    const p = new Pully("ws://127.0.0.1:9/ws", options);
    console.log("constructed");
    if (options.WebSocket) continue;
    await p.connect();  // no 'ws' package next to pully.mjs: refused at once, not after 60 s
    console.log("connected");
  } catch (error) {
    console.log(`${error.constructor.name}: ${error.message}`);
  }
}
"""


def run_node(tmp_path: Path) -> list[str]:
    shutil.copy(ROOT / "pully_tornado" / "static" / "pully.js", tmp_path / "pully.mjs")
    (tmp_path / "script.mjs").write_text(SCRIPT)
    assert NODE is not None, "node is not installed: run ./scripts/test, which installs nodejs"
    done = subprocess.run(
        [NODE, "script.mjs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_without_a_websocket_connect_says_at_once_what_to_install(tmp_path: Path) -> None:
    constructed, missing, passed = run_node(tmp_path)
    assert constructed == "constructed"
    assert missing.startswith("TypeError: no WebSocket implementation"), missing
    assert "npm install ws" in missing and "new Pully(url, { WebSocket })" in missing
    assert passed == "constructed"  # an implementation passed in options is enough
