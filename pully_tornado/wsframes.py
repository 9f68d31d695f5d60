"""WebSocket frames on the wire: client frames read in chunks, strictly; the slow-consumer close.

Tornado reads each WebSocket frame with two to four awaits (header, length, mask, payload),
inside the request handler's coroutine, which stays suspended for the connection's whole life:
about seven nested coroutine frames per idle client. :class:`ChunkedProtocol` keeps Tornado's
handshake, writing and closing, and replaces the reading: a callback on each read Future takes
whatever the socket has and parses every complete frame in it, so the request coroutine finishes
right after ``open()``, an idle connection keeps no coroutine or task at all (about 2 KB less
each, docs/performance.md), and a burst of frames costs one read.

The reading is strict RFC 6455. A client that breaks it is sent a close frame with the code
the RFC asks for, one info line is logged, and nothing more it sends is processed (section
7.1.7): its input is read and thrown away until it closes the connection or Tornado's close
wait (5 s) ends, then the connection is closed.

====  ======================================================================================
1002  unmasked frame; reserved bits (RSV1 alone is allowed on the first frame of a data message
      when permessage-deflate was negotiated: :mod:`.deflate`); unknown opcode; control
      frame over 125 bytes or fragmented; continuation with nothing to continue; a new message
      inside a fragmented one; close frame with a 1-byte payload or a code section 7.4 does
      not allow
1007  text message (checked once reassembled) or close reason that is not UTF-8
1007  compressed message that is not deflate data
1009  message past ``max_message_size``, counted over its fragments and checked from the frame
      header, before the payload is buffered; a compressed one inflating past it
====  ======================================================================================

The slow-consumer close (:meth:`ChunkedProtocol.close_dropping_backlog`) drops the output the
kernel has not taken yet, so the close frame is not stuck behind megabytes the client will never
read, and cuts that output where a frame ends (:func:`.outbox.drop_unsent`).

Tornado internals used, read in Tornado 6.4 to 6.6 (importing this module fails on any other
version, see ``CHECKED_TORNADO``):

- ``WebSocketProtocol13``: ``_receive_frame_loop`` and ``_handle_message`` (both replaced:
  Tornado's drop the connection without a close frame, and its close-reason decoding raises
  ``UnicodeDecodeError`` out of the reader), ``_fragmented_message_buffer`` and
  ``_fragmented_message_opcode``, ``_run_callback``, ``_write_frame``, ``_abort``, ``_waiting``
  (the close-wait timer), the counters ``_wire_bytes_in`` and ``_message_bytes_in``.
- ``IOStream``: ``_write_buffer`` (its ``peek``, ``advance`` and ``append``),
  ``_write_futures``, ``_total_write_index``, ``_total_write_done_index``; only in
  :func:`.outbox.drop_unsent`. Tornado has no public way to take back queued output.
- ``tornado.util._websocket_mask``: the C unmasking Tornado itself uses.

Tornado's own pinging (``websocket_ping_interval``) and compression are not used with this
protocol: the node's ``KeepAlive`` pings, and the node negotiates permessage-deflate itself.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from asyncio import Future
from typing import Any, Protocol, cast

import tornado
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from tornado.util import _websocket_mask
from tornado.websocket import WebSocketProtocol13

from .deflate import Agreement, Inflater, TooLarge
from .outbox import drop_unsent
from .protocol import CLOSE_INVALID_DATA, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG
from .wsrules import (
    DEFLATE_HEADER_ERRORS,
    HEADER_ERRORS,
    LONG,
    SHORT,
    ProtocolViolation,
    allowed_close_code,
)

# The Tornado versions whose private members (listed in the docstring) this module was read
# against; setup.cfg pins the same range.
CHECKED_TORNADO = ((6, 4), (7, 0))
if not CHECKED_TORNADO[0] <= tornado.version_info[:2] < CHECKED_TORNADO[1]:
    raise ImportError(
        f"pully_tornado needs Tornado >=6.4,<7: its WebSocket frame reader uses Tornado "
        f"internals checked against those versions only, and Tornado {tornado.version} is "
        "installed"
    )

logger = logging.getLogger("pully.ws")

READ_CHUNK = 65536


class _Owner(Protocol):
    """What the reader needs of its handler besides Tornado's delegate methods."""

    client_id: str

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close with ``code`` after the frames the handler has queued."""


class ChunkedProtocol(WebSocketProtocol13):
    # Slots: Tornado's own attributes fill the instance dict to the size at which it stays
    # compact (about 30 keys); one more key there costs a connection 1.3 KB.
    __slots__ = ("_buffer", "_ended", "_failing", "_fragments_compressed", "_header_errors",
                 "_inflater")  # fmt: skip

    def __init__(self, handler: Any, mask_outgoing: bool, params: Any) -> None:
        super().__init__(handler, mask_outgoing, params)
        self._buffer = b""  # the start of a frame not complete yet, or what waits for a handler
        self._ended = False
        self._failing: asyncio.Future[None] | None = None  # closing a client that broke the RFC
        self._header_errors = HEADER_ERRORS
        self._inflater: Inflater | None = None  # permessage-deflate negotiated
        self._fragments_compressed = False

    def accept_deflate(self, agreed: Agreement) -> None:
        """The handshake agreed permessage-deflate: RSV1 marks compressed messages."""
        self._inflater = agreed.inflater(self.params.max_message_size)
        self._header_errors = DEFLATE_HEADER_ERRORS

    async def _receive_frame_loop(self) -> None:
        """Start reading and return: the handshake's coroutine ends. Reading is callbacks on
        the stream's read Futures, no task: an idle connection keeps no coroutine frames."""
        self._read_next()

    def _read_next(self) -> None:
        """Ask the stream for whatever the socket has; :meth:`_on_read` gets it."""
        if self.client_terminated:
            return self._end()
        try:
            reading = cast("Future[bytes]", self.stream.read_bytes(READ_CHUNK, partial=True))
        except StreamClosedError:
            return self._end()
        reading.add_done_callback(self._on_read)

    def _on_read(self, reading: Future[bytes]) -> None:
        if reading.cancelled():
            return self._end()
        error = reading.exception()
        if error is not None:
            if not isinstance(error, StreamClosedError):
                logger.error("client %s: reading failed: %r", self._owner.client_id, error)
            return self._end()
        chunk = reading.result()
        self._wire_bytes_in += len(chunk)
        data = self._buffer + chunk if self._buffer else chunk
        self._buffer = b""
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Handle the complete frames in ``data``, then read on; while a handler coroutine
        runs, the rest waits (one message at a time, in order, as Tornado does). A broken
        client is closed with the code RFC 6455 asks for; a bug is logged and ends the
        connection."""
        try:
            running = self._consume(data)
        except ProtocolViolation as exc:
            self._failing = asyncio.ensure_future(self._fail_then_end(exc))
            return None
        except Exception:
            logger.exception("client %s: the frame reader failed", self._owner.client_id)
            return self._end()
        if running is not None:
            running.add_done_callback(self._resume)
        elif self.client_terminated:
            self._end()
        else:
            self._read_next()
        return None

    def _resume(self, _: Future[Any]) -> None:
        data, self._buffer = self._buffer, b""
        self._parse(data)

    def _end(self) -> None:
        """The connection is over: close it and tell the handler, once."""
        if self._ended:
            return
        self._ended = True
        self._abort()  # a no-op when the connection is closed already
        try:
            self.handler.on_ws_connection_close(self.close_code, self.close_reason)
        except Exception:
            logger.exception("client %s: closing failed", self._owner.client_id)

    @property
    def _owner(self) -> _Owner:
        return cast(_Owner, self.handler)

    async def _fail_then_end(self, exc: ProtocolViolation) -> None:
        try:
            await self._fail(exc)
        except StreamClosedError:
            pass
        except Exception:
            logger.exception("client %s: closing failed", self._owner.client_id)
        finally:
            self._end()

    async def _fail(self, exc: ProtocolViolation) -> None:
        """Close with the violation's code, then discard the client's input until it closes
        or the close wait ends (closing a socket with unread input would reset the connection,
        and the client could lose the close frame)."""
        logger.info(
            "client %s broke the WebSocket protocol (%s): closing with %d",
            self._owner.client_id, exc.reason, exc.code,
        )  # fmt: skip
        self._close(exc.code, exc.reason)
        while not self.stream.closed():
            await self.stream.read_bytes(READ_CHUNK, partial=True)

    def _close(self, code: int | None, reason: str | None = None) -> None:
        """Close through the handler, so the frames it has queued go out before the close frame;
        then through Tornado, which also covers a handler that let go of the connection before
        (its close frame is out already, and only the closing itself is left)."""
        self._owner.close(code, reason)
        self.close(code, reason)

    def _consume(self, data: bytes) -> Future[Any] | None:
        """Handle the complete frames in ``data`` and keep the rest. Returns the Future of a
        handler coroutine still running: the frames after its message wait for it."""
        header_errors = self._header_errors
        max_size = self.params.max_message_size
        pos, end = 0, len(data)
        while not self.client_terminated:
            if end - pos < 2:
                break
            header, second = data[pos], data[pos + 1]
            error = header_errors[header]
            if error is not None:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, error)
            if second < 0x80:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            length, cursor = second & 0x7F, pos + 2
            if length >= 126:
                if header & 0x8:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes")
                if length == 126:
                    if end - cursor < 2:
                        break
                    (length,) = SHORT.unpack_from(data, cursor)
                    cursor += 2
                else:
                    if end - cursor < 8:
                        break
                    (length,) = LONG.unpack_from(data, cursor)
                    cursor += 8
            # the size so far of the message this frame belongs to (a ping between two
            # fragments is not part of theirs)
            fragments = self._fragmented_message_buffer
            size = length if fragments is None or header & 0x8 else len(fragments) + length
            if size > max_size:
                raise ProtocolViolation(CLOSE_TOO_BIG, "message too big")
            payload_start = cursor + 4
            if end - payload_start < length:
                break
            pos = payload_start + length
            payload = _websocket_mask(data[cursor:payload_start], data[payload_start:pos])
            opcode = header & 0x0F
            if header & 0xC0 == 0x40:  # the first fragment of a compressed message
                self._fragments_compressed = True
            message = self._assemble(opcode, header & 0x80, payload)
            compressed = header & 0x40 or self._fragments_compressed
            if message is not None and compressed and not opcode & 0x8:
                message = self._inflate(*message)
            if message is not None:
                handled = self._handle_message(*message)
                if handled is not None and not handled.done():
                    self._buffer = data[pos:]
                    return handled
        if pos < end:
            self._buffer = data[pos:]
        return None

    def _assemble(self, opcode: int, is_final: int, payload: bytes) -> tuple[int, bytes] | None:
        """A complete message (opcode, data), or None while fragments are still arriving."""
        if opcode & 0x8:
            return opcode, payload  # control frames may come between fragments
        if opcode == 0:
            fragments = self._fragmented_message_buffer
            if fragments is None:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "continuation of no message")
            fragments.extend(payload)
            if not is_final:
                return None
            self._fragmented_message_buffer = None
            return cast(int, self._fragmented_message_opcode), bytes(fragments)
        if self._fragmented_message_buffer is not None:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        if not is_final:
            self._fragmented_message_opcode = opcode  # type: ignore[assignment]
            self._fragmented_message_buffer = bytearray(payload)
            return None
        return opcode, payload

    def _inflate(self, opcode: int, data: bytes) -> tuple[int, bytes]:
        """A compressed message (RSV1 on its first frame), inflated within the size limit."""
        assert self._inflater is not None  # RSV1 is refused in the header otherwise
        self._fragments_compressed = False
        try:
            return opcode, self._inflater.inflate(data)
        except TooLarge:
            raise ProtocolViolation(CLOSE_TOO_BIG, "message too big once inflated") from None
        except zlib.error:
            raise ProtocolViolation(CLOSE_INVALID_DATA, "compressed data is not deflate") from None

    def _handle_message(self, opcode: int, data: bytes) -> Future[Any] | None:
        """Dispatch one complete message; its Future if the handler's callback is a coroutine.
        Raises :class:`ProtocolViolation` for text that is not UTF-8 and for a bad close frame.
        (Opcodes were checked in the frame header.)"""
        if opcode == 0x1:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolViolation(CLOSE_INVALID_DATA, "text is not UTF-8") from None
            self._message_bytes_in += len(data)
            return self._run_callback(self.handler.on_message, text)
        if opcode == 0x2:
            self._message_bytes_in += len(data)
            return self._run_callback(self.handler.on_message, data)
        if opcode == 0x8:
            self._on_close_frame(data)
        elif opcode == 0x9:
            self._pong(data)
            self._run_callback(self.handler.on_ping, data)
        else:
            return self._run_callback(self.handler.on_pong, data)
        return None

    def _on_close_frame(self, data: bytes) -> None:
        """The client closes: check its close frame, answer with the same code (RFC 6455
        section 5.5.1) and close the connection."""
        code = reason = None
        if len(data) == 1:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
        if data:
            (code,) = SHORT.unpack_from(data)
            if not allowed_close_code(code):
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, f"close code {code} not allowed")
            if len(data) > 2:
                try:
                    reason = data[2:].decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolViolation(CLOSE_INVALID_DATA, "close reason not UTF-8") from None
        self.client_terminated = True
        self.close_code, self.close_reason = code, reason
        self._close(code)

    def _pong(self, data: bytes) -> None:
        if self.server_terminated:
            return  # nothing may follow our close frame
        try:
            self._write_frame(True, 0xA, data)
        except StreamBufferFullError:
            pass  # the client does not read: its next frame makes it a slow consumer
        except StreamClosedError:
            self._abort()

    def close_dropping_backlog(
        self, code: int, reason: str, wait: float, rest: bytes | memoryview = b""
    ) -> None:
        """Close with ``code`` ahead of the output the client has not read yet.

        The output the kernel has not taken is dropped (:func:`drop_unsent`), ``rest`` (the
        rest of a frame the caller wrote in part straight to the socket) is written, then the
        close frame. The client then has ``wait`` seconds, instead of Tornado's 5, to read it and
        answer before the connection is aborted: the close frame waits behind what the kernel
        already holds for a client that stopped reading. On TLS, whose records cannot be taken
        back, nothing is dropped."""
        stream = self.stream
        if self.server_terminated or stream.closed():
            return self.close(code, reason)
        if type(stream) is IOStream:
            drop_unsent(stream)
        stream.max_write_buffer_size = None  # room for the rest and the close frame
        if rest:
            stream.write(rest)
        if self._waiting is None:  # otherwise Tornado's wait runs already
            io_loop = stream.io_loop
            self._waiting = io_loop.add_timeout(io_loop.time() + wait, self._abort)
        self.close(code, reason)


def chunked_protocol(base: Any) -> ChunkedProtocol | None:
    """Swap Tornado's protocol object for a :class:`ChunkedProtocol` with the same settings."""
    if not isinstance(base, WebSocketProtocol13):
        return None
    return ChunkedProtocol(base.handler, base.mask_outgoing, base.params)
