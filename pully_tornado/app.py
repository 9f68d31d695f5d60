"""Build the Tornado application for a node, and run a node until SIGTERM/SIGINT drains it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable

import tornado.httpserver
import tornado.netutil
import tornado.web

from .errors import ConfigError, PullyError
from .handlers import guards
from .handlers.api import ApiHandler
from .handlers.base import JsonHandler
from .handlers.body_limit import BodyLimit
from .handlers.health import HealthHandler
from .handlers.metrics import MetricsHandler
from .handlers.openapi import OpenApiHandler
from .handlers.publish import PublishHandler
from .handlers.relationships import RelationshipsHandler
from .handlers.static import routes as static_routes
from .handlers.websocket import WebSocketHandler
from .listener import NodeServer, raise_open_files_limit
from .logs import log_request
from .node import Node
from .outbox import Outbox
from .settings import Settings

logger = logging.getLogger("pully")

MAX_BODY_BYTES = 8 * 1024 * 1024

# A node holds a large, long-lived heap (a handler, a stream and their buffers per client) and
# allocates short-lived frames quickly. With the default threshold (700) full collections walk
# that whole heap often enough to stall the loop for tens of ms at a time (p99 latency went
# from 120 ms to 32 ms at 1,000 subscribers); start-up objects are frozen out of collection
# altogether. Cycles are still collected, just less often. See docs/performance.md.
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class NotFoundHandler(JsonHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404, reason=f"no route for {self.request.path}")


def make_app(node: Node) -> tornado.web.Application:
    """The routes listed in docs/protocol.md ("HTTP routes"), all bound to ``node``."""
    s = node.settings
    args = {"node": node}
    return tornado.web.Application(
        [
            (r"/ws", WebSocketHandler, {**args, "outbox": Outbox()}),
            (r"/publish", PublishHandler, args),
            *[(f"/api/{m}", ApiHandler, {**args, "method": m}) for m in node.api.methods],
            (r"/api/.*", ApiHandler, args),
            (r"/relationships", RelationshipsHandler, args),
            (r"/healthz", HealthHandler, args),
            (r"/metrics", MetricsHandler, args),
            (r"/openapi.json", OpenApiHandler, args),
            *static_routes(node),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=args,
        websocket_ping_interval=None,  # the node's KeepAlive pings, not a task per connection
        websocket_max_message_size=s.max_frame_bytes,
        log_function=log_request,
    )


def make_server(node: Node) -> tornado.httpserver.HTTPServer:
    # Bodies up to 8 MiB reach the handlers, which answer 413 (JSON) past their own limits;
    # beyond that BodyLimit answers the same JSON 413 before reading the body.
    # Accepting goes through the node's Listener: out of descriptors it pauses instead of
    # spinning, and it closes connections that do not finish a request in time.
    return NodeServer(
        BodyLimit(make_app(node), MAX_BODY_BYTES), listener=node.listener, xheaders=False
    )


async def run(settings: Settings, on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain: every client gets ``reconnect`` and close 1012,
    the node waits up to ``drain_timeout`` for them, closes the broker and returns."""
    try:
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host, backlog=4096)
    except OSError as exc:
        raise _bind_error(settings, exc) from None  # before any log line: the CLI prints one
    raise_open_files_limit()
    node = Node(settings)
    await node.start()
    server = make_server(node)
    server.add_sockets(sockets)
    tune_gc()
    port = sockets[0].getsockname()[1]
    logger.info(
        "pully node %s serving on %s:%d: mode=%s broker=%s loop=%s pid=%d",
        node.id,
        settings.host,
        port,
        settings.mode,
        node.broker.kind if not settings.redis_url else _redacted(settings.redis_url),
        type(asyncio.get_running_loop()).__module__.split(".")[0],
        os.getpid(),
    )
    if settings.admin_token is None:
        logger.warning(
            "PULLY_ADMIN_TOKEN is unset: admin routes answer only loopback callers addressing "
            "the node as an IP address, localhost or a PULLY_ALLOWED_HOSTS name"
        )
    logger.info("%s", guards.describe(settings))
    for star in guards.wildcards(settings):
        logger.warning("%s", star)
    if settings.jwt_secret is None:
        logger.warning(
            "DEVELOPMENT MODE: PULLY_JWT_SECRET is unset, so clients need no token and every "
            "client may subscribe and publish to every channel"
        )
    if on_ready is not None:
        on_ready(port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        logger.info(
            "draining %d connections (up to %gs)", len(node.connections), settings.drain_timeout
        )
        server.stop()
        await node.drain(settings.drain_timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await server.close_all_connections()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await node.close()
    logger.info("pully node %s stopped", node.id)


def _bind_error(settings: Settings, exc: OSError) -> ConfigError:
    """The setting to blame when the node cannot listen: the host when its name does not
    resolve or the address is not this machine's, otherwise (in use, privileged) the port."""
    bad_host = isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL
    source = "--host / PULLY_HOST" if bad_host else "--port / PULLY_PORT"
    return ConfigError(source, f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")


def _redacted(url: str) -> str:
    """The Redis URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


__all__ = ["PullyError", "make_app", "make_server", "run"]
