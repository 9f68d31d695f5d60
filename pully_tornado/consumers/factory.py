"""Build the consumers the settings configure (docs/consumers.md)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Consumer

if TYPE_CHECKING:
    from ..publishing import Publisher
    from ..settings import Settings


def create_consumers(settings: Settings, publisher: Publisher) -> list[Consumer]:
    """The consumers ``settings`` configure; a consumer's module, and its client library, is
    imported only when its setting is set. Raises ``ConfigError`` naming the setting when its
    library is not installed."""
    consumers: list[Consumer] = []
    if settings.outbox_dsn:
        _require("asyncpg", "PULLY_OUTBOX_DSN", "postgres")
        from .outbox import OutboxConsumer

        consumers.append(OutboxConsumer(settings, publisher))
    if settings.amqp_url:
        _require("aio_pika", "PULLY_AMQP_URL", "amqp")
        from .amqp import AmqpConsumer

        consumers.append(AmqpConsumer(settings, publisher))
    return consumers


def _require(module: str, source: str, extra: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(source, f"needs {module}: pip install 'pully-tornado[{extra}]'") from None
