"""The browser client (``pully_tornado/static/pully.js``) imported by Node, as docs/clients.md
tells Node users to: without a WebSocket implementation it says so at construction."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .support import ROOT

NODE = shutil.which("node")  # scripts/test installs nodejs; a missing node fails, never skips

SCRIPT = """
import { Pully } from "./pully.mjs";
delete globalThis.WebSocket;  // as in Node 20 (Node 22+ has one)
class Fake { constructor() { throw new Error("not used"); } }
for (const options of [{}, { WebSocket: Fake }]) {
  try {
    new Pully("ws://127.0.0.1:9/ws", options);
    console.log("constructed");
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


def test_without_a_websocket_the_constructor_says_what_to_pass(tmp_path: Path) -> None:
    missing, passed = run_node(tmp_path)
    assert missing.startswith("TypeError: no WebSocket implementation"), missing
    assert "new Pully(url, { WebSocket })" in missing and "'ws' package" in missing
    assert passed == "constructed"  # an implementation passed in options is enough
