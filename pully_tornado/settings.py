"""Node configuration: one frozen object, parsed once from the environment and `pully serve` flags.

Every setting has an environment variable (``PULLY_*``) and a flag of the same name
(``--max-message-bytes`` for ``PULLY_MAX_MESSAGE_BYTES``); a flag wins over the variable.
A bad value raises :class:`~pully_tornado.errors.ConfigError` naming the variable, which the
CLI prints as one line before exiting with status 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

KIB = 1024
MIB = 1024 * 1024


def _int(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError("must be an integer") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ValueError(f"must be {bound}")
        return value

    return parse


def _float(lo: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        if not value >= lo:  # also rejects NaN
            raise ValueError(f"must be a number >= {lo:g}")
        return value

    return parse


def _str(raw: str) -> str:
    return raw


def _optional(raw: str) -> str | None:
    return raw or None


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return parse


def _redis_url(raw: str) -> str | None:
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("must name a host, e.g. redis://127.0.0.1:6379/0")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return raw


def _store(raw: str) -> str:
    if raw in ("", "redis"):
        return raw
    scheme = urlsplit(raw).scheme
    if scheme in ("redis", "rediss", "unix"):
        return _redis_url(raw) or ""
    if scheme not in ("file", "s3"):
        raise ValueError("must be redis, a redis:// URL, s3://BUCKET/KEY or file://PATH")
    return raw


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")  # _ too: Docker service names


def _host(raw: str) -> str:
    """An IP address, a host name, or empty (every interface). ``256.1.1.1`` is neither: a
    name whose last label is all digits would only be sent to DNS to fail there."""
    if not raw:
        return raw
    try:
        ipaddress.ip_address(raw)
        return raw
    except ValueError:
        pass
    labels = raw.removesuffix(".").split(".")
    valid = len(raw) <= 253 and all(_HOST_LABEL.match(label) for label in labels)
    if not valid or labels[-1].isdigit():
        raise ValueError("is not an IP address or a host name")
    return raw


def _globs(check: Callable[[str], str | None], strip: str = "") -> Callable[[str], tuple[str, ...]]:
    """A comma-separated list of globs, each refused with ``check``'s reason (None: valid)."""

    def parse(raw: str) -> tuple[str, ...]:
        globs = tuple(g.strip().rstrip(strip) for g in raw.split(",") if g.strip())
        for glob in globs:
            problem = check(glob)
            if problem is not None:
                raise ValueError(f"holds {glob!r}, an invalid glob: {problem}")
        return globs

    return parse


def _channel_glob_problem(glob: str) -> str | None:
    """Why ``glob`` can match no channel (the relationships document's rules), or None."""
    from .relationships.rules import key_problem  # the channel grammar has one home

    return key_problem(glob)


def _origin_glob_problem(glob: str) -> str | None:
    """Why ``glob`` is no glob ``fnmatch`` reads as written (a class never closed, or empty),
    or None."""
    i = glob.find("[")
    while i >= 0:
        start = i + 2 if glob.startswith("!", i + 1) else i + 1
        end = glob.find("]", start)
        if end < 0:
            return f"'[' at position {i + 1} is never closed"
        if end == start:
            return f"{glob[i : end + 1]!r} is empty: it matches no character"
        i = glob.find("[", end + 1)
    return None


def _host_glob_problem(glob: str) -> str | None:
    """Why ``glob`` is no host name glob (``pully.example.com``, ``*.example.com``), or None."""
    if any(c in glob for c in ":/@"):
        return "give a host name without scheme, port or path, e.g. pully.example.com"
    return _origin_glob_problem(glob)


def _hosts(raw: str) -> tuple[str, ...]:
    return _globs(_host_glob_problem)(raw.lower())


def _secret(raw: str) -> str | None:
    if raw and len(raw.encode()) < 32:
        raise ValueError("must be at least 32 bytes (an HS256 key shorter than its hash is weak)")
    return raw or None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


_NODE_ID = re.compile(r"^[A-Za-z0-9_.:@=-]{1,64}$")


def _node_id(raw: str) -> str:
    if raw and not _NODE_ID.match(raw):
        raise ValueError("must be 1-64 chars of A-Z a-z 0-9 _ . : @ = -")
    return raw


