"""The node's front door: accepting TCP connections, and the connections still in a request.

Accepting. Tornado's accept loop (``tornado.netutil.add_accept_handler``) lets an ``accept()``
error escape. Out of descriptors (EMFILE), the listening socket stays readable, so asyncio logs
a traceback and calls the loop again at once: 300 silent connections under a low open-files
limit made a node spin a core and write 142,942 tracebacks (92 MB of log) in 21 s, and
``/healthz`` stopped answering. :class:`Listener` accepts instead. When ``accept()`` fails it
stops watching its sockets for ``ACCEPT_PAUSE`` seconds (new connections wait in the kernel's
backlog), counts the pause and logs at most one line per ``LOG_EVERY`` seconds; the connections
it already has are served all along.

Pending connections. A connection that has not finished sending a request (silent, sending
its request line, headers or body slowly, or idle between two kept-alive requests) is
*pending*: it holds a descriptor and buffers, and may never become a WebSocket. It has
``PULLY_HANDSHAKE_TIMEOUT`` seconds to finish its request, headers and body, or it is closed.
Once ``PULLY_MAX_CONNECTIONS`` connections are pending, new ones are closed as soon as they are
accepted; the node's ``full`` (checked at the WebSocket handshake) counts pending connections
next to its WebSockets. A request read in full stops being pending: it becomes a WebSocket,
which belongs to the node from then on, or it gets an answer.

:class:`NodeServer` is Tornado's ``HTTPServer`` with a :class:`Listener` as its accept loop. It
uses Tornado's public interfaces only (read in Tornado 6.6): ``add_sockets`` and ``stop``
are replaced; ``start_request`` is called before each request on a connection is read, and its
delegate's ``finish`` once that request has been read in full (a WebSocket handshake is
answered after that); ``HTTP1ServerConnection.stream`` is the connection's stream.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import tornado.httpserver
import tornado.httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.iostream import IOStream

logger = logging.getLogger("pully.listener")

ACCEPT_BATCH = 128  # connections accepted per wake-up, as Tornado does (its listen backlog)
ACCEPT_PAUSE = 0.25  # seconds not accepting after accept() failed, e.g. out of descriptors
LOG_EVERY = 10.0  # seconds between two log lines about the same repeated trouble


def raise_open_files_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit (each client holds a
    descriptor), and log both numbers. Never raises: a limit it cannot raise is logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        logger.info("open files limit %d (soft and hard)", soft)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit the kernel refuses
        logger.warning("open files limit %d (hard %d): could not raise it: %s", soft, hard, exc)
        return
    logger.info("open files limit raised from %d to %d (the hard limit)", soft, hard)


class _Throttle:
    """For a log line about an event that may repeat many times a second: at most one line per
    ``every`` seconds, saying how often the event happened meanwhile."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._count = 0
        self._next = 0.0

    def hit(self) -> int:
        """Count one event. If a line is due, return the events since the last line (this one
        included) and start counting again; else return 0."""
        self._count += 1
        now = time.monotonic()
        if now < self._next:
            return 0
        self._next = now + self.every
        count, self._count = self._count, 0
        return count


