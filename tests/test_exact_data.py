"""Data arrives exactly as sent or is refused: integers past 64 bits are never rounded.

orjson reads such an integer as a float (``123456789012345678901234567890`` became
``1.2345678901234568e+29``); a publish carrying one is refused with ``bad_request`` naming the
place, over WebSocket and HTTP, on both engines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import tornado.httpclient

from .support import WSClient

Connect = Callable[..., Awaitable[WSClient]]
pytestmark = pytest.mark.usefixtures("app", "http_server")

HUGE = "123456789012345678901234567890"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"publish_rate": 0.0}


async def http_publish(base: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = tornado.httpclient.HTTPRequest(
        base + "/publish",
        method="POST",
        body=body,
        headers={"Content-Type": "application/json"},
    )
    response = await tornado.httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
    return response.code, orjson.loads(response.body)


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("data", "where"),
    [
        (HUGE, "data"),
        ("-" + HUGE, "data"),
        ('{"id": ' + HUGE + "}", "data.id"),
        ('[1, 2, {"deep": [0, ' + HUGE + "]}]", "data[2].deep[1]"),
        ("18446744073709551616", "data"),  # 2**64: one past what orjson reads exactly
        ("-9223372036854775809", "data"),  # -(2**63) - 1
    ],
)
async def test_integers_past_64_bits_are_refused_over_websocket(
    connect: Connect, data: str, where: str
) -> None:
    client = await connect()
    await client.subscribe("exact")
    await client.send('{"type":"publish","channel":"exact","id":7,"data":' + data + "}")
    reply = await client.recv()
    assert (reply["type"], reply["id"], reply["code"]) == ("error", 7, "bad_request")
    assert f"field '{where}'" in reply["message"]
    assert "64 bits" in reply["message"]
    await client.no_message()  # nothing was published
    assert (await client.publish("exact", 1))["offset"] == 1  # and the connection is fine


@pytest.mark.gen_test
async def test_integers_past_64_bits_are_refused_over_http(base: str, connect: Connect) -> None:
    sub = await connect()
    await sub.subscribe("exact")
    status, body = await http_publish(
        base, b'{"channel":"exact","data":{"n":' + HUGE.encode() + b"}}"
    )
    assert (status, body["code"]) == (400, "bad_request")
    assert "field 'data.n'" in body["message"]
    await sub.no_message()


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "data",
    [
        "18446744073709551615",  # 2**64 - 1
        "-9223372036854775808",  # -(2**63)
        '"' + HUGE + '"',  # long digits inside a string are just text
        '{"' + HUGE + '": 1}',  # and so is a key
        "1.5e300",
    ],
)
async def test_values_orjson_carries_exactly_arrive_unchanged(
    base: str, connect: Connect, data: str
) -> None:
    client = await connect()
    await client.subscribe("exact")
    ack = await client.request({"type": "publish", "channel": "exact", "data": orjson.loads(data)})
    assert ack["type"] == "ack"
    status, _ = await http_publish(base, b'{"channel":"exact","data":' + data.encode() + b"}")
    assert status == 200
    for msg in await client.messages(2):
        assert msg["data"] == orjson.loads(data)
        assert orjson.dumps(msg["data"]) == orjson.dumps(orjson.loads(data))
