"""Reading client frames in chunks, outside the HTTP request's coroutine.

Tornado reads each WebSocket frame with two to four awaits (header, length, mask, payload),
inside the request handler's coroutine, which stays suspended for the connection's whole life:
about seven nested coroutine frames per idle client. :class:`ChunkedProtocol` keeps Tornado's
handshake, writing, closing and message dispatch (``_handle_message``: UTF-8 checks, ping, pong,
close) and replaces only the reading: one small task per connection reads whatever the socket
has and parses every complete frame in it, so the request coroutine finishes right after
``open()`` and a burst of frames costs one read. The checks are Tornado's (RFC 6455): reserved
bits, control frames short and unfragmented, continuation rules, and the size cap enforced from
the header, before the payload is buffered.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, cast

from tornado.iostream import StreamClosedError
from tornado.util import _websocket_mask
from tornado.websocket import WebSocketProtocol13

READ_CHUNK = 65536
YIELD_AFTER = 256 * 1024  # bytes parsed before letting other connections run

_SHORT = struct.Struct("!H")
_LONG = struct.Struct("!Q")


class ProtocolViolation(Exception):
    """The client broke RFC 6455: the connection is aborted, as Tornado does."""


class ChunkedProtocol(WebSocketProtocol13):
    _buffer: bytes = b""
    _reader: asyncio.Task[None] | None = None

    async def _receive_frame_loop(self) -> None:
        """Hand reading over to a task of its own and return: the handshake's coroutine ends."""
        self._reader = asyncio.ensure_future(self._read_forever())

    async def _read_forever(self) -> None:
        try:
            parsed = 0
            while not self.client_terminated:
                chunk = await self.stream.read_bytes(READ_CHUNK, partial=True)
                self._wire_bytes_in += len(chunk)
                data = self._buffer + chunk if self._buffer else chunk
                self._buffer = b""
                parsed += len(chunk)
                await self._consume(data)
                if parsed >= YIELD_AFTER:
                    parsed = 0
                    await asyncio.sleep(0)
        except StreamClosedError:
            self._abort()
        except ProtocolViolation:
            self._abort()
        except asyncio.CancelledError:
            self._abort()
            raise
        finally:
            self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    async def _consume(self, data: bytes) -> None:
        """Handle every complete frame in ``data``; keep the rest for the next read."""
        pos, end = 0, len(data)
        while not self.client_terminated:
            if end - pos < 2:
                break
            header, second = data[pos], data[pos + 1]
            if header & self.RSV_MASK:
                raise ProtocolViolation("reserved bits set (no extension was negotiated)")
            opcode = header & self.OPCODE_MASK
            is_final = bool(header & self.FIN)
            length, cursor = second & 0x7F, pos + 2
            if opcode & 0x8 and (length >= 126 or not is_final):
                raise ProtocolViolation("control frames must be short and unfragmented")
            if length == 126:
                if end - cursor < 2:
                    break
                (length,) = _SHORT.unpack_from(data, cursor)
                cursor += 2
            elif length == 127:
                if end - cursor < 8:
                    break
                (length,) = _LONG.unpack_from(data, cursor)
                cursor += 8
            total = length + len(self._fragmented_message_buffer or b"")
            if total > self.params.max_message_size:
                self.close(1009, "message too big")
                raise ProtocolViolation("message too big")
            masked = bool(second & 0x80)
            payload_start = cursor + (4 if masked else 0)
            if end - payload_start < length:
                break
            payload = data[payload_start : payload_start + length]
            if masked:
                payload = _websocket_mask(data[cursor : cursor + 4], payload)
            pos = payload_start + length
            message = self._assemble(opcode, is_final, payload)
            if message is not None:
                handled = self._handle_message(*message)
                if handled is not None:
                    await handled  # one message at a time, in order, as Tornado does
        if pos < end:
            self._buffer = data[pos:]

    def _assemble(self, opcode: int, is_final: bool, payload: bytes) -> tuple[int, bytes] | None:
        """A complete message (opcode, data), or None while fragments are still arriving."""
        if opcode & 0x8:
            return opcode, payload  # control frames may come between fragments
        if opcode == 0:
            fragments = self._fragmented_message_buffer
            if fragments is None:
                raise ProtocolViolation("continuation frame with nothing to continue")
            fragments.extend(payload)
            if not is_final:
                return None
            self._fragmented_message_buffer = None
            return cast(int, self._fragmented_message_opcode), bytes(fragments)
        if self._fragmented_message_buffer is not None:
            raise ProtocolViolation("new message before the previous one was finished")
        if not is_final:
            self._fragmented_message_opcode = opcode  # type: ignore[assignment]
            self._fragmented_message_buffer = bytearray(payload)
            return None
        return opcode, payload


def chunked_protocol(base: Any) -> ChunkedProtocol | None:
    """Swap Tornado's protocol object for a :class:`ChunkedProtocol` with the same settings."""
    if not isinstance(base, WebSocketProtocol13):
        return None
    return ChunkedProtocol(base.handler, base.mask_outgoing, base.params)
