"""The node's cap on request bodies (8 MiB): past it, the documented JSON 413, before the body
is read.

Tornado's own cap (``HTTPServer(max_body_size=...)``) answers a bare ``400 Bad Request`` with
no body and drops the connection. :class:`BodyLimit` stands between the server and the
application instead, and is the only cap: a request whose ``Content-Length`` is over the limit,
or whose chunked body grows past it, gets the error envelope with status 413 (``too_large``)
at once, and no byte of it reaches a handler (which apply their own, smaller limits to what
they read). The connection then closes. Until it does, the node reads and drops what the
client is still sending, at most ``DRAIN_BYTES`` or ``DRAIN_SECONDS``: closing a socket with
unread data makes the kernel send a reset, and a client that sends its whole body before it
reads would then get an error instead of the answer. A client that sent
``Expect: 100-continue`` has sent no body: it gets the answer and the close at once.

Uses Tornado's public interfaces only: ``HTTPServerConnectionDelegate``,
``HTTPMessageDelegate``, and ``HTTP1Connection.set_max_body_size`` (read in Tornado 6.4-6.6).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable

import orjson
from tornado import httputil
from tornado.http1connection import HTTP1Connection

from ..errors import TooLarge
from ..logs import log_access
from .base import error_body

DRAIN_BYTES = 32 * 1024 * 1024  # read and dropped after a refusal, at most (4 x the cap)
DRAIN_SECONDS = 5.0  # spent reading and dropping after a refusal, at most


class BodyLimit(httputil.HTTPServerConnectionDelegate):
    """Wraps ``app`` (the Tornado application): bodies over ``limit`` bytes are answered 413."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate, limit: int) -> None:
        self.app = app
        self.limit = limit

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _Capped(self.app.start_request(server_conn, request_conn), request_conn, self.limit)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


class _Capped(httputil.HTTPMessageDelegate):
    """One request: passed through to ``inner`` until its body passes ``limit``, then answered
    here (``inner`` never sees it, or is told the connection closed) and drained."""

    def __init__(
        self, inner: httputil.HTTPMessageDelegate, conn: httputil.HTTPConnection, limit: int
    ) -> None:
        self.inner = inner
        self.conn = conn
        self.limit = limit
        self.received = 0
        self.start_line: httputil.RequestStartLine | None = None
        self.refused = False
        self.dropped = 0  # bytes read and dropped since the refusal
        self.started = time.monotonic()
        self._drain: asyncio.TimerHandle | None = None
        self._closing = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.start_line = start_line
        if isinstance(self.conn, HTTP1Connection):
            self.conn.set_max_body_size(sys.maxsize)  # this class is the cap, not Tornado's 400
        declared = headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.limit:
            self._refuse(f"body is {int(declared)} bytes; the limit is {self.limit}", headers)
            return None
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.refused:
            self.dropped += len(chunk)
            if self.dropped > DRAIN_BYTES:
                self._close()
            return None
        self.received += len(chunk)
        if self.received > self.limit:
            self.inner.on_connection_close()  # drop what the application buffered
            self._refuse(f"body is over the limit of {self.limit} bytes", None)
            return None
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        if self.refused:
            self._close()  # the body was read in full
        else:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if self.refused:
            self._cancel_drain()
        else:
            self.inner.on_connection_close()

    def _refuse(self, message: str, headers: httputil.HTTPHeaders | None) -> None:
        """Answer 413 now; close once the body is drained (or at once, for 100-continue)."""
        assert self.start_line is not None
        self.refused = True
        err = TooLarge(message)
        body = orjson.dumps(error_body(err.status, err.code, err.message))
        self.conn.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", err.status, "Payload Too Large"),
            httputil.HTTPHeaders({
                "Content-Type": "application/json", "Cache-Control": "no-store",
                "Content-Length": str(len(body)), "Connection": "close",
            }),
            body,
        )  # fmt: skip
        context = getattr(self.conn, "context", None)
        log_access(
            err.status, self.start_line.method, self.start_line.path.split("?")[0],
            getattr(context, "remote_ip", "-"), time.monotonic() - self.started,
        )  # fmt: skip
        if headers is not None and headers.get("Expect", "").lower() == "100-continue":
            self._close()
        else:
            self._drain = asyncio.get_running_loop().call_later(DRAIN_SECONDS, self._close)

    def _close(self) -> None:
        """Finish the answer: Tornado closes the connection once it is written (it was sent
        before the body was read in full) or the client does (on ``Connection: close``)."""
        self._cancel_drain()
        if not self._closing:
            self._closing = True
            self.conn.finish()

    def _cancel_drain(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
