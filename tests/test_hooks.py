"""The connect proxy and the subscribe proxy, against a real HTTP server standing in for the app's
backend (tests/hook_backend.py): cookie sessions admitted, 403 and timeouts refused, malformed
replies refused and logged; subscribes allowed, forbidden and unavailable as the backend says."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import tornado.httpclient
import tornado.ioloop

from pully_tornado.errors import ConfigError
from pully_tornado.settings import Settings

from .hook_backend import HANG, Backend
from .support import WSClient
from .test_auth import SECRET, refused, token

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")


@pytest.fixture
def engine() -> str:
    return "memory"  # the proxies do not depend on the broker


@pytest.fixture
def extra_settings() -> dict[str, Any]:
    """Parametrize a test with it to change the node's settings."""
    return {}


@pytest.fixture
def settings_overrides(backend: Backend, extra_settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "jwt_secret": SECRET,
        "connect_proxy_url": backend.url("/connect"),
        "subscribe_proxy_url": backend.url("/subscribe"),
        "subscribe_proxy_channels": ("private:*",),
        "proxy_timeout": 0.5,
        **extra_settings,
    }


ADMIT = (200, {"user": "carol", "channels": ["room", "private:*"], "subscribe": ["feed:carol"]})


async def with_cookie(url: str, cookie: str = "session=abc") -> WSClient:
    request = tornado.httpclient.HTTPRequest(
        url + "?lang=fr", headers={"Cookie": cookie, "User-Agent": "test-agent"}
    )
    return await WSClient.connect(request)  # type: ignore[arg-type]


@pytest.mark.gen_test
async def test_a_cookie_session_is_admitted_with_the_rights_the_backend_gives(
    ws_url: str, backend: Backend
) -> None:
    backend.answer("/connect", ADMIT)
    client = await with_cookie(ws_url)
    assert client.welcome["user"] == "carol"
    [asked] = backend.requests["/connect"]
    body = asked.json()
    assert body["client"] == client.welcome["client"]
    assert body["headers"]["cookie"] == "session=abc"
    assert body["headers"]["user-agent"] == "test-agent"
    assert set(body["headers"]) == {
        "cookie", "authorization", "origin", "user-agent", "x-forwarded-for",
    }  # fmt: skip
    assert body["query"] == {"lang": "fr"}
    server_side = await client.recv()
    assert (server_side["channel"], server_side["server"]) == ("feed:carol", True)
    await client.subscribe("room")
    refused_reply = await client.request({"type": "subscribe", "channel": "elsewhere"})
    assert refused_reply["code"] == "forbidden"


@pytest.mark.gen_test
async def test_a_handshake_with_a_jwt_does_not_go_to_the_proxy(
    ws_url: str, backend: Backend
) -> None:
    client = await WSClient.connect(f"{ws_url}?token={token('alice')}")
    assert client.welcome["user"] == "alice"
    assert backend.requests["/connect"] == []


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("answer", "status"),
    [((403, {}), 403), ((500, {}), 503), ((302, {}), 503), (HANG, 503)],
)
async def test_the_proxy_refusing_or_failing_refuses_the_handshake(
    ws_url: str, backend: Backend, answer: Any, status: int
) -> None:
    backend.answer("/connect", answer)
    code, body = await refused(ws_url, headers={"Cookie": "session=abc"})
    assert code == status
    assert orjson.loads(body)["code"] == ("forbidden" if status == 403 else "unavailable")


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ({"channels": ["room"]}, "user"),
        ({"user": "a:b"}, "must not contain"),
        ({"user": "dave", "channels": "room"}, "channels"),
        ({"user": "dave", "subscribe": ["bad channel!"]}, "invalid channel names"),
        ({"user": "dave", "surprise": 1}, "surprise"),
        ({"user": "dave", "expire_at": 1}, "has passed"),
        (["not", "an", "object"], "JSON object"),
    ],
)
async def test_a_malformed_proxy_reply_is_a_503_and_logged(
    ws_url: str, backend: Backend, caplog: pytest.LogCaptureFixture, reply: Any, problem: str
) -> None:
    backend.answer("/connect", (200, reply))
    with caplog.at_level(logging.WARNING, logger="pully.hooks"):
        code, _ = await refused(ws_url, headers={"Cookie": "session=abc"})
    assert code == 503
    assert any(problem in r.getMessage() for r in caplog.records), caplog.text


@pytest.mark.gen_test
async def test_the_subscribe_proxy_decides_matching_channels(ws_url: str, backend: Backend) -> None:
    client = await WSClient.connect(f"{ws_url}?token={token('alice', channels=['*'])}")
    backend.answer("/subscribe", (200, {}))
    await client.subscribe("private:ok")
    assert [r.json() for r in backend.requests["/subscribe"]] == [
        {"client": client.welcome["client"], "user": "alice", "channel": "private:ok"}
    ]
    await client.subscribe("public")  # not one of its channels: not asked
    assert len(backend.requests["/subscribe"]) == 1

    for answer, code in [((403, {}), "forbidden"), ((500, {}), "unavailable"),
                         (HANG, "unavailable")]:  # fmt: skip
        backend.answer("/subscribe", answer)
        reply = await client.request({"type": "subscribe", "channel": "private:no"})
        assert reply["code"] == code, (answer, reply)


@pytest.mark.gen_test
async def test_the_subscribe_proxy_is_not_asked_about_server_side_subscriptions(
    ws_url: str, backend: Backend
) -> None:
    client = await WSClient.connect(f"{ws_url}?token={token('alice', subscribe=['private:x'])}")
    told = await client.recv()
    assert (told["type"], told["channel"], told["server"]) == ("subscribed", "private:x", True)
    assert backend.requests["/subscribe"] == []


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"PULLY_WEBHOOK_URL": "http://127.0.0.1:9/h"}, "PULLY_WEBHOOK_SECRET", "required"),
        ({"PULLY_WEBHOOK_URL": "ftp://x/h"}, "PULLY_WEBHOOK_URL", "http:// or https://"),
        ({"PULLY_CONNECT_PROXY_URL": "http://"}, "PULLY_CONNECT_PROXY_URL", "with a host"),
        ({"PULLY_WEBHOOK_EVENTS": "connect,nope"}, "PULLY_WEBHOOK_EVENTS", "unknown events nope"),
        ({"PULLY_WEBHOOK_SECRET": "short"}, "PULLY_WEBHOOK_SECRET", "at least 16 bytes"),
        ({"PULLY_PROXY_TIMEOUT": "0"}, "PULLY_PROXY_TIMEOUT", ">= 0.1"),
    ],
)
def test_hook_settings_are_checked_at_start(env: dict[str, str], variable: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(env)
    assert variable in str(info.value) and says in str(info.value)


@pytest.mark.gen_test
@pytest.mark.parametrize("extra_settings", [{"jwt_secret": None}])
async def test_without_a_secret_a_token_does_not_bypass_the_proxy(
    ws_url: str, backend: Backend
) -> None:
    backend.answer("/connect", (403, {}))
    status, _ = await refused(f"{ws_url}?token=anything")
    assert status == 403
    assert len(backend.requests["/connect"]) == 1
