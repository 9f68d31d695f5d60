"""The RabbitMQ consumer (``PULLY_AMQP_URL``, ``PULLY_AMQP_QUEUE``; docs/consumers.md).

Messages are JSON ``{"channel", "data", "idempotency_key"?}``, handled one at a time in queue
order with at most ``PULLY_AMQP_PREFETCH`` unacknowledged. Each is published through the node's
publisher and **acked only once that publish returned** (the node's broker holds it); one that
can never publish (not JSON, fields missing, invalid channel, too large, a function rejected it)
is rejected without requeue, which dead-letters it when the queue has a dead-letter exchange;
one whose publish failed as ``unavailable`` is nacked with requeue after a backoff, so the
broker delivers it again. The queue must exist (it is declared passively: its arguments, such
as the dead-letter exchange, are the app's).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson

from .. import protocol
from ..errors import BadRequest
from .base import Consumer

if TYPE_CHECKING:
    from ..publishing import Publisher
    from ..settings import Settings

CONNECT_TIMEOUT = 10.0


class AmqpConsumer(Consumer):
    kind = "amqp"

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        super().__init__(publisher, settings.max_message_bytes)
        assert settings.amqp_url is not None
        self._url = settings.amqp_url
        self._queue = settings.amqp_queue
        self._prefetch = settings.amqp_prefetch
        self._messages: Any = None  # the queue iterator of the current session
        self._closing: asyncio.Future[Any] | None = None
        self._retries = 0  # consecutive transient failures: the requeue backoff's attempt

    async def session(self) -> None:
        import aio_pika  # optional: the [amqp] extra

        connection = await aio_pika.connect(self._url, timeout=CONNECT_TIMEOUT)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await channel.get_queue(self._queue, ensure=True)  # passive: must exist
            self.connected()
            async with queue.iterator() as messages:
                self._messages = messages
                async for message in messages:
                    await self._handle(message)
                    if self.stopping.is_set():
                        return
        finally:
            self._messages = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2.0)

    def wake(self) -> None:
        if self._messages is not None:
            self._closing = asyncio.ensure_future(self._messages.close())

    async def _handle(self, message: Any) -> None:
        try:
            channel, data, key = _decode(message.body)
        except BadRequest as exc:
            self.dead_letter(f"{exc.code}: {exc.message}", message.message_id)
            await message.reject(requeue=False)
            return
        outcome = await self.publish(channel, data, key)
        if outcome.retry:
            await asyncio.sleep(self._backoff.delay(self._retries))
            self._retries += 1
            await message.nack(requeue=True)
        elif outcome.error is not None:
            await message.reject(requeue=False)
        else:
            self._retries = 0
            await message.ack()
            if message.timestamp is not None:  # set by the producer (AMQP "timestamp" property)
                self.lag = max(0.0, time.time() - message.timestamp.timestamp())


def _decode(body: bytes) -> tuple[object, bytes, str | None]:
    """``(channel, data as JSON bytes, idempotency key)`` of a message; ``BadRequest`` saying
    what is wrong otherwise."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest(f"the message is not JSON: {body[:80]!r}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the message must be a JSON object {channel, data, idempotency_key?}")
    missing = [field for field in ("channel", "data") if field not in doc]
    if missing:
        raise BadRequest(f"the message lacks {', '.join(missing)}")
    key = protocol.check_idempotency_key(doc.get("idempotency_key"))
    protocol.check_exact_numbers(body)
    return doc["channel"], protocol.encode_data(doc["data"]), key
