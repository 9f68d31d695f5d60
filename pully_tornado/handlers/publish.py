from __future__ import annotations

from .. import protocol
from ..errors import BadRequest
from .base import JsonHandler


class PublishHandler(JsonHandler):
    """``POST /publish`` (admin): ``{"channel", "data", "idempotency_key"?}`` takes the same
    path as a WebSocket publish; answers ``{"channel", "offset", "epoch"}`` or
    ``{"channel", "dropped": true}``."""

    async def post(self) -> None:
        self.require_admin()
        body = self.json_body(self.node.settings.max_message_bytes)
        channel = protocol.check_channel(body.get("channel"))
        if "data" not in body:
            raise BadRequest("field 'data' is required (null is allowed)")
        key = protocol.check_idempotency_key(body.get("idempotency_key"))
        protocol.check_exact_numbers(self.request.body)
        result = await self.node.publisher.publish(
            channel, protocol.encode_data(body["data"]), idempotency_key=key
        )
        if result.position is None:
            self.write_json(200, {"channel": channel, "dropped": True})
        else:
            self.write_json(
                200,
                {
                    "channel": channel,
                    "offset": result.position.offset,
                    "epoch": result.position.epoch,
                },
            )
