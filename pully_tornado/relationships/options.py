"""Channel options: the ``options`` section of the relationships document, channel name or
glob -> how the node treats that channel. Every field is optional; an unset one falls back to
the node's setting, so the environment stays the default and the document the exception.

```json
"options": {"ticker:*": {"history_size": 1000, "history_ttl": 60, "publish": "server"},
            "room:*": {"presence": true}}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, fields, post_load, validate

MAX_HISTORY_SIZE = 100_000  # messages per channel
MAX_OPTION_TTL = 30 * 86400.0  # seconds


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """One ``options`` rule. None means "not set here": the node's setting applies
    (``PULLY_HISTORY_SIZE``, ``PULLY_HISTORY_TTL``, ``PULLY_PRESENCE_CHANNELS``; clients may
    publish; ``PULLY_IDEMPOTENCY_TTL`` once idempotent publishing exists)."""

    history_size: int | None = None
    history_ttl: float | None = None
    presence: bool | None = None
    publish: str | None = None  # "clients" or "server" (only the admin HTTP API publishes)
    idempotency_ttl: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            name: value
            for name in ("history_size", "history_ttl", "presence", "publish", "idempotency_ttl")
            if (value := getattr(self, name)) is not None
        }


NO_OPTIONS = ChannelOptions()


class JsonNumber(fields.Float):
    """A JSON number: unlike ``Float``, a string such as ``"5"`` is refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return float(super()._deserialize(value, attr, data, **kwargs))


class JsonInteger(fields.Integer):
    """A JSON integer: ``5`` or ``5.0`` (JSON Schema counts both), not ``5.5``, ``"5"`` or
    ``true``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return int(super()._deserialize(value, attr, data, **kwargs))


class JsonBoolean(fields.Boolean):
    """``true`` or ``false`` only (``Boolean`` also takes 1, "yes", "on"...)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class ChannelOptionsSchema(Schema):
    """One ``options`` rule; every field optional (unset: the node's setting)."""

    class Meta:
        unknown = RAISE

    error_messages = {"type": "must be an object"}

    history_size = JsonInteger( validate=validate.Range(min=0, max=MAX_HISTORY_SIZE),
        metadata={"description": "messages kept for recovery and history (0: none); "
                                 "default PULLY_HISTORY_SIZE"},
    )  # fmt: skip
    history_ttl = JsonNumber(
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_OPTION_TTL),
        metadata={"description": "seconds history is kept after the channel's last publish; "
                                 "default PULLY_HISTORY_TTL"},
    )  # fmt: skip
    presence = JsonBoolean(
        metadata={"description": "track presence (join/leave); default: whether the channel "
                                 "matches PULLY_PRESENCE_CHANNELS"},
    )  # fmt: skip
    publish = fields.String(
        validate=validate.OneOf(("clients", "server")),
        metadata={"description": "who may publish: clients (default) or server (the admin "
                                 "HTTP API only; clients get forbidden)"},
    )  # fmt: skip
    idempotency_ttl = JsonNumber(
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_OPTION_TTL),
        metadata={"description": "seconds a publish's idempotency key is remembered; "
                                 "default PULLY_IDEMPOTENCY_TTL"},
    )  # fmt: skip

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> ChannelOptions:
        return ChannelOptions(**data)
