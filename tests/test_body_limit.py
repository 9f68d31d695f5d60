"""Request bodies over the node's 8 MiB cap, sent for real to a `pully serve`: the documented
JSON 413 (not Tornado's bare 400 and a reset), before the body is read, whether the size is
declared (``Content-Length``) or only found out (chunked); bodies under the cap still reach
their handler."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from pully_tornado.app import MAX_BODY_BYTES

from .support import PullyProcess

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PullyProcess]:
    process = PullyProcess(tmp_path_factory.mktemp("body-limit"), name="capped").start()
    yield process
    process.stop()


def post(
    node: PullyProcess, body: bytes | Iterator[bytes], **kwargs: bool
) -> tuple[int, dict[str, Any]]:
    """POST /publish with http.client, which sends the whole body before reading the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=20)
    try:
        conn.request(
            "POST", "/publish", body=body, headers={"Content-Type": "application/json"}, **kwargs
        )
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, orjson.loads(response.read())
    finally:
        conn.close()


def test_a_declared_body_over_the_cap_is_a_json_413(node: PullyProcess) -> None:
    status, body = post(node, b"x" * (9 * MIB))
    message = f"body is {9 * MIB} bytes; the limit is {MAX_BODY_BYTES}"
    assert status == 413
    assert body == {"status": 413, "message": message, "code": "too_large",
                    "error": [{"message": message}]}  # fmt: skip
    assert "413 POST /publish (127.0.0.1)" in node.log()  # the access log has it too
    assert (node.health() or {}).get("status") == "ok"


def test_a_chunked_body_growing_over_the_cap_is_a_json_413(node: PullyProcess) -> None:
    chunks = (b"x" * MIB for _ in range(9))
    status, body = post(node, chunks, encode_chunked=True)
    assert (status, body["code"]) == (413, "too_large")
    assert body["message"] == f"body is over the limit of {MAX_BODY_BYTES} bytes"


def test_the_413_comes_before_the_body_is_sent(node: PullyProcess) -> None:
    """With ``Expect: 100-continue`` the client sends nothing more: it is answered from the
    headers alone, then the connection closes."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(
            b"POST /publish HTTP/1.1\r\nHost: pully\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (9 * MIB)
        )
        received = b""
        while chunk := sock.recv(65536):  # until the node closes the connection
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), received
    assert b"100 (Continue)" not in head
    assert orjson.loads(body)["code"] == "too_large"


def test_a_body_under_the_cap_reaches_its_handler(node: PullyProcess) -> None:
    status, body = post(node, b"x" * (MAX_BODY_BYTES - 1))
    assert status == 413  # the handler's own limit, PULLY_MAX_MESSAGE_BYTES: it read the body
    assert body["message"] == f"body is {MAX_BODY_BYTES - 1} bytes; the limit is 65536"