class Listener:
    """Accepts connections on listening sockets and keeps the pending ones to their deadline.

    Owns: the listening sockets (:meth:`listen` to :meth:`close`), the pending connections with
    their deadlines, and the counters ``accept_pauses`` (by errno name), ``refused`` and
    ``timeouts`` that ``/metrics`` reports."""

    def __init__(self, handshake_timeout: float, max_pending: int = 0) -> None:
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending  # 0: no limit
        self.accept_pauses: collections.Counter[str] = collections.Counter()
        self.refused = 0  # closed on accept: max_pending connections were pending
        self.timeouts = 0  # closed for not finishing a request within handshake_timeout
        self._deadlines: dict[IOStream, asyncio.TimerHandle] = {}
        self._sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop  # set by listen(), like _serve
        self._serve: Callable[[IOStream, Any], None]
        self._stream_options: dict[str, Any] = {}
        self._resume: asyncio.TimerHandle | None = None
        self._pause_log = _Throttle(LOG_EVERY)
        self._refuse_log = _Throttle(LOG_EVERY)

    @property
    def pending(self) -> int:
        """Connections accepted that have not finished a request."""
        return len(self._deadlines)

    # -- accepting ---------------------------------------------------------------------------

    def listen(
        self,
        sockets: Iterable[socket.socket],
        serve: Callable[[IOStream, Any], None],
        **stream_options: Any,
    ) -> None:
        """Accept on ``sockets`` (bound, listening, non-blocking) from now on; each connection
        becomes an ``IOStream(conn, **stream_options)`` handed to ``serve(stream, address)``."""
        self._loop = asyncio.get_running_loop()
        self._serve = serve
        self._stream_options = stream_options
        self._sockets.extend(sockets)
        self._watch()

    def close(self) -> None:
        """Stop accepting and close the listening sockets (accepted connections stay open)."""
        self._unwatch()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def _watch(self) -> None:
        self._resume = None
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _unwatch(self) -> None:
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = sock.accept()
            except BlockingIOError:
                return  # accepted everything that was waiting
            except ConnectionAbortedError:
                continue  # closed by the peer while queued
            except OSError as exc:
                self._pause(exc)
                return
            if self.max_pending and len(self._deadlines) >= self.max_pending:
                conn.close()
                self._refuse()
                continue
            stream = IOStream(conn, **self._stream_options)
            self._deadlines[stream] = self._deadline(stream)
            try:
                self._serve(stream, address)
            except Exception:
                logger.exception("could not serve a connection from %s", address)
                self.on_request_done(stream)
                stream.close()

    def _pause(self, exc: OSError) -> None:
        """``accept()`` failed: out of descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS,
        ENOMEM), or something stranger. Retrying at once would fail the same way, in a loop."""
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self.accept_pauses[name] += 1
        self._unwatch()
        self._resume = self._loop.call_later(ACCEPT_PAUSE, self._watch)
        if count := self._pause_log.hit():
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            logger.warning(
                "cannot accept connections: %s (%s, open files limit %d); trying again every "
                "%gs, open connections are still served (pauses since the last such line: %d)",
                exc.strerror, name, soft, ACCEPT_PAUSE, count,
            )  # fmt: skip

    def _refuse(self) -> None:
        self.refused += 1
        if count := self._refuse_log.hit():
            logger.warning(
                "refusing new connections: %d have not finished a request and "
                "PULLY_MAX_CONNECTIONS is %d (refused since the last such line: %d)",
                len(self._deadlines), self.max_pending, count,
            )  # fmt: skip

    # -- pending connections -----------------------------------------------------------------

    def _deadline(self, stream: IOStream) -> asyncio.TimerHandle:
        return self._loop.call_later(self.handshake_timeout, self._expire, stream)

    def _expire(self, stream: IOStream) -> None:
        if self._deadlines.pop(stream, None) is not None:
            self.timeouts += 1
            stream.close()

    def on_request_start(self, stream: IOStream) -> None:
        """A request is about to be read on ``stream``: the first since it was accepted (its
        deadline runs since then), or the next one on a kept-alive connection (a new one)."""
        if stream not in self._deadlines:
            self._deadlines[stream] = self._deadline(stream)

    def on_request_done(self, stream: IOStream) -> None:
        """``stream`` is no longer pending: its request was read in full, or it closed."""
        if (timer := self._deadlines.pop(stream, None)) is not None:
            timer.cancel()


class _Reading(tornado.httputil.HTTPMessageDelegate):
    """Passes a request through to ``delegate``, telling the listener once it is read in full."""

    def __init__(
        self, delegate: tornado.httputil.HTTPMessageDelegate, listener: Listener, stream: IOStream
    ) -> None:
        self.delegate = delegate
        self.listener = listener
        self.stream = stream

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        # before the handler runs: a handshake does not count itself toward the limit
        self.listener.on_request_done(self.stream)
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()


class NodeServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server, accepting through ``listener`` (see the module docstring)."""

    listener: Listener

    def initialize(  # type: ignore[override]
        self, *args: Any, listener: Listener, **kwargs: Any
    ) -> None:
        super().initialize(*args, **kwargs)
        self.listener = listener

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        self.listener.listen(
            sockets,
            self.handle_stream,
            max_buffer_size=self.max_buffer_size,
            read_chunk_size=self.read_chunk_size,
        )

    def stop(self) -> None:
        self.listener.close()
        super().stop()

    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        stream = _stream(server_conn)
        self.listener.on_request_start(stream)
        return _Reading(super().start_request(server_conn, request_conn), self.listener, stream)

    def on_close(self, server_conn: object) -> None:
        self.listener.on_request_done(_stream(server_conn))
        super().on_close(server_conn)


def _stream(server_conn: object) -> IOStream:
    assert isinstance(server_conn, HTTP1ServerConnection)
    return server_conn.stream
