"""The Redis connection's rows of the ``OPTIONS`` table beside ``PULLY_REDIS_URL``: TLS
verification and acknowledgements by replicas (:mod:`pully_tornado.settings` places them;
docs/redis.md)."""

from __future__ import annotations

from . import config_values as values
from .config_values import Option

REDIS_OPTIONS: tuple[Option, ...] = (
    Option(
        "redis_tls_ca",
        "PULLY_REDIS_TLS_CA",
        values.readable_file,
        "",
        "CA certificate file (PEM) the Redis servers' TLS certificates are checked against "
        "(rediss...:// URLs); unset: the system's trust store.",
    ),
    Option(
        "redis_tls_skip_verify",
        "PULLY_REDIS_TLS_SKIP_VERIFY",
        values.boolean,
        "false",
        "Do not check the Redis servers' TLS certificates (never in production).",
    ),
    Option(
        "redis_ack_replicas",
        "PULLY_REDIS_ACK_REPLICAS",
        values.integer(0, 16),
        "0",
        "Replicas that must have a publication before it is acknowledged (WAIT); 0: the "
        "master alone. A failover then loses no acknowledged message (docs/redis.md).",
    ),
)
