"""One relationships document for a whole cluster: the Redis store (the cluster default), the
README's cluster example run as written, and the split that nodes with separate stores report
at /healthz instead of running different documents under one version."""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from pathlib import Path

import orjson
import pytest

from pully_tornado.errors import ConfigError, Unavailable
from pully_tornado.node import Node
from pully_tornado.relationships import load, manager
from pully_tornado.relationships.redis import RedisStore
from pully_tornado.settings import Settings

from .admin_http import call
from .conftest import LocalCluster
from .support import PullyProcess, RedisServer, WSClient, eventually, free_port
from .test_doc_examples import commands, examples, matches


def http(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").removesuffix("/ws")


def test_cluster_mode_keeps_relationships_in_redis_unless_told_otherwise() -> None:
    cluster = Settings.load(environ={"PULLY_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert (cluster.store, cluster.store_url) == ("", "redis")
    assert Settings.load(environ={}).store_url == "file://./relationships.json"
    explicit = {"PULLY_REDIS_URL": "redis://r:6379/0", "PULLY_STORE": "s3://b/k.json"}
    assert Settings.load(environ=explicit).store_url == "s3://b/k.json"
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={"PULLY_STORE": "redis"})
    assert "PULLY_STORE" in str(info.value) and "PULLY_REDIS_URL" in str(info.value)
    with pytest.raises(ConfigError):
        Settings.load(environ={"PULLY_STORE": "ftp://x"})


@pytest.mark.gen_test(timeout=30)
async def test_redis_store_versions_and_outage(cluster_redis: RedisServer) -> None:
    store, other = RedisStore(cluster_redis.url), RedisStore(cluster_redis.url)
    try:
        assert await store.load() is None and await store.version() == 0
        doc = load({"channels": {"c:*": []}, "options": {"c:1": {"history_size": 3}}})
        assert await store.save(doc) == 1 and await other.save(doc) == 2
        stored = await other.load()
        assert stored is not None and (stored.version, stored.relationships) == (2, doc)
        raw = cluster_redis.client().hgetall("pully:relationships:doc")
        assert int(raw[b"version"]) == 2 and orjson.loads(raw[b"doc"]) == doc.to_json()
        cluster_redis.client().flushall()  # Redis lost its data: a save still goes above
        assert await store.save(doc, above=2) == 3
    finally:
        await store.close()
        await other.close()
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    for attempt in (dead.load(), dead.version(), dead.save(load({"channels": {}}))):
        with pytest.raises(Unavailable):
            await attempt
    await dead.close()


@pytest.mark.gen_test(timeout=60)
async def test_nodes_on_the_default_store_share_one_document(
    local_cluster: LocalCluster, cluster_redis: RedisServer
) -> None:
    (node_a, url_a), (node_b, url_b) = [
        await local_cluster.add(redis_url=cluster_redis.url, store="", history_size=10,
                                publish_rate=0.0)
        for _ in "ab"
    ]  # fmt: skip
    assert node_b.health()["relationships"]["store"]["kind"] == "redis"
    doc = {"channels": {}, "options": {"news:*": {"publish": "server"}, "hot": {"history_size": 3}}}
    status, reply = await call(http(url_a) + "/relationships", "POST", doc)
    assert (status, reply["version"]) == (200, 1)
    await eventually(lambda: node_b.relationships.version == 1, 5, "node B reloaded")
    assert node_b.relationships.digest == node_a.relationships.digest
    client_b = await WSClient.connect(url_b)
    refused = await client_b.publish("news:1", "x")
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    for i in range(5):
        assert (await client_b.publish("hot", i))["type"] == "ack"
    kept = await client_b.request({"type": "history", "channel": "hot"})
    assert [m["offset"] for m in kept["messages"]] == [3, 4, 5]
    for node in (node_a, node_b):
        health = node.health()
        assert (health["status"], health["relationships"]["split"]) == ("ok", False)


@pytest.mark.gen_test(timeout=60)
async def test_nodes_with_their_own_files_report_the_split(
    local_cluster: LocalCluster,
    cluster_redis: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "pully.relationships")
    nodes: list[tuple[Node, str]] = [
        await local_cluster.add(redis_url=cluster_redis.url,
                                store=f"file://{tmp_path}/{name}/relationships.json")
        for name in "ab"
    ]  # fmt: skip
    (node_a, url_a), (node_b, url_b) = nodes
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "is a file on this machine" in w]) == 2, warnings
    assert all(n.health()["status"] == "ok" for n, _ in nodes)  # nothing saved: they agree

    status, _ = await call(http(url_a) + "/relationships", "POST", {"channels": {"a": []}})
    assert status == 200
    # B heard of version 1, reloaded its own file, and still has nothing: it says so
    await eventually(lambda: node_b.relationships.split() is not None, 5, "node B split")
    assert "store does not have" in (node_b.relationships.split() or "")
    status, health = await call(http(url_b) + "/healthz")
    assert (status, health["status"], health["relationships"]["split"]) == (
        503, "unavailable", True)  # fmt: skip

    status, _ = await call(http(url_b) + "/relationships", "POST", {"channels": {"b": []}})
    assert status == 200  # B's own file now holds another document as version 1
    await eventually(lambda: node_a.relationships.split() is not None, 5, "node A split")
    for _, url in nodes:
        status, health = await call(http(url) + "/healthz")
        state = health["relationships"]
        assert (status, state["version"], state["split"]) == (503, 1, True), health
        assert "another document" in state["split_reason"]
    assert node_a.relationships.digest != node_b.relationships.digest
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(e.startswith("relationships split: node ") for e in errors), errors


