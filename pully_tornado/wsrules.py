"""What RFC 6455 allows of a client's frames: each first byte's verdict computed once, the close
codes a client may send, and the error that closes a client breaking the rules
(:mod:`.wsframes` reads the frames)."""

from __future__ import annotations

import struct

from tornado.websocket import WebSocketProtocol13

SHORT = struct.Struct("!H")
LONG = struct.Struct("!Q")
# continuation, text, binary; close, ping, pong
_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})


def _header_error(first_byte: int, deflate: bool = False) -> str | None:
    """What is wrong with a client frame whose first byte is ``first_byte``, if anything
    (``deflate``: permessage-deflate was negotiated, RSV1 marks a compressed message)."""
    opcode = first_byte & WebSocketProtocol13.OPCODE_MASK
    rsv = first_byte & WebSocketProtocol13.RSV_MASK
    if deflate and rsv == WebSocketProtocol13.RSV1:
        if opcode not in (0x1, 0x2):
            return "RSV1 (compressed) set on a frame that does not start a data message"
    elif rsv:
        return "reserved bits set that no negotiated extension defines"
    if opcode not in _OPCODES:
        return f"unknown opcode {opcode:#x}"
    if opcode & 0x8 and not first_byte & WebSocketProtocol13.FIN:
        return "fragmented control frame"
    return None


# Every first byte checked once here: per frame the check is one lookup.
HEADER_ERRORS: tuple[str | None, ...] = tuple(_header_error(b) for b in range(256))
DEFLATE_HEADER_ERRORS: tuple[str | None, ...] = tuple(_header_error(b, True) for b in range(256))


def allowed_close_code(code: int) -> bool:
    """May a client close with ``code``? RFC 6455 section 7.4 defines 1000-1003 and 1007-1011,
    IANA has registered 1012-1014 since, 3000-4999 are for libraries and applications; 1004 is
    reserved, 1005, 1006 and 1015 must never be sent, everything else is unassigned."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class ProtocolViolation(Exception):
    """The client broke RFC 6455: it is sent a close frame with ``code`` and ``reason``, then
    disconnected."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
