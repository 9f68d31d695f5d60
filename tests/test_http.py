"""HTTP routes on a live node: POST /publish, GET /healthz, the admin guard, JSON errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil

from pully_tornado.app import make_app
from pully_tornado.node import Node

from .support import WSClient

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")


async def call(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    raw = body if isinstance(body, bytes | str) or body is None else orjson.dumps(body)
    headers = {"Content-Type": "application/json", **(headers or {})}  # admin writes need it
    request = tornado.httpclient.HTTPRequest(
        url, method=method, body=raw, headers=headers, allow_nonstandard_methods=True
    )
    response = await tornado.httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
    return response.code, orjson.loads(response.body or b"null"), dict(response.headers)


@pytest.mark.gen_test
async def test_http_publish_reaches_websocket_subscribers(base: str, connect: Connect) -> None:
    sub = await connect()
    subscribed = await sub.subscribe("news")
    status, body, _ = await call(base + "/publish", "POST", {"channel": "news", "data": {"h": 1}})
    assert status == 200
    assert body == {"channel": "news", "offset": 1, "epoch": subscribed["epoch"]}
    [msg] = await sub.messages(1)
    assert (msg["data"], msg["offset"]) == ({"h": 1}, 1)


@pytest.mark.gen_test
async def test_http_and_websocket_publishes_share_one_offset_sequence(
    base: str, connect: Connect
) -> None:
    ws = await connect()
    assert (await ws.publish("mixed", "a"))["offset"] == 1
    status, body, _ = await call(base + "/publish", "POST", {"channel": "mixed", "data": None})
    assert (status, body["offset"]) == (200, 2)
    assert (await ws.publish("mixed", "c"))["offset"] == 3


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("body", "status", "code", "mentions"),
    [
        (b"{oops", 400, "bad_request", "not valid JSON"),
        (b"[1, 2]", 400, "bad_request", "JSON object"),
        ({"data": 1}, 400, "bad_request", "'channel'"),
        ({"channel": "ok"}, 400, "bad_request", "'data'"),
        ({"channel": "not ok!", "data": 1}, 400, "invalid_channel", "invalid"),
        ({"channel": "big", "data": "x" * 70_000}, 413, "too_large", "limit"),
    ],
)
async def test_http_publish_rejects_bad_bodies_with_the_error_envelope(
    base: str, body: Any, status: int, code: str, mentions: str
) -> None:
    got_status, got, headers = await call(base + "/publish", "POST", body)
    assert got_status == status
    assert headers["Content-Type"] == "application/json"
    assert got["status"] == status and got["code"] == code
    assert mentions in got["message"]
    assert got["error"] == [{"message": got["message"]}]


@pytest.mark.gen_test
async def test_healthz_reports_node_broker_and_connections(
    base: str, connect: Connect, node: Node, engine: str
) -> None:
    c = await connect()
    await c.subscribe("h1")
    status, body, headers = await call(base + "/healthz")
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert body["status"] == "ok"
    assert body["node"] == node.id
    assert body["mode"] == ("cluster" if engine == "redis" else "embedded")
    assert body["broker"]["kind"] == engine and body["broker"]["state"] == "connected"
    assert (body["connections"], body["channels"], body["subscriptions"]) == (1, 1, 1)
    assert body["protocol"] == 1


@pytest.mark.gen_test
async def test_unknown_routes_and_methods_answer_json(base: str) -> None:
    status, body, _ = await call(base + "/nowhere")
    assert (status, body["code"]) == (404, "not_found")
    status, body, _ = await call(base + "/publish")  # GET on a POST route
    assert (status, body["code"]) == (405, "method_not_allowed")


class TestAdminToken:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"admin_token": "s3cret-token"}

    @pytest.mark.gen_test
    async def test_missing_token_is_401_with_challenge(self, base: str) -> None:
        status, body, headers = await call(base + "/publish", "POST", {"channel": "a", "data": 1})
        assert (status, body["status"], body["code"]) == (401, 401, "unauthorized")
        assert "Bearer" in body["message"]
        assert headers["Www-Authenticate"].startswith("Bearer")

    @pytest.mark.gen_test
    @pytest.mark.parametrize("header", ["Bearer wrong", "Basic czNjcmV0LXRva2Vu", "s3cret-token"])
    async def test_wrong_token_is_403(self, base: str, header: str) -> None:
        status, body, _ = await call(
            base + "/publish", "POST", {"channel": "a", "data": 1}, {"Authorization": header}
        )
        assert (status, body["code"]) == (403, "forbidden")

    @pytest.mark.gen_test
    async def test_right_token_publishes(self, base: str) -> None:
        status, body, _ = await call(
            base + "/publish",
            "POST",
            {"channel": "a", "data": 1},
            {"Authorization": "Bearer s3cret-token"},
        )
        assert (status, body["offset"]) == (200, 1)

    @pytest.mark.gen_test
    async def test_healthz_needs_no_token(self, base: str) -> None:
        assert (await call(base + "/healthz"))[0] == 200


@pytest.mark.gen_test
async def test_without_a_token_only_loopback_callers_may_publish(node: Node) -> None:
    """A second server on the same node trusts X-Real-Ip, so a request can come from a
    non-loopback address without sending any traffic off this machine."""
    server = tornado.httpserver.HTTPServer(make_app(node), xheaders=True)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets([sock])
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/publish"
    try:
        status, body, _ = await call(
            url, "POST", {"channel": "a", "data": 1}, {"X-Real-Ip": "203.0.113.9"}
        )
        assert (status, body["code"]) == (403, "forbidden")
        assert "loopback" in body["message"]
        status, _, _ = await call(url, "POST", {"channel": "a", "data": 1}, {"X-Real-Ip": "::1"})
        assert status == 200
    finally:
        server.stop()
        await server.close_all_connections()


@pytest.mark.gen_test
async def test_only_the_browser_client_may_be_imported_from_other_origins(base: str) -> None:
    """An app's page on its own origin imports /pully.js (a public file); nothing else of the
    node is readable cross-origin."""
    fetch = tornado.httpclient.AsyncHTTPClient().fetch
    client = await fetch(base + "/pully.js", headers={"Origin": "http://app.example"})
    assert client.headers["Access-Control-Allow-Origin"] == "*"
    for path in ("/", "/admin", "/healthz"):
        page = await fetch(base + path, headers={"Origin": "http://app.example"},
                           raise_error=False)  # fmt: skip
        assert "Access-Control-Allow-Origin" not in page.headers, path