@dataclass(frozen=True)
class Option:
    """One setting: its field on :class:`Settings`, its variable, parser, default and meaning."""

    field: str
    env: str
    parse: Callable[[str], Any]
    default: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.env.removeprefix("PULLY_").lower().replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("host", "PULLY_HOST", _host, "0.0.0.0", "Address to listen on."),
    Option("port", "PULLY_PORT", _int(0, 65535), "8080", "Port to listen on (0: any free port)."),
    Option(
        "redis_url",
        "PULLY_REDIS_URL",
        _redis_url,
        "",
        "Redis URL for cluster mode; unset runs the in-process broker (embedded mode).",
    ),
    Option(
        "store",
        "PULLY_STORE",
        _store,
        "",
        "Where the relationships document lives: redis (the cluster's Redis), a redis:// URL, "
        "s3://BUCKET/KEY or file://PATH; unset: redis in cluster mode, "
        "file://./relationships.json in embedded mode.",
    ),
    Option(
        "functions_dir",
        "PULLY_FUNCTIONS_DIR",
        _str,
        "./functions",
        "Folder of local functions (functions/NAME/handler.py).",
    ),
    Option(
        "functions_runtime",
        "PULLY_FUNCTIONS_RUNTIME",
        _choice("local", "lambda"),
        "local",
        "Runtime of functions the relationships document does not configure.",
    ),
    Option(
        "function_workers",
        "PULLY_FUNCTION_WORKERS",
        _int(1, 64),
        "2",
        "Worker processes running local functions (each runs one call at a time).",
    ),
    Option(
        "admin_token",
        "PULLY_ADMIN_TOKEN",
        _optional,
        "",
        "Bearer token for admin routes; unset: admin routes answer loopback callers only, "
        "addressing the node as an IP address, localhost or a PULLY_ALLOWED_HOSTS name.",
    ),
    Option(
        "jwt_secret",
        "PULLY_JWT_SECRET",
        _secret,
        "",
        "HS256 secret for client JWTs; unset: development mode, no client auth.",
    ),
    Option(
        "max_message_bytes",
        "PULLY_MAX_MESSAGE_BYTES",
        _int(64),
        str(64 * KIB),
        "Largest client frame accepted; larger ones get a too_large error.",
    ),
    Option(
        "max_frame_bytes",
        "PULLY_MAX_FRAME_BYTES",
        _int(1 * KIB),
        str(1 * MIB),
        "Hard cap on a WebSocket frame: past it the connection is closed with 1009.",
    ),
    Option(
        "history_size",
        "PULLY_HISTORY_SIZE",
        _int(0),
        "500",
        "Messages kept per channel for recovery and the history command (500 covers a node "
        "failover at 100 msg/s: docs/reliability.md); per channel: relationships options.",
    ),
    Option(
        "history_ttl",
        "PULLY_HISTORY_TTL",
        _float(0),
        "300",
        "Seconds a channel's history is kept after its last publish.",
    ),
    Option(
        "meta_ttl",
        "PULLY_META_TTL",
        _float(0),
        "86400",
        "Seconds an idle channel keeps its offset and epoch in Redis (0: forever); the "
        "in-process broker keeps a channel while it has subscribers or history.",
    ),
    Option(
        "presence_channels",
        "PULLY_PRESENCE_CHANNELS",
        _globs(_channel_glob_problem),
        "presence:*",
        "Comma-separated channel globs that track presence and send join/leave.",
    ),
    Option(
        "presence_ttl",
        "PULLY_PRESENCE_TTL",
        _float(1),
        "60",
        "Seconds a presence entry outlives its node (a crashed node's clients vanish then).",
    ),
    Option(
        "publish_rate",
        "PULLY_PUBLISH_RATE",
        _float(0),
        "100",
        "Publishes per second allowed per connection (0: unlimited).",
    ),
    Option(
        "publish_burst",
        "PULLY_PUBLISH_BURST",
        _int(1),
        "200",
        "Publishes a connection may send at once above the rate; this many refused in a "
        "row close it (4029).",
    ),
    Option(
        "subscribe_rate",
        "PULLY_SUBSCRIBE_RATE",
        _float(0),
        "50",
        "Subscribes plus unsubscribes per second allowed per connection (0: unlimited).",
    ),
    Option(
        "subscribe_burst",
        "PULLY_SUBSCRIBE_BURST",
        _int(1),
        "1000",
        "Subscribes a connection may send at once above the rate (a reconnecting client "
        "resubscribes everything at once); this many refused in a row close it (4029).",
    ),
    Option(
        "max_subscriptions",
        "PULLY_MAX_SUBSCRIPTIONS",
        _int(1),
        "1000",
        "Channels one connection may subscribe to.",
    ),
    Option(
        "max_connections",
        "PULLY_MAX_CONNECTIONS",
        _int(0),
        "0",
        "Connections this node accepts, WebSockets plus connections still sending a request "
        "(0: unlimited); past it a handshake gets 503, and while this many are still sending "
        "one, new connections are closed at once.",
    ),
    Option(
        "handshake_timeout",
        "PULLY_HANDSHAKE_TIMEOUT",
        _float(0.1),
        "10",
        "Seconds a connection has to send a complete HTTP request (the WebSocket handshake, "
        "or the next request on a kept-alive connection); past it the connection is closed.",
    ),
    Option(
        "ping_interval",
        "PULLY_PING_INTERVAL",
        _float(0),
        "25",
        "Seconds between WebSocket pings to each client (0: off).",
    ),
    Option(
        "ping_timeout",
        "PULLY_PING_TIMEOUT",
        _float(0),
        "20",
        "Seconds without a pong before a client is dropped (at most PULLY_PING_INTERVAL).",
    ),
    Option(
        "drain_timeout",
        "PULLY_DRAIN_TIMEOUT",
        _float(0),
        "10",
        "Seconds a SIGTERM/SIGINT drain waits for clients to leave before exiting.",
    ),
    Option(
        "max_buffer_bytes",
        "PULLY_MAX_BUFFER_BYTES",
        _int(64 * KIB),
        str(4 * MIB),
        "Outgoing bytes buffered for one client before it is dropped as a slow consumer.",
    ),
    Option(
        "node_id",
        "PULLY_NODE_ID",
        _node_id,
        "",
        "This node's id (default: hostname plus a random suffix).",
    ),
    Option(
        "log_format",
        "PULLY_LOG_FORMAT",
        _choice("text", "json"),
        "text",
        "Log lines as text, or JSON lines with the access log and connection events.",
    ),
    Option(
        "log_level",
        "PULLY_LOG_LEVEL",
        _choice("debug", "info", "warning", "error"),
        "info",
        "Log level.",
    ),
    Option("aws_region", "AWS_REGION", _str, "us-east-1", "AWS region for S3 and Lambda."),
    Option(
        "aws_endpoint_url",
        "PULLY_AWS_ENDPOINT_URL",
        _optional,
        "",
        "Endpoint for every AWS call (an S3/Lambda-compatible test server).",
    ),
    Option("s3_bucket", "PULLY_S3_BUCKET", _optional, "", "Bucket for function code."),
    Option("lambda_role", "PULLY_LAMBDA_ROLE", _optional, "", "Lambda execution role ARN."),
    Option("lambda_prefix", "PULLY_LAMBDA_PREFIX", _str, "pully-", "Lambda name prefix."),
    Option("stack", "PULLY_STACK", _str, "pully", "Name prefix of deployed AWS resources."),
    Option(
        "allowed_origins",
        "PULLY_ALLOWED_ORIGINS",
        _globs(_origin_glob_problem, strip="/"),
        "",
        "Comma-separated browser origins allowed to open WebSockets ('*' for any; never "
        "admin routes); unset: the node's own pages and non-browser clients only.",
    ),
    Option(
        "allowed_hosts",
        "PULLY_ALLOWED_HOSTS",
        _hosts,
        "",
        "Comma-separated DNS names (globs) that address this node, e.g. pully.example.com: "
        "pages there are its own; unset: only an IP address or localhost does (any other "
        "name could be DNS rebinding).",
    ),
    Option(
        "uvloop",
        "PULLY_UVLOOP",
        _bool,
        "false",
        "Run on uvloop (install the uvloop extra); off by default: see docs/performance.md.",
    ),
)

