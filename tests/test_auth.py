"""Client auth with JWTs (PyJWT): the handshake token matrix, capabilities, personal channels,
expiry mid-connection and refresh; the browser origin allowlist."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import orjson
import pytest
import tornado.httpclient
import tornado.websocket

from pully_tornado.node import Node

from .support import WSClient

Connect = Callable[..., Awaitable[WSClient]]
SECRET = "test-secret-that-is-long-enough-for-hs256-and-even-for-hs512-keys!"
pytestmark = pytest.mark.usefixtures("app", "http_server")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "jwt_secret": SECRET,
        "allowed_origins": ("https://app.example", "https://*.good.example"),
    }


def token(sub: str = "alice", secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    return jwt.encode({"sub": sub, **claims}, secret, algorithm=algorithm)


def unsigned(payload: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


async def refused(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """The handshake fails: its HTTP status and body."""
    request = tornado.httpclient.HTTPRequest(url, headers=headers)
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await tornado.websocket.websocket_connect(request)
    assert info.value.response is not None
    return info.value.code, info.value.response.body


BAD_TOKENS = {
    "missing": None,
    "garbage": "not-a-jwt",
    "bad signature": token(
        secret="some-other-secret-of-enough-length-for-any-hmac-algorithm-used!!"
    ),
    "expired": token(exp=int(time.time()) - 60),
    "not yet valid": token(nbf=int(time.time()) + 600),
    "wrong algorithm": token(algorithm="HS512"),
    "alg none": unsigned({"sub": "alice"}),
    "no sub": jwt.encode({"channels": ["*"]}, SECRET, algorithm="HS256"),
    "sub not a string": jwt.encode({"sub": 42}, SECRET, algorithm="HS256"),
    "channels not a list": token(channels="*"),
}


@pytest.mark.gen_test
@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_handshake_without_a_valid_token_is_401(ws_url: str, node: Node, case: str) -> None:
    bad = BAD_TOKENS[case]
    url = ws_url if bad is None else f"{ws_url}?token={bad}"
    status, raw = await refused(url)
    body = orjson.loads(raw)
    assert status == 401
    assert (body["status"], body["code"]) == (401, "unauthorized") and body["message"]
    assert not node.connections, "no session was created"


@pytest.mark.gen_test
async def test_valid_token_in_query_or_header_connects_as_its_user(
    ws_url: str, connect: Connect
) -> None:
    by_query = await connect(f"{ws_url}?token={token('alice')}")
    assert by_query.welcome["user"] == "alice"
    request = tornado.httpclient.HTTPRequest(
        ws_url, headers={"Authorization": f"Bearer {token('bob')}"}
    )
    by_header = await connect(request)
    assert by_header.welcome["user"] == "bob"


@pytest.mark.gen_test
async def test_capabilities_come_from_the_claims(ws_url: str, connect: Connect) -> None:
    c = await connect(f"{ws_url}?token={token(channels=['news:*', 'chat'], publish=['chat'])}")
    assert (await c.subscribe("news:eu"))["type"] == "subscribed"
    assert (await c.subscribe("chat"))["type"] == "subscribed"
    for frame in (
        {"type": "subscribe", "channel": "secret"},
        {"type": "publish", "channel": "news:eu", "data": 1},
        {"type": "history", "channel": "secret"},
        {"type": "presence", "channel": "presence:secret"},
    ):
        reply = await c.request(frame)
        assert (reply["type"], reply["code"]) == ("error", "forbidden"), frame
    ack = await c.publish("chat", "hi")
    assert ack["type"] == "ack", ack
    assert (await c.request({"type": "ping"}))["type"] == "pong"  # still connected


@pytest.mark.gen_test
async def test_personal_channel_is_always_own_and_never_anyone_elses(
    ws_url: str, connect: Connect
) -> None:
    everything = token("alice", channels=["*"], publish=["*"])
    alice = await connect(f"{ws_url}?token={everything}")
    assert (await alice.subscribe("user:alice"))["type"] == "subscribed"
    assert (await alice.subscribe("user:alice:inbox"))["type"] == "subscribed"
    for channel in ("user:bob", "user:alicex", "user:bob:inbox"):
        reply = await alice.request({"type": "subscribe", "channel": channel})
        assert reply["code"] == "forbidden", channel
        reply = await alice.publish(channel, 1)
        assert reply["code"] == "forbidden", channel
    bare = await connect(f"{ws_url}?token={token('bob')}")  # no claims at all
    assert (await bare.subscribe("user:bob"))["type"] == "subscribed"
    assert (await bare.publish("user:bob", "note to self"))["type"] == "ack"
    assert (await bare.request({"type": "subscribe", "channel": "lobby"}))["code"] == "forbidden"


@pytest.mark.gen_test(timeout=20)
async def test_expired_token_closes_the_connection_with_4001(ws_url: str, connect: Connect) -> None:
    c = await connect(f"{ws_url}?token={token(exp=int(time.time()) + 2)}")
    closed = await c.closed(timeout=6)
    assert (closed.code, closed.reason) == (4001, "token expired")


@pytest.mark.gen_test(timeout=20)
async def test_refresh_extends_the_connection(ws_url: str, connect: Connect) -> None:
    c = await connect(f"{ws_url}?token={token(exp=int(time.time()) + 2)}")
    later = int(time.time()) + 60
    reply = await c.request({"type": "refresh", "token": token(exp=later, channels=["x"])})
    assert reply == {"type": "refreshed", "id": reply["id"], "user": "alice", "expires": later}
    assert (await c.subscribe("x"))["type"] == "subscribed"  # the new claims apply
    await c.no_message(3)  # past the first expiry, still open
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    wrong_user = await c.request({"type": "refresh", "token": token("mallory")})
    assert wrong_user["code"] == "forbidden"
    bad = await c.request({"type": "refresh", "token": "garbage"})
    assert bad["code"] == "forbidden" and "invalid token" in bad["message"]
    missing = await c.request({"type": "refresh"})
    assert missing["code"] == "bad_request"


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example", True),
        ("https://app.example/", True),
        ("https://eu.good.example", True),
        ("https://evil.example", False),
        ("https://app.example.evil.example", False),
        ("http://app.example", False),
    ],
)
async def test_origin_allowlist(ws_url: str, connect: Connect, origin: str, allowed: bool) -> None:
    url = f"{ws_url}?token={token()}"
    headers = {"Origin": origin}
    if allowed:
        await connect(tornado.httpclient.HTTPRequest(url, headers=headers))
    else:
        status, _ = await refused(url, headers)
        assert status == 403


class TestDevelopmentMode:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {}

    @pytest.mark.gen_test
    async def test_without_a_secret_everyone_may_do_everything(self, connect: Connect) -> None:
        c = await connect()
        assert "user" not in c.welcome
        assert (await c.subscribe("user:bob"))["type"] == "subscribed"
        assert (await c.publish("anything", 1))["type"] == "ack"
        reply = await c.request({"type": "refresh", "token": "x"})
        assert reply["code"] == "bad_request" and "PULLY_JWT_SECRET" in reply["message"]
