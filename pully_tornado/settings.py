"""Node configuration: one frozen object, parsed once from the environment and `pully serve` flags.

Every setting has an environment variable (``PULLY_*``) and a flag of the same name
(``--max-message-bytes`` for ``PULLY_MAX_MESSAGE_BYTES``); a flag wins over the variable.
A bad value raises :class:`~pully_tornado.errors.ConfigError` naming the variable, which the
CLI prints as one line before exiting with status 2. Parsers and loading: :mod:`.config_values`;
the AWS commands' own settings (stack, Lambda role): :mod:`.deploy.options`.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import config_values as values
from .config_values import Option
from .consumer_options import CONSUMER_OPTIONS
from .deflate import COMPRESSION_OPTIONS
from .errors import ConfigError
from .hook_options import HOOK_OPTIONS, check_hook_settings
from .limit_options import LIMIT_OPTIONS
from .redis_options import REDIS_OPTIONS

KIB = 1024
MIB = 1024 * 1024


OPTIONS: tuple[Option, ...] = (
    Option("host", "PULLY_HOST", values.host, "0.0.0.0", "Address to listen on."),
    Option(
        "port",
        "PULLY_PORT",
        values.integer(0, 65535),
        "8080",
        "Port to listen on (0: any free port).",
    ),
    Option(
        "redis_url",
        "PULLY_REDIS_URL",
        values.redis_url,
        "",
        "Redis URL for cluster mode; unset runs the in-process broker (embedded mode): "
        "redis://, rediss://, unix://, redis+cluster://, redis+sentinel:// (docs/redis.md).",
    ),
    *REDIS_OPTIONS,  # PULLY_REDIS_TLS_CA ... PULLY_REDIS_ACK_REPLICAS: redis_options.py
    Option(
        "store",
        "PULLY_STORE",
        values.store,
        "",
        "Where the relationships document lives: redis (the cluster's Redis), a redis:// URL, "
        "s3://BUCKET/KEY or file://PATH; unset: redis in cluster mode, "
        "file://./relationships.json in embedded mode.",
    ),
    Option(
        "functions_dir",
        "PULLY_FUNCTIONS_DIR",
        values.text,
        "./functions",
        "Folder of local functions (functions/NAME/handler.py).",
    ),
    Option(
        "functions_runtime",
        "PULLY_FUNCTIONS_RUNTIME",
        values.choice("local", "lambda"),
        "local",
        "Runtime of functions the relationships document does not configure.",
    ),
    Option(
        "function_workers",
        "PULLY_FUNCTION_WORKERS",
        values.integer(1, 64),
        "2",
        "Worker processes running local functions (each runs one call at a time).",
    ),
    Option(
        "admin_token",
        "PULLY_ADMIN_TOKEN",
        values.optional,
        "",
        "Bearer token for admin routes; unset: admin routes answer loopback callers only, "
        "addressing the node as an IP address, localhost or a PULLY_ALLOWED_HOSTS name.",
    ),
    Option(
        "jwt_secret",
        "PULLY_JWT_SECRET",
        values.secret,
        "",
        "HS256 secret for client JWTs; unset: development mode, no client auth.",
    ),
    Option(
        "max_message_bytes",
        "PULLY_MAX_MESSAGE_BYTES",
        values.integer(64),
        str(64 * KIB),
        "Largest client frame accepted; larger ones get a too_large error.",
    ),
    Option(
        "max_frame_bytes",
        "PULLY_MAX_FRAME_BYTES",
        values.integer(1 * KIB),
        str(1 * MIB),
        "Hard cap on a WebSocket frame: past it the connection is closed with 1009.",
    ),
    Option(
        "history_size",
        "PULLY_HISTORY_SIZE",
        values.integer(0),
        "500",
        "Messages kept per channel for recovery and the history command (500 covers a node "
        "failover at 100 msg/s: docs/reliability.md); per channel: relationships options.",
    ),
    Option(
        "history_ttl",
        "PULLY_HISTORY_TTL",
        values.number(0),
        "300",
        "Seconds a channel's history is kept after its last publish.",
    ),
    Option(
        "meta_ttl",
        "PULLY_META_TTL",
        values.number(0),
        "86400",
        "Seconds an idle channel keeps its offset and epoch in Redis (0: forever); the "
        "in-process broker keeps a channel while it has subscribers or history.",
    ),
    Option(
        "idempotency_ttl",
        "PULLY_IDEMPOTENCY_TTL",
        values.number(1),
        "300",
        "Seconds a publish's idempotency_key is remembered: a repeat of (channel, key) within "
        "it publishes nothing and gets the first ack (docs/reliability.md); per channel: "
        "relationships options.",
    ),
    Option(
        "api_timeout",
        "PULLY_API_TIMEOUT",
        values.number(0.05),
        "2",
        "Seconds a cluster-wide server API call waits for the other nodes; those that did "
        "not answer by then are named in its missing_nodes (docs/server-api.md).",
    ),
    Option(
        "presence_channels",
        "PULLY_PRESENCE_CHANNELS",
        values.globs(values.channel_glob_problem),
        "presence:*",
        "Comma-separated channel globs that track presence and send join/leave.",
    ),
    Option(
        "presence_ttl",
        "PULLY_PRESENCE_TTL",
        values.number(1),
        "60",
        "Seconds a presence entry outlives its node (a crashed node's clients vanish then).",
    ),
    *LIMIT_OPTIONS,  # PULLY_PUBLISH_RATE ... PULLY_MAX_SUBSCRIPTIONS: limit_options.py
    Option(
        "max_connections",
        "PULLY_MAX_CONNECTIONS",
        values.integer(0),
        "0",
        "Connections this node accepts, WebSockets plus connections still sending a request "
        "(0: unlimited); past it a handshake gets 503, and while this many are still sending "
        "one, new connections are closed at once.",
    ),
    Option(
        "handshake_timeout",
        "PULLY_HANDSHAKE_TIMEOUT",
        values.number(0.1),
        "10",
        "Seconds a connection has to send a complete HTTP request (the WebSocket handshake, "
        "or the next request on a kept-alive connection); past it the connection is closed.",
    ),
    Option(
        "ping_interval",
        "PULLY_PING_INTERVAL",
        values.number(0),
        "25",
        "Seconds between WebSocket pings to each client (0: off).",
    ),
    Option(
        "ping_timeout",
        "PULLY_PING_TIMEOUT",
        values.number(0),
        "20",
        "Seconds without a pong before a client is dropped (at most PULLY_PING_INTERVAL).",
    ),
    Option(
        "drain_timeout",
        "PULLY_DRAIN_TIMEOUT",
        values.number(0),
        "10",
        "Seconds a SIGTERM/SIGINT drain waits for clients to leave before exiting.",
    ),
    Option(
        "max_buffer_bytes",
        "PULLY_MAX_BUFFER_BYTES",
        values.integer(64 * KIB),
        str(4 * MIB),
        "Outgoing bytes buffered for one client before it is dropped as a slow consumer.",
    ),
    *COMPRESSION_OPTIONS,  # PULLY_COMPRESSION, PULLY_COMPRESSION_MIN_BYTES: deflate.py
    Option(
        "node_id",
        "PULLY_NODE_ID",
        values.node_id,
        "",
        "This node's id (default: hostname plus a random suffix).",
    ),
    Option(
        "log_format",
        "PULLY_LOG_FORMAT",
        values.choice("text", "json"),
        "text",
        "Log lines as text, or JSON lines with the access log and connection events.",
    ),
    Option(
        "log_level",
        "PULLY_LOG_LEVEL",
        values.choice("debug", "info", "warning", "error"),
        "info",
        "Log level.",
    ),
    Option("aws_region", "AWS_REGION", values.text, "us-east-1", "AWS region for S3 and Lambda."),
    Option(
        "aws_endpoint_url",
        "PULLY_AWS_ENDPOINT_URL",
        values.optional,
        "",
        "Endpoint for every AWS call (an S3/Lambda-compatible test server).",
    ),
    Option("s3_bucket", "PULLY_S3_BUCKET", values.optional, "", "Bucket for function code."),
    Option("lambda_prefix", "PULLY_LAMBDA_PREFIX", values.text, "pully-", "Lambda name prefix."),
    Option(
        "allowed_origins",
        "PULLY_ALLOWED_ORIGINS",
        values.globs(values.origin_glob_problem, strip="/"),
        "",
        "Comma-separated browser origins allowed to open WebSockets ('*' for any; never "
        "admin routes); unset: the node's own pages and non-browser clients only.",
    ),
    Option(
        "allowed_hosts",
        "PULLY_ALLOWED_HOSTS",
        values.hosts,
        "",
        "Comma-separated DNS names (globs) that address this node, e.g. pully.example.com: "
        "pages there are its own; unset: only an IP address or localhost does (any other "
        "name could be DNS rebinding).",
    ),
    Option(
        "uvloop",
        "PULLY_UVLOOP",
        values.boolean,
        "false",
        "Run on uvloop (install the uvloop extra); off by default: see docs/performance.md.",
    ),
)

OPTIONS += HOOK_OPTIONS + CONSUMER_OPTIONS  # docs/hooks.md, docs/consumers.md
_BY_FIELD = {o.field: o for o in OPTIONS}


@dataclass(frozen=True, slots=True)
@values.defaults_from(OPTIONS)
class Settings:
    """Everything a node needs to know, checked once at start. Build it with :meth:`load`.
    Each default is its OPTIONS row's, parsed (``FROM_OPTIONS``); ``Settings(**typed)`` skips
    parsing."""

    host: str = values.FROM_OPTIONS
    port: int = values.FROM_OPTIONS
    redis_url: str | None = values.FROM_OPTIONS
    redis_tls_ca: str | None = values.FROM_OPTIONS
    redis_tls_skip_verify: bool = values.FROM_OPTIONS
    redis_ack_replicas: int = values.FROM_OPTIONS
    store: str = values.FROM_OPTIONS  # "": see store_url
    functions_dir: str = values.FROM_OPTIONS
    functions_runtime: str = values.FROM_OPTIONS
    function_workers: int = values.FROM_OPTIONS
    admin_token: str | None = values.FROM_OPTIONS
    jwt_secret: str | None = values.FROM_OPTIONS
    max_message_bytes: int = values.FROM_OPTIONS
    max_frame_bytes: int = values.FROM_OPTIONS
    history_size: int = values.FROM_OPTIONS
    history_ttl: float = values.FROM_OPTIONS
    meta_ttl: float = values.FROM_OPTIONS
    idempotency_ttl: float = values.FROM_OPTIONS
    api_timeout: float = values.FROM_OPTIONS
    presence_channels: tuple[str, ...] = values.FROM_OPTIONS
    presence_ttl: float = values.FROM_OPTIONS
    publish_rate: float = values.FROM_OPTIONS
    publish_burst: int = values.FROM_OPTIONS
    subscribe_rate: float = values.FROM_OPTIONS
    subscribe_burst: int = values.FROM_OPTIONS
    max_subscriptions: int = values.FROM_OPTIONS
    max_connections: int = values.FROM_OPTIONS
    handshake_timeout: float = values.FROM_OPTIONS
    ping_interval: float = values.FROM_OPTIONS
    ping_timeout: float = values.FROM_OPTIONS
    drain_timeout: float = values.FROM_OPTIONS
    max_buffer_bytes: int = values.FROM_OPTIONS
    compression: bool = values.FROM_OPTIONS
    compression_min_bytes: int = values.FROM_OPTIONS
    node_id: str = values.FROM_OPTIONS
    log_level: str = values.FROM_OPTIONS
    log_format: str = values.FROM_OPTIONS
    aws_region: str = values.FROM_OPTIONS
    aws_endpoint_url: str | None = values.FROM_OPTIONS
    s3_bucket: str | None = values.FROM_OPTIONS
    lambda_prefix: str = values.FROM_OPTIONS
    allowed_origins: tuple[str, ...] = values.FROM_OPTIONS
    allowed_hosts: tuple[str, ...] = values.FROM_OPTIONS
    uvloop: bool = values.FROM_OPTIONS
    connect_proxy_url: str | None = values.FROM_OPTIONS
    subscribe_proxy_url: str | None = values.FROM_OPTIONS
    subscribe_proxy_channels: tuple[str, ...] = values.FROM_OPTIONS
    proxy_timeout: float = values.FROM_OPTIONS
    webhook_url: str | None = values.FROM_OPTIONS
    webhook_events: frozenset[str] = values.FROM_OPTIONS
    webhook_secret: str | None = values.FROM_OPTIONS
    webhook_queue: int = values.FROM_OPTIONS
    outbox_dsn: str | None = values.FROM_OPTIONS
    outbox_table: str = values.FROM_OPTIONS
    outbox_partitions: int = values.FROM_OPTIONS
    outbox_batch_size: int = values.FROM_OPTIONS
    outbox_poll_interval: float = values.FROM_OPTIONS
    amqp_url: str | None = values.FROM_OPTIONS
    amqp_queue: str = values.FROM_OPTIONS
    amqp_prefetch: int = values.FROM_OPTIONS

    def __post_init__(self) -> None:
        if not self.node_id:
            host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "node"
            object.__setattr__(self, "node_id", f"{host}-{secrets.token_hex(3)}")
        if self.ping_interval and self.ping_timeout > self.ping_interval:
            raise ConfigError(
                "PULLY_PING_TIMEOUT",
                f"must be at most PULLY_PING_INTERVAL ({self.ping_interval:g})",
            )
        if self.meta_ttl and self.meta_ttl < self.history_ttl:
            raise ConfigError(
                "PULLY_META_TTL", f"must be 0 or at least PULLY_HISTORY_TTL ({self.history_ttl:g})"
            )
        if self.store == "redis" and not self.redis_url:
            raise ConfigError("PULLY_STORE", "redis needs PULLY_REDIS_URL (cluster mode)")
        check_hook_settings(self.webhook_url, self.webhook_secret)
        if self.max_frame_bytes < self.max_message_bytes:
            raise ConfigError(
                "PULLY_MAX_FRAME_BYTES",
                f"must be at least PULLY_MAX_MESSAGE_BYTES ({self.max_message_bytes})",
            )

    @property
    def mode(self) -> str:
        """``embedded`` (in-process broker) or ``cluster`` (Redis)."""
        return "cluster" if self.redis_url else "embedded"

    @property
    def store_url(self) -> str:
        """The relationships store in force: ``PULLY_STORE`` when set, otherwise the cluster's
        Redis (``redis``) in cluster mode and ``file://./relationships.json`` embedded."""
        if self.store:
            return self.store
        return "redis" if self.redis_url else "file://./relationships.json"

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, str | None] | None = None,
    ) -> Settings:
        """Parse settings from ``environ`` (default ``os.environ``) and flag ``overrides``.

        ``overrides`` maps field names to raw strings as typed on the command line; ``None``
        means the flag was not given. Raises :class:`ConfigError` naming the first bad variable.
        """
        return cls(**values.parse_options(OPTIONS, environ, overrides))

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (values already typed)."""
        return dataclasses.replace(self, **changes)


def option(field: str) -> Option:
    return _BY_FIELD[field]