@pytest.mark.gen_test(timeout=60)
async def test_a_node_that_joins_with_another_store_hears_the_others_periodically(
    local_cluster: LocalCluster,
    cluster_redis: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(manager, "POLL_INTERVAL", 0.2)
    shared = {"redis_url": cluster_redis.url, "store": "redis"}
    (node_a, url_a), (node_b, _) = [await local_cluster.add(**shared) for _ in "ab"]
    status, _ = await call(http(url_a) + "/relationships", "POST", {"channels": {"x": []}})
    assert status == 200
    await eventually(lambda: node_b.relationships.version == 1, 5)
    stray, _ = await local_cluster.add(
        redis_url=cluster_redis.url, store=f"file://{tmp_path}/stray.json"
    )
    assert stray.relationships.version == 0  # its own, empty file
    await eventually(lambda: stray.relationships.split() is not None, 5, "the stray's split")
    assert stray.health()["status"] == "unavailable"
    for node in (node_a, node_b):  # the shared-store nodes agree with each other
        assert node.relationships.split() is None and node.health()["status"] == "ok"


# -- the README's cluster, as written ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.gen_test(timeout=90)
async def test_the_readme_cluster_example_runs_as_written(
    cluster_redis: RedisServer, tmp_path: Path
) -> None:
    """Each ``./scripts/serve`` line becomes a ``pully serve`` process with that environment, in
    a folder of its own as on a machine of its own (on a free port, on the test's
    redis-server); each curl line runs and must print what the README says under it."""
    lines = commands(examples("README.md")["readme-cluster"][1])
    redis_line, *rest = lines
    assert redis_line[0].startswith("redis-server --port 6379")  # the test's own runs instead
    nodes: dict[str, PullyProcess] = {}
    try:
        await _run_the_readme_cluster(rest, nodes, cluster_redis, tmp_path)
    finally:
        for node in nodes.values():
            node.stop()


async def _run_the_readme_cluster(
    lines: list[tuple[str, str]],
    nodes: dict[str, PullyProcess],
    cluster_redis: RedisServer,
    tmp_path: Path,
) -> None:
    for command, expected in lines:
        if "./scripts/serve" in command:
            *env_words, script, flag, port, amp = shlex.split(command)
            assert (script, flag, amp, expected) == ("./scripts/serve", "--port", "&", "")
            env = dict(w.split("=", 1) for w in env_words)
            assert env == {"PULLY_REDIS_URL": "redis://127.0.0.1:6379/0"}  # and no PULLY_STORE
            env["PULLY_REDIS_URL"] = cluster_redis.url
            machine = tmp_path / f"machine-{port}"
            nodes[port] = PullyProcess(machine, env=env, name=f"node{port}").start()
            continue
        port = re.search(r"localhost:(\d+)", command)
        assert port is not None and port[1] in nodes, command
        await eventually(lambda: len(versions(nodes)) == 1, 10, "every node on one version")
        command = command.replace(port[0], f"127.0.0.1:{nodes[port[1]].port}")
        got, want = orjson.loads(shell(command)), orjson.loads(expected)
        assert matches(got, want), f"{command}\n got: {got}\nwant: {want}"
    assert len(nodes) == 2
    for node in nodes.values():
        health = node.health()
        assert health is not None and health["status"] == "ok", health
        assert health["relationships"]["store"]["kind"] == "redis"
        assert not health["relationships"]["split"]
        assert "is a file on this machine" not in node.log()
    node_b = list(nodes.values())[1]
    client = await WSClient.connect(node_b.ws_url)  # the options saved on A apply on B
    refused = await client.publish("news:1", "from a client")
    assert (refused["type"], refused["code"]) == ("error", "forbidden")


def versions(nodes: dict[str, PullyProcess]) -> set[int]:
    """The relationships versions the nodes run (none for a node that has not loaded yet)."""
    found = {(p.health() or {}).get("relationships", {}).get("version") for p in nodes.values()}
    return set() if None in found else {int(v) for v in found}


def shell(command: str) -> str:
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout
