"""Channel functions on a live node: the local runtime (worker processes), AWS Lambda (boto3
against a local server speaking the Invoke API) and HTTP webhooks."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

from pully_tornado.node import Node

from .lambda_server import LambdaServer
from .support import WSClient

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")


@pytest.fixture
def engine() -> str:
    return "memory"  # functions run before the broker: one engine is enough here


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"publish_rate": 0.0}


def write_function(node: Node, name: str, code: str) -> Path:
    path = Path(node.settings.functions_dir) / name / "handler.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


async def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        url, method="POST", body=orjson.dumps(body),
        headers={"Content-Type": "application/json"}, raise_error=False,
    )  # fmt: skip
    return response.code, orjson.loads(response.body)


async def relate(base: str, doc: dict[str, Any]) -> int:
    status, body = await post(base + "/relationships", doc)
    assert status == 200, body
    return int(body["version"])


UPPER = """
def handler(event, context):
    return {"data": event["data"].upper()}
"""
DROP_SECRETS = """
def handler(event, context):
    if "secret" in str(event["data"]):
        return None
    return {"data": event["data"]}
"""


def appender(suffix: str) -> str:
    return f"def handler(event, context):\n    return {{'data': event['data'] + {suffix!r}}}\n"


@pytest.mark.gen_test(timeout=30)
async def test_transform_drop_and_order(node: Node, base: str, connect: Connect) -> None:
    write_function(node, "upper", UPPER)
    write_function(node, "drop-secrets", DROP_SECRETS)
    write_function(node, "a", appender("a"))
    write_function(node, "b", appender("b"))
    channels = {"shout": ["upper"], "safe": ["drop-secrets", "upper"],
                "order:*": ["a", "b"], "order:reversed": ["b", "a"]}  # fmt: skip
    await relate(base, {"channels": channels})
    sub, pub = await connect(), await connect()
    for channel in ("shout", "safe", "order:x", "order:reversed", "plain"):
        await sub.subscribe(channel)
    assert (await pub.publish("shout", "hello"))["type"] == "ack"
    assert (await sub.messages(1))[0]["data"] == "HELLO"
    dropped = await pub.publish("safe", "the secret plan")
    assert dropped == {"type": "ack", "id": dropped["id"], "channel": "safe", "dropped": True}
    await sub.no_message(0.3)  # delivered to nobody
    await pub.publish("safe", "fine")
    assert (await sub.messages(1))[0]["data"] == "FINE"
    await pub.publish("order:x", "x")
    await pub.publish("order:reversed", "x")  # the exact key wins over the glob
    assert [m["data"] for m in await sub.messages(2)] == ["xab", "xba"]
    await pub.publish("plain", "untouched")  # no rule: no function
    assert (await sub.messages(1))[0]["data"] == "untouched"


@pytest.mark.gen_test(timeout=30)
async def test_the_event_carries_channel_data_and_client(
    node: Node, base: str, connect: Connect
) -> None:
    write_function(node, "echo", "def handler(event, context):\n    return {'data': event}\n")
    await relate(base, {"channels": {"echo:*": ["echo"]}})
    c = await connect()
    await c.subscribe("echo:1")
    await c.publish("echo:1", {"n": 1})
    [msg] = await c.messages(1)
    assert msg["data"] == {"channel": "echo:1", "data": {"n": 1}, "client": c.welcome["client"]}
    status, _ = await post(base + "/publish", {"channel": "echo:1", "data": 2})
    assert status == 200
    assert (await c.messages(1))[0]["data"] == {"channel": "echo:1", "data": 2, "client": None}


@pytest.mark.gen_test(timeout=30)
async def test_a_raising_function_fails_the_publish_and_delivers_nothing(
    node: Node, base: str, connect: Connect
) -> None:
    write_function(node, "boom", "def handler(event, context):\n    raise ValueError('no way')\n")
    write_function(node, "upper", UPPER)
    await relate(base, {"channels": {"strict": ["upper", "boom"], "lenient": ["boom", "upper"]},
                        "functions": {"boom": {"on_error": "reject"}}})  # fmt: skip
    c = await connect()
    await c.subscribe("strict")
    reply = await c.publish("strict", "x")
    assert (reply["type"], reply["code"]) == ("error", "function_failed")
    assert "'boom'" in reply["message"] and "ValueError: no way" in reply["message"]
    await c.no_message(0.3)  # never half a pipeline
    await relate(base, {"channels": {"lenient": ["boom", "upper"]},
                        "functions": {"boom": {"on_error": "pass"}}})  # fmt: skip
    await c.subscribe("lenient")
    assert (await c.publish("lenient", "x"))["type"] == "ack"
    assert (await c.messages(1))[0]["data"] == "X"  # boom passed it on unchanged


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("body", ["while True:\n        pass", "import time\n    time.sleep(30)"])
async def test_a_stuck_function_times_out_while_the_node_keeps_serving(
    node: Node, base: str, connect: Connect, body: str
) -> None:
    write_function(node, "stuck", f"def handler(event, context):\n    {body}\n")
    write_function(node, "upper", UPPER)
    await relate(base, {"channels": {"slow": ["stuck"], "fast": ["upper"]},
                        "functions": {"stuck": {"timeout": 1.0}}})  # fmt: skip
    victim, other = await connect(), await connect()
    await victim.send({"type": "publish", "channel": "slow", "data": 1, "id": "p"})
    await asyncio.sleep(0.3)  # the function is running now
    assert (await other.request({"type": "ping"}))["type"] == "pong"  # the loop is free
    await other.subscribe("fast")
    assert (await other.publish("fast", "still"))["type"] == "ack"
    reply = await victim.recv(timeout=5)
    assert (reply["id"], reply["code"]) == ("p", "function_failed")
    assert "timed out after 1s" in reply["message"]
    assert (await other.publish("fast", "after"))["type"] == "ack"  # workers were replaced


@pytest.mark.gen_test(timeout=30)
async def test_a_crashing_worker_is_replaced(node: Node, base: str, connect: Connect) -> None:
    write_function(node, "die", "import os\ndef handler(event, context):\n    os._exit(3)\n")
    write_function(node, "upper", UPPER)
    await relate(base, {"channels": {"die": ["die"], "ok": ["upper"]}})
    c = await connect()
    reply = await c.publish("die", 1)
    assert reply["code"] == "function_failed" and "exit code 3" in reply["message"]
    for _ in range(3):  # every worker still works
        assert (await c.publish("ok", "fine"))["type"] == "ack"


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("result", "says"),
    [("'just a string'", "expected None or a dict with 'data'"),
     ("{'payload': 1}", "expected None or a dict with 'data'"),
     ("{'data': object()}", "not JSON")],
)  # fmt: skip
async def test_garbage_results_fail_the_publish(
    node: Node, base: str, connect: Connect, result: str, says: str
) -> None:
    write_function(node, "junk", f"def handler(event, context):\n    return {result}\n")
    await relate(base, {"channels": {"junk": ["junk"]}})
    reply = await (await connect()).publish("junk", 1)
    assert reply["code"] == "function_failed" and says in reply["message"]


@pytest.mark.gen_test(timeout=30)
async def test_editing_a_function_changes_behaviour_without_restart(
    node: Node, base: str, connect: Connect
) -> None:
    path = write_function(node, "tag", appender("-v1"))
    await relate(base, {"channels": {"tagged": ["tag"]}})
    c = await connect()
    await c.subscribe("tagged")
    for _ in range(2):  # both workers load v1
        await c.publish("tagged", "m")
    assert [m["data"] for m in await c.messages(2)] == ["m-v1", "m-v1"]
    path.write_text(appender("-v2") + "# edited\n")
    for _ in range(2):
        await c.publish("tagged", "m")
    assert [m["data"] for m in await c.messages(2)] == ["m-v2", "m-v2"]


@pytest.mark.gen_test(timeout=30)
async def test_missing_function_and_noisy_function(node: Node, base: str, connect: Connect) -> None:
    write_function(node, "noisy", "def handler(event, context):\n    print('hi')\n"
                                  "    return {'data': context.function_name}\n")  # fmt: skip
    await relate(base, {"channels": {"ghost": ["ghost"], "noisy": ["noisy"]}})
    c = await connect()
    reply = await c.publish("ghost", 1)
    assert reply["code"] == "function_failed" and "ghost/handler.py" in reply["message"]
    await c.subscribe("noisy")
    assert (await c.publish("noisy", 1))["type"] == "ack"  # print() goes to the log, not the reply
    assert (await c.messages(1))[0]["data"] == "noisy"


@pytest.mark.gen_test(timeout=30)
async def test_a_function_cannot_grow_a_message_past_the_limit(
    node: Node, base: str, connect: Connect
) -> None:
    write_function(
        node, "bloat", "def handler(event, context):\n    return {'data': 'x' * 200000}\n"
    )
    await relate(base, {"channels": {"bloat": ["bloat"]}})
    reply = await (await connect()).publish("bloat", 1)
    assert reply["code"] == "too_large" and "PULLY_MAX_MESSAGE_BYTES" in reply["message"]


class TestLambda:
    @pytest.fixture
    def lambda_server(
        self, io_loop: tornado.ioloop.IOLoop, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[LambdaServer]:
        for var, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_SESSION_TOKEN": "test"}.items():  # fmt: skip
            monkeypatch.setenv(var, value)
        server = LambdaServer()
        yield server
        io_loop.run_sync(server.close)

    @pytest.fixture
    def settings_overrides(self, lambda_server: LambdaServer) -> dict[str, Any]:
        return {"aws_endpoint_url": lambda_server.url, "functions_runtime": "lambda",
                "publish_rate": 0.0}  # fmt: skip

    @pytest.mark.gen_test(timeout=30)
    async def test_lambda_functions_transform_fail_and_time_out(
        self, lambda_server: LambdaServer, base: str, connect: Connect
    ) -> None:
        def upper(event: Any, context: Any) -> Any:
            return {"data": event["data"].upper()}

        def broken(event: Any, context: Any) -> Any:
            raise KeyError("missing")

        lambda_server.functions.update({"pully-upper": upper, "custom-name": upper,
                                        "pully-broken": broken, "pully-slow": upper})  # fmt: skip
        lambda_server.delays["pully-slow"] = 3.0
        await relate(base, {
            "channels": {"up": ["upper"], "named": ["renamed"], "broken": ["broken"],
                         "slow": ["slow"], "absent": ["absent"]},
            "functions": {"renamed": {"runtime": "lambda", "name": "custom-name"},
                          "slow": {"timeout": 1.0}},
        })  # fmt: skip
        c = await connect()
        for channel in ("up", "named"):
            await c.subscribe(channel)
            assert (await c.publish(channel, "hi"))["type"] == "ack"
            assert (await c.messages(1))[0]["data"] == "HI"
        assert lambda_server.calls[:2] == ["pully-upper", "custom-name"]
        reply = await c.publish("broken", 1)
        assert reply["code"] == "function_failed"
        assert "KeyError" in reply["message"] and "pully-broken" in reply["message"]
        reply = await c.publish("slow", 1)
        assert reply["code"] == "function_failed" and "timed out after 1s" in reply["message"]
        reply = await c.publish("absent", 1)
        assert reply["code"] == "function_failed" and "ResourceNotFound" in reply["message"]


class _Hook(tornado.web.RequestHandler):
    async def post(self, kind: str) -> None:
        event = orjson.loads(self.request.body)
        if kind == "upper":
            self.finish(orjson.dumps({"data": event["data"].upper()}))
        elif kind == "drop":
            self.finish(b"null")
        elif kind == "nothing":
            self.set_status(204)
        elif kind == "fail":
            self.set_status(500)
            self.finish(b"oops")
        elif kind == "slow":
            await asyncio.sleep(3)
            self.finish(b"null")
        else:
            self.finish(b"<html>not json</html>")


class TestHttp:
    @pytest.fixture
    def hooks(self, io_loop: tornado.ioloop.IOLoop) -> Iterator[str]:
        server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/(\w+)", _Hook)]))
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets([sock])
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        server.stop()
        io_loop.run_sync(server.close_all_connections)

    @pytest.mark.gen_test(timeout=30)
    async def test_http_functions(self, hooks: str, base: str, connect: Connect) -> None:
        kinds = ["upper", "drop", "nothing", "fail", "slow", "garbage"]
        functions: dict[str, Any] = {
            k: {"runtime": "http", "url": f"{hooks}/{k}", "timeout": 1.0} for k in kinds
        }
        functions["gone"] = {"runtime": "http", "url": "http://127.0.0.1:9/nothing-listens"}
        channels = {k: [k] for k in [*kinds, "gone"]}
        await relate(base, {"channels": channels, "functions": functions})
        c = await connect()
        await c.subscribe("upper")
        assert (await c.publish("upper", "web"))["type"] == "ack"
        assert (await c.messages(1))[0]["data"] == "WEB"
        assert (await c.publish("drop", 1))["dropped"] is True
        assert (await c.publish("nothing", 1))["dropped"] is True
        for channel, says in (("fail", "HTTP 500"), ("slow", "timed out after 1s"),
                              ("garbage", "not JSON"), ("gone", "unreachable")):  # fmt: skip
            reply = await c.publish(channel, 1)
            assert reply["code"] == "function_failed", reply
            assert says in reply["message"], reply
