"""PULLY_COMPRESSION=on against a real `pully serve`, over raw sockets and Tornado's client:
what is negotiated (always server_no_context_takeover), one compressed frame per message shared
by every subscriber that negotiated it and each inflating on its own, small messages and other
clients plain, compressed client messages (fragmented, with and without context takeover), and
the bounds: a message inflating past the limit closes 1009, data that is not deflate 1007,
RSV1 where it cannot be 1002; the node keeps serving."""

from __future__ import annotations

import re
import subprocess
import sys
import zlib
from collections.abc import Iterator

import orjson
import pytest
import tornado.websocket

from pully_tornado.deflate import negotiate

from .rawws import PING, TEXT, RawWebSocket, frame
from .support import ROOT, PullyProcess
from .test_framing import closed_with, connect

CAP = 65536  # the node's PULLY_MAX_FRAME_BYTES and PULLY_MAX_MESSAGE_BYTES
OFFER = "permessage-deflate; client_max_window_bits"  # what browsers and `ws` offer


@pytest.mark.parametrize(
    ("offer", "response"),
    [
        (OFFER, "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
        ("permessage-deflate", "permessage-deflate; server_no_context_takeover"),
        ("permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
         "client_max_window_bits=9"),
        ("permessage-deflate; server_no_context_takeover; server_max_window_bits=15",
         "permessage-deflate; server_no_context_takeover"),
        # a shared frame cannot honour a smaller server window: the next offer is taken
        ("permessage-deflate; server_max_window_bits=10, permessage-deflate",
         "permessage-deflate; server_no_context_takeover"),
        ("permessage-deflate; server_max_window_bits=10", None),
        ("permessage-deflate; client_max_window_bits=16", None),
        ("permessage-deflate; client_max_window_bits=x", None),
        ("permessage-deflate; mystery", None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        ("permessage-deflate; server_no_context_takeover=1", None),
        ("x-webkit-deflate-frame", None),
        ("", None),
        (None, None),
    ],
)  # fmt: skip
def test_what_is_negotiated(offer: str | None, response: str | None) -> None:
    agreed = negotiate(offer)
    assert (agreed and agreed.response) == response


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PullyProcess]:
    env = {"PULLY_COMPRESSION": "on", "PULLY_MAX_FRAME_BYTES": str(CAP),
           "PULLY_MAX_MESSAGE_BYTES": str(CAP)}  # fmt: skip
    proc = PullyProcess(tmp_path_factory.mktemp("compression"), env=env).start()
    yield proc
    proc.stop()


@pytest.fixture
def healthy(node: PullyProcess) -> Iterator[PullyProcess]:
    yield node
    assert "Traceback" not in node.log()
    plain = subscriber(node, "after", None)  # the node still serves
    plain.send_json({"type": "ping", "id": "p"})
    assert plain.recv_json() == {"type": "pong", "id": "p"}
    plain.close()


def subscriber(node: PullyProcess, channel: str, offer: str | None = OFFER) -> RawWebSocket:
    client = connect(node, offer)
    client.send_json({"type": "subscribe", "channel": channel, "id": "s"})
    assert client.recv_json()["type"] == "subscribed"
    return client


def inflate(data: bytes, bits: int = 15) -> bytes:
    """As a client that keeps no context: a fresh inflater for each message."""
    return zlib.decompressobj(-bits).decompress(data + b"\x00\x00\xff\xff")


def deflate(data: bytes, compressor: zlib._Compress | None = None) -> bytes:
    compressor = compressor or zlib.compressobj(6, zlib.DEFLATED, -10)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_the_handshake_answers_the_offer(healthy: PullyProcess) -> None:
    client = RawWebSocket(healthy.port, extensions=OFFER)
    assert ("Sec-Websocket-Extensions: permessage-deflate; server_no_context_takeover; "
            "client_max_window_bits=10\r\n") in client.response_head  # fmt: skip
    plain = RawWebSocket(healthy.port)
    assert "Extensions" not in plain.response_head
    for each in (client, plain):
        each.close()


def test_one_compressed_frame_per_message_for_every_subscriber_that_asked(
    healthy: PullyProcess,
) -> None:
    first, second = subscriber(healthy, "news"), subscriber(healthy, "news")
    plain = subscriber(healthy, "news", None)
    publisher = subscriber(healthy, "elsewhere", None)
    text = "lorem ipsum dolor sit amet " * 40
    big = [{"id": n, "text": f"message {n} {text}"} for n in range(3)]
    for n, data in enumerate([*big, {"small": True}]):
        publisher.send_json({"type": "publish", "channel": "news", "data": data, "id": f"p{n}"})
        assert publisher.recv_json()["type"] == "ack"
    for n, data in enumerate(big):
        wire = [client.recv_frame() for client in (first, second)]
        clear = plain.recv_frame()
        assert not clear.rsv1 and orjson.loads(clear.payload)["data"] == data
        assert wire[0] == wire[1]  # the same bytes: compressed once
        assert wire[0].rsv1 and wire[0].opcode == TEXT
        assert len(wire[0].payload) < len(clear.payload) / 3
        assert inflate(wire[0].payload) == clear.payload, n  # no context taken over
    small = [client.recv_frame() for client in (first, second, plain)]
    assert all(not got.rsv1 and orjson.loads(got.payload)["data"] == {"small": True}
               for got in small)  # fmt: skip
    for client in (first, second, plain, publisher):
        client.close()


def test_compressed_client_messages_are_read(healthy: PullyProcess) -> None:
    client = connect(healthy, OFFER)
    kept = zlib.compressobj(6, zlib.DEFLATED, -10)  # the client takes its context over
    for n in range(3):
        message = orjson.dumps({"type": "ping", "id": f"c{n}", "pad": "abc" * 100})
        client.send(frame(TEXT, deflate(message, kept), rsv=4))
        assert client.recv_json() == {"type": "pong", "id": f"c{n}"}
    # fragmented, with a ping between the fragments; RSV1 on the first fragment only
    data = deflate(orjson.dumps({"type": "ping", "id": "frag", "pad": "xyz" * 200}), kept)
    client.send(frame(TEXT, data[:10], fin=False, rsv=4) + frame(PING, b"hi")
                + frame(0, data[10:]))  # fmt: skip
    got = client.recv_frame()
    assert (got.opcode, got.payload) == (0xA, b"hi")
    assert client.recv_json() == {"type": "pong", "id": "frag"}
    client.close()


def test_a_message_inflating_past_the_limit_is_closed_1009(healthy: PullyProcess) -> None:
    bomb = deflate(orjson.dumps({"type": "ping", "id": "b", "pad": "a" * (4 * CAP)}))
    assert len(bomb) < 1000  # small on the wire, four times the limit inflated
    assert closed_with(healthy, frame(TEXT, bomb, rsv=4), extensions=OFFER).close_code == 1009


@pytest.mark.parametrize(
    ("data", "offer", "code"),
    [
        (frame(TEXT, b"\xff\xfe\xfd not deflate", rsv=4), OFFER, 1007),
        (frame(TEXT, b"x", fin=False) + frame(0, b"y", rsv=4), OFFER, 1002),  # on a continuation
        (frame(PING, b"", rsv=4), OFFER, 1002),  # on a control frame
        (frame(TEXT, deflate(b'{"type":"ping","id":"n"}'), rsv=4), None, 1002),  # not negotiated
        (frame(TEXT, b"x", rsv=2), OFFER, 1002),  # RSV2: no extension defines it
    ],
    ids=["not-deflate", "continuation", "control", "not-negotiated", "rsv2"],
)
def test_rsv1_where_it_cannot_be_and_broken_data(
    healthy: PullyProcess, data: bytes, offer: str | None, code: int
) -> None:
    assert closed_with(healthy, data, extensions=offer).close_code == code


@pytest.mark.gen_test(timeout=30)
async def test_tornados_client_negotiates_and_round_trips(node: PullyProcess) -> None:
    conn = await tornado.websocket.websocket_connect(node.ws_url, compression_options={})
    assert conn.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
    assert orjson.loads(await conn.read_message() or "")["type"] == "welcome"
    data = {"text": "round trip é✓ " * 100}
    subscribe = {"type": "subscribe", "channel": "tornado", "id": "s"}
    for request in (subscribe, {"type": "publish", "channel": "tornado", "data": data, "id": "p"}):
        await conn.write_message(orjson.dumps(request).decode())  # compressed by Tornado
    frames = [orjson.loads(await conn.read_message() or "") for _ in range(3)]
    assert {f["type"] for f in frames} == {"subscribed", "ack", "message"}
    [message] = [f for f in frames if f["type"] == "message"]
    assert message["data"] == data
    conn.close()


def test_off_by_default_no_extension_is_answered(tmp_path_factory: pytest.TempPathFactory) -> None:
    proc = PullyProcess(tmp_path_factory.mktemp("plain")).start()
    try:
        client = RawWebSocket(proc.port, extensions=OFFER)
        assert "Extensions" not in client.response_head
        client.close()
    finally:
        proc.stop()


def test_the_docs_handshake_example_runs_as_written(node: PullyProcess) -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    example = r"<!-- example: compression-handshake -->\n```python\n(.*?)```"
    [block] = re.findall(example, text, re.S)
    code, _, expected = block.rstrip("\n").rpartition("\n# ")  # the last line: what it prints
    code = code.replace("ws://localhost:8080/ws", node.ws_url)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected.strip()
