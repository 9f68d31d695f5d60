"""Frame decoding and encoding, table-driven: every rule of protocol v1 and the error it yields."""

from __future__ import annotations

import struct

import orjson
import pytest

from pully_tornado import protocol
from pully_tornado.protocol import Command, FrameRejected, Position

LIMIT = 1024


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type":"ping"}', Command("ping")),
        ('{"type":"ping","id":7}', Command("ping", 7)),
        ('{"type":"ping","id":"abc"}', Command("ping", "abc")),
        ('{"type":"subscribe","channel":"chat","id":1}', Command("subscribe", 1, "chat")),
        (
            '{"type":"subscribe","channel":"a","since":{"offset":4,"epoch":"e1"}}',
            Command("subscribe", None, "a", since=Position(4, "e1")),
        ),
        (
            '{"type":"unsubscribe","channel":"x:y.z@w/v=u-_"}',
            Command("unsubscribe", None, "x:y.z@w/v=u-_"),
        ),
        (
            '{"type":"publish","channel":"c","data":null}',
            Command("publish", None, "c", data=b"null"),
        ),
        (
            '{"type":"publish","channel":"c","data":{"b":[1,2.5,"\\u00e9"]}}',
            Command("publish", None, "c", data='{"b":[1,2.5,"é"]}'.encode()),
        ),
        # unknown extra fields are ignored (forward compatibility)
        ('{"type":"ping","id":1,"extra":true}', Command("ping", 1)),
        (b'{"type":"ping","id":2}', Command("ping", 2)),
        (
            '{"type":"subscribe","channel":"' + "c" * 200 + '"}',
            Command("subscribe", None, "c" * 200),
        ),
    ],
)
def test_valid_frames_decode(frame: str, expected: Command) -> None:
    assert protocol.decode(frame, LIMIT) == expected


@pytest.mark.parametrize(
    ("frame", "code", "request_id", "mentions"),
    [
        ("not json", "bad_request", None, "not valid JSON"),
        ("", "bad_request", None, "not valid JSON"),
        ('{"type":"ping"', "bad_request", None, "not valid JSON"),
        ("[1,2]", "bad_request", None, "JSON object"),
        ('"ping"', "bad_request", None, "JSON object"),
        ("{}", "bad_request", None, "'type'"),
        ('{"type":5,"id":1}', "bad_request", 1, "'type'"),
        ('{"type":"ping","id":true}', "bad_request", None, "'id'"),
        ('{"type":"ping","id":1.5}', "bad_request", None, "'id'"),
        ('{"type":"ping","id":{"a":1}}', "bad_request", None, "'id'"),
        ('{"type":"ping","id":"' + "i" * 201 + '"}', "bad_request", None, "'id'"),
        ('{"type":"launch","id":"x"}', "unknown_type", "x", "launch"),
        ('{"type":"subscribe","id":2}', "bad_request", 2, "'channel'"),
        ('{"type":"subscribe","channel":5,"id":3}', "bad_request", 3, "'channel'"),
        ('{"type":"subscribe","channel":"","id":4}', "invalid_channel", 4, "invalid"),
        ('{"type":"subscribe","channel":"has space","id":5}', "invalid_channel", 5, "invalid"),
        ('{"type":"subscribe","channel":"caf\\u00e9","id":6}', "invalid_channel", 6, "invalid"),
        (
            '{"type":"subscribe","channel":"' + "c" * 201 + '","id":7}',
            "invalid_channel",
            7,
            "1-200",
        ),
        ('{"type":"publish","channel":"ok","id":8}', "bad_request", 8, "'data'"),
        ('{"type":"publish","channel":"a*b","data":1,"id":9}', "invalid_channel", 9, "invalid"),
        ('{"type":"subscribe","channel":"c","since":5,"id":10}', "bad_request", 10, "'since'"),
        (
            '{"type":"subscribe","channel":"c","since":{"epoch":"e"},"id":11}',
            "bad_request",
            11,
            "since.offset",
        ),
        (
            '{"type":"subscribe","channel":"c","since":{"offset":-1,"epoch":"e"}}',
            "bad_request",
            None,
            "since.offset",
        ),
        (
            '{"type":"subscribe","channel":"c","since":{"offset":1}}',
            "bad_request",
            None,
            "since.epoch",
        ),
        (
            '{"type":"publish","channel":"c","data":1,"id":12,"pad":"' + "x" * LIMIT + '"}',
            "too_large",
            12,
            "limit",
        ),
        ('{"broken' + "x" * LIMIT, "too_large", None, "limit"),
        ('{"type":"ping","id":123456789012345678901234567890}', "bad_request", None, "'id'"),
    ],
)
def test_invalid_frames_are_rejected_with_code_and_id(
    frame: str, code: str, request_id: object, mentions: str
) -> None:
    with pytest.raises(FrameRejected) as info:
        protocol.decode(frame, LIMIT)
    assert info.value.error.code == code
    assert info.value.id == request_id
    assert mentions in info.value.error.message


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    # 300 three-byte characters: 300 chars but 900+ bytes
    frame = '{"type":"publish","channel":"c","data":"' + "€" * 300 + '"}'
    assert len(frame) < 400
    assert protocol.decode(frame, 1000).type == "publish"
    with pytest.raises(FrameRejected) as info:
        protocol.decode(frame, 800)
    assert info.value.error.code == "too_large"


def test_data_nested_deeper_than_the_encoder_allows_is_a_bad_request() -> None:
    deep = "[" * 300 + "]" * 300  # parses (orjson reads 1024 levels) but cannot be re-encoded
    with pytest.raises(FrameRejected) as info:
        protocol.decode('{"type":"publish","channel":"c","data":' + deep + "}", 10_000)
    assert info.value.error.code == "bad_request"
    assert "'data'" in info.value.error.message


def test_message_frame_is_valid_json_with_every_field() -> None:
    payload = protocol.message("room:1", b'{"t":"hi"}', 42, "ab12cd34")
    assert orjson.loads(payload) == {
        "type": "message",
        "channel": "room:1",
        "data": {"t": "hi"},
        "offset": 42,
        "epoch": "ab12cd34",
    }


def test_replies_echo_id_only_when_given() -> None:
    assert orjson.loads(protocol.reply("pong", None)) == {"type": "pong"}
    assert orjson.loads(protocol.reply("pong", 0)) == {"type": "pong", "id": 0}
    assert orjson.loads(protocol.reply("ack", "a", channel="c", offset=1)) == {
        "type": "ack",
        "id": "a",
        "channel": "c",
        "offset": 1,
    }


def _parse_frame(frame: bytes) -> tuple[int, bytes]:
    first, second = frame[0], frame[1]
    assert second & 0x80 == 0, "server frames are not masked"
    length, offset = second & 0x7F, 2
    if length == 126:
        (length,), offset = struct.unpack("!H", frame[2:4]), 4
    elif length == 127:
        (length,), offset = struct.unpack("!Q", frame[2:10]), 10
    assert len(frame) == offset + length
    return first, frame[offset:]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_text_frames_use_the_right_length_encoding(size: int) -> None:
    payload = b"x" * size
    first, body = _parse_frame(protocol.text_frame(payload))
    assert first == 0x81  # FIN + text
    assert body == payload


def test_every_command_has_one_handler() -> None:
    """The WebSocket handler dispatches from a dict: each command of the protocol has an entry
    (``ping`` is answered before dispatch), and nothing else does."""
    from pully_tornado.handlers.websocket import _COMMANDS

    assert set(_COMMANDS) == set(protocol.COMMANDS) - {"ping"}