_BY_FIELD = {o.field: o for o in OPTIONS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a node needs to know, checked once at start. Build it with :meth:`load`."""

    host: str = "0.0.0.0"
    port: int = 8080
    redis_url: str | None = None
    store: str = ""  # "": see store_url
    functions_dir: str = "./functions"
    functions_runtime: str = "local"
    function_workers: int = 2
    admin_token: str | None = None
    jwt_secret: str | None = None
    max_message_bytes: int = 64 * KIB
    max_frame_bytes: int = 1 * MIB
    history_size: int = 500
    history_ttl: float = 300.0
    meta_ttl: float = 86400.0
    presence_channels: tuple[str, ...] = ("presence:*",)
    presence_ttl: float = 60.0
    publish_rate: float = 100.0
    publish_burst: int = 200
    subscribe_rate: float = 50.0
    subscribe_burst: int = 1000
    max_subscriptions: int = 1000
    max_connections: int = 0
    handshake_timeout: float = 10.0
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    drain_timeout: float = 10.0
    max_buffer_bytes: int = 4 * MIB
    node_id: str = ""
    log_level: str = "info"
    log_format: str = "text"
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    s3_bucket: str | None = None
    lambda_role: str | None = None
    lambda_prefix: str = "pully-"
    stack: str = "pully"
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    uvloop: bool = False

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
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for opt in OPTIONS:
            given = (overrides or {}).get(opt.field)
            source = f"{opt.flag} / {opt.env}" if given is not None else opt.env
            raw = given if given is not None else env.get(opt.env, opt.default)
            try:
                values[opt.field] = opt.parse(raw)
            except ValueError as exc:
                raise ConfigError(source, f"{raw!r} {exc}") from None
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (values already typed)."""
        return dataclasses.replace(self, **changes)


def option(field: str) -> Option:
    return _BY_FIELD[field]
