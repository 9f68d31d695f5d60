"""The ``message`` frame is built in two places: ``protocol.message`` (the memory broker) and the
Redis publish script, which appends the offset and epoch in Lua so a publish stays one round
trip. This pins both builders to the same bytes, delivered and in history, on both engines."""

from __future__ import annotations

import orjson
import pytest

from pully_tornado import protocol
from pully_tornado.broker import create_broker
from pully_tornado.settings import Settings

from .support import eventually


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


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "data",
    [b"null", b'{"t":"\xc3\xbcn\xc3\xaf \\"q\\" \\n \\u2028"}', b"[1,2.5,-3,true]", b'"x"'],
)
async def test_both_builders_make_the_same_bytes(settings: Settings, data: bytes) -> None:
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
