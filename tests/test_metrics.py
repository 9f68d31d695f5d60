"""GET /metrics after real traffic, and JSON logs from a real `pully serve`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import tornado.httpclient
import tornado.websocket
from prometheus_client.parser import text_string_to_metric_families

from pully_tornado.node import Node
from pully_tornado.relationships import load

from .support import ROOT, PullyProcess, WSClient, eventually

Connect = Callable[..., Awaitable[WSClient]]


async def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(base + "/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.mark.usefixtures("app", "http_server")
class TestMetrics:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        # slow refill: the first call of the local function may take longer than a token
        return {"publish_rate": 0.05, "publish_burst": 2}

    @pytest.mark.gen_test(timeout=30)
    async def test_metrics_follow_the_traffic(
        self, node: Node, base: str, connect: Connect, engine: str
    ) -> None:
        function = Path(node.settings.functions_dir) / "drop" / "handler.py"
        function.parent.mkdir(parents=True)
        function.write_text("def handler(event, context):\n    return None\n")
        await node.save_relationships(load({"channels": {"void": ["drop"]}}))
        subs = [await connect() for _ in range(3)]
        for s in subs:
            await s.subscribe("watched")
        pub = await connect()
        assert (await pub.publish("watched", 1))["type"] == "ack"
        assert (await pub.publish("void", 2))["dropped"] is True
        bad = await pub.publish("void", 3)  # over the publish rate: refused
        assert bad["code"] == "rate_limited"
        for s in subs:
            await s.messages(1)
        m = await scrape(base)
        assert m[("pully_connections", ())] == 4
        assert m[("pully_subscriptions", ())] == 3 and m[("pully_channels", ())] == 1
        assert m[("pully_publishes_total", (("result", "ok"),))] == 1
        assert m[("pully_publishes_total", (("result", "dropped"),))] == 1
        assert m[("pully_publishes_total", (("result", "rate_limited"),))] == 1
        assert m[("pully_deliveries_total", ())] == 3
        assert m[("pully_broker_connected", ())] == 1
        assert m[("pully_relationships_version", ())] == 1
        labels = (("function", "drop"), ("outcome", "dropped"))
        assert m[("pully_function_seconds_count", labels)] == 1
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            for _ in range(10):  # keep publishing past the limit: closed (4029)
                await pub.send({"type": "publish", "channel": "watched", "data": 0})
        assert (await pub.closed()).code == 4029
        await eventually(lambda: node.disconnects["rate_limited"] == 1, 5)
        m = await scrape(base)
        assert m[("pully_disconnects_total", (("reason", "rate_limited"),))] == 1
        assert m[("pully_connections", ())] == 3
        documented = (ROOT / "docs" / "operations.md").read_text()
        for name, _labels in m:
            if name.startswith("pully_"):
                family = re.sub(r"_(bucket|count|sum|created)$", "", name)
                assert f"`{family}`" in documented, f"{family} is not in docs/operations.md"


@pytest.mark.slow
@pytest.mark.gen_test(timeout=30)
async def test_json_logs_carry_the_access_log_and_connection_events(
    processes: Callable[..., PullyProcess],
) -> None:
    node = processes(env={"PULLY_LOG_FORMAT": "json"})
    client = await WSClient.connect(node.ws_url)
    await client.subscribe("logged")
    client.close()
    await eventually(lambda: '"event":"disconnect"' in node.log(), 5, "the disconnect event")
    lines = [orjson.loads(line) for line in node.log().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    start = next(e for e in lines if e["logger"] == "pully" and "serving on" in e["message"])
    assert start["level"] == "info"
    access = [e for e in lines if e["logger"] == "pully.access"]
    assert any(
        e["path"] == "/healthz" and e["status"] == 200 and "duration_ms" in e for e in access
    )
    # upgrades are debug lines: the connect event records them
    assert not any(e["path"] == "/ws" and e["status"] == 101 for e in access)
    connect = next(e for e in lines if e.get("event") == "connect")
    assert connect["client"] == client.welcome["client"] and connect["remote_ip"] == "127.0.0.1"
    disconnect = next(e for e in lines if e.get("event") == "disconnect")
    assert disconnect["client"] == client.welcome["client"]
