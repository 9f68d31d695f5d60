"""The server API's parameters, one marshmallow schema per method: they validate every call
(every problem listed) and describe it in ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from ..protocol import CHANNEL_PATTERN, MAX_IDEMPOTENCY_KEY
from ..relationships.options import JsonInteger

MAX_BROADCAST = 1000
MAX_BATCH = 100
MAX_HISTORY = 10_000
DATA = "any JSON value; an integer beyond 64 bits is refused (400), never rounded"


def _channel() -> fields.String:
    return fields.String(
        required=True,
        validate=validate.Regexp(
            f"^{CHANNEL_PATTERN}$",
            error="not a valid channel name (1-200 chars of A-Z a-z 0-9 _ - : . @ / =)",
        ),
    )


def _key() -> fields.String:
    return fields.String(
        validate=validate.Length(1, MAX_IDEMPOTENCY_KEY), allow_none=True,
        metadata={"description": "a repeat of (channel, key) within the idempotency TTL "
                                 "publishes nothing and gets the first ack (null: none)"},
    )  # fmt: skip


class Params(Schema):
    class Meta:
        unknown = RAISE  # a misspelt parameter is an error, not silently ignored


class PublishParams(Params):
    channel = _channel()
    data = fields.Raw(required=True, allow_none=True, metadata={"description": DATA})
    idempotency_key = _key()


class BroadcastParams(Params):
    channels = fields.List(
        _channel(), required=True, validate=validate.Length(1, MAX_BROADCAST),
        metadata={"description": f"1 to {MAX_BROADCAST} channels"},
    )  # fmt: skip
    data = fields.Raw(required=True, allow_none=True, metadata={"description": DATA})
    idempotency_key = _key()


class SinceSchema(Params):
    offset = JsonInteger(required=True, validate=validate.Range(0, 2**63 - 1))
    epoch = fields.String(required=True, validate=validate.Length(1, 64))


class TargetParams(Params):
    """``user`` or ``client`` (exactly one)."""

    user = fields.String(validate=validate.Length(1, 256))
    client = fields.String(validate=validate.Length(1, 64))

    @validates_schema(skip_on_field_errors=False)
    def _one_target(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("user" in data) == ("client" in data):
            raise ValidationError("give exactly one of user and client", "_schema")


class SubscribeParams(TargetParams):
    channel = _channel()
    since = fields.Nested(SinceSchema, metadata={"description": "recover from this position"})


class UnsubscribeParams(TargetParams):
    channel = _channel()


class DisconnectParams(TargetParams):
    code = JsonInteger(validate=validate.Range(4000, 4999), load_default=4003)
    # 30 characters: at most 120 bytes of UTF-8, within a close frame's 123
    reason = fields.String(validate=validate.Length(0, 30), load_default="disconnected")


class ChannelParams(Params):
    channel = _channel()


class HistoryParams(Params):
    channel = _channel()
    limit = JsonInteger(validate=validate.Range(0, MAX_HISTORY))
    since = fields.Nested(SinceSchema)


class ChannelsParams(Params):
    pattern = fields.String(
        validate=validate.Length(1, 200), metadata={"description": "a glob (fnmatch): chat:*"}
    )


class NoParams(Params):
    pass


class CommandSchema(Params):
    method = fields.String(required=True)
    params = fields.Dict(load_default=dict)


class BatchParams(Params):
    commands = fields.List(
        fields.Nested(CommandSchema), required=True, validate=validate.Length(1, MAX_BATCH)
    )


def problems(error: ValidationError, prefix: str = "params") -> list[str]:
    """Every problem of ``error``, one line each, with the path to it: ``params.since.offset:
    Not a valid integer.``"""
    lines: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path if key == "_schema" else f"{path}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)
        else:
            lines.append(f"{path}: {node}")

    walk(error.messages, prefix)
    return sorted(lines)
