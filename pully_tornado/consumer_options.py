"""The settings of the consumers that feed channels from the app's database or queue
(docs/consumers.md): their rows of the ``OPTIONS`` table (:mod:`pully_tornado.settings` appends
them) and their parsers. No database or AMQP library here: those load only when configured."""

from __future__ import annotations

from urllib.parse import urlsplit

from . import config_values as values
from .config_values import Option
from .consumers.outbox_schema import DEFAULT_TABLE, InvalidTable, check_table


def postgres_dsn(raw: str) -> str | None:
    """A ``postgresql://`` or ``postgres://`` URL, or None (unset: no outbox consumer)."""
    if not raw:
        return None
    if urlsplit(raw).scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql:// URL")
    return raw


def outbox_table(raw: str) -> str:
    try:
        return check_table(raw)
    except InvalidTable:
        raise ValueError(
            "must be [schema.]name in lower-case letters, digits and underscores"
        ) from None


def amqp_url(raw: str) -> str | None:
    """An ``amqp://`` or ``amqps://`` URL with a host, or None (unset: no AMQP consumer)."""
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError("must be an amqp:// or amqps:// URL with a host")
    return raw


def queue_name(raw: str) -> str:
    if not raw or len(raw.encode()) > 255:
        raise ValueError("must be a queue name of 1 to 255 bytes")
    return raw


CONSUMER_OPTIONS: tuple[Option, ...] = (
    Option(
        "outbox_dsn",
        "PULLY_OUTBOX_DSN",
        postgres_dsn,
        "",
        "PostgreSQL whose outbox table this node publishes (needs the postgres extra): "
        "docs/consumers.md.",
    ),
    Option(
        "outbox_table",
        "PULLY_OUTBOX_TABLE",
        outbox_table,
        DEFAULT_TABLE,
        "Outbox table, [schema.]name; its dead-letter table is <table>_failed.",
    ),
    Option(
        "outbox_partitions",
        "PULLY_OUTBOX_PARTITIONS",
        values.integer(1, 1024),
        "1",
        "Outbox partitions (0 .. n-1): nodes share them, order is kept within one.",
    ),
    Option(
        "outbox_batch_size",
        "PULLY_OUTBOX_BATCH_SIZE",
        values.integer(1, 10000),
        "100",
        "Outbox rows claimed per transaction.",
    ),
    Option(
        "outbox_poll_interval",
        "PULLY_OUTBOX_POLL_INTERVAL",
        values.number(0.05),
        "1",
        "Seconds between outbox polls when no NOTIFY wakes the node.",
    ),
    Option(
        "amqp_url",
        "PULLY_AMQP_URL",
        amqp_url,
        "",
        "RabbitMQ whose PULLY_AMQP_QUEUE this node publishes (needs the amqp extra): "
        "docs/consumers.md.",
    ),
    Option(
        "amqp_queue",
        "PULLY_AMQP_QUEUE",
        queue_name,
        "pully",
        "Queue of JSON {channel, data, idempotency_key?} messages (it must exist).",
    ),
    Option(
        "amqp_prefetch",
        "PULLY_AMQP_PREFETCH",
        values.integer(1, 65535),
        "100",
        "Unacknowledged AMQP messages held by this node at most.",
    ),
)
