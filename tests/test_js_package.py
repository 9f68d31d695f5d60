"""The ``pully-client`` npm package (``clients/js``): its own tests with Node's test runner
against live ``pully serve`` processes started here (their URLs and pids go to the Node tests in
``PULLY_TEST_*`` variables), and ``npm pack`` installed offline into an empty project, where a
10-line ESM script and the Node example of docs/clients.md run as written.

``./scripts/test`` runs ``npm ci`` in clients/js (the one step that may use the registry); these
tests build the package from its sources and never reach the network.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .support import ROOT, PullyProcess, RedisServer

Processes = Callable[..., PullyProcess]
pytestmark = pytest.mark.slow

JS = ROOT / "clients" / "js"
NODE = shutil.which("node")  # scripts/test installs nodejs and npm; missing ones fail, never skip
NPM = shutil.which("npm")
SECRET = "js-package-tests-secret-long-enough-for-hs256"


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 90) -> str:
    """Run ``cmd``; its stdout, or an assertion error with everything it printed."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PULLY_")}
    full_env |= env or {}
    done = subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )  # fmt: skip
    assert done.returncode == 0, (
        f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def built() -> Path:
    """clients/js/dist, built now from src/ (tsc for ESM + .d.ts, esbuild for the browser)."""
    assert NODE and NPM, "node and npm are not installed: run ./scripts/test, which installs them"
    assert (JS / "node_modules" / "typescript").is_dir(), (
        "run ./scripts/test (npm ci in clients/js)"
    )
    run([NPM, "run", "--silent", "build"], JS)
    return JS / "dist"


def node_test(
    file: str, nodes: list[PullyProcess], kill: PullyProcess | None = None, secret: str = ""
) -> str:
    """``node --test test/<file>`` against ``nodes``; ``kill``: the node it may signal."""
    assert NODE is not None
    out = run([NODE, "--test", f"test/{file}"], JS, node_env(nodes, kill, secret))
    assert re.search(r"^# pass [1-9]", out, re.M) and re.search(r"^# fail 0$", out, re.M), out
    return out


def node_env(
    nodes: list[PullyProcess], kill: PullyProcess | None = None, secret: str = ""
) -> dict[str, str]:
    """What the Node tests read (test/live.mjs): the nodes' URLs, the pid they may signal."""
    return {
        "PULLY_TEST_URLS": ",".join(n.ws_url for n in nodes),
        "PULLY_TEST_PIDS": str(kill.proc.pid) if kill and kill.proc else "",
        "PULLY_TEST_SECRET": secret,
    }


def cluster(processes: Processes, redis: RedisServer, **env: str) -> list[PullyProcess]:
    return [processes(redis_url=redis.url, env=env) for _ in range(2)]


def test_the_pure_parts(built: Path) -> None:
    node_test("unit.test.mjs", [])


def test_the_api_against_a_node_through_the_ws_package(built: Path, processes: Processes) -> None:
    node_test("api.test.mjs", [processes()])


def test_recovery_across_a_node_sigkill(
    built: Path, processes: Processes, cluster_redis: RedisServer
) -> None:
    a, b = cluster(processes, cluster_redis)
    node_test("recovery.test.mjs", [a, b], kill=a)
    assert a.wait(10) != 0  # it really died


def test_drain_advice_moves_the_client(
    built: Path, processes: Processes, cluster_redis: RedisServer
) -> None:
    a, b = cluster(processes, cluster_redis)
    node_test("drain.test.mjs", [a, b], kill=a)
    assert a.wait(10) == 0  # drained and exited cleanly


def test_token_renewal(built: Path, processes: Processes) -> None:
    node = processes(env={"PULLY_JWT_SECRET": SECRET})
    node_test("token.test.mjs", [node], secret=SECRET)


def test_server_side_subscriptions_and_their_recovery(
    built: Path, processes: Processes, cluster_redis: RedisServer
) -> None:
    a, b = cluster(processes, cluster_redis, PULLY_JWT_SECRET=SECRET)
    node_test("server.test.mjs", [a, b], kill=a, secret=SECRET)


def test_a_publish_is_retried_with_the_same_idempotency_key(
    built: Path, processes: Processes, fresh_redis: RedisServer
) -> None:
    """Redis goes down under two nodes; the client's publish is refused (``unavailable``),
    retried, moved to node B when node A is SIGKILLed, and published once Redis is back."""
    a, b = cluster(processes, fresh_redis)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLY_")}
    env |= node_env([a, b], kill=a)
    assert NODE is not None
    proc = subprocess.Popen(
        [NODE, "test/retry.test.mjs"], cwd=JS, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    out: list[str] = []
    try:
        wait_line(proc, out, "ready")
        fresh_redis.kill()
        proc.stdin.write("redis down\n")
        proc.stdin.flush()
        wait_line(proc, out, "restart redis")
        fresh_redis.start()
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    out.append(rest)
    text = "\n".join(out)
    assert proc.returncode == 0, text
    assert re.search(r"^# pass 1$", text, re.M), text


def wait_line(proc: subprocess.Popen[str], out: list[str], line: str, timeout: float = 30) -> None:
    """Read ``proc``'s output into ``out`` until ``line``; fail after ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        got = proc.stdout.readline()
        out.append(got)
        if got.strip() == line:
            return
        if not got:
            break
    raise AssertionError(f"no line {line!r} from the Node test:\n{''.join(out)}")


# -- npm pack, installed into an empty project -------------------------------------------------

SCRIPT = """\
import { Pully } from "pully-client";
const p = new Pully(process.env.NODE_URL);
await p.connect();
const sub = await p.subscribe("hello");
const offset = await p.publish("hello", { text: "from the tarball" });
const message = await sub.get(5000);
console.log(JSON.stringify({ offset, seen: message.offset, data: message.data }));
p.close();
"""


@pytest.fixture(scope="module")
def project(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty project with the packed tarball installed, offline (an empty npm cache: no
    registry can answer), with ``ws`` from clients/js packed beside it (npm would fetch it)."""
    assert NPM is not None
    root = tmp_path_factory.mktemp("npm")
    offline = {"npm_config_cache": str(root / "cache"), "npm_config_offline": "true"}
    packed = run([NPM, "pack", "--json", "--pack-destination", str(root)], JS, offline)
    tarball = root / json.loads(packed)[0]["filename"]
    files = {f["path"] for f in json.loads(packed)[0]["files"]}
    assert {"dist/index.js", "dist/index.d.ts", "package.json"} <= files, files
    assert not any(f.startswith(("src/", "test/", "node_modules/")) for f in files), files
    ws = json.loads(
        run(
            [NPM, "pack", "--json", "--pack-destination", str(root), "./node_modules/ws"],
            JS,
            offline,
        )
    )
    app = root / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}\n')
    install = [NPM, "install", "--offline", "--no-audit", "--no-fund"]
    run([*install, str(tarball), str(root / ws[0]["filename"])], app, offline)
    assert (app / "node_modules" / "pully-client" / "dist" / "index.d.ts").is_file()
    yield app


def test_npm_pack_installs_and_a_ten_line_script_runs(project: Path, processes: Processes) -> None:
    node = processes()
    (project / "hello.mjs").write_text(SCRIPT)
    assert len(SCRIPT.splitlines()) <= 10
    assert NODE is not None
    out = run([NODE, "hello.mjs"], project, {"NODE_URL": node.ws_url}, timeout=30)
    assert json.loads(out) == {"offset": 1, "seen": 1, "data": {"text": "from the tarball"}}


TYPED = """\
import { Pully, type Message, type Subscription } from "pully-client";
const p = new Pully(["ws://a/ws", "ws://b/ws"], { offline: "fail", backoff: { cap: 5000 } });
p.on("connected", (e) => console.log(e.node.length, e.reconnect));
p.on("subscribed", (e) => e.subscription.handle((m: Message) => console.log(m.offset)));
export async function run(): Promise<number | null> {
  const sub: Subscription = await p.subscribe("c", (m) => console.log(m.epoch.length));
  console.log(sub.server, sub.position?.offset);
  return p.publish("c", { any: "json" }, { idempotencyKey: "k1", timeout: 1000 });
}
"""


def test_the_installed_types_check_an_application_and_catch_its_mistakes(project: Path) -> None:
    """The .d.ts files, as a TypeScript application sees them once the package is installed."""
    tsc = [str(JS / "node_modules" / ".bin" / "tsc"), "--noEmit", "--strict"]
    tsc += ["--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022"]
    (project / "typed.ts").write_text(TYPED)
    run([*tsc, "typed.ts"], project)
    wrong = TYPED.replace('p.on("connected"', 'p.on("conected"').replace("e.node.length", "e.nodes")
    (project / "wrong.ts").write_text(wrong)
    done = subprocess.run(
        [*tsc, "wrong.ts"], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "conected" in done.stdout, done.stdout


def test_the_docs_node_example_runs_as_written(project: Path, processes: Processes) -> None:
    node = processes()
    doc = (ROOT / "docs" / "clients.md").read_text()
    [example] = re.findall(r"<!-- example: node -->\n```javascript\n(.*?)```", doc, re.S)
    script = example.replace("localhost:8080", f"127.0.0.1:{node.port}")
    (project / "example.mjs").write_text(script)
    assert NODE is not None
    out = run([NODE, "example.mjs"], project, timeout=30)
    assert out.splitlines()[-1] == "published at 1, received 1: hello from node"


def test_the_committed_browser_file_is_the_build(built: Path) -> None:
    """pully_tornado/static/pully.js is clients/js's browser build, byte for byte."""
    browser = (built / "browser" / "pully.js").read_text()
    assert (ROOT / "pully_tornado" / "static" / "pully.js").read_text() == browser, (
        "run `npm run build -- --write` in clients/js"
    )
