"""One builder for the ``message`` frame: ``protocol.message``. Redis carries the data and its
position (the publish script stores and publishes the data as it was published) and every node
builds the frame; the memory broker calls the same function. This pins what every engine hands
over, delivered and in history, to ``protocol.message``'s bytes, and shows what travels through
Redis; a wave-1 node's frames (stored or published) are still read as they are."""

from __future__ import annotations

import orjson
import pytest

from pully_tornado import protocol
from pully_tornado.broker import create_broker
from pully_tornado.settings import Settings

from .support import RedisServer, eventually


class Recorder:
    """Broker events: the publications it hands over, as they come."""

    def __init__(self) -> None:
        self.publications: list[tuple[str, int, str, bytes]] = []

    def on_publication(self, channel: str, offset: int, epoch: str, payload: bytes) -> None:
        self.publications.append((channel, offset, epoch, payload))

    def on_presence(self, channel: str, payload: bytes) -> None:
        pass

    def on_control(self, topic: str, payload: bytes) -> None:
        pass

    def on_broker_state(self, connected: bool) -> None:
        pass


DATA = [
    b"null",
    b'{"t":"\xc3\xbcn\xc3\xaf \\"q\\" \\n \\u2028"}',
    b"[1,2.5,-3,true]",
    b'"x"',
    b'{"big":"' + b"\xe2\x82\xac" * 40_000 + b'"}',
]


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "data",
    DATA,
    ids=["null", "unicode-escapes", "array", "string", "120kB"],
)
async def test_every_engine_hands_over_protocol_message_bytes(
    settings: Settings, data: bytes
) -> None:
    channel = "pin:a/b=c@d.e-f_g"
    events = Recorder()
    broker = create_broker(settings)
    await broker.start(events)
    try:
        await eventually(lambda: broker.connected, 5, "the broker connected")
        await broker.subscribe(channel)
        position = await broker.publish(channel, data)
        expected = protocol.message(channel, data, position.offset, position.epoch)
        assert orjson.loads(expected)["data"] == orjson.loads(data)
        await eventually(lambda: events.publications, 5, "the publication")
        assert events.publications == [(channel, position.offset, position.epoch, expected)]
        history = await broker.history(channel)
        assert history.messages == [expected]
    finally:
        await broker.close()


@pytest.mark.gen_test
@pytest.mark.parametrize("engine", ["redis"])
async def test_redis_carries_the_data_not_the_frame(
    redis_server: RedisServer, settings: Settings
) -> None:
    channel, data = "pin:raw", b'{"a":[1,"\xc3\xa9"]}'
    raw = redis_server.client().pubsub()
    raw.subscribe(f"pully:ch:{{{channel}}}")
    broker = create_broker(settings)
    await broker.start(Recorder())
    try:
        await eventually(lambda: broker.connected, 5, "the broker connected")
        position = await broker.publish(channel, data)
    finally:
        await broker.close()
    message = await eventually(lambda: raw.get_message(ignore_subscribe_messages=True), 5, "pub")
    assert message["data"] == b"p%d %s\n" % (position.offset, position.epoch.encode()) + data
    [(entry_id, fields)] = redis_server.client().xrange(f"pully:hist:{{{channel}}}")
    assert (entry_id, fields) == (b"%d-0" % position.offset, {b"p": data})


@pytest.mark.gen_test
@pytest.mark.parametrize("engine", ["redis"])
async def test_a_wave1_nodes_frames_are_read_as_they_are(
    redis_server: RedisServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    channel = "pin:old"
    frame = protocol.message(channel, b'"old"', 7, "e1")
    r = redis_server.client()
    r.hset(f"pully:meta:{{{channel}}}", mapping={"o": 7, "e": "e1"})
    r.xadd(f"pully:hist:{{{channel}}}", {"d": frame}, id="7-0")
    events = Recorder()
    broker = create_broker(settings)
    await broker.start(events)
    try:
        await eventually(lambda: broker.connected, 5, "the broker connected")
        await broker.subscribe(channel)
        assert (await broker.history(channel)).messages == [frame]
        newer = protocol.message(channel, b'"newer"', 8, "e1")
        r.publish(f"pully:ch:{{{channel}}}", b"8 e1\n" + newer)
        await eventually(lambda: events.publications, 5, "the wave-1 publication")
        assert events.publications == [(channel, 8, "e1", newer)]
        assert "earlier version" in caplog.text
    finally:
        await broker.close()
